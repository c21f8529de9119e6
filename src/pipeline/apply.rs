//! The plan applied to the ticket: the history lines this message adds, its owner and
//! hops, what staff mail in the thread records, red flags and incidents, and the
//! acknowledgement's line. Pure: the store is read before and written after.

use crate::compose::flag_reason;
use crate::decide::{AckPlan, Suppression, Why};
use crate::parse::Mail;
use crate::ticket::{EventKind, Ticket};
use crate::words;

use super::Case;

/// The message's own lines (arrived, or a follow-up; where it went and why), the
/// ticket's owner and hops.
pub fn thread_history(case: &Case, ticket: &mut Ticket) {
    let (plan, mail, at) = (&case.ev.plan, &case.ev.mail, case.at.as_str());
    let mailbox = &case.inc.mailbox.address;
    if plan.reopens.is_some() {
        ticket.record(at, EventKind::Reopened);
    }
    if plan.follow_up() {
        ticket.follow_up(at, mailbox, &mail.subject);
    } else {
        let message_id = mail.message_id.clone();
        let (mailbox, subject) = (mailbox.clone(), mail.subject.clone());
        let arrived = EventKind::Arrived {
            mailbox,
            message_id,
            subject,
        };
        ticket.record(at, arrived);
    }
    if let Some(what) = where_it_went(case, &ticket.language) {
        ticket.record(at, what);
    }
    ticket.owned_by(&case.queue, at);
    ticket.hops = plan.hops.clone();
    if let Some(id) = &mail.message_id {
        ticket.messages.push(id.clone());
    }
}

/// The line saying where the message went: a handover, a bounce to the escalation
/// queue, a forward, or a new request kept; nothing for a follow-up that stays.
fn where_it_went(case: &Case, lang: &str) -> Option<EventKind> {
    let queue = case.queue.clone();
    Some(match &case.why {
        Why::Handover { from, .. } => EventKind::HandedOver {
            from: from.clone(),
            to: queue,
        },
        Why::Bounced { between, .. } => EventKind::Bounced {
            between: between.clone(),
            to: queue,
        },
        _ if case.forward => EventKind::Forwarded {
            queue,
            why: case.reason(lang),
        },
        _ if case.ev.plan.ticket.is_none() => EventKind::Kept {
            queue,
            why: case.reason(lang),
        },
        _ => return None,
    })
}

/// Staff mail in the thread: the promises it records, and whether it answers the
/// customer.
pub fn staff_mail(case: &Case, ticket: &mut Ticket) {
    let (plan, mail) = (&case.ev.plan, &case.ev.mail);
    if plan.ticket.is_none() || plan.from_customer {
        return;
    }
    let by = mail.sender();
    for text in promises_in(mail) {
        ticket.promise(&case.at, &by, text);
    }
    if answers(mail, ticket) {
        ticket.answered(&case.at, &by);
    }
}

/// Lines staff write to record a promise on a ticket ("Promise: payment moved to 1 Dec").
pub fn promises_in(mail: &Mail) -> impl Iterator<Item = &str> {
    mail.text.lines().filter_map(promise_in)
}

fn promise_in(line: &str) -> Option<&str> {
    let t = line.trim();
    let lower = t.to_lowercase();
    for p in ["promise:", "обещание:", "обещано:"] {
        if lower.starts_with(p) {
            // Byte offset of the prefix in the original: the prefixes are the same length
            // in lower case.
            let rest = t.get(p.len()..)?.trim();
            return (!rest.is_empty()).then_some(rest);
        }
    }
    None
}

/// The mail is addressed (To or Cc) to the ticket's customer.
pub fn answers(mail: &Mail, ticket: &Ticket) -> bool {
    mail.to
        .iter()
        .chain(mail.cc.iter())
        .any(|a| a.address.eq_ignore_ascii_case(&ticket.customer))
}

/// Red flags (kept on the ticket, with a line naming the escalation queue) and the
/// incident the message is linked to.
pub fn red_flags(case: &Case, ticket: &mut Ticket) {
    let (plan, rules) = (&case.ev.plan, case.rules);
    if !plan.flags.is_empty() {
        let lang = &ticket.language;
        let reasons = plan.flags.iter().map(|f| flag_reason(rules, f, lang));
        let reasons = reasons.collect();
        let to = plan.escalate_to.clone().unwrap_or_default();
        ticket.flag(&case.at, &plan.flags, reasons, to);
    }
    if let Some(id) = &plan.incident {
        ticket.link_incident(&case.at, id);
    }
}

/// The acknowledgement's line: sent (the first, or "added to your request"), or why not
/// when the reason is news to the reader of the history.
pub fn acknowledgement(case: &Case, ticket: &mut Ticket) {
    let (plan, at) = (&case.ev.plan, case.at.as_str());
    match (&plan.ack_to, &plan.ack) {
        (Some(to), AckPlan::Added) => ticket.added_ack(at, to),
        (Some(to), _) => {
            let queue = &case.rules.queues[&case.queue];
            let response_time = words::duration(queue.response_time, &ticket.language);
            ticket.acknowledged(at, to, response_time);
        }
        (None, _) => match plan.ack_reason() {
            Some(r) if !matches!(r, Suppression::FollowUp | Suppression::FromStaff) => {
                let reason = words::suppression(r, &ticket.language);
                ticket.record(at, EventKind::NotAcknowledged { reason });
            }
            _ => {}
        },
    }
}
