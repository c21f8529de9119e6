//! The pipeline: the stages of one message in order, readable top to bottom.
//!
//! parse -> (thread lookup) -> classify -> decide -> compose -> record
//!
//! [`explain`] runs the same stages without recording, so what an admin sees is what
//! the daemon does; [`triage`] records the outcome in one transaction. Neither talks to
//! a server: fetching is the source's job, sending the outbox sender's.

pub mod ruletest;

use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::classify::{classify, Classification, Fired, Score};
use crate::compose::{
    self, AckInput, FlagLine, ForwardInput, HistoryLine, IncidentLine, PromiseLine, RuleLine,
    TemplateContext,
};
use crate::config::{Mailbox, Rules};
use crate::decide::{
    decide, AckPlan, JoinedBy, Plan, Route, Suppression, ThreadView, TicketRef, Why,
};
use crate::parse::{parse, Mail};
use crate::record::{
    Checkpoint, Committed, Event, EventKind, Mark, MessageRecord, Promise, Record, Store,
    StoreError, Ticket,
};
use crate::when;
use crate::words;

/// Keyword on every message the daemon has triaged; with the ticket's own keyword it
/// lets state be rebuilt from the server.
pub const KEYWORD_TRIAGED: &str = "$Triaged";
/// Registered IMAP keyword (RFC 5788); mail clients show it as "forwarded".
pub const KEYWORD_FORWARDED: &str = "$Forwarded";
/// Keyword on a message that could not be triaged and was left for an operator.
pub const KEYWORD_QUARANTINED: &str = "$Quarantined";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("composing the mails for this message: {0}")]
    Compose(#[from] compose::ComposeError),
}

/// One message as it reached a mailbox.
pub struct Incoming<'a> {
    pub mailbox: &'a Mailbox,
    pub raw: &'a [u8],
    /// Its place on the server (UIDVALIDITY, UID); `None` for files.
    pub source: Option<Checkpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AckReport {
    pub send: bool,
    pub to: Option<String>,
    /// Reason code when no acknowledgement is sent (e.g. "auto-submitted").
    pub suppressed: Option<&'static str>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedMail {
    pub kind: &'static str,
    pub to: Vec<String>,
    /// Known once the mail is composed (`triage`), not in `explain`.
    pub message_id: Option<String>,
}

/// What happened to one message (or, from `explain`, what would happen).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mailbox: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// "forward", "keep", "leave", "ignore", "quarantine" or "duplicate".
    pub action: &'static str,
    pub category: Option<String>,
    pub queue: Option<String>,
    pub queue_address: Option<String>,
    /// True when the request reached a mailbox that does not own it.
    pub misdirected: bool,
    pub reason: String,
    pub rules: Vec<Fired>,
    pub scores: Vec<Score>,
    pub language: Option<String>,
    pub ticket: Option<String>,
    pub new_ticket: bool,
    pub acknowledgement: AckReport,
    pub mails: Vec<PlannedMail>,
    /// How the message joined an existing ticket ("references", "subject-tag",
    /// "sender-subject"); `null` for a new request. A joined message is not classified.
    pub joined_by: Option<JoinedBy>,
    /// Red flags that fired, with the matched text.
    pub flags: Vec<Fired>,
    /// The active incident the message is linked to.
    pub incident: Option<String>,
}

/// Parses a message, reading only the header of one over `company.max_message_size`.
pub fn read_mail(rules: &Rules, raw: &[u8]) -> Result<Mail, crate::parse::ParseError> {
    if raw.len() > rules.company.max_message_size {
        crate::parse::parse_header_only(raw)
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

/// Subject without reply/forward prefixes, tags and case, for threading by subject.
pub fn normalised_subject(subject: &str) -> String {
    let mut s = subject.trim().to_lowercase();
    loop {
        let before = s.clone();
        for p in [
            "re:",
            "re :",
            "fw:",
            "fwd:",
            "aw:",
            "wg:",
            "sv:",
            "vs:",
            "ответ:",
            "отв:",
            "пересл:",
            "на:",
        ] {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest.trim_start().to_string();
            }
        }
        if s.starts_with('[') {
            if let Some(end) = s.find(']') {
                s = s[end + 1..].trim_start().to_string();
            }
        }
        if s == before {
            break;
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn subject_key(mail: &Mail) -> Option<String> {
    let sender = mail.sender();
    let subject = normalised_subject(&mail.subject);
    (!sender.is_empty() && !subject.is_empty()).then(|| format!("{sender}\0{subject}"))
}

fn ticket_ref(t: &Ticket) -> TicketRef {
    TicketRef {
        id: t.id.clone(),
        queue: t.queue.clone(),
        acknowledged: t.acknowledged,
        customer: t.customer.to_ascii_lowercase(),
        hops: t.hops.clone(),
        added_ack_at: t.added_ack_at.as_deref().and_then(when::parse),
    }
}

/// What the store knows about this message's thread: In-Reply-To/References first, then
/// the ticket tag in the subject, then same sender and subject within the window.
pub fn thread_view(
    rules: &Rules,
    store: Option<&Store>,
    mail: &Mail,
    key: &str,
    now: SystemTime,
) -> Result<ThreadView, StoreError> {
    let Some(store) = store else {
        return Ok(ThreadView::default());
    };
    let mut view = ThreadView::default();
    if let Some(rec) = store.message(key)? {
        if rec.disposition != "sent" {
            view.already_triaged = Some(rec.ticket.unwrap_or_default());
        }
    }
    let sender = mail.sender();
    let mut found: Option<(Ticket, JoinedBy)> = None;
    for id in mail.thread_ids() {
        if let Some(t) = store.message(id)?.and_then(|r| r.ticket) {
            if let Some(t) = store.ticket(&t)? {
                found = Some((t, JoinedBy::References));
                break;
            }
        }
    }
    let mut lost = None;
    if found.is_none() {
        for cap in rules.ticket_tag.captures_iter(&mail.subject) {
            let id = format!("{}-{}", rules.company.ticket_prefix, &cap[2]);
            // "[T-1042]" or "#T-1042" is a tag; a bare "T1042" could be anything, so
            // it is only trusted from the ticket's own customer.
            let tagged = !cap[1].is_empty();
            match store.ticket(&id)? {
                Some(t) if tagged || t.customer.eq_ignore_ascii_case(&sender) => {
                    found = Some((t, JoinedBy::SubjectTag));
                    break;
                }
                Some(_) => {}
                None if tagged && lost.is_none() => {
                    let n = cap[2].parse::<u64>().ok();
                    if n.map_or(Ok(false), |n| store.lost_ticket_number(n))? {
                        lost = Some(id);
                    }
                }
                None => {}
            }
        }
    }
    if found.is_none() {
        if let Some(k) = subject_key(mail) {
            if let Some(rec) = store.by_subject(&k)? {
                let window = time::Duration::try_from(rules.threading.subject_window)
                    .unwrap_or(time::Duration::WEEK);
                let recent =
                    when::parse(&rec.at).is_some_and(|at| OffsetDateTime::from(now) - at <= window);
                if recent {
                    if let Some(t) = store.ticket(&rec.ticket)? {
                        found = Some((t, JoinedBy::SenderSubject));
                    }
                }
            }
        }
    }
    if found.is_none() {
        view.reopens = lost;
    }
    view.ticket = found.map(|(t, j)| (ticket_ref(&t), j));
    if let Some(to) = mail.reply_address() {
        view.acks_to_sender_today = store.acks_on(to, &when::day(now))?;
    }
    Ok(view)
}

/// Parse, look up, classify, decide: everything but composing and recording.
pub struct Evaluation {
    pub mail: Mail,
    pub key: String,
    pub class: Classification,
    pub plan: Plan,
    pub joined_by: Option<JoinedBy>,
    /// The id a new ticket takes: one of a lost state, named by the subject's tag.
    pub reopens: Option<String>,
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
        reopens: thread.reopens,
    })
}

fn queue_name<'r>(rules: &'r Rules, queue: &'r str, lang: &str) -> &'r str {
    rules
        .queues
        .get(queue)
        .map(|q| q.name_in(lang))
        .unwrap_or(queue)
}

fn base_report(rules: &Rules, mailbox: &Mailbox, ev: &Evaluation) -> Report {
    let lang = &ev.class.language;
    let joined = ev.plan.ticket.is_some();
    let (action, reason) = match &ev.plan.route {
        Route::Forward { queue, why } => (
            "forward",
            words::why(why, &mailbox.address, queue_name(rules, queue, "en"), "en"),
        ),
        Route::Keep { queue, why } => (
            "keep",
            words::why(why, &mailbox.address, queue_name(rules, queue, "en"), "en"),
        ),
        Route::Leave { category } => (
            "leave",
            format!(
                "a {category} message, not a customer request: it stays in {}",
                mailbox.address
            ),
        ),
        Route::Ignore { why } => ("ignore", why.describe().to_string()),
    };
    let to = ev.mail.reply_address().map(str::to_string);
    let mut mails = Vec::new();
    if let Route::Forward { queue, .. } = &ev.plan.route {
        mails.push(PlannedMail {
            kind: "forward",
            to: rules
                .queues
                .get(queue)
                .map(|q| vec![q.address.clone()])
                .unwrap_or_default(),
            message_id: None,
        });
    }
    let escalation = rules
        .escalation
        .as_ref()
        .and_then(|e| rules.queues.get(&e.queue).map(|q| (e, q)));
    if let Some((e, q)) = escalation {
        let going_there =
            matches!(&ev.plan.route, Route::Forward { queue, .. } if *queue == e.queue);
        if !ev.plan.flags.is_empty()
            && !going_there
            && matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. })
        {
            mails.push(PlannedMail {
                kind: "escalation",
                to: vec![q.address.clone()],
                message_id: None,
            });
        }
    }
    if ev.plan.ack.is_yes() {
        mails.push(PlannedMail {
            kind: if ev.plan.ack == AckPlan::Added {
                "added"
            } else {
                "acknowledgement"
            },
            to: to.clone().into_iter().collect(),
            message_id: None,
        });
    }
    let (suppressed, ack_reason) = match &ev.plan.ack {
        AckPlan::Yes | AckPlan::Added => (None, None),
        AckPlan::No { reason } => (Some(reason.code()), Some(reason.describe().to_string())),
    };
    let queue = ev.plan.queue().map(str::to_string);
    Report {
        mailbox: mailbox.key.clone(),
        message_id: ev.mail.message_id.clone(),
        from: ev.mail.from.as_ref().map(|a| a.display()),
        subject: Some(ev.mail.subject.clone()),
        action,
        // A follow-up is not classified again: it goes where its ticket lives.
        category: if joined {
            None
        } else {
            ev.class.category.clone()
        },
        queue_address: queue
            .as_ref()
            .and_then(|q| rules.queues.get(q))
            .map(|q| q.address.clone()),
        queue,
        misdirected: ev.plan.forwarded(),
        reason,
        rules: if joined {
            Vec::new()
        } else {
            ev.class.fired.clone()
        },
        scores: if joined {
            Vec::new()
        } else {
            ev.class.scores.clone()
        },
        language: Some(lang.clone()),
        // A new ticket of a lost state keeps its number: `explain --state` shows it.
        ticket: ev.plan.ticket.clone().or_else(|| {
            matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. })
                .then(|| ev.reopens.clone())
                .flatten()
        }),
        new_ticket: ev.plan.ticket.is_none()
            && matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. }),
        acknowledgement: AckReport {
            send: ev.plan.ack.is_yes(),
            to: if ev.plan.ack.is_yes() { to } else { None },
            suppressed,
            reason: ack_reason,
        },
        mails,
        joined_by: ev.joined_by,
        flags: ev.class.flags.clone(),
        incident: ev.plan.incident.clone(),
    }
}

fn quarantine_report(mailbox: &Mailbox, reason: String) -> Report {
    Report {
        mailbox: mailbox.key.clone(),
        message_id: None,
        from: None,
        subject: None,
        action: "quarantine",
        category: None,
        queue: None,
        queue_address: None,
        misdirected: false,
        reason,
        rules: Vec::new(),
        scores: Vec::new(),
        language: None,
        ticket: None,
        new_ticket: false,
        acknowledgement: AckReport {
            send: false,
            to: None,
            suppressed: None,
            reason: Some("the message could not be read".into()),
        },
        mails: Vec::new(),
        joined_by: None,
        flags: Vec::new(),
        incident: None,
    }
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
        Err(e) => return Ok(quarantine_report(mailbox, format!("cannot be parsed: {e}"))),
    };
    let ev = evaluate(rules, store, mailbox, mail, raw, now)?;
    Ok(base_report(rules, mailbox, &ev))
}

/// Lines staff write to record a promise on a ticket ("Promise: payment moved to 1 Dec").
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

/// The template context of a ticket: everything that does not depend on one message.
/// Triage fills in the message's part; reminders and status mails use it as it is.
pub fn ticket_context(rules: &Rules, ticket: &Ticket, lang: &str) -> TemplateContext {
    let queue = rules.queues.get(&ticket.queue);
    let incident = ticket
        .incident
        .as_ref()
        .and_then(|id| rules.incidents.iter().find(|i| &i.id == id))
        .map(|i| IncidentLine {
            id: i.id.clone(),
            text: i.text_in(lang).to_string(),
            since: when::human_at(i.since),
            next_update: i.next_update.map(when::human_at).unwrap_or_default(),
        });
    TemplateContext {
        ticket: ticket.id.clone(),
        tag: format!("[#{}]", ticket.id),
        queue_name: queue_name(rules, &ticket.queue, lang).to_string(),
        queue_address: queue.map(|q| q.address.clone()).unwrap_or_default(),
        response_time: queue
            .map(|q| words::duration(q.response_time, lang))
            .unwrap_or_default(),
        mailbox: String::new(),
        mailbox_address: String::new(),
        category: String::new(),
        reason: String::new(),
        rules: Vec::new(),
        customer: ticket.customer.clone(),
        customer_name: ticket.customer_name.clone().unwrap_or_default(),
        subject: ticket.subject.clone(),
        received: when::human(&ticket.created),
        history: ticket
            .history
            .iter()
            .map(|e| HistoryLine {
                at: when::human(&e.at),
                text: history_text(rules, e, lang),
            })
            .collect(),
        acked: ticket.acknowledged,
        ack_reason: String::new(),
        forwarded: false,
        company: rules.company.name.clone(),
        follow_up: false,
        follow_up_number: ticket.followups,
        owner_since: when::human(&ticket.owner_since),
        bounced: String::new(),
        flags: ticket
            .flags
            .iter()
            .map(|f| FlagLine {
                name: f.clone(),
                reason: flag_reason(rules, f, lang),
                matched: String::new(),
            })
            .collect(),
        incident,
        promises: ticket
            .promises
            .iter()
            .map(|p| PromiseLine {
                at: when::human(&p.at),
                by: p.by.clone(),
                text: p.text.clone(),
            })
            .collect(),
        overdue: String::new(),
        escalated: ticket.escalated_at.is_some(),
        escalation_name: rules
            .escalation
            .as_ref()
            .map(|e| queue_name(rules, &e.queue, lang).to_string())
            .unwrap_or_default(),
    }
}

fn flag_reason(rules: &Rules, flag: &str, lang: &str) -> String {
    rules
        .flag_reasons
        .get(flag)
        .and_then(|r| r.get(lang).or_else(|| r.values().next()))
        .cloned()
        .unwrap_or_else(|| flag.to_string())
}

fn list_words(items: &[String], lang: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!(
            "{} {} {last}",
            rest.join(", "),
            if lang == "ru" { "и" } else { "and" }
        ),
    }
}

/// Triage one message: decide, compose and record it in one transaction. The mails go
/// to the outbox; the sender delivers them after the batch is flushed.
pub fn triage(
    rules: &Rules,
    store: &Store,
    inc: Incoming<'_>,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    let at = when::stamp(now);
    let mailbox = inc.mailbox;
    let mark = |keywords: Vec<&str>, move_to: Option<String>| {
        inc.source.map(|cp| Mark {
            mailbox: mailbox.key.clone(),
            uid_validity: cp.uid_validity,
            uid: cp.last_uid,
            keywords: keywords.into_iter().map(String::from).collect(),
            move_to,
        })
    };
    let simple = |key: String, disposition: &str, ticket: Option<String>| Record {
        key,
        mailbox: mailbox.key.clone(),
        source: inc.source,
        message: MessageRecord {
            ticket,
            mailbox: mailbox.key.clone(),
            disposition: disposition.into(),
            at: at.clone(),
            reason: None,
        },
        ticket: None,
        outgoing: Vec::new(),
        mark: None,
        ack_to: None,
        subject_key: None,
    };

    // parse
    let mail = match read_mail(rules, inc.raw) {
        Ok(m) => m,
        Err(e) => {
            return quarantine(
                store,
                mailbox,
                inc.raw,
                inc.source,
                format!("cannot be parsed: {e}"),
                now,
            )
            .map_err(Into::into)
        }
    };

    // look up, classify, decide
    let ev = evaluate(rules, Some(store), mailbox, mail, inc.raw, now)?;
    let mut report = base_report(rules, mailbox, &ev);

    let (queue_key, why, forward) = match &ev.plan.route {
        Route::Ignore { why } => {
            let disposition = if *why == Suppression::OwnMail {
                "ignored"
            } else {
                "duplicate"
            };
            store.commit(&simple(ev.key.clone(), disposition, ev.plan.ticket.clone()))?;
            if *why == Suppression::AlreadyTriaged {
                report.action = "duplicate";
            }
            return Ok(report);
        }
        Route::Leave { .. } => {
            store.commit(&simple(ev.key.clone(), "left", None))?;
            return Ok(report);
        }
        Route::Keep { queue, why } => (queue.clone(), why.clone(), false),
        Route::Forward { queue, why } => (queue.clone(), why.clone(), true),
    };
    let queue = rules
        .queues
        .get(&queue_key)
        .expect("decide only routes to declared queues");
    let sender = ev.mail.sender();

    // the ticket, opened or joined
    let joined = ev.plan.ticket.is_some();
    let mut ticket = match &ev.plan.ticket {
        Some(id) => store
            .ticket(id)?
            .expect("decide joins only tickets the store returned"),
        None => {
            let id = match &ev.reopens {
                Some(id) => id.clone(),
                None => format!(
                    "{}-{}",
                    rules.company.ticket_prefix,
                    store.next_ticket_number()?
                ),
            };
            let mut hops = Vec::new();
            // A request forwarded away from a mailbox has been at that mailbox's queue:
            // sending it back there later is a ping-pong.
            if let (true, Some(own)) = (forward, &mailbox.queue) {
                hops.push(own.clone());
            }
            let mut t = Ticket::new(
                id,
                sender.clone(),
                ev.mail.subject.clone(),
                queue_key.clone(),
                ev.class.language.clone(),
                at.clone(),
            );
            t.customer_name = ev.mail.from.as_ref().and_then(|a| a.name.clone());
            t.hops = hops;
            t
        }
    };
    let lang = ticket.language.clone();
    let qname = queue.name_in(&lang).to_string();
    let mut why_text = words::why(&why, &mailbox.address, &qname, &lang);
    if ev.mail.oversized {
        why_text.push_str(&words::oversized(
            ev.mail.size,
            rules.company.max_message_size,
            &lang,
        ));
    }

    // history
    let event = |what| Event {
        at: at.clone(),
        what,
    };
    if !joined && ev.reopens.is_some() {
        ticket.history.push(event(EventKind::Reopened));
    }
    let follow_up = joined && ev.plan.from_customer;
    if follow_up {
        ticket.followups += 1;
        ticket.history.push(event(EventKind::FollowUp {
            number: ticket.followups,
            mailbox: mailbox.address.clone(),
            subject: ev.mail.subject.clone(),
        }));
    } else {
        ticket.history.push(event(EventKind::Arrived {
            mailbox: mailbox.address.clone(),
            message_id: ev.mail.message_id.clone(),
            subject: ev.mail.subject.clone(),
        }));
    }
    let bounced = match &why {
        Why::Handover { from, .. } => {
            ticket.history.push(event(EventKind::HandedOver {
                from: from.clone(),
                to: queue_key.clone(),
            }));
            String::new()
        }
        Why::Bounced { between, .. } => {
            ticket.history.push(event(EventKind::Bounced {
                between: between.clone(),
                to: queue_key.clone(),
            }));
            let names: Vec<String> = between
                .iter()
                .map(|q| queue_name(rules, q, &lang).to_string())
                .collect();
            list_words(&names, &lang)
        }
        _ if forward => {
            ticket.history.push(event(EventKind::Forwarded {
                queue: queue_key.clone(),
                why: why_text.clone(),
            }));
            String::new()
        }
        _ if !joined => {
            ticket.history.push(event(EventKind::Kept {
                queue: queue_key.clone(),
                why: why_text.clone(),
            }));
            String::new()
        }
        _ => String::new(),
    };
    if ticket.queue != queue_key {
        // A new owner: its own clock for reminders starts now.
        ticket.queue = queue_key.clone();
        ticket.owner_since = at.clone();
        ticket.reminded_at = None;
        ticket.escalated_at = None;
    }
    if ticket.hops.last() != Some(&queue_key) {
        ticket.hops.push(queue_key.clone());
    }

    // staff mail in the thread: promises it records, and whether it answers the customer
    if joined && !ev.plan.from_customer {
        for text in ev.mail.text.lines().filter_map(promise_in) {
            ticket.promises.push(Promise {
                at: at.clone(),
                by: sender.clone(),
                text: text.to_string(),
            });
            ticket.history.push(event(EventKind::Promised {
                by: sender.clone(),
                text: text.to_string(),
            }));
        }
        let to_customer = ev
            .mail
            .to
            .iter()
            .chain(ev.mail.cc.iter())
            .any(|a| a.address.eq_ignore_ascii_case(&ticket.customer));
        if to_customer {
            ticket.answered_at = Some(at.clone());
            ticket
                .history
                .push(event(EventKind::Answered { by: sender.clone() }));
        }
    }

    // red flags and incidents
    let escalation = rules
        .escalation
        .as_ref()
        .and_then(|e| rules.queues.get(&e.queue).map(|q| (e, q)));
    let flagged = !ev.plan.flags.is_empty();
    if flagged {
        for f in &ev.plan.flags {
            if !ticket.flags.contains(f) {
                ticket.flags.push(f.clone());
            }
        }
        let reasons = ev
            .plan
            .flags
            .iter()
            .map(|f| flag_reason(rules, f, &lang))
            .collect();
        let to = escalation.map(|(e, _)| e.queue.clone()).unwrap_or_default();
        ticket
            .history
            .push(event(EventKind::Flagged { reasons, to }));
    }
    if let Some(id) = &ev.plan.incident {
        if ticket.incident.as_ref() != Some(id) {
            ticket.incident = Some(id.clone());
            ticket
                .history
                .push(event(EventKind::Incident { id: id.clone() }));
        }
    }

    // the acknowledgement: decided yes, and there is an address lettre accepts
    let ack_to = match (&ev.plan.ack, ev.mail.reply_address()) {
        (AckPlan::Yes | AckPlan::Added, Some(to)) if to.parse::<lettre::Address>().is_ok() => {
            Some(to.to_string())
        }
        _ => None,
    };
    let ack_reason = match &ev.plan.ack {
        AckPlan::No { reason } => Some(*reason),
        _ if ack_to.is_none() => Some(Suppression::NoAddress),
        _ => None,
    };
    let response_time = words::duration(queue.response_time, &lang);
    match (&ack_to, &ev.plan.ack) {
        (Some(to), AckPlan::Added) => {
            ticket.added_ack_at = Some(at.clone());
            ticket
                .history
                .push(event(EventKind::AddedAck { to: to.clone() }));
        }
        (Some(to), _) => {
            ticket.acknowledged = true;
            ticket.history.push(event(EventKind::Acknowledged {
                to: to.clone(),
                queue: queue_key.clone(),
                response_time: response_time.clone(),
            }));
        }
        (None, _) => {
            if let Some(r) =
                ack_reason.filter(|r| !matches!(r, Suppression::FollowUp | Suppression::FromStaff))
            {
                ticket.history.push(event(EventKind::NotAcknowledged {
                    reason: words::suppression(r, &lang),
                }));
            }
        }
    }
    if let Some(id) = &ev.mail.message_id {
        ticket.messages.push(id.clone());
    }

    // compose
    let mut ctx = ticket_context(rules, &ticket, &lang);
    ctx.mailbox = mailbox.key.clone();
    ctx.mailbox_address = mailbox.address.clone();
    ctx.category = if joined {
        String::new()
    } else {
        ev.class.category.clone().unwrap_or_default()
    };
    ctx.reason = why_text;
    ctx.rules = if joined {
        Vec::new()
    } else {
        ev.class
            .fired
            .iter()
            .map(|f| RuleLine {
                name: f.rule.clone(),
                field: f.field.clone(),
                matched: f.matched.clone(),
            })
            .collect()
    };
    ctx.subject = ev.mail.subject.clone();
    ctx.received = when::human(&at);
    ctx.ack_reason = ack_reason
        .map(|r| words::suppression(r, &lang))
        .unwrap_or_default();
    ctx.forwarded = forward;
    ctx.follow_up = follow_up;
    ctx.bounced = bounced;
    ctx.flags = ev
        .class
        .flags
        .iter()
        .map(|f| FlagLine {
            name: f.rule.clone(),
            reason: flag_reason(rules, &f.rule, &lang),
            matched: f.matched.clone(),
        })
        .collect();

    let id_domain = format!("mailtriage.{}", rules.company.domain);
    let mut outgoing = Vec::new();
    let marker = escalation
        .filter(|_| flagged)
        .map(|(e, _)| e.marker.as_str());
    let composed = (|| -> Result<(), compose::ComposeError> {
        // The forward to the queue and the copy to the escalation queue are one mail
        // with different recipients and kinds; each counts as a mail of the ticket.
        let mut hand_over =
            |to: Option<(&str, &str)>, kind: crate::record::MailKind, what: &str| {
                ticket.sent += 1;
                let id = format!("{}.{}.{what}@{id_domain}", ticket.id, ticket.sent);
                let mut m = compose::forward(
                    rules,
                    ForwardInput {
                        to,
                        escalated: marker,
                        mail: &ev.mail,
                        raw: inc.raw,
                        lang: &lang,
                        ctx: &ctx,
                        message_id: &id,
                        now,
                    },
                )?;
                m.kind = kind;
                outgoing.push(m);
                Ok::<(), compose::ComposeError>(())
            };
        if forward {
            hand_over(None, crate::record::MailKind::Forward, "forward")?;
        }
        // A flagged message also goes to the escalation queue, unless it is going there anyway.
        if let Some((_, esc)) =
            escalation.filter(|(e, _)| flagged && !(forward && e.queue == queue_key))
        {
            let name = esc.name_in(&lang);
            hand_over(
                Some((name, &esc.address)),
                crate::record::MailKind::Escalation,
                "escalation",
            )?;
        }
        if let Some(to) = &ack_to {
            ticket.sent += 1;
            let which = if ev.plan.ack == AckPlan::Added {
                "added"
            } else {
                "ack"
            };
            let id = format!("{}.{}.{which}@{id_domain}", ticket.id, ticket.sent);
            outgoing.push(compose::acknowledgement(
                rules,
                AckInput {
                    which,
                    mail: &ev.mail,
                    to,
                    lang: &lang,
                    ctx: &ctx,
                    message_id: &id,
                    now,
                },
            )?);
        }
        Ok(())
    })();
    if let Err(e) = composed {
        // This message cannot be handed on as it is (a template or an address makes it
        // unusable): it is kept for an operator, and the mailbox goes on.
        return quarantine(
            store,
            mailbox,
            inc.raw,
            inc.source,
            format!("cannot compose its mails: {e}"),
            now,
        )
        .map_err(Into::into);
    }

    // record
    let move_to = if forward {
        mailbox.forwarded_folder.clone()
    } else {
        None
    };
    let keywords = if forward {
        vec![KEYWORD_TRIAGED, KEYWORD_FORWARDED]
    } else {
        vec![KEYWORD_TRIAGED]
    };
    let rec = Record {
        key: ev.key.clone(),
        mailbox: mailbox.key.clone(),
        source: inc.source,
        message: MessageRecord {
            ticket: Some(ticket.id.clone()),
            mailbox: mailbox.key.clone(),
            disposition: if forward { "forwarded" } else { "kept" }.into(),
            at: at.clone(),
            reason: None,
        },
        ack_to: ack_to.as_ref().map(|to| (to.clone(), when::day(now))),
        mark: mark(keywords, move_to),
        outgoing,
        subject_key: if ev.plan.from_customer {
            subject_key(&ev.mail)
        } else {
            None
        },
        ticket: Some(ticket.clone()),
    };
    match store.commit(&rec)? {
        Committed::Done => {
            report.ticket = Some(ticket.id.clone());
            report.acknowledgement.send = ack_to.is_some();
            report.acknowledgement.to = ack_to.clone();
            if let Some(r) = ack_reason {
                report.acknowledgement.suppressed = Some(r.code());
                report.acknowledgement.reason = Some(r.describe().to_string());
            }
            report.mails = rec
                .outgoing
                .iter()
                .map(|m| PlannedMail {
                    kind: mail_kind(m.kind),
                    to: m.to.clone(),
                    message_id: Some(m.message_id.clone()),
                })
                .collect();
        }
        Committed::AlreadyKnown(prev) => {
            report.action = "duplicate";
            report.ticket = prev.ticket;
            report.mails.clear();
            report.acknowledgement = AckReport {
                send: false,
                to: None,
                suppressed: Some(Suppression::AlreadyTriaged.code()),
                reason: Some(Suppression::AlreadyTriaged.describe().to_string()),
            };
        }
    }
    Ok(report)
}

pub fn mail_kind(k: crate::record::MailKind) -> &'static str {
    use crate::record::MailKind;
    match k {
        MailKind::Forward => "forward",
        MailKind::Acknowledgement => "acknowledgement",
        MailKind::Added => "added",
        MailKind::Escalation => "escalation",
        MailKind::Reminder => "reminder",
        MailKind::Status => "status",
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
    for text in mail.text.lines().filter_map(promise_in) {
        if !ticket.promises.iter().any(|p| p.text == text) {
            ticket.promises.push(Promise {
                at: at.clone(),
                by: by.clone(),
                text: text.to_string(),
            });
            ticket.history.push(Event {
                at: at.clone(),
                what: EventKind::Promised {
                    by: by.clone(),
                    text: text.to_string(),
                },
            });
        }
    }
    if mail
        .to
        .iter()
        .chain(mail.cc.iter())
        .any(|a| a.address.eq_ignore_ascii_case(&ticket.customer))
    {
        ticket.answered_at = Some(at.clone());
        ticket.history.push(Event {
            at,
            what: EventKind::Answered { by },
        });
    }
    store.commit_ticket(&ticket, &[])?;
    Ok(Some(ticket.id))
}

/// Keeps a message that cannot be triaged: recorded with the reason (so it is not tried
/// for ever and an operator finds it), marked `$Quarantined` on the server, never dropped.
pub fn quarantine(
    store: &Store,
    mailbox: &Mailbox,
    raw: &[u8],
    source: Option<Checkpoint>,
    reason: String,
    now: SystemTime,
) -> Result<Report, StoreError> {
    let key = match parse(raw) {
        Ok(m) => message_key(Some(&m), raw),
        Err(_) => message_key(None, raw),
    };
    tracing::warn!(mailbox = %mailbox.key, key = %key, reason = %reason, "Message quarantined.");
    store.commit(&Record {
        key,
        mailbox: mailbox.key.clone(),
        source,
        message: MessageRecord {
            ticket: None,
            mailbox: mailbox.key.clone(),
            disposition: "quarantined".into(),
            at: when::stamp(now),
            reason: Some(reason.clone()),
        },
        ticket: None,
        outgoing: Vec::new(),
        mark: source.map(|cp| Mark {
            mailbox: mailbox.key.clone(),
            uid_validity: cp.uid_validity,
            uid: cp.last_uid,
            keywords: vec![KEYWORD_QUARANTINED.to_string()],
            move_to: None,
        }),
        ack_to: None,
        subject_key: None,
    })?;
    Ok(quarantine_report(mailbox, reason))
}

/// One history event in words, in the ticket's language.
pub fn history_text(rules: &Rules, e: &Event, lang: &str) -> String {
    let qn = |q: &str| queue_name(rules, q, lang).to_string();
    let ru = lang == "ru";
    match &e.what {
        EventKind::Arrived {
            mailbox, subject, ..
        } => words::arrived(mailbox, subject, lang),
        EventKind::Forwarded { queue, why } => words::forwarded(&qn(queue), why, lang),
        EventKind::Kept { queue, why } => words::kept(&qn(queue), why, lang),
        EventKind::Acknowledged {
            to,
            queue,
            response_time,
        } => words::acknowledged(to, &qn(queue), response_time, lang),
        EventKind::NotAcknowledged { reason } => words::not_acknowledged(reason, lang),
        EventKind::FollowUp {
            number,
            mailbox,
            subject,
        } if ru => format!("продолжение {number} пришло на {mailbox}: «{subject}»"),
        EventKind::FollowUp {
            number,
            mailbox,
            subject,
        } => format!("follow-up {number} arrived at {mailbox}: \"{subject}\""),
        EventKind::HandedOver { from, to } if ru => {
            format!("«{}» передало обращение в «{}»", qn(from), qn(to))
        }
        EventKind::HandedOver { from, to } => {
            format!("{} handed the ticket over to {}", qn(from), qn(to))
        }
        EventKind::Bounced { between, to } => {
            let names: Vec<String> = between.iter().map(|q| qn(q)).collect();
            if ru {
                format!(
                    "ходило по кругу ({}): передано в «{}»",
                    names.join(" → "),
                    qn(to)
                )
            } else {
                format!("bounced ({}): sent to {}", names.join(" → "), qn(to))
            }
        }
        EventKind::Flagged { reasons, to } if ru => format!(
            "тревожные признаки: {}; копия для «{}»",
            reasons.join(", "),
            qn(to)
        ),
        EventKind::Flagged { reasons, to } => {
            format!("red flags: {}; copy to {}", reasons.join(", "), qn(to))
        }
        EventKind::Incident { id } if ru => format!("связано с инцидентом {id}"),
        EventKind::Incident { id } => format!("linked to incident {id}"),
        EventKind::Promised { by, text } if ru => format!("{by} обещал(а): {text}"),
        EventKind::Promised { by, text } => format!("{by} promised: {text}"),
        EventKind::Answered { by } if ru => format!("{by} ответил(а) клиенту"),
        EventKind::Answered { by } => format!("{by} answered the customer"),
        EventKind::Reminded { queue } if ru => {
            format!("напоминание для «{}»: клиент ждёт ответа", qn(queue))
        }
        EventKind::Reminded { queue } => {
            format!("reminder sent to {}: the customer is waiting", qn(queue))
        }
        EventKind::Escalated { to } if ru => {
            format!("нет ответа вовремя: передано руководителю («{}»)", qn(to))
        }
        EventKind::Escalated { to } => format!("no answer in time: escalated to {}", qn(to)),
        EventKind::StatusSent { to } if ru => {
            format!("клиенту ({to}) сообщено, что обращение ещё в работе")
        }
        EventKind::StatusSent { to } => format!("status mail sent to {to}: still being handled"),
        EventKind::AddedAck { to } if ru => {
            format!("клиенту ({to}) сообщено, что письмо добавлено к обращению")
        }
        EventKind::AddedAck { to } => format!("{to} told the message was added to the ticket"),
        EventKind::Reopened if ru => "обращение открыто до того, как состояние mailtriage было \
             потеряно и создано заново; прежняя история здесь не известна"
            .into(),
        EventKind::Reopened => "the ticket was opened before mailtriage's state was lost and \
             started afresh; its earlier history is not known here"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn mail(from: &str, subject: &str, id: &str) -> Vec<u8> {
        format!("From: {from}\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe website is down.\r\n").into_bytes()
    }

    #[test]
    fn tags_as_people_and_systems_write_them() {
        let r = rules();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mb = &r.mailboxes["support"];
        let first = triage(
            &r,
            &store,
            Incoming {
                mailbox: mb,
                raw: &mail("ivan@mail.example", "Site down", "a1@x"),
                source: None,
            },
            SystemTime::now(),
        )
        .unwrap();
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
            triage(
                &r,
                store,
                Incoming {
                    mailbox: mb,
                    raw: &raw,
                    source: None,
                },
                SystemTime::now(),
            )
            .unwrap()
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
        assert!(history_text(&r, &t.history[0], "en").contains("earlier history"));
        assert_eq!(run(&store, "Re: [#T-1042] still down", "c@x"), "T-1042");
        assert_eq!(run(&store, "about T1043", "d@x"), "T-500001");
        assert_eq!(run(&store, "Re: [#T-600000] x", "e@x"), "T-500002");
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
        let rep = triage(
            &r,
            &store,
            Incoming {
                mailbox: &r.mailboxes["billing"],
                raw: &raw,
                source: None,
            },
            SystemTime::now(),
        )
        .unwrap();
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
    fn normalised_subjects() {
        assert_eq!(
            normalised_subject("Re: AW: [#T-1001] Site  Down"),
            "site down"
        );
        assert_eq!(normalised_subject("Ответ: Fwd: Счёт"), "счёт");
        assert_eq!(normalised_subject("[users] Re: digest"), "digest");
    }
}
