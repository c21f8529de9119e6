//! A robot's mail in a ticket's thread: an out-of-office reply becomes a line of the
//! ticket's history; a delivery report about one of the ticket's mails becomes a line
//! too, and the queue that should know gets a short note. Nothing else changes: no
//! owner, no clock, no acknowledgement.

use std::time::SystemTime;

use crate::compose::{self, ComposeError, NoticeInput};
use crate::parse::{Mail, Reported};
use crate::record::Store;
use crate::ticket::{EventKind, MailKind, OutMail, Ticket};
use crate::when;
use crate::words;

use super::{commit, Evaluation, Incoming, PipelineError, Report};
use crate::config::Rules;

/// Longest quote of an auto-reply's first line in the history.
const SAYS: usize = 160;

/// Records the robot's mail in its ticket; returns the report of what was recorded.
pub fn in_thread(
    rules: &Rules,
    store: &Store,
    inc: Incoming<'_>,
    ev: &Evaluation,
    report: Report,
    now: SystemTime,
) -> Result<Report, PipelineError> {
    let id = ev.plan.ticket.as_deref().unwrap_or_default();
    let Some(mut ticket) = store.ticket(id)? else {
        return Ok(commit::untracked(store, inc, ev, report, now)?);
    };
    let at = when::stamp(now);
    let mut outgoing = Vec::new();
    match &ev.mail.reported {
        Some(r) => {
            let (mail, to, status) = undelivered(r, &ticket);
            ticket.record(
                &at,
                EventKind::Undelivered {
                    mail: mail.clone(),
                    to: to.clone(),
                    status: status.clone(),
                },
            );
            // A note that could not be delivered gets no note of its own.
            if mail != "undelivered" {
                match note(rules, inc, &mut ticket, (&mail, &to, &status), now) {
                    Ok(m) => outgoing.extend(m),
                    Err(e) => {
                        tracing::warn!(ticket = %ticket.id, error = %e, "Undelivered note cannot be composed; the history has the line.")
                    }
                }
            }
        }
        None => ticket.record(&at, auto_reply(&ev.mail)),
    }
    Ok(commit::in_thread(
        store, inc, ev, ticket, outgoing, report, &at,
    )?)
}

/// Which mail of the ticket bounced (the word in its Message-ID), to whom, and why.
fn undelivered(r: &Reported, ticket: &Ticket) -> (String, String, String) {
    let kind = r
        .message_id
        .as_deref()
        .and_then(|id| id.split('@').next())
        .and_then(|local| local.split('.').nth(2))
        .unwrap_or("mail")
        .to_string();
    let to = r
        .recipient
        .clone()
        .unwrap_or_else(|| ticket.customer.clone());
    let status = r
        .status
        .clone()
        .unwrap_or_else(|| "no reason given".to_string());
    (kind, to, status)
}

/// "Out of Office: back on Monday" with the first line of its text.
fn auto_reply(mail: &Mail) -> EventKind {
    let first = mail
        .text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let says = crate::parse::shortened(first, SAYS);
    EventKind::AutoReply {
        from: mail
            .from
            .as_ref()
            .map(|a| a.address.clone())
            .unwrap_or_else(|| mail.sender()),
        subject: mail.subject.clone(),
        says,
    }
}

/// The note to the queue that owns the ticket; when the forward itself bounced, the queue
/// never got the request, so the note goes to the escalation queue instead.
fn note(
    rules: &Rules,
    inc: Incoming<'_>,
    ticket: &mut Ticket,
    (mail, to, status): (&str, &str, &str),
    now: SystemTime,
) -> Result<Option<OutMail>, ComposeError> {
    let handed_over = matches!(mail, "forward" | "escalation");
    let queue = match handed_over {
        true => rules.escalation.as_ref().map(|e| e.queue.as_str()),
        false => Some(ticket.queue.as_str()),
    };
    let Some(queue) = queue.and_then(|q| rules.queues.get(q)) else {
        return Ok(None);
    };
    let lang = ticket.language.clone();
    let (subject, text) = words::undelivered_note(mail, to, status, &ticket.id, &lang);
    let mut ctx = compose::ticket_context(rules, ticket, &lang);
    ctx.mailbox = inc.mailbox.key.clone();
    ctx.mailbox_address = inc.mailbox.address.clone();
    let id = ticket.next_mail_id(
        "undelivered",
        &format!("mailtriage.{}", rules.company.domain),
    );
    let thread = ticket.messages.first().cloned();
    let from = compose::from_address(&rules.company.ack_from);
    let n = NoticeInput {
        which: "undelivered",
        kind: MailKind::Undelivered,
        from: &rules.company.ack_from,
        to: &queue.address,
        envelope_from: Some(&from),
        lang: &lang,
        ctx: &ctx,
        thread: thread.as_deref(),
        message_id: &id,
        now,
    };
    compose::staff_note(n, &subject, text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounced_mail_is_named_by_the_word_in_its_id() {
        let t = Ticket::new(
            "T-1001".into(),
            "ivan@mail.example".into(),
            "Site down".into(),
            "support".into(),
            "en".into(),
            "2026-11-30T10:00:00Z".into(),
        );
        let r = Reported {
            message_id: Some("T-1001.2.ack@mailtriage.example.test".into()),
            recipient: Some("ivan@mail.example".into()),
            status: Some("5.1.1: user unknown".into()),
        };
        assert_eq!(
            undelivered(&r, &t),
            (
                "ack".into(),
                "ivan@mail.example".into(),
                "5.1.1: user unknown".into()
            )
        );
        let r = Reported::default();
        assert_eq!(undelivered(&r, &t).0, "mail");
        assert_eq!(undelivered(&r, &t).1, "ivan@mail.example");
    }
}
