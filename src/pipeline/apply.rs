//! The plan applied to the ticket: the history lines this message adds, its owner and
//! hops, what staff mail in the thread records, red flags and incidents, and the
//! acknowledgement's line. Pure: the store is read before and written after.

use crate::compose::flag_reason;
use crate::decide::{AckPlan, Suppression, Why};
use crate::parse::Mail;
use crate::ticket::{Event, EventKind, Promise, Ticket};
use crate::words;

use super::Case;

/// The message's own lines: arrived (or a follow-up), where it went and why.
pub fn thread_history(case: &Case, ticket: &mut Ticket) {
    let (ev, at, queue) = (&case.ev, &case.at, &case.queue);
    let mailbox = &case.inc.mailbox.address;
    let joined = ev.plan.ticket.is_some();
    let event = |what| Event {
        at: at.clone(),
        what,
    };
    if ev.plan.reopens.is_some() {
        ticket.history.push(event(EventKind::Reopened));
    }
    if ev.plan.follow_up() {
        ticket.followups += 1;
        ticket.history.push(event(EventKind::FollowUp {
            number: ticket.followups,
            mailbox: mailbox.clone(),
            subject: ev.mail.subject.clone(),
        }));
    } else {
        ticket.history.push(event(EventKind::Arrived {
            mailbox: mailbox.clone(),
            message_id: ev.mail.message_id.clone(),
            subject: ev.mail.subject.clone(),
        }));
    }
    let went = match &case.why {
        Why::Handover { from, .. } => Some(EventKind::HandedOver {
            from: from.clone(),
            to: queue.clone(),
        }),
        Why::Bounced { between, .. } => Some(EventKind::Bounced {
            between: between.clone(),
            to: queue.clone(),
        }),
        _ if case.forward => Some(EventKind::Forwarded {
            queue: queue.clone(),
            why: case.reason(&ticket.language),
        }),
        _ if !joined => Some(EventKind::Kept {
            queue: queue.clone(),
            why: case.reason(&ticket.language),
        }),
        _ => None,
    };
    if let Some(what) = went {
        ticket.history.push(event(what));
    }
    if ticket.queue != *queue {
        // A new owner: its own clock for reminders starts now.
        ticket.queue = queue.clone();
        ticket.owner_since = at.clone();
        ticket.reminded_at = None;
        ticket.escalated_at = None;
    }
    ticket.hops = ev.plan.hops.clone();
    if let Some(id) = &ev.mail.message_id {
        ticket.messages.push(id.clone());
    }
}

/// Staff mail in the thread: the promises it records, and whether it answers the
/// customer.
pub fn staff_mail(case: &Case, ticket: &mut Ticket) {
    let ev = &case.ev;
    if ev.plan.ticket.is_none() || ev.plan.from_customer {
        return;
    }
    let by = ev.mail.sender();
    for text in ev.mail.text.lines().filter_map(promise_in) {
        ticket.promises.push(Promise {
            at: case.at.clone(),
            by: by.clone(),
            text: text.to_string(),
        });
        ticket.history.push(Event {
            at: case.at.clone(),
            what: EventKind::Promised {
                by: by.clone(),
                text: text.to_string(),
            },
        });
    }
    if answers(&ev.mail, ticket) {
        ticket.answered_at = Some(case.at.clone());
        ticket.history.push(Event {
            at: case.at.clone(),
            what: EventKind::Answered { by },
        });
    }
}

/// Lines staff write to record a promise on a ticket ("Promise: payment moved to 1 Dec").
pub fn promise_in(line: &str) -> Option<&str> {
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
        for f in &plan.flags {
            if !ticket.flags.contains(f) {
                ticket.flags.push(f.clone());
            }
        }
        let reasons = plan
            .flags
            .iter()
            .map(|f| flag_reason(rules, f, &ticket.language))
            .collect();
        let to = plan.escalate_to.clone().unwrap_or_default();
        ticket.history.push(Event {
            at: case.at.clone(),
            what: EventKind::Flagged { reasons, to },
        });
    }
    if let Some(id) = &plan.incident {
        if ticket.incident.as_ref() != Some(id) {
            ticket.incident = Some(id.clone());
            ticket.history.push(Event {
                at: case.at.clone(),
                what: EventKind::Incident { id: id.clone() },
            });
        }
    }
}

/// The acknowledgement's line: sent (the first, or "added to your request"), or why not
/// when the reason is news to the reader of the history.
pub fn acknowledgement(case: &Case, ticket: &mut Ticket) {
    let at = case.at.clone();
    let plan = &case.ev.plan;
    let what = match (plan.ack_to.clone(), &plan.ack) {
        (Some(to), AckPlan::Added) => {
            ticket.added_ack_at = Some(at.clone());
            EventKind::AddedAck { to }
        }
        (Some(to), _) => {
            ticket.acknowledged = true;
            let queue = &case.rules.queues[&case.queue];
            EventKind::Acknowledged {
                to,
                queue: case.queue.clone(),
                response_time: words::duration(queue.response_time, &ticket.language),
            }
        }
        (None, _) => match plan.ack_reason() {
            Some(r) if !matches!(r, Suppression::FollowUp | Suppression::FromStaff) => {
                EventKind::NotAcknowledged {
                    reason: words::suppression(r, &ticket.language),
                }
            }
            _ => return,
        },
    };
    ticket.history.push(Event { at, what });
}
