//! Follow-up: the clock side of a ticket. A queue promised an answer within its response
//! time; when none is seen in time ([`due`], pure), the queue gets a reminder, then the
//! escalation queue is told, and the customer gets one honest status mail per window
//! unless staff already answered them.
//! Times are counted on the queue's working-time clock (`crate::clock`), and nothing
//! goes out outside its business hours. [`run_once`] composes and records
//! what is due (one transaction per ticket); the daemon calls it on a timer and wakes the
//! outbox sender.

use std::time::SystemTime;

use time::OffsetDateTime;

use crate::compose::ticket_context;
use crate::compose::{self, NoticeInput};
use crate::config::TemplateContext;
use crate::config::{Queue, Rules};
use crate::decide;
use crate::decide::wait;
use crate::record::{Store, StoreError};
use crate::runtime::runner::Shared;
use crate::ticket::{MailKind, OutMail, ResolvedHow, Ticket};
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

/// What is due for a ticket at `now`, on the owning queue's working-time clock: the
/// reminder once the response time has run out since the customer began to wait, the
/// escalation and the status mail after twice that (each put off by the ticket's share
/// of the reminder spread), and only in working time. What fell due before the daemon
/// was up (`up`) is spread again from then ([`wait::reminder_due_since`]).
pub fn due(rules: &Rules, t: &Ticket, up: OffsetDateTime, now: OffsetDateTime) -> Vec<Due> {
    let Some(queue) = rules.queues.get(&t.queue) else {
        return Vec::new();
    };
    // No wait, no clock: staff answered or wait for the customer.
    let Some(since) = wait::waiting_since(t) else {
        return Vec::new();
    };
    if wait::reminder_due_since(rules, t, 1, up).is_none_or(|at| now < at)
        || !queue.calendar.open_at(now)
    {
        return Vec::new();
    }
    // What was done for an earlier wait (before the customer wrote again) is done again.
    let done = |at: &Option<String>| at.as_deref().and_then(parse).is_some_and(|a| a >= since);
    let late = wait::reminder_due_since(rules, t, 2, up).is_some_and(|at| now >= at);
    let mut v = Vec::new();
    if !done(&t.reminded_at) {
        v.push(Due::Reminder);
    }
    let escalation = rules.escalation.as_ref().filter(|e| e.queue != t.queue);
    if escalation.is_some() && !done(&t.escalated_at) && late {
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
    let status_mails = t
        .history
        .iter()
        .filter(|e| matches!(e.what, crate::ticket::EventKind::StatusSent { .. }))
        .count();
    let more_allowed = status_mails < rules.threading.max_status_mails as usize;
    // A customer who had an answer from staff is never told "still being handled".
    if t.acknowledged
        && more_allowed
        && t.answered_at.is_none()
        && escalated
        && late
        && status_due
        && !t.customer.is_empty()
    {
        v.push(Due::Status);
    }
    v
}

/// Composes and records everything due now for the open tickets (read through their
/// index: a resolved ticket is never looked at), and resolves those answered and left
/// quiet; returns how many mails were queued. `up`: since when the daemon runs. Reads
/// every open ticket: the clock keeps [`Looks`] between scans and calls [`run_with`].
pub fn run_once(
    rules: &Rules,
    store: &Store,
    up: SystemTime,
    now: SystemTime,
) -> Result<usize, StoreError> {
    run_with(rules, store, &mut Looks::default(), up, now)
}

/// What the clock remembers between two scans: for each open ticket, the version of
/// its record when last read and the first moment anything can be due for it
/// ([`next_look`]); with the rules version they were computed under. A ticket whose
/// record has not changed and whose moment has not come is not read again: decoding
/// the open tickets is nearly all of a scan's time, and most of them wait for a
/// moment hours away. Its size follows the open tickets. Tickets are known by a digest
/// of their id: one table, no string per ticket left among the freed records of the
/// scan that read them (which would keep those pages from going back to the system).
/// Two ids that shared a digest would only make one of them read again: the version
/// must match too.
#[derive(Debug, Default)]
pub struct Looks {
    rules: String,
    at: std::collections::HashMap<u64, (u64, Option<OffsetDateTime>)>,
    read: usize,
}

fn id_digest(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

impl Looks {
    /// How many ticket records the last scan read.
    pub fn read(&self) -> usize {
        self.read
    }
}

/// [`run_once`], with what the last scans saw.
pub fn run_with(
    rules: &Rules,
    store: &Store,
    looks: &mut Looks,
    up: SystemTime,
    now: SystemTime,
) -> Result<usize, StoreError> {
    if looks.rules != rules.version {
        // Response times, calendars or the quiet resolution may have changed.
        looks.at.clear();
        looks.rules = rules.version.clone();
    }
    let at = OffsetDateTime::from(now);
    let (mut queued, mut resolved) = (0, 0);
    // The table is made before any record is read: grown during the scan, it would
    // land among the records' freed memory and keep those pages from the system.
    looks
        .at
        .reserve(store.open_len().saturating_sub(looks.at.len()));
    let mut seen = std::collections::HashSet::new();
    let unchanged = |id: &str, version: u64| {
        let id = id_digest(id);
        seen.insert(id);
        looks
            .at
            .get(&id)
            .is_some_and(|(v, next)| *v == version && next.is_none_or(|n| at < n))
    };
    let changed = store.open_tickets_but(unchanged)?;
    // Tickets no longer open are forgotten.
    looks.at.retain(|id, _| seen.contains(id));
    looks.read = changed.len();
    let up_at = OffsetDateTime::from(up);
    for stored in changed {
        let (t, version) = (stored.decode()?, stored.version);
        let key = id_digest(&t.id);
        looks.at.remove(&key);
        let next = next_look(rules, &t, up_at);
        if next.is_none_or(|n| at < n) {
            // Nothing can be due yet: remembered, not read again until then.
            looks.at.insert(key, (version, next));
            continue;
        }
        let Some(t) = resolve_quiet(rules, store, t, now)? else {
            resolved += 1;
            continue;
        };
        queued += follow_up(rules, store, t, up, now)?;
    }
    if queued + resolved > 0 {
        store.flush()?;
    }
    Ok(queued)
}

/// The first moment anything can be due for `t` as it stands (a reminder, an
/// escalation, a status mail, or its quiet resolution); `None` when nothing ever can
/// be until it changes. Before that moment [`due`] is empty and the ticket is not quiet
/// long enough: no reminder is due before the first one ([`wait::reminder_due_since`]
/// with 1), and the escalation and status mails come after it.
pub fn next_look(rules: &Rules, t: &Ticket, up: OffsetDateTime) -> Option<OffsetDateTime> {
    let reminder = rules
        .queues
        .get(&t.queue)
        .and_then(|_| wait::waiting_since(t))
        .and_then(|_| wait::reminder_due_since(rules, t, 1, up));
    let quiet = decide::quiet_resolution_at(rules, t);
    match (reminder, quiet) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resolves `t` when staff answered and the customer has been quiet since for
/// `threading.resolve_after`; gives it back when it stays open.
fn resolve_quiet(
    rules: &Rules,
    store: &Store,
    mut t: Ticket,
    now: SystemTime,
) -> Result<Option<Ticket>, StoreError> {
    if !decide::quiet_resolution_due(rules, &t, OffsetDateTime::from(now)) {
        return Ok(Some(t));
    }
    t.resolve(&when::stamp(now), "mailtriage", ResolvedHow::Quiet, "");
    store.put_ticket(&t)?;
    tracing::info!(ticket = %t.id, "Ticket resolved: no reply from the customer after the answer.");
    Ok(None)
}

/// One ticket: what is due goes into its history and its mails into the outbox, in one
/// transaction; returns how many mails were queued.
fn follow_up(
    rules: &Rules,
    store: &Store,
    mut t: Ticket,
    up: SystemTime,
    now: SystemTime,
) -> Result<usize, StoreError> {
    let at = OffsetDateTime::from(now);
    let mut due = due(rules, &t, OffsetDateTime::from(up), at);
    // A status mail counts against the caps on mail to customers, like an
    // acknowledgement: a forged customer must not make the daemon write for ever.
    let caps = decide::cap_keys(&t.customer, at);
    if due.contains(&Due::Status)
        && decide::over_cap(rules, decide::counts(&store.counted(&caps)?)).is_some()
    {
        due.retain(|d| *d != Due::Status);
    }
    if due.is_empty() {
        return Ok(0);
    }
    let Some(queue) = rules.queues.get(&t.queue).cloned() else {
        return Ok(0);
    };
    record_due(rules, &mut t, &due, &when::stamp_at(at));
    let ctx = notice_context(rules, &t, &queue, at);
    let notices = notices(rules, &t, &queue, &due);
    let outgoing = compose_notices(rules, &mut t, notices, &ctx, now);
    store.commit_ticket(&t, &outgoing)?;
    if outgoing.iter().any(|m| m.kind == MailKind::Status) {
        store.count(&caps)?;
    }
    tracing::info!(ticket = %t.id, due = ?due, mails = outgoing.len(), "Follow-up due.");
    Ok(outgoing.len())
}

/// Notes in the ticket what is due now, so that it is due once.
fn record_due(rules: &Rules, t: &mut Ticket, due: &[Due], at: &str) {
    for d in due {
        match d {
            Due::Reminder => t.reminded(at),
            Due::Escalate => {
                let to = rules.escalation.as_ref().map(|e| e.queue.clone());
                t.escalated(at, to.unwrap_or_default());
            }
            Due::Status => t.status_sent(at),
        }
    }
}

/// The templates' view of the ticket, with how long the queue is overdue.
fn notice_context(rules: &Rules, t: &Ticket, queue: &Queue, at: OffsetDateTime) -> TemplateContext {
    let overdue = wait::overdue(queue, t, at);
    let mut ctx = ticket_context(rules, t, &t.language);
    ctx.overdue = words::duration(overdue, &t.language);
    ctx.received = when::human(&t.created);
    ctx
}

/// One follow-up mail to write: its template, kind, recipient, senders and the SMTP
/// login that sends it.
struct Notice {
    which: &'static str,
    kind: MailKind,
    from: String,
    to: String,
    envelope_from: Option<String>,
    identity: Option<String>,
}

/// The mails what is due asks for: the reminder to the queue, the escalation to the
/// escalation queue (as a reminder sent from the queue), the status to the customer.
fn notices(rules: &Rules, t: &Ticket, queue: &Queue, due: &[Due]) -> Vec<Notice> {
    let escalation = rules
        .escalation
        .as_ref()
        .and_then(|e| rules.queues.get(&e.queue));
    // Staff hear from the company's sender through `[smtp]`: a queue's address as the
    // envelope sender would not pass a mailbox login that may send only as itself.
    let reminder = |to: &str| Notice {
        which: "reminder",
        kind: MailKind::Reminder,
        from: rules.company.ack_from.clone(),
        to: to.to_string(),
        envelope_from: Some(queue.address.clone()),
        identity: None,
    };
    // The customer hears from the address they wrote to, through its own login.
    let home = compose::home_mailbox(rules, t);
    let ack_from = rules.ack_from(home.map_or("", |m| m.key.as_str()));
    due.iter()
        .filter_map(|d| match d {
            Due::Reminder => Some(reminder(&queue.address)),
            Due::Escalate => escalation.map(|e| reminder(&e.address)),
            Due::Status => Some(Notice {
                which: "status",
                kind: MailKind::Status,
                from: ack_from.to_string(),
                to: t.customer.clone(),
                // As the acknowledgement: a bounce comes back and finds the ticket.
                envelope_from: Some(compose::from_address(ack_from)),
                identity: home.map(|m| m.key.clone()),
            }),
        })
        .collect()
}

/// Composes the notices; one that cannot be composed is logged and left out.
fn compose_notices(
    rules: &Rules,
    t: &mut Ticket,
    notices: Vec<Notice>,
    ctx: &TemplateContext,
    now: SystemTime,
) -> Vec<OutMail> {
    let id_domain = format!("mailtriage.{}", rules.company.domain);
    let thread = t.messages.first().cloned();
    let mut outgoing = Vec::new();
    for n in notices {
        let id = t.next_mail_id(n.which, &id_domain);
        let input = NoticeInput {
            which: n.which,
            kind: n.kind,
            from: &n.from,
            to: &n.to,
            envelope_from: n.envelope_from.as_deref(),
            identity: n.identity.as_deref(),
            lang: &t.language,
            ctx,
            thread: thread.as_deref(),
            message_id: &id,
            now,
        };
        match compose::notice(rules, input) {
            Ok(m) => outgoing.push(m),
            Err(e) => {
                tracing::error!(ticket = %t.id, error = %e, "Follow-up mail cannot be composed; the ticket is marked as done for it.")
            }
        }
    }
    outgoing
}

/// The follow-up clock: checks open tickets every `threading.followup_check` and wakes
/// the sender when mails were queued.
pub async fn clock(shared: Shared) {
    /// A scan that decoded this many tickets gives the memory back afterwards.
    const GIVE_BACK_AFTER_READING: usize = 64;
    // The clock starts with the daemon: what fell due before is a stop's backlog.
    let up = super::now::now();
    let mut looks = Looks::default();
    loop {
        let every = shared.rules.load().threading.followup_check;
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let rules = shared.rules.load_full();
        let store = shared.store.clone();
        let mut seen = std::mem::take(&mut looks);
        let r = tokio::task::spawn_blocking(move || {
            let r = run_with(&rules, &store, &mut seen, up, super::now::now());
            (seen, r)
        })
        .await;
        // After a failed or panicked scan `looks` stays empty: what was remembered may
        // not have been carried out, so the next scan reads every ticket.
        match r {
            Ok((seen, Ok(n))) => {
                // The first scan after a start, or after a reload, decoded every open
                // ticket: its memory need not stay the idle daemon's.
                if seen.read >= GIVE_BACK_AFTER_READING {
                    crate::memory::give_back();
                }
                looks = seen;
                if n > 0 {
                    shared.outbox.notify_one();
                }
            }
            Ok((_, Err(e))) => tracing::warn!(error = %e, "Follow-up check failed; will retry."),
            Err(e) => tracing::error!(error = %e, "Follow-up check panicked; will retry."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon up since long before any ticket: nothing is a stop's backlog.
    const UP: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    /// The shipped rules with no reminder spread: each reminder at its exact time.
    fn rules() -> Rules {
        crate::config::testing::shipped_with(
            "reminder_spread = \"30m\"",
            "reminder_spread = \"0s\"",
        )
    }

    /// Support answers within 4 working hours, Monday to Friday 09:00-18:00 in Moscow,
    /// with 31 December and 1 January off; reminders spread over `spread`.
    fn moscow(spread: &str) -> Rules {
        let text = crate::config::testing::shipped_text()
            .replacen(
                "response_time = \"4h\"",
                "response_time = \"4h\"\nbusiness_hours = \"Mon-Fri 09:00-18:00 Europe/Moscow\"",
                1,
            )
            .replacen(
                "holidays = []",
                "holidays = [\"2026-12-31\", \"2027-01-01\"]",
                1,
            )
            .replacen(
                "reminder_spread = \"30m\"",
                &format!("reminder_spread = \"{spread}\""),
                1,
            );
        Rules::parse(std::path::Path::new("rules.toml"), &text).unwrap()
    }

    fn ticket(created: &str) -> Ticket {
        let mut t = wait::test_ticket(created);
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
        assert!(due(&r, &tk, UP, t("2026-11-23T11:59:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-23T12:01:00Z")),
            vec![Due::Reminder]
        );
        tk.reminded_at = Some("2026-11-23T12:01:00Z".into());
        assert!(due(&r, &tk, UP, t("2026-11-23T15:00:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-23T16:01:00Z")),
            vec![Due::Escalate, Due::Status]
        );
        tk.escalated_at = Some("2026-11-23T16:01:00Z".into());
        tk.status_sent_at = Some("2026-11-23T16:01:00Z".into());
        assert!(due(&r, &tk, UP, t("2026-11-23T20:00:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-24T16:02:00Z")),
            vec![Due::Status],
            "one status mail per window"
        );
    }

    #[test]
    fn status_mails_stop_after_the_configured_number() {
        let r = rules(); // three at most
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.reminded_at = Some("2026-11-23T12:01:00Z".into());
        tk.escalated_at = Some("2026-11-23T16:01:00Z".into());
        for day in ["24", "25", "26"] {
            let at = format!("2026-11-{day}T16:02:00Z");
            assert_eq!(due(&r, &tk, UP, t(&at)), vec![Due::Status], "{day}");
            tk.status_sent(&at);
        }
        assert!(
            due(&r, &tk, UP, t("2026-11-27T16:02:00Z")).is_empty(),
            "no fourth"
        );
    }

    #[test]
    fn an_answer_settles_it() {
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.answered("2026-11-23T09:00:00Z", "anna@example.test");
        assert!(due(&r, &tk, UP, t("2026-11-24T08:00:00Z")).is_empty());
    }

    #[test]
    fn a_customer_who_had_an_answer_gets_no_status_mail() {
        // Answered by sales, then passed to support: support's clock runs, but the
        // customer already has an answer and must not get "sorry for the delay".
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.answered_at = Some("2026-11-23T09:00:00Z".into());
        tk.owner_since = "2026-11-23T10:00:00Z".into();
        tk.reminded_at = Some("2026-11-23T14:01:00Z".into());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-23T18:01:00Z")),
            vec![Due::Escalate],
            "the queue is still reminded and escalated"
        );
    }

    #[test]
    fn nothing_outside_business_hours() {
        let r = crate::config::testing::shipped_with(
            "response_time = \"4h\"",
            "response_time = \"4h\"\nbusiness_hours = \"Mon-Fri 09:00-18:00 +00:00\"",
        );
        let tk = ticket("2026-11-23T16:00:00Z"); // Monday
        assert!(
            due(&r, &tk, UP, t("2026-11-23T21:00:00Z")).is_empty(),
            "evening"
        );
        // Two working hours on Monday, two on Tuesday: not due when Tuesday opens (the
        // wall clock's four hours ran out on Monday night), but by 11:00 and its spread.
        assert!(due(&r, &tk, UP, t("2026-11-24T09:00:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-24T11:30:00Z")).first(),
            Some(&Due::Reminder)
        );
    }

    #[test]
    fn a_friday_evening_ticket_is_due_on_monday_in_working_time() {
        let r = moscow("0s");
        // Friday 27 November 2026, 17:00 in Moscow: one working hour on Friday, three on
        // Monday, so the reminder is due at Monday 12:00 (09:00 UTC).
        let tk = ticket("2026-11-27T14:00:00Z");
        for quiet in [
            "2026-11-27T18:01:00Z", // four wall-clock hours later: Friday night
            "2026-11-28T10:00:00Z", // Saturday
            "2026-11-30T08:59:00Z", // Monday 11:59
        ] {
            assert!(due(&r, &tk, UP, t(quiet)).is_empty(), "{quiet}");
        }
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-30T09:00:00Z")),
            vec![Due::Reminder]
        );
        // The escalation after eight working hours: Monday 16:00.
        let mut tk = tk;
        tk.reminded_at = Some("2026-11-30T09:00:00Z".into());
        assert!(due(&r, &tk, UP, t("2026-11-30T12:59:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-30T13:00:00Z")),
            vec![Due::Escalate, Due::Status]
        );
    }

    #[test]
    fn a_holiday_is_skipped() {
        let r = moscow("0s");
        // Wednesday 30 December, 16:00 in Moscow: two hours then, Thursday and Friday off,
        // the weekend, and two more hours on Monday 4 January: due at 11:00.
        let tk = ticket("2026-12-30T13:00:00Z");
        assert!(
            due(&r, &tk, UP, t("2026-12-31T08:00:00Z")).is_empty(),
            "holiday"
        );
        assert!(due(&r, &tk, UP, t("2027-01-04T07:59:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2027-01-04T08:00:00Z")),
            vec![Due::Reminder]
        );
    }

    #[test]
    fn the_customers_reply_after_an_answer_starts_the_clock_again() {
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.answered("2026-11-23T09:00:00Z", "anna@example.test");
        tk.reminded_at = None;
        assert!(
            due(&r, &tk, UP, t("2026-11-23T20:00:00Z")).is_empty(),
            "answered"
        );
        tk.follow_up(
            "2026-11-24T08:00:00Z",
            "support@example.test",
            "Re: Site down",
            None,
        );
        assert!(due(&r, &tk, UP, t("2026-11-24T11:59:00Z")).is_empty());
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-24T12:00:00Z")),
            vec![Due::Reminder]
        );
    }

    #[test]
    fn a_reminder_of_an_earlier_wait_does_not_count_for_the_next() {
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.reminded("2026-11-23T12:00:00Z");
        tk.answered("2026-11-23T13:00:00Z", "anna@example.test");
        tk.follow_up(
            "2026-11-24T08:00:00Z",
            "support@example.test",
            "Re: Site down",
            None,
        );
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-24T12:00:00Z")),
            vec![Due::Reminder]
        );
    }

    #[test]
    fn waiting_for_the_customer_stops_the_clock_until_they_write() {
        let r = rules();
        let mut tk = ticket("2026-11-23T08:00:00Z");
        // Staff noted they wait for logs, without writing to the customer.
        tk.waiting(
            "2026-11-23T09:00:00Z",
            "anna@example.test",
            "Waiting: the logs",
        );
        assert!(due(&r, &tk, UP, t("2026-11-25T08:00:00Z")).is_empty());
        tk.follow_up("2026-11-25T08:00:00Z", "support@example.test", "logs", None);
        assert_eq!(
            due(&r, &tk, UP, t("2026-11-25T12:00:00Z")),
            vec![Due::Reminder]
        );
    }

    #[test]
    fn tickets_due_together_are_reminded_spread_over_the_window() {
        let r = moscow("30m");
        // Thirty tickets of the weekend: each starts waiting on Monday at 09:00 and is
        // due at 13:00; their reminders fall between 13:00 and 13:30, not all at once.
        let at: Vec<OffsetDateTime> = (0..30)
            .map(|n| {
                let mut tk = ticket("2026-11-28T10:00:00Z");
                tk.id = format!("T-{}", 2000 + n);
                wait::reminder_due(&r, &tk, 1).unwrap()
            })
            .collect();
        let (first, last) = (t("2026-11-30T10:00:00Z"), t("2026-11-30T10:30:00Z"));
        assert!(at.iter().all(|a| *a >= first && *a < last), "{at:?}");
        let minutes: std::collections::BTreeSet<_> =
            at.iter().map(|a| (a.hour(), a.minute())).collect();
        assert!(minutes.len() >= 15, "{minutes:?}");
        // Each ticket is due when its own moment has come, not before.
        let mut tk = ticket("2026-11-28T10:00:00Z");
        tk.id = "T-2000".into();
        let own = at[0];
        assert!(due(&r, &tk, UP, own - time::Duration::MINUTE).is_empty());
        assert_eq!(due(&r, &tk, UP, own), vec![Due::Reminder]);
    }

    #[test]
    fn reminders_held_back_by_a_stop_are_spread_from_the_start_not_sent_at_once() {
        let r = moscow("30m");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Thirty tickets of the weekend fall due on Monday between 13:00 and 13:30 Moscow
        // time; the daemon was stopped then and starts again at 15:00.
        for n in 0..30 {
            let mut tk = ticket("2026-11-28T10:00:00Z");
            tk.id = format!("T-{}", 2000 + n);
            store.commit_ticket(&tk, &[]).unwrap();
        }
        let up: SystemTime = t("2026-11-30T12:00:00Z").into();
        let minute = |m: i64| -> SystemTime {
            (t("2026-11-30T12:00:00Z") + time::Duration::minutes(m)).into()
        };
        let mut sent = Vec::new();
        for m in 0..=31 {
            sent.push(run_once(&r, &store, up, minute(m)).unwrap());
        }
        assert_eq!(
            sent.iter().sum::<usize>(),
            30,
            "each reminded once: {sent:?}"
        );
        assert!(sent[0] <= 3, "not all at the start: {sent:?}");
        let minutes_with_mail = sent.iter().filter(|n| **n > 0).count();
        assert!(minutes_with_mail >= 15, "spread over the window: {sent:?}");
        // A daemon that was up all along reminds each at its own time, before 15:00.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tk = ticket("2026-11-28T10:00:00Z");
        tk.id = "T-2000".into();
        let own = wait::reminder_due(&r, &tk, 1).unwrap();
        assert!(own < t("2026-11-30T10:30:00Z"));
        store.commit_ticket(&tk, &[]).unwrap();
        let early: SystemTime = t("2026-11-28T10:00:00Z").into();
        assert_eq!(run_once(&r, &store, early, own.into()).unwrap(), 1);
    }

    #[test]
    fn the_clock_reads_again_only_the_tickets_that_changed_or_whose_moment_came() {
        let r = rules(); // support answers within 4h; answered tickets resolve after 14 days
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut waiting = ticket("2026-11-23T08:00:00Z");
        waiting.id = "T-2001".into();
        let mut answered = ticket("2026-11-23T08:00:00Z");
        answered.id = "T-2002".into();
        answered.answered("2026-11-23T09:00:00Z", "anna@example.test");
        let mut later = ticket("2026-11-23T10:00:00Z");
        later.id = "T-2003".into();
        for tk in [&waiting, &answered, &later] {
            store.commit_ticket(tk, &[]).unwrap();
        }
        let up: SystemTime = t("2026-11-23T07:00:00Z").into();
        let mut looks = Looks::default();
        let mut scan = |at: &str| -> (usize, usize) {
            let sent = run_with(&r, &store, &mut looks, up, t(at).into()).unwrap();
            (sent, looks.read())
        };
        assert_eq!(
            scan("2026-11-23T10:30:00Z"),
            (0, 3),
            "the first scan reads all"
        );
        assert_eq!(
            scan("2026-11-23T10:31:00Z"),
            (0, 0),
            "nothing changed, nothing due"
        );
        // Staff answers the later one: only its record is read again.
        later.answered("2026-11-23T10:40:00Z", "anna@example.test");
        store.commit_ticket(&later, &[]).unwrap();
        assert_eq!(scan("2026-11-23T10:45:00Z"), (0, 1));
        assert_eq!(scan("2026-11-23T11:59:00Z"), (0, 0));
        // The waiting one's moment comes: read, and reminded once.
        assert_eq!(scan("2026-11-23T12:01:00Z"), (1, 1));
        assert_eq!(scan("2026-11-23T12:02:00Z").0, 0, "reminded once");
        // Escalation and status mail come on the same clock, as without memory.
        let (sent, _) = scan("2026-11-23T16:01:00Z");
        assert_eq!(sent, 2, "escalation and status mail");
        // New rules: everything is read again under them.
        let mut reloaded = rules();
        reloaded.version = "edited".into();
        let sent = run_with(
            &reloaded,
            &store,
            &mut looks,
            up,
            t("2026-11-23T16:05:00Z").into(),
        );
        assert_eq!((sent.unwrap(), looks.read()), (0, 3));
        // The answered ones resolve themselves after 14 days, read when that comes.
        let resolve = run_with(
            &reloaded,
            &store,
            &mut looks,
            up,
            t("2026-12-07T09:01:00Z").into(),
        );
        resolve.unwrap();
        assert!(store.ticket("T-2002").unwrap().unwrap().resolved.is_some());
        assert!(store.ticket("T-2003").unwrap().unwrap().resolved.is_none());
        run_with(
            &reloaded,
            &store,
            &mut looks,
            up,
            t("2026-12-07T10:41:00Z").into(),
        )
        .unwrap();
        assert!(store.ticket("T-2003").unwrap().unwrap().resolved.is_some());
    }

    #[test]
    fn a_resolved_ticket_gets_no_reminder_and_an_answered_quiet_one_resolves_itself() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut done = ticket("2026-11-23T08:00:00Z");
        done.resolve(
            "2026-11-23T09:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        store.commit_ticket(&done, &[]).unwrap();
        let mut quiet = ticket("2026-11-01T08:00:00Z");
        quiet.id = "T-1002".into();
        quiet.answered("2026-11-02T08:00:00Z", "anna@example.test");
        store.commit_ticket(&quiet, &[]).unwrap();
        assert_eq!(store.open_len(), 1, "only the open one is in the index");
        let now: SystemTime = t("2026-11-24T12:30:00Z").into();
        assert_eq!(
            run_once(&r, &store, SystemTime::UNIX_EPOCH, now).unwrap(),
            0,
            "no reminder"
        );
        assert!(store.outbox().unwrap().is_empty());
        let quiet = store.ticket("T-1002").unwrap().unwrap();
        assert_eq!(
            quiet.resolved.as_ref().map(|r| r.how),
            Some(ResolvedHow::Quiet)
        );
        assert_eq!(store.open_len(), 0);
        let line = crate::words::history_text(&r, quiet.history.last().unwrap(), "en");
        assert!(line.starts_with("resolved automatically"), "{line}");
    }

    #[test]
    fn run_once_queues_and_records() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tk = ticket("2026-11-23T08:00:00Z");
        store.commit_ticket(&tk, &[]).unwrap();
        let now: SystemTime = t("2026-11-23T12:30:00Z").into();
        assert_eq!(
            run_once(&r, &store, SystemTime::UNIX_EPOCH, now).unwrap(),
            1
        );
        assert_eq!(
            run_once(&r, &store, SystemTime::UNIX_EPOCH, now).unwrap(),
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

    /// One queued follow-up mail as its recipient and the SMTP server see it.
    struct Queued {
        kind: MailKind,
        /// "Name <address>".
        from: String,
        envelope: Option<String>,
        identity: Option<String>,
        text: String,
    }

    /// The mails `run_once` queues for `tk` once its reminder, escalation and status
    /// mail are all due.
    fn follow_up_mails(r: &Rules, tk: &Ticket) -> Vec<Queued> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.commit_ticket(tk, &[]).unwrap();
        let now: SystemTime = t("2026-11-23T16:01:00Z").into();
        assert_eq!(run_once(r, &store, SystemTime::UNIX_EPOCH, now).unwrap(), 3);
        let out = store.outbox().unwrap();
        out.into_iter()
            .map(|(_, m)| {
                let p = mail_parser::MessageParser::default().parse(&m.raw).unwrap();
                let from = p.from().unwrap().first().unwrap();
                let from = format!(
                    "{} <{}>",
                    from.name().unwrap_or_default(),
                    from.address().unwrap()
                );
                Queued {
                    kind: m.kind,
                    from,
                    envelope: m.envelope_from,
                    identity: m.identity,
                    text: p.body_text(0).unwrap().into_owned(),
                }
            })
            .collect()
    }

    #[test]
    fn the_status_mail_comes_from_the_mailbox_the_customer_wrote_to() {
        let text = crate::config::testing::shipped_text()
            .replacen("reminder_spread = \"30m\"", "reminder_spread = \"0s\"", 1)
            .replacen(
                "[mailboxes.billing]\n",
                "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\ncompany_name = \"Acme\"\n",
                1,
            );
        let r = Rules::parse(std::path::Path::new("rules.toml"), &text).unwrap();
        let status = |tk: &Ticket| {
            let mails = follow_up_mails(&r, tk);
            for m in mails.iter().filter(|m| m.kind == MailKind::Reminder) {
                // Staff hear from the company's sender, through [smtp].
                assert!(m.from.contains("<support@example.test>"), "{}", m.from);
                assert_eq!(m.identity, None);
            }
            let s = mails.into_iter().find(|m| m.kind == MailKind::Status);
            let s = s.expect("a status mail");
            (s.from, s.envelope, s.identity, s.text)
        };

        // Opened by a message to billing@ (the ticket says so), whoever owns it now.
        let mut tk = ticket("2026-11-23T08:00:00Z");
        tk.mailbox = "billing".into();
        let (from, envelope, identity, text) = status(&tk);
        assert!(
            from.contains("Acme Billing <billing@example.test>"),
            "{from}"
        );
        assert_eq!(envelope.as_deref(), Some("billing@example.test"));
        assert_eq!(identity.as_deref(), Some("billing"), "billing's login");
        assert!(
            text.contains("Acme") && !text.contains("Example Ltd"),
            "{text}"
        );

        // A ticket stored before the mailbox was kept: the mailbox of its first message.
        let mut old = ticket("2026-11-23T08:00:00Z");
        if let crate::ticket::EventKind::Arrived { mailbox, .. } = &mut old.history[0].what {
            *mailbox = "billing@example.test".into();
        }
        assert_eq!(old.mailbox, "");
        assert_eq!(status(&old).2.as_deref(), Some("billing"));

        // Support names no sender of its own: the company's, through support's login.
        let (from, envelope, identity, _) = status(&ticket("2026-11-23T08:00:00Z"));
        assert!(from.contains("<support@example.test>"), "{from}");
        assert_eq!(envelope.as_deref(), Some("support@example.test"));
        assert_eq!(identity.as_deref(), Some("support"));

        // A mailbox no longer watched: the company's sender through [smtp].
        let mut gone = ticket("2026-11-23T08:00:00Z");
        gone.mailbox = "closed".into();
        if let crate::ticket::EventKind::Arrived { mailbox, .. } = &mut gone.history[0].what {
            *mailbox = "closed@example.test".into();
        }
        let (from, _, identity, text) = status(&gone);
        assert!(from.contains("<support@example.test>"), "{from}");
        assert_eq!(identity, None);
        assert!(text.contains("Example Ltd"), "{text}");
    }
}
