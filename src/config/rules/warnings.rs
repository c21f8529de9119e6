//! Warnings for a rule set that loads but cannot do what its author meant: names that
//! nothing uses, mailboxes no team reads, no tests. They do not stop loading; `check`
//! prints them and the daemon logs them.

use super::{Rules, Unmatched};
use crate::config::error::Collector;

/// Looks at the compiled rules as a whole, once every section has compiled.
pub(super) fn design_warnings(c: &mut Collector<'_>, rules: &Rules) {
    unrouted_queues(c, rules);
    unused_categories(c, rules);
    mailboxes_without_queue(c, rules);
    if rules.tests.is_empty() {
        c.warn_key(
            "tests",
            "no [[tests]]: add a few sample messages with the queue they must reach, so that `check` and every reload prove the rules still route them",
        );
    }
}

fn unrouted_queues(c: &mut Collector<'_>, rules: &Rules) {
    for q in rules.queues.keys() {
        let routed = rules
            .categories
            .values()
            .any(|k| k.queue.as_ref() == Some(q))
            || rules.mailboxes.values().any(|m| {
                m.queue.as_ref() == Some(q) || m.unmatched == Unmatched::Forward(q.clone())
            })
            || rules.escalation.as_ref().is_some_and(|e| &e.queue == q);
        if !routed {
            c.warn_key(
                format!("queues.{q}"),
                format!("no category, mailbox or escalation routes to queue {q:?}: it never gets mail; set `queue = {q:?}` on a category or mailbox, or remove it"),
            );
        }
    }
}

/// Categories no rule puts a message in, and rules whose category leads nowhere.
fn unused_categories(c: &mut Collector<'_>, rules: &Rules) {
    for (k, cat) in &rules.categories {
        if !rules.rules.iter().any(|r| &r.category == k) {
            c.warn_key(
                format!("categories.{k}"),
                format!("no rule has category {k:?}: no message is ever put in it; add a [[rules]] entry with category = {k:?}, or remove it"),
            );
        }
        let handled = rules.mailboxes.values().any(|m| m.handles.contains(k));
        if cat.queue.is_none() && !handled {
            let of_category = rules.rules.iter().enumerate();
            for (i, r) in of_category.filter(|(_, r)| &r.category == k) {
                c.warn_key(
                    format!("rules[{i}].category"),
                    format!("rule {:?}: category {k:?} has no queue and no mailbox handles it, so the rule routes nowhere (the message is left where it arrived); give the category a queue or list it in a mailbox's `handles`", r.name),
                );
            }
        }
    }
}

/// A mailbox without `queue` answers no customer. That is its design when it only
/// handles mail that is not a request (an alerts inbox: categories without a queue, and
/// `unmatched` must then name a queue), so it is not warned about. It is a mistake when
/// the mailbox is a queue's own address (that team reads it, and its requests would be
/// forwarded to the mailbox itself) or when it handles a category a team answers (such
/// requests are forwarded to that queue all the same, so `handles` promises what does
/// not happen).
fn mailboxes_without_queue(c: &mut Collector<'_>, rules: &Rules) {
    for (k, m) in rules.mailboxes.iter().filter(|(_, m)| m.queue.is_none()) {
        let key = format!("mailboxes.{k}");
        let own = rules
            .queues
            .values()
            .find(|q| q.address.eq_ignore_ascii_case(&m.address));
        let answered: Vec<&String> = m
            .handles
            .iter()
            .filter(|h| rules.categories.get(*h).is_some_and(|c| c.queue.is_some()))
            .collect();
        if let Some(q) = own {
            c.warn_key(
                key,
                format!("mailbox {k:?} has no queue, but {} is the address of queue {:?}: that team reads it, and the requests it gets are forwarded to the mailbox itself; set `queue = {:?}`", m.address, q.key, q.key),
            );
        } else if !answered.is_empty() {
            c.warn_key(
                key,
                format!("mailbox {k:?} has no queue but handles {answered:?}, requests a team answers: no team answers from it, so they are forwarded to their queue all the same and flagged mail is not kept there; set `queue` if a team reads {}, or leave those categories out of `handles`", m.address),
            );
        }
    }
}
