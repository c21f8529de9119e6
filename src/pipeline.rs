//! The pipeline: the stages of one message in order, readable top to bottom.
//!
//! parse -> (thread lookup) -> classify -> decide -> compose -> record
//!
//! [`explain`] runs the same stages without recording, so what an admin sees is what
//! the daemon does; [`triage`] records the outcome in one transaction. Neither talks to
//! a server: fetching is the source's job, sending the outbox sender's.

use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::classify::{classify, Classification, Fired, Score};
use crate::compose::{self, AckInput, ForwardInput, HistoryLine, RuleLine, TemplateContext};
use crate::config::{Mailbox, Rules};
use crate::decide::{
    decide, AckPlan, JoinedBy, Plan, Route, Suppression, ThreadView, TicketRef, Why,
};
use crate::message::{parse, Mail};
use crate::store::{
    Checkpoint, Committed, Event, EventKind, Mark, MessageRecord, Record, Store, StoreError, Ticket,
};
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
}

/// The key a message is known by: its Message-ID, or a digest of its bytes when it has
/// none (so the same file or the same server copy is still recognised).
pub fn message_key(mail: Option<&Mail>, raw: &[u8]) -> String {
    match mail.and_then(|m| m.message_id.clone()) {
        Some(id) => id,
        None => format!("sha256:{:x}", Sha256::digest(raw)),
    }
}

fn utc(now: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(now)
}

fn rfc3339(now: SystemTime) -> String {
    utc(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn day(now: SystemTime) -> String {
    let t = utc(now);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// "2026-11-23 15:20 UTC": the form people read in notes.
pub fn human_time(rfc3339: &str) -> String {
    match OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => rfc3339.to_string(),
    }
}

/// What the store knows about this message's thread.
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
    let as_ref = |t: Ticket| TicketRef {
        id: t.id,
        queue: t.queue,
        acknowledged: t.acknowledged,
    };
    for id in mail.thread_ids() {
        if let Some(t) = store.message(id)?.and_then(|r| r.ticket) {
            if let Some(t) = store.ticket(&t)? {
                view.ticket = Some((as_ref(t), JoinedBy::References));
                break;
            }
        }
    }
    if view.ticket.is_none() {
        for cap in rules.ticket_tag.captures_iter(&mail.subject) {
            let id = format!("{}-{}", rules.company.ticket_prefix, &cap[1]);
            if let Some(t) = store.ticket(&id)? {
                view.ticket = Some((as_ref(t), JoinedBy::SubjectTag));
                break;
            }
        }
    }
    if let Some(to) = mail.reply_address() {
        view.acks_to_sender_today = store.acks_on(to, &day(now))?;
    }
    Ok(view)
}

/// Parse, look up, classify, decide: everything but composing and recording.
pub struct Evaluation {
    pub mail: Mail,
    pub key: String,
    pub class: Classification,
    pub plan: Plan,
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
        }
    } else {
        classify(rules, &mail)
    };
    let plan = decide(rules, mailbox, &mail, &class, &thread);
    Ok(Evaluation {
        mail,
        key,
        class,
        plan,
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
    if ev.plan.ack.is_yes() {
        mails.push(PlannedMail {
            kind: "acknowledgement",
            to: to.clone().into_iter().collect(),
            message_id: None,
        });
    }
    let (suppressed, ack_reason) = match &ev.plan.ack {
        AckPlan::Yes => (None, None),
        AckPlan::No { reason } => (Some(reason.code()), Some(reason.describe().to_string())),
    };
    let queue = ev.plan.queue().map(str::to_string);
    Report {
        mailbox: mailbox.key.clone(),
        message_id: ev.mail.message_id.clone(),
        from: ev.mail.from.as_ref().map(|a| a.display()),
        subject: Some(ev.mail.subject.clone()),
        action,
        category: ev.class.category.clone(),
        queue_address: queue
            .as_ref()
            .and_then(|q| rules.queues.get(q))
            .map(|q| q.address.clone()),
        queue,
        misdirected: ev.plan.forwarded(),
        reason,
        rules: ev.class.fired.clone(),
        scores: ev.class.scores.clone(),
        language: Some(lang.clone()),
        ticket: ev.plan.ticket.clone(),
        new_ticket: ev.plan.ticket.is_none()
            && matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. }),
        acknowledgement: AckReport {
            send: ev.plan.ack.is_yes(),
            to: if ev.plan.ack.is_yes() { to } else { None },
            suppressed,
            reason: ack_reason,
        },
        mails,
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
    let mail = match parse(raw) {
        Ok(m) => m,
        Err(e) => return Ok(quarantine_report(mailbox, format!("cannot be parsed: {e}"))),
    };
    let ev = evaluate(rules, store, mailbox, mail, raw, now)?;
    Ok(base_report(rules, mailbox, &ev))
}

/// Triage one message: decide, compose and record it in one transaction. The mails go
/// to the outbox; the sender delivers them after the batch is flushed.
pub fn triage(
    rules: &Rules,
    store: &Store,
    inc: Incoming<'_>,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    let at = rfc3339(now);
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
    let simple = |key: String,
                  disposition: &str,
                  ticket: Option<String>,
                  reason: Option<String>,
                  mark: Option<Mark>| Record {
        key,
        mailbox: mailbox.key.clone(),
        source: inc.source,
        message: MessageRecord {
            ticket,
            mailbox: mailbox.key.clone(),
            disposition: disposition.into(),
            at: at.clone(),
            reason,
        },
        ticket: None,
        outgoing: Vec::new(),
        mark,
        ack_to: None,
    };

    // parse
    let mail = match parse(inc.raw) {
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
            let ticket = ev.plan.ticket.clone();
            let disposition = if *why == Suppression::OwnMail {
                "ignored"
            } else {
                "duplicate"
            };
            store.commit(&simple(ev.key.clone(), disposition, ticket, None, None))?;
            if *why == Suppression::AlreadyTriaged {
                report.action = "duplicate";
            }
            return Ok(report);
        }
        Route::Leave { .. } => {
            store.commit(&simple(ev.key.clone(), "left", None, None, None))?;
            return Ok(report);
        }
        Route::Keep { queue, why } => (queue.clone(), why.clone(), false),
        Route::Forward { queue, why } => (queue.clone(), why.clone(), true),
    };
    let queue = rules
        .queues
        .get(&queue_key)
        .expect("decide only routes to declared queues");

    // the ticket, opened or joined
    let mut ticket = match &ev.plan.ticket {
        Some(id) => store
            .ticket(id)?
            .expect("decide joins only tickets the store returned"),
        None => {
            let n = store.next_ticket_number()?;
            let customer = ev
                .mail
                .reply_address()
                .or(ev.mail.from.as_ref().map(|a| a.address.as_str()))
                .unwrap_or("")
                .to_string();
            Ticket {
                id: format!("{}-{n}", rules.company.ticket_prefix),
                customer,
                customer_name: ev.mail.from.as_ref().and_then(|a| a.name.clone()),
                subject: ev.mail.subject.clone(),
                queue: queue_key.clone(),
                language: ev.class.language.clone(),
                created: at.clone(),
                acknowledged: false,
                hops: vec![queue_key.clone()],
                history: Vec::new(),
                messages: Vec::new(),
                sent: 0,
            }
        }
    };
    let lang = ticket.language.clone();
    let qname = queue.name_in(&lang).to_string();
    let why_text = words::why(&why, &mailbox.address, &qname, &lang);
    let response_time = words::duration(queue.response_time, &lang);

    // the acknowledgement: decided yes, and there is an address lettre accepts
    let ack_to = match (&ev.plan.ack, ev.mail.reply_address()) {
        (AckPlan::Yes, Some(to)) if to.parse::<lettre::Address>().is_ok() => Some(to.to_string()),
        _ => None,
    };
    let ack_reason = match &ev.plan.ack {
        AckPlan::No { reason } => Some(*reason),
        AckPlan::Yes if ack_to.is_none() => Some(Suppression::NoAddress),
        AckPlan::Yes => None,
    };

    // history
    let event = |what| Event {
        at: at.clone(),
        what,
    };
    ticket.history.push(event(EventKind::Arrived {
        mailbox: mailbox.address.clone(),
        message_id: ev.mail.message_id.clone(),
        subject: ev.mail.subject.clone(),
    }));
    ticket.history.push(event(if forward {
        EventKind::Forwarded {
            queue: queue_key.clone(),
            why: why_text.clone(),
        }
    } else {
        EventKind::Kept {
            queue: queue_key.clone(),
            why: why_text.clone(),
        }
    }));
    if let Some(to) = &ack_to {
        ticket.history.push(event(EventKind::Acknowledged {
            to: to.clone(),
            queue: queue_key.clone(),
            response_time: response_time.clone(),
        }));
        ticket.acknowledged = true;
    } else if let Some(r) = ack_reason.filter(|r| *r != Suppression::FollowUp) {
        ticket.history.push(event(EventKind::NotAcknowledged {
            reason: words::suppression(r, &lang),
        }));
    }
    if ticket.queue != queue_key {
        ticket.queue = queue_key.clone();
    }
    if ticket.hops.last() != Some(&queue_key) {
        ticket.hops.push(queue_key.clone());
    }
    if let Some(id) = &ev.mail.message_id {
        ticket.messages.push(id.clone());
    }

    // compose
    let tag = format!("[#{}]", ticket.id);
    let ctx = TemplateContext {
        ticket: ticket.id.clone(),
        tag: tag.clone(),
        queue_name: qname.clone(),
        queue_address: queue.address.clone(),
        response_time: response_time.clone(),
        mailbox: mailbox.key.clone(),
        mailbox_address: mailbox.address.clone(),
        category: ev.class.category.clone().unwrap_or_default(),
        reason: why_text,
        rules: ev
            .class
            .fired
            .iter()
            .map(|f| RuleLine {
                name: f.rule.clone(),
                field: f.field.clone(),
                matched: f.matched.clone(),
            })
            .collect(),
        customer: ticket.customer.clone(),
        customer_name: ticket.customer_name.clone().unwrap_or_default(),
        subject: ev.mail.subject.clone(),
        received: human_time(&at),
        history: ticket
            .history
            .iter()
            .map(|e| HistoryLine {
                at: human_time(&e.at),
                text: history_text(rules, e, &lang),
            })
            .collect(),
        acked: ticket.acknowledged,
        ack_reason: ack_reason
            .map(|r| words::suppression(r, &lang))
            .unwrap_or_default(),
        forwarded: forward,
        company: rules.company.name.clone(),
    };
    let id_domain = format!("mailtriage.{}", rules.company.domain);
    let mut outgoing = Vec::new();
    let composed = (|| -> Result<(), compose::ComposeError> {
        if forward {
            ticket.sent += 1;
            let id = format!("{}.{}.forward@{id_domain}", ticket.id, ticket.sent);
            outgoing.push(compose::forward(
                rules,
                ForwardInput {
                    mail: &ev.mail,
                    raw: inc.raw,
                    lang: &lang,
                    ctx: &ctx,
                    message_id: &id,
                    now,
                },
            )?);
        }
        if let Some(to) = &ack_to {
            ticket.sent += 1;
            let id = format!("{}.{}.ack@{id_domain}", ticket.id, ticket.sent);
            outgoing.push(compose::acknowledgement(
                rules,
                AckInput {
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
        ack_to: ack_to.as_ref().map(|to| (to.clone(), day(now))),
        mark: mark(keywords, move_to),
        outgoing,
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
                    kind: match m.kind {
                        crate::store::MailKind::Forward => "forward",
                        crate::store::MailKind::Acknowledgement => "acknowledgement",
                    },
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
            at: rfc3339(now),
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
    })?;
    Ok(quarantine_report(mailbox, reason))
}

/// One history event in words, in the ticket's language.
pub fn history_text(rules: &Rules, e: &Event, lang: &str) -> String {
    let qn = |q: &str| queue_name(rules, q, lang).to_string();
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
    }
}

/// Why: helper for callers that only have a `Why` (explain's text output).
pub fn why_words(rules: &Rules, mailbox: &Mailbox, queue: &str, why: &Why) -> String {
    words::why(why, &mailbox.address, queue_name(rules, queue, "en"), "en")
}
