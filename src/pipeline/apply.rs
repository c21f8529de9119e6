//! The plan applied to the ticket: the history lines this message adds, its owner and
//! hops, what staff mail in the thread records, red flags and incidents, and the
//! acknowledgement's line. Pure: the store is read before and written after.

use crate::compose::flag_reason;
use crate::decide::{copied_people, AckPlan, Role, Suppression, Why};
use crate::parse::Mail;
use crate::ticket::{EventKind, ResolvedHow, Ticket, Writer};
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
    if let Some(f) = &plan.lifecycle.follows {
        let ticket_id = f.ticket.clone();
        let line = match f.resolved_at.clone() {
            Some(resolved_at) => EventKind::Follows {
                ticket: ticket_id,
                resolved_at,
            },
            None => EventKind::FollowsRemoved { ticket: ticket_id },
        };
        ticket.record(at, line);
    }
    if plan.lifecycle.reopens {
        ticket.reopen(at, &writer_of(case));
    }
    let writer = plan.who.as_ref().map(Writer::from);
    if plan.follow_up() {
        ticket.follow_up(at, mailbox, &mail.subject, writer);
    } else {
        let message_id = mail.message_id.clone();
        let (mailbox, subject) = (mailbox.clone(), mail.subject.clone());
        let arrived = EventKind::Arrived {
            mailbox,
            message_id,
            subject,
            from: writer,
        };
        ticket.record(at, arrived);
    }
    if let (Some(named), Some(who)) = (&plan.names, &plan.who) {
        let (ticket_id, by) = (named.clone(), who.address.clone());
        ticket.record(
            at,
            EventKind::Names {
                ticket: ticket_id,
                by,
            },
        );
    }
    if plan.who.as_ref().is_some_and(|w| w.role == Role::Customer) {
        // The people the customer writes to are on their side from now on.
        ticket.add_customer_side(copied_people(case.rules, mail));
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
    if let Some(says) = waits_for_customer(mail, ticket) {
        ticket.waiting(&case.at, &by, &says);
    }
    if let Some(note) = &plan.lifecycle.resolves {
        ticket.resolve(&case.at, &by, ResolvedHow::Mail, note);
    }
}

/// Who wrote the message, as the history names them.
fn writer_of(case: &Case) -> String {
    match &case.ev.plan.who {
        Some(w) => w.address.clone(),
        None => case.ev.mail.sender(),
    }
}

/// At most this much of the line that says staff wait for the customer is kept.
const MAX_WAITING_LINE: usize = 200;

/// The line of staff's own text that says they wait for the customer: a `Waiting:`
/// (`Ожидаем:`) line in any staff mail of the thread, or, in a mail to the customer, a
/// question (a line ending in "?"; quoted text is not the mail's own and is left out).
pub fn waits_for_customer(mail: &Mail, ticket: &Ticket) -> Option<String> {
    let lines = || mail.text.lines().map(str::trim);
    let marked = lines().find(|l| {
        let lower = l.to_lowercase();
        ["waiting:", "ожидаем:"]
            .iter()
            .any(|p| lower.starts_with(p))
    });
    let asked = || {
        answers(mail, ticket)
            .then(|| lines().find(|l| l.ends_with('?')))
            .flatten()
    };
    let line = marked.or_else(asked)?;
    Some(line.chars().take(MAX_WAITING_LINE).collect())
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::config::Rules;
    use crate::decide::{decide, JoinedBy, ThreadView, TicketRef};
    use crate::pipeline::{Case, Evaluation, Incoming};

    fn evaluation(rules: &Rules, mailbox: &str, raw: &str, thread: &ThreadView) -> Evaluation {
        let mail = crate::parse::parse(raw.as_bytes()).unwrap();
        let class = crate::classify::classify(rules, &mail);
        let now = time::OffsetDateTime::now_utc();
        let plan = decide(rules, &rules.mailboxes[mailbox], &mail, &class, thread, now);
        Evaluation {
            key: mail.message_id.clone().unwrap_or_default(),
            joined_by: thread.ticket.as_ref().map(|(_, j)| *j),
            mail,
            class,
            plan,
        }
    }

    /// Runs one step for `raw` reaching billing, on a ticket of Ivan's owned by billing.
    fn at_billing(r: &Rules, raw: &str, thread: &ThreadView, step: Step) -> Ticket {
        let ev = evaluation(r, "billing", raw, thread);
        let inc = Incoming {
            mailbox: &r.mailboxes["billing"],
            raw: raw.as_bytes(),
            source: None,
            folder: None,
        };
        let case = Case::routed(r, inc, &ev, SystemTime::now()).unwrap();
        let mut t = crate::ticket::ivans_refund();
        step(&case, &mut t);
        t
    }

    type Step = fn(&Case, &mut Ticket);

    /// A thread on Ivan's billing ticket, joined by References.
    fn ivans_thread() -> ThreadView {
        ThreadView {
            ticket: Some((
                TicketRef {
                    id: "T-1001".into(),
                    queue: "billing".into(),
                    customer: "ivan@mail.example".into(),
                    hops: vec!["billing".into()],
                    ..Default::default()
                },
                JoinedBy::References,
            )),
            ..Default::default()
        }
    }

    fn waiting_line(t: &Ticket) -> Option<String> {
        t.history.iter().find_map(|e| match &e.what {
            EventKind::Waiting { says, .. } => Some(says.clone()),
            _ => None,
        })
    }

    #[test]
    fn staff_who_ask_the_customer_or_write_waiting_wait_for_the_customer() {
        let r = crate::config::testing::shipped();
        let head = "From: anna@example.test\r\nCc: billing@example.test\r\nSubject: Re: [#T-1001] Refund\r\nMessage-ID: <s2@example.test>\r\n";
        let ask = format!("{head}To: ivan@mail.example\r\n\r\nHello.\r\nWhich invoice number was it?\r\n\r\n> Can you refund?\r\n");
        let t = at_billing(&r, &ask, &ivans_thread(), staff_mail);
        assert_eq!(
            waiting_line(&t).as_deref(),
            Some("Which invoice number was it?")
        );
        // A note among staff that says so, not to the customer: waiting all the same.
        let note = format!(
            "{head}To: billing@example.test\r\n\r\nОжидаем: выписку из банка от клиента\r\n"
        );
        let t = at_billing(&r, &note, &ivans_thread(), staff_mail);
        assert_eq!(
            waiting_line(&t).as_deref(),
            Some("Ожидаем: выписку из банка от клиента")
        );
        // A question among staff only is not one to the customer.
        let internal = format!("{head}To: billing@example.test\r\n\r\nWho takes this one?\r\n");
        let t = at_billing(&r, &internal, &ivans_thread(), staff_mail);
        assert_eq!(waiting_line(&t), None);
    }

    #[test]
    fn a_staff_reply_records_its_promises_and_that_the_customer_was_answered() {
        let r = crate::config::testing::shipped();
        let raw = "From: anna@example.test\r\nTo: ivan@mail.example\r\nCc: billing@example.test\r\nSubject: Re: [#T-1001] Refund\r\nMessage-ID: <s1@example.test>\r\n\r\nHello.\r\nPromise: refund by Friday\r\n";
        let t = at_billing(&r, raw, &ivans_thread(), staff_mail);
        assert_eq!(t.promises[0].text, "refund by Friday");
        assert_eq!(t.promises[0].by, "anna@example.test");
        assert!(t.answered_at.is_some());
        assert!(
            !t.history
                .iter()
                .any(|e| matches!(e.what, EventKind::Waiting { .. })),
            "no question, no waiting"
        );
        assert_eq!(
            t.history.last().map(|e| &e.what),
            Some(&EventKind::Answered {
                by: "anna@example.test".into()
            })
        );
    }

    #[test]
    fn a_request_forwarded_away_says_where_it_went_and_why() {
        let r = crate::config::testing::shipped();
        let raw = "From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <m1@mail.example>\r\n\r\nerror 500\r\n";
        let t = at_billing(&r, raw, &ThreadView::default(), thread_history);
        let lines: Vec<String> = t
            .history
            .iter()
            .map(|e| words::history_text(&r, e, "en"))
            .collect();
        assert_eq!(
            lines[0],
            "message arrived at billing@example.test: \"Site is down\" (from ivan@mail.example, customer)"
        );
        assert!(
            lines[1].starts_with(
                "forwarded to Technical support: the rules recognised a technical request"
            ),
            "{lines:?}"
        );
        assert_eq!(
            (t.queue.as_str(), t.hops.join(" ")),
            ("support", "billing support".into())
        );
        assert_eq!(t.messages, vec!["m1@mail.example".to_string()]);
    }
}
