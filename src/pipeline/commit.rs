//! Recording: everything one message changes (its index entry, its ticket, its mails,
//! its marks on the server, the daily cap, threading by subject) in one transaction,
//! and the report of what was recorded.

use std::time::SystemTime;

use crate::config::Mailbox;
use crate::decide::{Marks, Route, Suppression};
use crate::parse::parse;
use crate::record::{
    Checkpoint, Committed, Disposition, Mark, MessageRecord, Record, Store, StoreError,
};
use crate::ticket::OutMail;
use crate::ticket::Ticket;
use crate::when;

use super::report::{self, AckReport, Action, PlannedMail, Report};
use super::thread::subject_key;
use super::{message_key, Case, Evaluation, Incoming};
use crate::ticket::{ticket_keyword, KEYWORD_QUARANTINED};

/// A message that opens or joins no ticket (ignored, left in place): its index entry,
/// so it is not looked at again, and its mark.
pub fn untracked(
    store: &Store,
    inc: Incoming<'_>,
    ev: &Evaluation,
    mut report: Report,
    now: SystemTime,
) -> Result<Report, StoreError> {
    let (disposition, ticket) = match &ev.plan.route {
        Route::Ignore {
            why: Suppression::OwnMail,
        } => (Disposition::Ignored, ev.plan.ticket.clone()),
        Route::Ignore { .. } => {
            // The daemon's report says what it did: nothing, for a message it knew.
            report.action = Action::Duplicate;
            (Disposition::Duplicate, ev.plan.ticket.clone())
        }
        _ => (Disposition::Left, None),
    };
    let mark = mark(inc, ev.plan.marks.as_ref(), ticket.as_deref());
    let message = message(inc.mailbox, disposition, ticket, &when::stamp(now));
    let rec = Record {
        mark,
        ..index_only(inc, ev.key.clone(), message)
    };
    store.commit(&rec)?;
    Ok(report)
}

/// A robot's mail recorded in its ticket's thread, with the note it implies.
pub fn in_thread(
    store: &Store,
    inc: Incoming<'_>,
    ev: &Evaluation,
    ticket: Ticket,
    outgoing: Vec<OutMail>,
    mut report: Report,
    at: &str,
) -> Result<Report, StoreError> {
    let id = Some(ticket.id.clone());
    let rec = Record {
        mark: mark(inc, ev.plan.marks.as_ref(), Some(&ticket.id)),
        outgoing,
        ticket: Some(ticket),
        ..index_only(
            inc,
            ev.key.clone(),
            message(inc.mailbox, Disposition::Left, id, at),
        )
    };
    match store.commit(&rec)? {
        Committed::Done => recorded(&rec, &mut report),
        Committed::AlreadyKnown(prev) => duplicate(prev, &mut report),
    }
    Ok(report)
}

/// The triaged message with its ticket and mails; a message another path recorded
/// first is reported as a duplicate.
pub fn record(
    store: &Store,
    case: &Case,
    ticket: Ticket,
    outgoing: Vec<OutMail>,
    mut report: Report,
) -> Result<Report, StoreError> {
    let (ev, inc) = (&case.ev, case.inc);
    let disposition = if case.forward {
        Disposition::Forwarded
    } else {
        Disposition::Kept
    };
    let id = Some(ticket.id.clone());
    let rec = Record {
        counted: (ev.plan.ack_to.as_deref())
            .map(|to| crate::decide::cap_keys(to, time::OffsetDateTime::from(case.now)))
            .unwrap_or_default(),
        mark: mark(inc, ev.plan.marks.as_ref(), Some(&ticket.id)),
        outgoing,
        subject_key: subject_key(&ev.mail).filter(|_| ev.plan.from_customer),
        ticket: Some(ticket),
        ..index_only(
            inc,
            ev.key.clone(),
            message(inc.mailbox, disposition, id, &case.at),
        )
    };
    match store.commit(&rec)? {
        Committed::Done => recorded(&rec, &mut report),
        Committed::AlreadyKnown(prev) => duplicate(prev, &mut report),
    }
    Ok(report)
}

/// The ticket's id and the mails' ids are known now.
fn recorded(rec: &Record, report: &mut Report) {
    report.ticket = rec.ticket.as_ref().map(|t| t.id.clone());
    report.mails = rec
        .outgoing
        .iter()
        .map(|m| PlannedMail {
            kind: m.kind,
            to: m.to.clone(),
            message_id: Some(m.message_id.clone()),
        })
        .collect();
}

fn duplicate(prev: MessageRecord, report: &mut Report) {
    report.action = Action::Duplicate;
    report.ticket = prev.ticket;
    report.mails.clear();
    report.acknowledgement = AckReport {
        send: false,
        to: None,
        suppressed: Some(Suppression::AlreadyTriaged),
        reason: Some(Suppression::AlreadyTriaged.describe().to_string()),
    };
}

/// The planned marks of a message that came from the server, with the keyword of
/// `ticket` when they ask for it; files get none.
fn mark(inc: Incoming<'_>, marks: Option<&Marks>, ticket: Option<&str>) -> Option<Mark> {
    let (cp, marks) = (inc.source?, marks?);
    let mut keywords: Vec<String> = marks.keywords.iter().map(|k| k.to_string()).collect();
    if marks.ticket {
        keywords.extend(ticket.and_then(ticket_keyword));
    }
    Some(Mark {
        mailbox: inc.mailbox.key.clone(),
        uid_validity: cp.uid_validity,
        uid: cp.last_uid,
        keywords,
        move_to: marks.move_to.clone(),
    })
}

fn message(
    mailbox: &Mailbox,
    disposition: Disposition,
    ticket: Option<String>,
    at: &str,
) -> MessageRecord {
    MessageRecord {
        ticket,
        mailbox: mailbox.key.clone(),
        disposition,
        at: at.to_string(),
        reason: None,
    }
}

/// A record of the index entry and the checkpoint alone.
fn index_only(inc: Incoming<'_>, key: String, message: MessageRecord) -> Record {
    Record {
        key,
        mailbox: inc.mailbox.key.clone(),
        source: inc.source,
        message,
        ticket: None,
        outgoing: Vec::new(),
        mark: None,
        counted: Vec::new(),
        subject_key: None,
    }
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
    let inc = Incoming {
        mailbox,
        raw,
        source,
        folder: None,
    };
    keep(store, inc, key, reason, now)
}

/// [`quarantine`] without reading the message again: for a message that took too long
/// or stopped the daemon, where parsing it once more could do the same. It is known by
/// the digest of its bytes.
pub fn quarantine_unread(
    store: &Store,
    inc: Incoming<'_>,
    reason: String,
    now: SystemTime,
) -> Result<Report, StoreError> {
    keep(store, inc, message_key(None, inc.raw), reason, now)
}

fn keep(
    store: &Store,
    inc: Incoming<'_>,
    key: String,
    reason: String,
    now: SystemTime,
) -> Result<Report, StoreError> {
    let mailbox = inc.mailbox;
    tracing::warn!(mailbox = %mailbox.key, uid = ?inc.source.map(|c| c.last_uid), key = %key, reason = %reason, "Message quarantined.");
    let mut message = message(mailbox, Disposition::Quarantined, None, &when::stamp(now));
    message.reason = Some(reason.clone());
    store.commit(&Record {
        mark: mark(
            inc,
            Some(&Marks {
                keywords: vec![KEYWORD_QUARANTINED],
                move_to: None,
                ticket: false,
            }),
            None,
        ),
        ..index_only(inc, key, message)
    })?;
    Ok(report::quarantined(mailbox, reason))
}
