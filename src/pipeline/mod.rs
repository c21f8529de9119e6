//! The pipeline: the stages of one message in order, readable top to bottom.
//!
//! parse -> find the thread -> classify -> decide -> apply the plan to the ticket ->
//! compose -> record
//!
//! [`explain`] runs the same stages without recording, so what an admin sees is what
//! the daemon does; [`triage`] records the outcome in one transaction. Neither talks to
//! a server: fetching is the source's job, sending the outbox sender's.
//!
//! This file reads as the flow; each step lives in its own file, in the order `triage`
//! calls them, so a step can be read and tested without the others: `thread` (finding
//! the ticket), `apply` (what the plan changes on it), `mails` (composing), `commit`
//! (recording), and `report` (what `explain` and `triage` tell, from one evaluation).

pub mod budget;
pub mod ruletest;

use std::time::SystemTime;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::classify::{classify, Classification};
use crate::config::{Mailbox, Rules};
use crate::decide::{decide, JoinedBy, Plan, Route, Why};
use crate::parse::{parse, Mail};
use crate::record::{Checkpoint, Store, StoreError};
use crate::when;
use crate::words;

mod apply;
mod commit;
mod mails;
mod report;
mod robot;
mod thread;
pub mod undelivered;

pub use budget::{Budget, OverBudget};
pub use commit::{quarantine, quarantine_unread};
pub use report::{AckReport, Action, PlannedMail, Report};
pub use thread::{normalised_subject, thread_view};

/// Why a message could not be triaged this time. A message that can never be triaged
/// (unreadable, or its mails cannot be composed) is no error: it is quarantined, and
/// the mailbox goes on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state could not be read or written: nothing of the message was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PipelineError {
    /// Temporary: the message stays above the checkpoint and is tried again after a
    /// backoff. Permanent: the state database needs an operator.
    pub fn is_temporary(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.is_temporary(),
        }
    }
}

/// One message as it reached a mailbox.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub mailbox: &'a Mailbox,
    pub raw: &'a [u8],
    /// Its place on the server (UIDVALIDITY, UID); `None` for files.
    pub source: Option<Checkpoint>,
    /// The folder it lies in on the server; `None` for files.
    pub folder: Option<&'a str>,
}

/// Parses a message, reading only the header of one over `company.max_message_size` or
/// of more than [`crate::parse::MAX_PARTS`] parts.
pub fn read_mail(rules: &Rules, raw: &[u8]) -> Result<Mail, crate::parse::ParseError> {
    if raw.len() > rules.company.max_message_size {
        crate::parse::parse_header_only(raw)
    } else if crate::parse::too_many_parts(raw) {
        let mut m = crate::parse::parse_header_only(raw)?;
        m.too_many_parts = true;
        Ok(m)
    } else {
        parse(raw)
    }
}

/// The key a message is known by: its Message-ID, or a digest of its bytes when it has
/// none (so the same file or the same server copy is still recognised).
pub fn message_key(mail: Option<&Mail>, raw: &[u8]) -> String {
    match mail.and_then(|m| m.message_id.clone()) {
        Some(id) => id,
        None => format!("sha256:{:x}", Sha256::digest(raw)),
    }
}

/// Parse, look up, classify, decide: everything but composing and recording.
pub struct Evaluation {
    pub mail: Mail,
    pub key: String,
    pub class: Classification,
    pub plan: Plan,
    pub joined_by: Option<JoinedBy>,
}

pub fn evaluate(
    rules: &Rules,
    store: Option<&Store>,
    mailbox: &Mailbox,
    mail: Mail,
    raw: &[u8],
    now: SystemTime,
) -> Result<Evaluation, StoreError> {
    let key = message_key(Some(&mail), raw);
    let thread = thread_view(rules, store, &mail, &key, now)?;
    // The daemon's own mail is not a request: it is not classified at all.
    let class = if crate::decide::is_own_mail(rules, &mail) {
        Classification {
            category: None,
            scores: Vec::new(),
            fired: Vec::new(),
            language: rules.company.default_language.clone(),
            flags: Vec::new(),
            incidents: Vec::new(),
        }
    } else {
        classify(rules, &mail)
    };
    let plan = decide(
        rules,
        mailbox,
        &mail,
        &class,
        &thread,
        OffsetDateTime::from(now),
    );
    let joined_by = thread.ticket.as_ref().map(|(_, j)| *j);
    Ok(Evaluation {
        mail,
        key,
        class,
        plan,
        joined_by,
    })
}

/// What the daemon would do with this message, with no side effect at all. With a
/// store, thread state is read (never written).
pub fn explain(
    rules: &Rules,
    store: Option<&Store>,
    mailbox: &Mailbox,
    raw: &[u8],
    now: SystemTime,
) -> Result<Report, StoreError> {
    let mail = match read_mail(rules, raw) {
        Ok(m) => m,
        Err(e) => {
            return Ok(report::quarantined(
                mailbox,
                format!("cannot be parsed: {e}"),
            ))
        }
    };
    let ev = evaluate(rules, store, mailbox, mail, raw, now)?;
    Ok(report::report(rules, mailbox, &ev, now))
}

/// Triage one message: decide, compose and record it in one transaction. The mails go
/// to the outbox; the sender delivers them after the batch is flushed.
pub fn triage(
    rules: &Rules,
    store: &Store,
    inc: Incoming<'_>,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    triage_within(rules, store, inc, &Budget::unlimited(), now)
}

/// [`triage`] within a CPU budget: a message past it after any stage is quarantined
/// with the reason before anything of it is recorded, and the mailbox goes on.
pub fn triage_within(
    rules: &Rules,
    store: &Store,
    inc: Incoming<'_>,
    budget: &Budget,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    let over = |e: OverBudget| quarantine_unread(store, inc, e.to_string(), now);
    let mail = match read_mail(rules, inc.raw) {
        Ok(m) => m,
        Err(e) => return quarantined(store, inc, format!("cannot be parsed: {e}"), now),
    };
    if let Err(e) = budget.check("parse") {
        return Ok(over(e)?);
    }
    let ev = evaluate(rules, Some(store), inc.mailbox, mail, inc.raw, now)?;
    if let Err(e) = budget.check("classify and decide") {
        return Ok(over(e)?);
    }
    let report = report::report(rules, inc.mailbox, &ev, now);
    if let Route::Record { .. } = ev.plan.route {
        return robot::in_thread(rules, store, inc, &ev, report, now);
    }
    let Some(case) = Case::routed(rules, inc, &ev, now) else {
        // Ignored or left in place: no ticket, only the index entry.
        return Ok(commit::untracked(store, inc, &ev, report, now)?);
    };
    let mut ticket = thread::open_or_join(store, &case)?;
    apply::thread_history(&case, &mut ticket);
    apply::staff_mail(&case, &mut ticket);
    apply::red_flags(&case, &mut ticket);
    apply::acknowledgement(&case, &mut ticket);
    let mails = match mails::compose(&case, &mut ticket) {
        Ok(mails) => mails,
        // A template or an address makes this message unusable as it is: it is kept
        // for an operator, and the mailbox goes on.
        Err(e) => return quarantined(store, inc, format!("cannot compose its mails: {e}"), now),
    };
    if let Err(e) = budget.check("compose") {
        return Ok(over(e)?);
    }
    Ok(commit::record(store, &case, ticket, mails, report)?)
}

fn quarantined(
    store: &Store,
    inc: Incoming<'_>,
    reason: String,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    Ok(quarantine(
        store,
        inc.mailbox,
        inc.raw,
        inc.source,
        reason,
        now,
    )?)
}

/// One routed message in triage (kept or forwarded to a queue): what every step after
/// the evaluation reads.
struct Case<'a> {
    rules: &'a Rules,
    inc: Incoming<'a>,
    ev: &'a Evaluation,
    /// The queue the message goes to, and why.
    queue: String,
    why: Why,
    forward: bool,
    /// When it is triaged (RFC 3339): the time of every line it adds to the history.
    at: String,
    now: SystemTime,
}

impl<'a> Case<'a> {
    /// The case of a kept or forwarded message; `None` for any other.
    fn routed(
        rules: &'a Rules,
        inc: Incoming<'a>,
        ev: &'a Evaluation,
        now: SystemTime,
    ) -> Option<Case<'a>> {
        let (Route::Forward { queue, why } | Route::Keep { queue, why }) = ev.plan.route.clone()
        else {
            return None;
        };
        Some(Case {
            forward: ev.plan.forwarded(),
            rules,
            inc,
            ev,
            queue,
            why,
            at: when::stamp(now),
            now,
        })
    }

    /// Why the message goes where it goes, in `lang`, for the note and the history.
    fn reason(&self, lang: &str) -> String {
        let queue = &self.rules.queues[&self.queue];
        let mailbox = &self.inc.mailbox.address;
        let mut why = words::why(&self.why, mailbox, queue.name_in(lang), lang);
        let others = crate::decide::also_sent_to(self.rules, &self.ev.mail, mailbox);
        let named = matches!(self.why, Why::AlreadyThere { .. });
        if !others.is_empty() && !named {
            why.push_str(&words::also_sent(&others, lang));
        }
        if self.ev.mail.too_many_parts {
            why.push_str(&words::too_many_parts(crate::parse::MAX_PARTS, lang));
        } else if self.ev.mail.oversized {
            let limit = self.rules.company.max_message_size;
            why.push_str(&words::oversized(self.ev.mail.size, limit, lang));
        }
        if !self.attach_whole() {
            let limit = self.rules.company.max_original_attached;
            let uid = self.inc.source.map(|c| (c.uid_validity, c.last_uid));
            let place = words::place(mailbox, self.inc.folder, uid, lang);
            why.push_str(&words::not_attached(
                self.inc.raw.len(),
                limit,
                &place,
                lang,
            ));
        }
        why
    }

    /// Whether the original is small enough to be attached whole
    /// (`company.max_original_attached`); otherwise only its header is.
    fn attach_whole(&self) -> bool {
        self.inc.raw.len() <= self.rules.company.max_original_attached
    }
}

/// A message a queue sent (its Sent folder): when it belongs to a ticket, the ticket
/// learns that the queue answered the customer and any promise it made. Nothing is
/// sent and nothing on the server changes. Returns the ticket it joined.
pub fn observe_sent(
    rules: &Rules,
    store: &Store,
    raw: &[u8],
    now: SystemTime,
) -> Result<Option<String>, StoreError> {
    let Ok(mail) = read_mail(rules, raw) else {
        return Ok(None);
    };
    let key = message_key(Some(&mail), raw);
    let view = thread_view(rules, Some(store), &mail, &key, now)?;
    let Some((t, _)) = view.ticket else {
        return Ok(None);
    };
    let Some(mut ticket) = store.ticket(&t.id)? else {
        return Ok(None);
    };
    let at = when::stamp(now);
    let by = mail
        .from
        .as_ref()
        .map(|a| a.address.clone())
        .unwrap_or_default();
    for text in apply::promises_in(&mail) {
        // The same Sent mail may be seen again (a resync): a promise is kept once.
        if !ticket.promises.iter().any(|p| p.text == text) {
            ticket.promise(&at, &by, text);
        }
    }
    if apply::answers(&mail, &ticket) {
        ticket.answered(&at, &by);
    }
    if let Some(says) = apply::waits_for_customer(&mail, &ticket) {
        ticket.waiting(&at, &by, &says);
    }
    if let Some(note) = crate::decide::resolution_in(&mail) {
        ticket.resolve(&at, &by, crate::ticket::ResolvedHow::Mail, note);
    }
    store.commit_ticket(&ticket, &[])?;
    Ok(Some(ticket.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{EventKind, MailKind};
    use mail_parser::MimeHeaders;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
        format!("From: {from}\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe website is down.\r\n").into_bytes()
    }

    /// Staff resolve ticket `id` by mail at `at`.
    fn resolved_by_staff(store: &Store, id: &str, at: &str) {
        let mut t = store.ticket(id).unwrap().unwrap();
        t.resolve(
            at,
            "anna@example.test",
            crate::ticket::ResolvedHow::Mail,
            "",
        );
        store.put_ticket(&t).unwrap();
    }

    /// Triage of `raw` as a file given to `mailbox` (no place on a server).
    fn triage_file(r: &Rules, store: &Store, mailbox: &str, raw: &[u8], now: SystemTime) -> Report {
        let inc = Incoming {
            mailbox: &r.mailboxes[mailbox],
            raw,
            source: None,
            folder: None,
        };
        triage(r, store, inc, now).unwrap()
    }

    #[test]
    fn explain_says_when_the_answer_to_a_new_request_is_due_on_the_queues_clock() {
        // Friday 17:00 in Moscow; support answers within 4 working hours, Mon-Fri 9-18.
        let r = crate::config::testing::shipped_with(
            "# business_hours = \"Mon-Fri 09:00-18:00 Europe/Moscow\"",
            "business_hours = \"Mon-Fri 09:00-18:00 Europe/Moscow\"",
        );
        let friday = crate::when::parse("2026-12-04T14:00:00Z").unwrap();
        let raw = mail("ivan@mail.example", "Site down", "due1@x");
        let report = explain(&r, None, &r.mailboxes["support"], &raw, friday.into()).unwrap();
        let due = report.answer_by.expect("a new request has a due time");
        // One hour on Friday, three on Monday from 09:00.
        assert_eq!(due.at, "2026-12-07T09:00:00Z");
        assert_eq!(due.words, "Monday 7 December, 12:00 (MSK)");
        assert_eq!(due.within, "4 hours");
        assert_eq!(due.hours, "Mon-Fri 09:00-18:00 Europe/Moscow");
        // Mail that opens no ticket has none.
        let own = "From: support@example.test\r\nTo: support@example.test\r\nSubject: x\r\nMessage-ID: <T-1.1.ack.0@mailtriage.example.test>\r\n\r\nx\r\n";
        let report = explain(
            &r,
            None,
            &r.mailboxes["support"],
            own.as_bytes(),
            friday.into(),
        )
        .unwrap();
        assert!(report.answer_by.is_none(), "{report:?}");
    }

    #[test]
    fn tags_as_people_and_systems_write_them() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = mail("ivan@mail.example", "Site down", "a1@x");
        let first = triage_file(&r, &store, "support", &raw, SystemTime::now());
        let t = first.ticket.unwrap();
        let n = t.trim_start_matches("T-");
        let joined = |from: &str, subject: String, id: &str| {
            let raw = mail(from, &subject, id);
            let m = parse(&raw).unwrap();
            thread_view(&r, Some(&store), &m, id, SystemTime::now())
                .unwrap()
                .ticket
                .map(|(t, j)| (t.id, j))
        };
        for s in [
            format!("Re: [#{t}] Site down"),
            format!("AW: [{t}] x"),
            format!("RE: #{t} x"),
            format!("[ t-{n} ] x"),
        ] {
            assert_eq!(
                joined("other@mail.example", s.clone(), "b@x"),
                Some((t.clone(), JoinedBy::SubjectTag)),
                "{s}"
            );
        }
        // A bare number-like tag is trusted only from the ticket's customer.
        assert_eq!(
            joined("ivan@mail.example", format!("about T{n}"), "c@x"),
            Some((t.clone(), JoinedBy::SubjectTag))
        );
        assert_eq!(
            joined("other@mail.example", format!("about T{n}"), "d@x"),
            None
        );
        // Same sender, same subject without any tag: joined within the window.
        assert_eq!(
            joined("ivan@mail.example", "RE: Fwd: site   DOWN".into(), "e@x"),
            Some((t.clone(), JoinedBy::SenderSubject))
        );
        assert_eq!(
            joined("other@mail.example", "Site down".into(), "f@x"),
            None
        );
    }

    #[test]
    fn a_reply_naming_a_ticket_of_a_lost_state_keeps_its_number() {
        let r = rules();
        let mb = &r.mailboxes["support"];
        let run = |store: &Store, subject: &str, id: &str| {
            let raw = mail("ivan@mail.example", subject, id);
            triage_file(&r, store, "support", &raw, SystemTime::now())
                .ticket
                .unwrap()
        };
        // A state that was never lost: an unknown tag is only text, the ticket is new.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(run(&store, "Re: [#T-1042] Site down", "a@x"), "T-1001");

        // A fresh state after a loss: the tag of a number the old state may have given
        // keeps it, once; the next reply joins it; a bare "T1043" or a number this state
        // could still give out does not.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.raise_ticket_numbers(500_000).unwrap();
        let raw = mail("ivan@mail.example", "Re: [#T-1042] Site down", "b@x");
        let shown = explain(&r, Some(&store), mb, &raw, SystemTime::now()).unwrap();
        assert_eq!(
            (shown.ticket.as_deref(), shown.new_ticket),
            (Some("T-1042"), true),
            "explain shows the number the daemon will keep"
        );
        assert_eq!(run(&store, "Re: [#T-1042] Site down", "b@x"), "T-1042");
        let t = store.ticket("T-1042").unwrap().unwrap();
        assert_eq!(t.history[0].what, EventKind::Reopened);
        assert!(crate::words::history_text(&r, &t.history[0], "en").contains("earlier history"));
        assert_eq!(run(&store, "Re: [#T-1042] still down", "c@x"), "T-1042");
        assert_eq!(run(&store, "about T1043", "d@x"), "T-500001");
        assert_eq!(run(&store, "Re: [#T-600000] x", "e@x"), "T-500002");
    }

    #[test]
    fn a_reply_after_the_reopen_window_opens_a_ticket_that_follows_the_old_one() {
        let r = rules(); // reopen_within 30d
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |s: &str| -> SystemTime { when::parse(s).unwrap().into() };
        let run = |raw: &[u8], now: &str| triage_file(&r, &store, "support", raw, at(now));
        let first = run(
            &mail("ivan@mail.example", "Site down", "a@x"),
            "2026-01-01T10:00:00Z",
        );
        let old = first.ticket.unwrap();
        resolved_by_staff(&store, &old, "2026-01-02T10:00:00Z");

        let late = mail(
            "ivan@mail.example",
            &format!("Re: [#{old}] Site down"),
            "b@x",
        );
        let rep = run(&late, "2026-02-15T10:00:00Z");
        let new = rep.ticket.clone().unwrap();
        assert_ne!(new, old);
        assert!(rep.new_ticket);
        let t = store.ticket(&new).unwrap().unwrap();
        let lines: Vec<String> = t
            .history
            .iter()
            .map(|e| crate::words::history_text(&r, e, "en"))
            .collect();
        assert_eq!(
            lines[0],
            format!("follows {old}, resolved on 2026-01-02 10:00 UTC: the customer wrote again after the reopen window")
        );
        assert!(
            store.ticket(&old).unwrap().unwrap().resolved.is_some(),
            "the old one stays resolved"
        );

        let soon = mail(
            "ivan@mail.example",
            &format!("Re: [#{new}] Site down"),
            "c@x",
        );
        let mut t = store.ticket(&new).unwrap().unwrap();
        t.resolve(
            "2026-02-16T10:00:00Z",
            "anna@example.test",
            crate::ticket::ResolvedHow::Mail,
            "",
        );
        store.put_ticket(&t).unwrap();
        let rep = run(&soon, "2026-02-20T10:00:00Z");
        assert_eq!(
            rep.ticket.as_deref(),
            Some(new.as_str()),
            "within the window: reopened"
        );
        let t = store.ticket(&new).unwrap().unwrap();
        assert!(t.is_open());
        assert_eq!(
            t.owner_since, "2026-02-20T10:00:00Z",
            "its clock starts again"
        );
    }

    #[test]
    fn a_reply_to_a_shelved_ticket_reopens_it_and_a_message_seen_again_is_known() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |s: &str| -> SystemTime { when::parse(s).unwrap().into() };
        let run = |raw: &[u8], now: &str| triage_file(&r, &store, "support", raw, at(now));
        let first = mail("ivan@mail.example", "Site down", "a@x");
        let old = run(&first, "2025-01-01T10:00:00Z").ticket.unwrap();
        resolved_by_staff(&store, &old, "2025-01-02T10:00:00Z");
        // The acknowledgement's Message-ID, which the customer's client will quote.
        let ack_id = store
            .outbox()
            .unwrap()
            .iter()
            .find_map(|(_, m)| {
                let p = mail_parser::MessageParser::default().parse(&m.raw)?;
                let to = p.to()?.first()?.address()?.to_string();
                (to == "ivan@mail.example").then(|| p.message_id().map(str::to_string))?
            })
            .expect("an acknowledgement");
        let swept = store
            .sweep(
                when::parse("2025-01-12T10:00:00Z").unwrap(),
                crate::runtime::retention::keep(&r.threading),
                100,
            )
            .unwrap();
        assert_eq!((swept.shelved, swept.tickets), (1, 0), "{swept:?}");
        assert_eq!(store.open_len(), 0);

        // The same message again (a resync): known, nothing new.
        let again = run(&first, "2025-01-13T10:00:00Z");
        assert_eq!(again.ticket.as_deref(), Some(old.as_str()), "{again:?}");
        assert_eq!(store.open_len(), 0, "{again:?}");

        // Within the reopen window, a reply to the acknowledgement reopens the ticket.
        let reply = format!(
            "From: ivan@mail.example\r\nTo: support@example.test\r\nSubject: Re: Site down\r\n\
             Message-ID: <c@x>\r\nIn-Reply-To: <{ack_id}>\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nIt is down again.\r\n"
        );
        let rep = run(reply.as_bytes(), "2025-01-20T10:00:00Z");
        assert_eq!(rep.ticket.as_deref(), Some(old.as_str()), "{rep:?}");
        let t = store.ticket(&old).unwrap().unwrap();
        assert!(t.resolved.is_none(), "reopened: {:?}", t.history);
        assert_eq!(store.open_len(), 1);
    }

    #[test]
    fn a_reply_to_a_ticket_retention_removed_opens_a_ticket_that_follows_it() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |s: &str| -> SystemTime { when::parse(s).unwrap().into() };
        let run = |raw: &[u8], now: &str| triage_file(&r, &store, "support", raw, at(now));
        let old = run(
            &mail("ivan@mail.example", "Site down", "a@x"),
            "2025-01-01T10:00:00Z",
        )
        .ticket
        .unwrap();
        resolved_by_staff(&store, &old, "2025-01-02T10:00:00Z");
        let swept = store
            .sweep(
                when::parse("2026-02-15T10:00:00Z").unwrap(),
                crate::runtime::retention::keep(&r.threading),
                100,
            )
            .unwrap();
        assert_eq!(swept.tickets, 1);
        assert!(store.ticket(&old).unwrap().is_none());

        let late = mail(
            "ivan@mail.example",
            &format!("Re: [#{old}] Site down"),
            "b@x",
        );
        let mb = &r.mailboxes["support"];
        let now = at("2026-02-15T10:00:00Z");
        let shown = explain(&r, Some(&store), mb, &late, now).unwrap();
        assert!(shown.new_ticket);
        assert_ne!(shown.ticket.as_deref(), Some(old.as_str()), "a new number");
        // It reaches billing@ this time: the forward to support carries the context note.
        let late = String::from_utf8(late)
            .unwrap()
            .replace("To: support@", "To: billing@")
            .into_bytes();
        let rep = triage_file(&r, &store, "billing", &late, now);
        assert_eq!(rep.action, "forward", "{rep:?}");
        let new = rep.ticket.clone().unwrap();
        assert_ne!(
            new, old,
            "never the old number again: it is not a lost state's"
        );
        let t = store.ticket(&new).unwrap().unwrap();
        assert_eq!(
            t.history[0].what,
            EventKind::FollowsRemoved {
                ticket: old.clone()
            }
        );
        let line = crate::words::history_text(&r, &t.history[0], "en");
        assert!(line.starts_with(&format!("follows {old}: ")), "{line}");
        assert!(line.contains("no longer keeps it"), "{line}");
        // The queue's forward carries the line, so staff know what the customer refers to.
        let out = store.outbox().unwrap();
        let fwd = out.iter().find_map(|(_, m)| {
            let parsed = mail_parser::MessageParser::default().parse(&m.raw)?;
            let text = parsed.body_text(0)?.into_owned();
            text.contains(&format!("follows {old}")).then_some(text)
        });
        assert!(
            fwd.is_some(),
            "the context note names the old ticket: {:?}",
            out.iter()
                .map(|(_, m)| String::from_utf8_lossy(&m.raw).into_owned())
                .collect::<Vec<_>>()
        );
        // A tag this state never gave out is only text.
        let stray = mail("olga@mail.example", "Re: [#T-9999] Login broken", "c@x");
        let t = store
            .ticket(&run(&stray, "2026-02-16T10:00:00Z").ticket.unwrap())
            .unwrap()
            .unwrap();
        assert!(
            !matches!(t.history[0].what, EventKind::FollowsRemoved { .. }),
            "{:?}",
            t.history[0]
        );
    }

    #[test]
    fn oversized_mail_is_forwarded_whole_on_its_headers_alone() {
        let r = crate::config::testing::shipped_with(
            "max_message_size = \"25MB\"",
            "max_message_size = \"2KB\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut raw = b"From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <big@x>\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        for _ in 0..200 {
            raw.extend_from_slice(b"please refund the invoice, please refund the invoice\r\n");
        }
        let rep = triage_file(&r, &store, "billing", &raw, SystemTime::now());
        assert_eq!(
            rep.category.as_deref(),
            Some("technical"),
            "the body's billing words were not read"
        );
        assert_eq!(rep.action, "forward");
        let out = store.outbox().unwrap();
        let fwd = mail_parser::MessageParser::default()
            .parse(&out[0].1.raw)
            .unwrap();
        assert!(fwd.body_text(0).unwrap().contains("over the limit"));
        assert_eq!(
            fwd.attachment(0).unwrap().message().unwrap().raw_message(),
            &raw[..]
        );
    }

    #[test]
    fn a_mail_of_too_many_parts_is_forwarded_on_its_headers_alone() {
        let r = crate::config::testing::shipped();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Each part costs the parser its structures: 2 million of them, in 20 MB, took
        // 380 MB.
        let mut raw = b"From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <parts@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n".to_vec();
        for _ in 0..=crate::parse::MAX_PARTS {
            raw.extend_from_slice(b"--B\r\n\r\nplease refund the invoice\r\n");
        }
        raw.extend_from_slice(b"--B--\r\n");
        let rep = triage_file(&r, &store, "billing", &raw, SystemTime::now());
        assert_eq!(
            rep.category.as_deref(),
            Some("technical"),
            "the parts were not read"
        );
        let out = store.outbox().unwrap();
        let fwd = mail_parser::MessageParser::default()
            .parse(&out[0].1.raw)
            .unwrap();
        let note = fwd.body_text(0).unwrap();
        assert!(note.contains("more than 10000 parts"), "{note}");
    }

    /// The parts of each mail in the outbox, by kind: (content type of the second part,
    /// its bytes, the note).
    fn second_parts(store: &Store) -> Vec<(MailKind, String, Vec<u8>, String)> {
        let parser = mail_parser::MessageParser::default();
        let mut out = Vec::new();
        for (_, m) in store.outbox().unwrap() {
            let parsed = parser.parse(&m.raw).unwrap();
            let Some(part) = parsed.parts.get(2) else {
                continue;
            };
            let ct = part.content_type().unwrap();
            let ct = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default());
            let bytes = match part.message() {
                Some(inner) => inner.raw_message().to_vec(),
                None => part.contents().to_vec(),
            };
            out.push((m.kind, ct, bytes, parsed.body_text(0).unwrap().into_owned()));
        }
        out
    }

    #[test]
    fn an_original_over_the_attachment_cap_goes_as_its_header_and_where_it_lies() {
        let r = crate::config::testing::shipped_with(
            "max_original_attached = \"10MB\"",
            "max_original_attached = \"4KB\"",
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut raw = b"From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <big@x>\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        raw.extend("The website is down again.\r\n".repeat(300).as_bytes());
        let cp = Checkpoint {
            uid_validity: 7,
            last_uid: 42,
        };
        let rep = triage(
            &r,
            &store,
            Incoming {
                mailbox: &r.mailboxes["billing"],
                raw: &raw,
                source: Some(cp),
                folder: Some("INBOX"),
            },
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(rep.action, "forward");
        let parts = second_parts(&store);
        let (_, ct, head, note) = &parts[0];
        assert_eq!(ct, "text/rfc822-headers");
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
        assert_eq!(
            &head[..],
            &raw[..end],
            "the whole header, nothing of the body"
        );
        assert!(
            note.contains("only its header is attached, and the whole message lies in billing@example.test, folder INBOX, UID 42 (UIDVALIDITY 7)"),
            "{note}"
        );
    }

    #[test]
    fn the_original_travels_once_with_the_forward_not_with_the_escalation_copy() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = b"From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <flag@x>\r\nContent-Type: text/plain\r\n\r\nThe website is down. This is the third time I write, I will call my lawyer.\r\n".to_vec();
        triage_file(&r, &store, "billing", &raw, SystemTime::now());
        let parts = second_parts(&store);
        let kinds: Vec<MailKind> = parts.iter().map(|p| p.0).collect();
        assert_eq!(kinds, vec![MailKind::Forward, MailKind::Escalation]);
        assert_eq!(parts[0].1, "message/rfc822");
        assert_eq!(parts[0].2, raw, "the forward carries the original whole");
        assert_eq!(parts[1].1, "text/rfc822-headers", "the copy its header");
        assert!(
            parts[1].3.contains("(the original is attached to the forward to Technical support; this copy carries only its header)"),
            "{}",
            parts[1].3
        );
    }

    #[test]
    fn the_customer_hears_from_the_mailbox_they_wrote_to_wherever_they_write_next() {
        let r = crate::config::testing::shipped_with(
            "[mailboxes.billing]\n",
            "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\ncompany_name = \"Acme\"\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = |s: &str| -> SystemTime { when::parse(s).unwrap().into() };
        let raw = b"From: ivan@mail.example\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <home-1@x>\r\nContent-Type: text/plain\r\n\r\nThe website is down.\r\n";
        let first = triage_file(&r, &store, "billing", raw, at("2026-01-01T10:00:00Z"));
        let ticket = first.ticket.unwrap();
        assert_eq!(store.ticket(&ticket).unwrap().unwrap().mailbox, "billing");
        // The customer's next message goes to sales@: it is still billing@ that answers.
        let raw = format!("From: ivan@mail.example\r\nTo: sales@example.test\r\nSubject: Re: [#{ticket}] Site is down\r\nMessage-ID: <home-2@x>\r\nContent-Type: text/plain\r\n\r\nStill down.\r\n");
        triage_file(
            &r,
            &store,
            "sales",
            raw.as_bytes(),
            at("2026-01-01T11:00:00Z"),
        );
        let out = store.outbox().unwrap();
        let kinds: Vec<MailKind> = out.iter().map(|(_, m)| m.kind).collect();
        let added = out
            .iter()
            .map(|(_, m)| m)
            .find(|m| m.kind == MailKind::Added)
            .unwrap_or_else(|| panic!("an 'added' mail among {kinds:?}"));
        let p = mail_parser::MessageParser::default()
            .parse(&added.raw)
            .unwrap();
        let from = p.from().unwrap().first().unwrap();
        assert_eq!(
            (from.name(), from.address()),
            (Some("Acme Billing"), Some("billing@example.test"))
        );
        assert_eq!(added.envelope_from.as_deref(), Some("billing@example.test"));
        assert_eq!(
            added.identity.as_deref(),
            Some("billing"),
            "billing's login"
        );
        let text = p.body_text(0).unwrap();
        assert!(
            text.contains("Acme") && !text.contains("Example Ltd"),
            "{text}"
        );
        // The forward of the follow-up is sales@'s mail: it reached sales@.
        let fwd = out
            .iter()
            .map(|(_, m)| m)
            .rfind(|m| m.kind == MailKind::Forward);
        assert_eq!(fwd.and_then(|m| m.identity.as_deref()), Some("sales"));
    }

    #[test]
    fn a_failing_disk_is_retried_and_a_damaged_state_is_not() {
        let io = std::io::Error::other("disk gone");
        let disk = PipelineError::Store(StoreError::Sled(sled::Error::Io(io)));
        assert!(disk.is_temporary());
        let damaged = PipelineError::Store(StoreError::Corrupt {
            what: "ticket T-1001".into(),
            err: "expected value".into(),
        });
        assert!(!damaged.is_temporary());
    }

    #[test]
    fn normalised_subjects() {
        assert_eq!(
            normalised_subject("Re: AW: [#T-1001] Site  Down"),
            "site down"
        );
        assert_eq!(normalised_subject("Ответ: Fwd: Счёт"), "счёт");
        assert_eq!(normalised_subject("[users] Re: digest"), "digest");
    }
}
