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

fn mailboxes_without_queue(c: &mut Collector<'_>, rules: &Rules) {
    for (k, m) in &rules.mailboxes {
        if m.queue.is_none() {
            c.warn_key(
                format!("mailboxes.{k}"),
                format!("mailbox {k:?} has no queue: no team answers from it, every recognised request is forwarded away and flagged mail is not kept there; set `queue` if a team reads {}", m.address),
            );
        }
    }
}
