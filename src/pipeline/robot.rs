//! A robot's mail in a ticket's thread: an out-of-office reply becomes a line of the
//! ticket's history; a delivery report about one of the ticket's mails becomes a line
//! too, and the queue that should know gets a short note. Nothing else changes: no
//! owner, no clock, no acknowledgement.

use std::time::SystemTime;

use crate::parse::{Mail, Reported};
use crate::record::Store;
use crate::ticket::{EventKind, MailKind, Ticket, Undelivered};
use crate::when;

use super::{commit, undelivered, Evaluation, Incoming, PipelineError, Report};
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
            let u = returned(r, &ticket);
            outgoing.extend(undelivered::tell(rules, &mut ticket, &u, now));
        }
        None => ticket.record(&at, auto_reply(&ev.mail)),
    }
    Ok(commit::in_thread(
        store, inc, ev, ticket, outgoing, report, &at,
    )?)
}

/// Which mail of the ticket came back (the word in its Message-ID), to whom, and why.
fn returned(r: &Reported, ticket: &Ticket) -> Undelivered {
    Undelivered {
        mail: r.message_id.as_deref().and_then(MailKind::of_message_id),
        to: r
            .recipient
            .clone()
            .unwrap_or_else(|| ticket.customer.clone()),
        reason: r
            .status
            .clone()
            .unwrap_or_else(|| "no reason given".to_string()),
        message_id: r.message_id.clone(),
        retry: None,
    }
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
        let u = returned(&r, &t);
        assert_eq!(
            (u.mail, u.to.as_str(), u.reason.as_str(), u.retry),
            (
                Some(MailKind::Acknowledgement),
                "ivan@mail.example",
                "5.1.1: user unknown",
                None
            )
        );
        let r = Reported::default();
        assert_eq!(returned(&r, &t).mail, None);
        assert_eq!(returned(&r, &t).to, "ivan@mail.example");
    }
}
