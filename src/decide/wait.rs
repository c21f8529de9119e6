//! A ticket's wait: since when the customer has been waiting for the queue that owns the
//! ticket, and when the answer is due on that queue's working-time clock. Read from the
//! ticket alone, so the acknowledgement's promise, `explain` and the follow-up check
//! agree. The clock runs from when the queue got the ticket; staff's answer or a
//! question to the customer (a `Waiting:` line) stops it, and the customer's next
//! message starts it again with the whole response time.

use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::{Queue, Rules};
use crate::ticket::{EventKind, Ticket};
use crate::when::parse;

/// Since when the customer waits for the owning queue; `None` while the clock is
/// stopped (staff answered, or wait for the customer, and the customer has not
/// written since).
pub fn waiting_since(t: &Ticket) -> Option<OffsetDateTime> {
    let owner = parse(&t.owner_since).or_else(|| parse(&t.created))?;
    // Only what happened while this queue owns the ticket: an answer by the queue
    // before a handover does not answer for the new owner.
    let at = |e: &crate::ticket::Event| parse(&e.at).unwrap_or(owner);
    let stop = t
        .history
        .iter()
        .rposition(|e| stops_the_clock(&e.what) && at(e) >= owner);
    match stop {
        None => Some(owner),
        // History is in the order things happened: the first message of the customer's
        // side after the stop restarts the clock.
        Some(i) => t.history[i + 1..]
            .iter()
            .find(|e| matches!(e.what, EventKind::FollowUp { .. }))
            .map(|e| at(e).max(owner)),
    }
}

fn stops_the_clock(what: &EventKind) -> bool {
    matches!(what, EventKind::Answered { .. } | EventKind::Waiting { .. })
}

/// When the owning queue's answer is due: its response time in working time after the
/// customer began to wait. `None` while the clock is stopped or for an unknown queue.
pub fn answer_due(rules: &Rules, t: &Ticket) -> Option<OffsetDateTime> {
    let queue = rules.queues.get(&t.queue)?;
    queue.calendar.add(waiting_since(t)?, queue.response_time)
}

/// When the `n`th response time of the wait has run out (1: the reminder, 2: the
/// escalation), put off by the ticket's share of the reminder spread so that the
/// tickets that started waiting together (the weekend's, when Monday opens) are not all
/// reminded in the same minute.
pub fn reminder_due(rules: &Rules, t: &Ticket, n: u32) -> Option<OffsetDateTime> {
    let queue = rules.queues.get(&t.queue)?;
    let since = waiting_since(t)?;
    let work = queue.response_time * n + spread(&t.id, spread_window(rules, queue));
    queue.calendar.add(since, work)
}

/// [`reminder_due`] as a daemon up since `up` sees it: a moment that passed while the
/// daemon was stopped is taken again from `up` (in working time) with the ticket's share
/// of the spread, so that the reminders and escalations a stop held back do not all go
/// out in the first minute after it.
pub fn reminder_due_since(
    rules: &Rules,
    t: &Ticket,
    n: u32,
    up: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let due = reminder_due(rules, t, n)?;
    if due >= up {
        return Some(due);
    }
    let queue = rules.queues.get(&t.queue)?;
    Some(
        queue
            .calendar
            .add(up, spread(&t.id, spread_window(rules, queue)))?
            .max(due),
    )
}

/// `threading.reminder_spread`, but at most a quarter of the queue's response time: a
/// reminder is not put off by more than the promise is worth.
pub fn spread_window(rules: &Rules, queue: &Queue) -> Duration {
    rules.threading.reminder_spread.min(queue.response_time / 4)
}

/// Working time the answer is overdue at `now` (zero before it is due).
pub fn overdue(queue: &Queue, t: &Ticket, now: OffsetDateTime) -> Duration {
    waiting_since(t)
        .and_then(|s| queue.calendar.add(s, queue.response_time))
        .map(|due| queue.calendar.between(due, now))
        .unwrap_or_default()
}

/// The ticket's place in `window`, the same at every check and after a restart.
pub fn spread(ticket: &str, window: Duration) -> Duration {
    let secs = window.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(ticket.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    Duration::from_secs(n % secs)
}

/// A ticket of the support queue whose first message arrived at `created`, as tests of
/// the clock start from.
#[cfg(test)]
pub(crate) fn test_ticket(created: &str) -> Ticket {
    let mut tk = Ticket::new(
        "T-1001".into(),
        "c@example.com".into(),
        "Site down".into(),
        "support".into(),
        "en".into(),
        created.into(),
    );
    tk.record(
        created,
        EventKind::Arrived {
            mailbox: "support@example.test".into(),
            message_id: None,
            subject: "Site down".into(),
            from: None,
        },
    );
    tk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        parse(s).unwrap()
    }

    #[test]
    fn an_answer_stops_the_clock_and_the_customers_reply_restarts_it() {
        let mut tk = test_ticket("2026-11-23T08:00:00Z");
        assert_eq!(waiting_since(&tk), Some(t("2026-11-23T08:00:00Z")));
        tk.answered("2026-11-23T09:00:00Z", "anna@example.test");
        assert_eq!(waiting_since(&tk), None);
        tk.follow_up("2026-11-23T10:00:00Z", "support@example.test", "Re", None);
        assert_eq!(waiting_since(&tk), Some(t("2026-11-23T10:00:00Z")));
        // A second message before the next answer does not move the clock on.
        tk.follow_up("2026-11-23T11:00:00Z", "support@example.test", "Re", None);
        assert_eq!(waiting_since(&tk), Some(t("2026-11-23T10:00:00Z")));
    }

    #[test]
    fn waiting_for_the_customer_pauses_until_they_write() {
        let mut tk = test_ticket("2026-11-23T08:00:00Z");
        tk.waiting("2026-11-23T09:00:00Z", "anna@example.test", "Waiting: logs");
        assert_eq!(waiting_since(&tk), None);
        tk.follow_up("2026-11-24T10:00:00Z", "support@example.test", "logs", None);
        assert_eq!(waiting_since(&tk), Some(t("2026-11-24T10:00:00Z")));
    }

    #[test]
    fn an_answer_before_a_handover_does_not_answer_for_the_new_owner() {
        let mut tk = test_ticket("2026-11-23T08:00:00Z");
        tk.answered("2026-11-23T09:00:00Z", "sales@example.test");
        tk.owned_by("billing", "2026-11-23T10:00:00Z");
        assert_eq!(waiting_since(&tk), Some(t("2026-11-23T10:00:00Z")));
    }

    #[test]
    fn the_spread_is_the_tickets_own_and_within_the_window() {
        let w = Duration::from_secs(1800);
        let all: Vec<_> = (1000..1100).map(|n| spread(&format!("T-{n}"), w)).collect();
        assert!(all.iter().all(|d| *d < w));
        assert_eq!(spread("T-1001", w), spread("T-1001", w));
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
        assert_eq!(spread("T-1001", Duration::ZERO), Duration::ZERO);
    }
}
