//! Follow-up: the clock side of a ticket. A queue promised an answer within its response
//! time; when none is seen in time ([`due`], pure), the queue gets a reminder, then the
//! escalation queue is told, and the customer gets one honest status mail per window.
//! Nothing goes out outside a queue's business hours. [`run_once`] composes and records
//! what is due (one transaction per ticket); the daemon calls it on a timer and wakes the
//! outbox sender.

use std::time::SystemTime;

use time::OffsetDateTime;

use crate::compose::{self, NoticeInput};
use crate::config::Rules;
use crate::pipeline::ticket_context;
use crate::record::{Event, EventKind, MailKind, Store, StoreError, Ticket};
use crate::when::{self, parse};
use crate::words;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Remind the owning queue that the customer waits.
    Reminder,
    /// Tell the escalation queue.
    Escalate,
    /// Tell the customer the ticket is still being handled.
    Status,
}

/// What is due for a ticket at `now`.
pub fn due(rules: &Rules, t: &Ticket, now: OffsetDateTime) -> Vec<Due> {
    let Some(queue) = rules.queues.get(&t.queue) else {
        return Vec::new();
    };
    let Some(since) = parse(&t.owner_since).or_else(|| parse(&t.created)) else {
        return Vec::new();
    };
    // An answer after the queue got the ticket settles it.
    if t.answered_at
        .as_deref()
        .and_then(parse)
        .is_some_and(|a| a >= since)
    {
        return Vec::new();
    }
    let promised = time::Duration::try_from(queue.response_time).unwrap_or(time::Duration::HOUR);
    if now < since + promised {
        return Vec::new();
    }
    if queue
        .business_hours
        .as_ref()
        .is_some_and(|b| !b.open_at(now))
    {
        return Vec::new();
    }
    let mut v = Vec::new();
    if t.reminded_at.is_none() {
        v.push(Due::Reminder);
    }
    let escalation = rules.escalation.as_ref().filter(|e| e.queue != t.queue);
    if escalation.is_some() && t.escalated_at.is_none() && now >= since + promised * 2 {
        v.push(Due::Escalate);
    }
    // The customer hears once the ticket is escalated, then at most once per window.
    let escalated = t.escalated_at.is_some() || v.contains(&Due::Escalate) || escalation.is_none();
    let window =
        time::Duration::try_from(rules.threading.status_window).unwrap_or(time::Duration::DAY);
    let status_due = t
        .status_sent_at
        .as_deref()
        .and_then(parse)
        .is_none_or(|s| now - s >= window);
    if t.acknowledged
        && escalated
        && now >= since + promised * 2
        && status_due
        && !t.customer.is_empty()
    {
        v.push(Due::Status);
    }
    v
}

/// Composes and records everything due now; returns how many mails were queued.
pub fn run_once(rules: &Rules, store: &Store, now: SystemTime) -> Result<usize, StoreError> {
    let at_dt = OffsetDateTime::from(now);
    let at = when::stamp_at(at_dt);
    let mut queued = 0;
    for mut t in store.tickets()? {
        let due = due(rules, &t, at_dt);
        if due.is_empty() {
            continue;
        }
        let lang = t.language.clone();
        let Some(queue) = rules.queues.get(&t.queue).cloned() else {
            continue;
        };
        let since = parse(&t.owner_since).unwrap_or(at_dt);
        let overdue = (at_dt
            - (since + time::Duration::try_from(queue.response_time).unwrap_or_default()))
        .max(time::Duration::ZERO);
        let escalation = rules
            .escalation
            .as_ref()
            .and_then(|e| rules.queues.get(&e.queue));
        let mut outgoing = Vec::new();
        for d in &due {
            match d {
                Due::Reminder => {
                    t.reminded_at = Some(at.clone());
                    t.history.push(Event {
                        at: at.clone(),
                        what: EventKind::Reminded {
                            queue: t.queue.clone(),
                        },
                    });
                }
                Due::Escalate => {
                    t.escalated_at = Some(at.clone());
                    let to = rules
                        .escalation
                        .as_ref()
                        .map(|e| e.queue.clone())
                        .unwrap_or_default();
                    t.history.push(Event {
                        at: at.clone(),
                        what: EventKind::Escalated { to },
                    });
                }
                Due::Status => {
                    t.status_sent_at = Some(at.clone());
                    t.history.push(Event {
                        at: at.clone(),
                        what: EventKind::StatusSent {
                            to: t.customer.clone(),
                        },
                    });
                }
            }
        }
        let mut ctx = ticket_context(rules, &t, &lang);
        ctx.overdue = words::duration(overdue.try_into().unwrap_or_default(), &lang);
        ctx.received = when::human(&t.created);
        let id_domain = format!("mailtriage.{}", rules.company.domain);
        let thread = t.messages.first().cloned();
        let company_from = rules.company.ack_from.clone();
        let mut mails = Vec::new();
        for d in &due {
            let (which, kind, to, envelope) = match d {
                Due::Reminder => (
                    "reminder",
                    MailKind::Reminder,
                    queue.address.clone(),
                    Some(queue.address.clone()),
                ),
                Due::Escalate => match escalation {
                    Some(e) => (
                        "reminder",
                        MailKind::Reminder,
                        e.address.clone(),
                        Some(queue.address.clone()),
                    ),
                    None => continue,
                },
                Due::Status => ("status", MailKind::Status, t.customer.clone(), None),
            };
            mails.push((which, kind, to, envelope));
        }
        for (which, kind, to, envelope) in mails {
            t.sent += 1;
            let id = format!("{}.{}.{which}@{id_domain}", t.id, t.sent);
            match compose::notice(
                rules,
                NoticeInput {
                    which,
                    kind,
                    from: &company_from,
                    to: &to,
                    envelope_from: envelope.as_deref(),
                    lang: &lang,
                    ctx: &ctx,
                    thread: thread.as_deref(),
                    message_id: &id,
                    now,
                },
            ) {
                Ok(m) => outgoing.push(m),
                Err(e) => {
                    tracing::error!(ticket = %t.id, error = %e, "Follow-up mail cannot be composed; the ticket is marked as done for it.")
                }
            }
        }
        queued += outgoing.len();
        store.commit_ticket(&t, &outgoing)?;
        tracing::info!(ticket = %t.id, due = ?due, mails = outgoing.len(), "Follow-up due.");
    }
    if queued > 0 {
        store.flush()?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn ticket(created: &str) -> Ticket {
        let mut t = Ticket::new(
            "T-1001".into(),
            "c@example.com".into(),
            "Site down".into(),
            "support".into(),
            "en".into(),
            created.into(),
        );
        t.acknowledged = true;
        t.hops = vec!["support".into()];
        t.messages = vec!["m1@example.com".into()];
        t.sent = 2;
        t
    }

    fn t(s: &str) -> OffsetDateTime {
        parse(s).unwrap()
    }

    #[test]
    fn reminder_then_escalation_and_status() {
        let r = rules(); // support answers within 4h
        let mut tk = ticket("2026-11-23T08:00:00Z");
        assert!(due(&r, &tk, t("2026-11-23T11:59:00Z")).is_empty());
        assert_eq!(due(&r, &tk, t("2026-11-23T12:01:00Z")), vec![Due::Reminder]);
        tk.reminded_at = Some("2026-11-23T12:01:00Z".into());
        assert!(due(&r, &tk, t("2026-11-23T15:00:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, t("2026-11-23T16:01:00Z")),
            vec![Due::Escalate, Due::Status]
        );
        tk.escalated_at = Some("2026-11-23T16:01:00Z".into());
        tk.status_sent_at = Some("2026-11-23T16:01:00Z".into());
        assert!(due(&r, &tk, t("2026-11-23T20:00:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, t("2026-11-24T16:02:00Z")),
            vec![Due::Status],
            "one status mail per window"
        );
    }

    #[test]
    fn an_answer_settles_it() {
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.answered_at = Some("2026-11-23T09:00:00Z".into());
        assert!(due(&r, &tk, t("2026-11-24T08:00:00Z")).is_empty());
    }

    #[test]
    fn nothing_outside_business_hours() {
        let r = crate::config::testing::shipped_with(
            "response_time = \"4h\"",
            "response_time = \"4h\"\nbusiness_hours = \"Mon-Fri 09:00-18:00 +00:00\"",
        );
        let tk = ticket("2026-11-23T16:00:00Z"); // Monday
        assert!(
            due(&r, &tk, t("2026-11-23T21:00:00Z")).is_empty(),
            "evening"
        );
        assert_eq!(
            due(&r, &tk, t("2026-11-24T09:00:00Z")).first(),
            Some(&Due::Reminder)
        );
    }

    #[test]
    fn run_once_queues_and_records() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tk = ticket("2026-11-23T08:00:00Z");
        store.commit_ticket(&tk, &[]).unwrap();
        let now: SystemTime = t("2026-11-23T12:30:00Z").into();
        assert_eq!(run_once(&r, &store, now).unwrap(), 1);
        assert_eq!(
            run_once(&r, &store, now).unwrap(),
            0,
            "a reminder goes once"
        );
        let out = store.outbox().unwrap();
        assert_eq!(out[0].1.to, vec!["support@example.test".to_string()]);
        let text = String::from_utf8_lossy(&out[0].1.raw).into_owned();
        assert!(text.contains("T-1001"), "{text}");
        let tk = store.ticket("T-1001").unwrap().unwrap();
        assert!(tk.reminded_at.is_some());
    }
}
