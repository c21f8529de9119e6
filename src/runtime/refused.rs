//! Runtime, the mails refused for good: the sender moves a mail the SMTP server refused
//! for good to the dead letters; here its ticket and a queue hear of it. The ticket's
//! history gets the refusal with the server's words (so `tickets show` and later notes
//! no longer say only "forwarded"), and a queue gets a short note: the queue that owns
//! the ticket, or the escalation queue when the refused mail was meant for the owner
//! (its forward, a reminder). A refused note gets no note: no loops. One transaction
//! per dead letter; the task runs at start (refusals a stop left untold) and whenever
//! the sender refuses a mail. An operator then sends a refused mail again or drops it
//! (`mailtriage outbox`, through [`outbox`]), which its ticket's history says too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::config::Rules;
use crate::pipeline::undelivered;
use crate::record::{Store, StoreError};
use crate::runtime::control::{Held, OutboxEntry, Request};
use crate::runtime::runner::Shared;
use crate::ticket::{EventKind, OutMail, Undelivered};
use crate::when;

/// How often untold dead letters are looked for without being woken.
const RESCAN: Duration = Duration::from_secs(60);

/// Tells every untold dead letter; returns how many notes were queued.
pub fn tell(rules: &Rules, store: &Store, now: SystemTime) -> Result<usize, StoreError> {
    let untold = store.untold_dead_letters()?;
    let mut queued = 0;
    for (id, reason, mail) in &untold {
        queued += tell_one(rules, store, *id, reason, &mail.mail, now)?;
    }
    if !untold.is_empty() {
        store.flush()?;
    }
    Ok(queued)
}

/// One dead letter into its ticket's history, with the note to a queue when there is one
/// to tell; returns how many notes were queued.
fn tell_one(
    rules: &Rules,
    store: &Store,
    id: u64,
    reason: &str,
    mail: &OutMail,
    now: SystemTime,
) -> Result<usize, StoreError> {
    let Some(mut t) = store.ticket(&mail.ticket)? else {
        store.commit_refusal(id, None, &[])?;
        return Ok(0);
    };
    let u = Undelivered {
        mail: Some(mail.kind),
        to: mail.to.join(", "),
        reason: reason.to_string(),
        message_id: Some(mail.message_id.clone()),
        retry: Some(id),
    };
    let notes: Vec<OutMail> = undelivered::tell(rules, &mut t, &u, now)
        .into_iter()
        .collect();
    store.commit_refusal(id, Some(&t), &notes)?;
    match notes.first() {
        Some(note) => {
            tracing::info!(ticket = %t.id, kind = %mail.kind, to = ?mail.to, told = ?note.to, "Refused mail recorded in its ticket; the queue is told.")
        }
        None => {
            tracing::warn!(ticket = %t.id, kind = %mail.kind, to = ?mail.to, "Refused mail recorded in its ticket; no queue could be told.")
        }
    }
    Ok(notes.len())
}

/// `mailtriage outbox`: the mails not sent (`Outbox`), or a refused mail put back in the
/// outbox (`Retry`) or dropped (`Drop`), each in its ticket's history; returns the mails
/// it is about, or why not, in words.
pub fn outbox(store: &Store, req: &Request, now: SystemTime) -> Result<Vec<OutboxEntry>, String> {
    let id = match req {
        Request::Retry { id } | Request::Drop { id } => *id,
        _ => return list(store).map_err(|e| e.to_string()),
    };
    let Some((reason, stored)) = store.dead_letter(id).map_err(|e| e.to_string())? else {
        return Err(not_refused(store, id));
    };
    let mail = stored.mail;
    let retry = matches!(req, Request::Retry { .. });
    let (mail_kind, to) = (mail.kind, mail.to.join(", "));
    let event = match retry {
        true => EventKind::Retried {
            mail: mail_kind,
            to,
        },
        false => EventKind::Dropped {
            mail: mail_kind,
            to,
        },
    };
    let ticket = store.ticket(&mail.ticket).map_err(|e| e.to_string())?;
    let ticket = ticket.map(|mut t| {
        t.record(&when::stamp(now), event);
        t
    });
    let done = match retry {
        true => store.retry_dead(id, ticket.as_ref()),
        false => store
            .drop_dead(id, ticket.as_ref())
            .map(|d| d.then_some(id)),
    };
    let Some(id) = done
        .and_then(|d| store.flush().map(|()| d))
        .map_err(|e| e.to_string())?
    else {
        return Err(not_refused(store, id));
    };
    let state = if retry { Held::Waiting } else { Held::Refused };
    tracing::info!(ticket = %mail.ticket, kind = %mail.kind, to = ?mail.to, id, retried = retry, "Refused mail handled by an operator.");
    Ok(vec![OutboxEntry::new(id, state, &mail, Some(reason))])
}

/// Every mail not sent: waiting in the outbox, then refused for good.
fn list(store: &Store) -> Result<Vec<OutboxEntry>, StoreError> {
    // Each entry is decoded, bytes and all, and turned into its line before the next.
    let waiting = store
        .outbox_iter()
        .map(|r| r.map(|(id, m)| OutboxEntry::new(id, Held::Waiting, &m.mail, None)));
    let refused = store
        .dead_letter_iter()
        .map(|r| r.map(|(id, why, m)| OutboxEntry::new(id, Held::Refused, &m.mail, Some(why))));
    waiting.chain(refused).collect()
}

/// Why `id` cannot be sent again or dropped.
fn not_refused(store: &Store, id: u64) -> String {
    if store.is_waiting(id).unwrap_or(false) {
        format!("mail {id} is waiting to be sent, not refused: only a refused mail can be sent again or dropped")
    } else {
        format!("no refused mail {id} (`mailtriage outbox list` shows the mails not sent)")
    }
}

/// The task: tells the untold dead letters at start, whenever `wake` says the sender
/// refused a mail, and every [`RESCAN`]; wakes the sender when notes were queued.
pub async fn run(shared: Shared, wake: Arc<Notify>) {
    loop {
        let rules = shared.rules.load_full();
        let store = shared.store.clone();
        let told = tokio::task::spawn_blocking(move || tell(&rules, &store, SystemTime::now()));
        match told.await {
            Ok(Ok(n)) if n > 0 => shared.outbox.notify_one(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Refused mails cannot be told now; will retry.")
            }
            Err(e) => tracing::error!(error = %e, "Telling refused mails panicked; will retry."),
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{MailKind, Ticket};

    fn ticket() -> Ticket {
        let [id, customer, subject, queue, lang, at] = [
            "T-1001",
            "c@example.com",
            "Site down",
            "support",
            "en",
            "2026-11-23T08:00:00Z",
        ]
        .map(String::from);
        let mut t = Ticket::new(id, customer, subject, queue, lang, at);
        t.messages = vec!["m1@example.com".into()];
        t
    }

    fn mail(kind: MailKind, to: &str) -> OutMail {
        OutMail {
            message_id: format!("T-1001.1.{kind}@mailtriage.example.test"),
            kind,
            ticket: "T-1001".into(),
            envelope_from: None,
            to: vec![to.into()],
            identity: None,
            raw: b"Subject: x\r\n\r\nx\r\n".to_vec(),
        }
    }

    /// Who hears of `m` when the server refuses it: the rule a delivery report follows too.
    fn told_of(r: &Rules, t: &Ticket, m: &OutMail) -> Option<(String, String)> {
        let u = Undelivered {
            mail: Some(m.kind),
            to: m.to.join(", "),
            reason: "550".into(),
            message_id: Some(m.message_id.clone()),
            retry: Some(1),
        };
        crate::decide::told_of_undelivered(r, t, &u)
    }

    #[test]
    fn the_owner_hears_unless_it_was_the_one_not_reached_and_a_note_never_gets_a_note() {
        let r = crate::config::testing::shipped();
        let t = ticket();
        let told = |m: &OutMail| told_of(&r, &t, m).map(|(q, _)| q);
        let support = "support@example.test";
        assert_eq!(
            told(&mail(MailKind::Forward, support)).as_deref(),
            Some("supervisor")
        );
        assert_eq!(
            told(&mail(MailKind::Reminder, support)).as_deref(),
            Some("supervisor")
        );
        let customer = "c@example.com";
        assert_eq!(
            told(&mail(MailKind::Acknowledgement, customer)).as_deref(),
            Some("support")
        );
        assert_eq!(
            told(&mail(MailKind::Escalation, "supervisor@example.test")).as_deref(),
            Some("support")
        );
        assert_eq!(
            told(&mail(MailKind::Undelivered, "supervisor@example.test")),
            None
        );
        // The escalation queue's own address refused its copy of a forward: nobody left.
        let mut owned_by_supervisor = t.clone();
        owned_by_supervisor.queue = "supervisor".into();
        let fwd = mail(MailKind::Forward, "supervisor@example.test");
        assert_eq!(told_of(&r, &owned_by_supervisor, &fwd), None);
    }

    #[test]
    fn a_refusal_is_told_once_in_the_history_and_by_a_note() {
        let r = crate::config::testing::shipped();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fwd = mail(MailKind::Forward, "support@example.test");
        store
            .commit_ticket(&ticket(), std::slice::from_ref(&fwd))
            .unwrap();
        let (key, _) = store.outbox().unwrap()[0].clone();
        store
            .outbox_dead(key, "550 5.1.1 <support@example.test>: User unknown")
            .unwrap();
        let now: SystemTime = when::parse("2026-11-23T09:00:00Z").unwrap().into();
        assert_eq!(tell(&r, &store, now).unwrap(), 1);
        assert_eq!(tell(&r, &store, now).unwrap(), 0, "told once");
        let t = store.ticket("T-1001").unwrap().unwrap();
        let last = t.history.last().unwrap();
        let line = crate::words::history_text(&r, last, "en");
        assert!(
            line.contains("refused the forward to support@example.test for good (550 5.1.1")
                && line.ends_with("Support supervisor was told"),
            "{line}"
        );
        let out = store.outbox().unwrap();
        let note = &out[0].1;
        assert_eq!(
            (note.kind, note.to.clone(), note.envelope_from.clone()),
            (
                MailKind::Undelivered,
                vec!["supervisor@example.test".to_string()],
                None
            )
        );
        let text = String::from_utf8_lossy(&note.raw);
        let subject = "Subject: [#T-1001] Mail not delivered: forward to support@example.test";
        for part in [subject, &format!("mailtriage outbox retry {key}")] {
            assert!(text.contains(part), "{part:?} not in:\n{text}");
        }
        // The note refused in its turn: recorded, and no note about it.
        let (note_key, _) = out[0].clone();
        store
            .outbox_dead(note_key, "550 5.1.1 no such user")
            .unwrap();
        assert_eq!(tell(&r, &store, now).unwrap(), 0);
        let t = store.ticket("T-1001").unwrap().unwrap();
        assert!(matches!(
            &t.history.last().unwrap().what,
            crate::ticket::EventKind::Undelivered {
                mail: Some(MailKind::Undelivered),
                told: None,
                report: false,
                ..
            }
        ));
        assert_eq!(store.outbox_len(), 0);
    }
}
