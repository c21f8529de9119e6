//! Send, the outbox sender. Entries are handed over in the order they were decided,
//! several at once but never two of one ticket (so a ticket's mails arrive in order),
//! and only after the state that produced them is on disk. Which entries may be in
//! flight at once is [`ready`]'s decision; it keeps them among the first few of the
//! outbox, which is what lets the next start name the mails whose fate a crash left
//! unknown ([`Store::outbox_uncertain`], [`super::settle`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{SmtpError, Transport};
use crate::record::{Store, Stored};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub sent: usize,
    pub refused: usize,
    /// Entries left for a later attempt.
    pub left: usize,
}

/// Which outbox entries may be handed to SMTP now. `pending` lists, in outbox order,
/// each entry not yet removed for good as (ticket, already handed over). An entry may
/// start when it is among the first `window` of them, is not handed over yet, and no
/// earlier entry of its ticket is still pending: a ticket's mails (a forward, then the
/// follow-up's forward) arrive in the order they were decided. Keeping everything in
/// flight among the first `window` entries is what bounds the mails a crash can leave
/// uncertain to the first `window` entries of the outbox on disk.
pub fn ready<T: PartialEq>(pending: &[(T, bool)], window: usize) -> Vec<usize> {
    let head = &pending[..pending.len().min(window)];
    head.iter()
        .enumerate()
        .filter(|(i, (ticket, started))| {
            !started && !head[..*i].iter().any(|(earlier, _)| earlier == ticket)
        })
        .map(|(i, _)| i)
        .collect()
}

/// One outbox entry of a drain: its head; a big mail's bytes are read from the spool
/// only when it is handed over, and dropped once the server answered.
struct Pending {
    key: u64,
    mail: Arc<Stored>,
    started: bool,
}

/// Outbox entries read at a time: the sender holds at most this many mails in memory,
/// whatever the outbox holds (a long outage leaves thousands).
const DRAIN_BATCH: usize = 64;
/// And at most about this many bytes of entries (one bigger than that alone). A big
/// mail's entry holds only its head (its bytes are read from the spool at hand-over, one
/// mail per connection); entries an earlier version wrote hold the whole mail, and 64
/// forwards of big originals must not be read at once.
const DRAIN_BYTES: usize = 16 << 20;

/// Sends everything in the outbox once, [`DRAIN_BATCH`] entries (at most [`DRAIN_BYTES`])
/// at a time: several at
/// once (see [`ready`]), each removed when the server accepted it. Stops handing over
/// new entries at the first transient failure (the server is likely down for all of
/// them), lets the ones in flight finish, and reports what is left.
pub async fn drain(store: &Store, transport: &Transport) -> Result<Drained, SmtpError> {
    let mut total = Drained::default();
    loop {
        let (entries, more) = store.outbox_first_within(DRAIN_BATCH, DRAIN_BYTES)?;
        let last = !more;
        let d = drain_batch(store, transport, entries).await?;
        total.sent += d.sent;
        total.refused += d.refused;
        if d.left > 0 {
            total.left = store.outbox_len();
            return Ok(total);
        }
        if last {
            return Ok(total);
        }
    }
}

/// One batch of the outbox, in order.
async fn drain_batch(
    store: &Store,
    transport: &Transport,
    entries: Vec<(u64, Stored)>,
) -> Result<Drained, SmtpError> {
    if entries.is_empty() {
        return Ok(Drained::default());
    }
    let window = transport.connections();
    store.outbox_sending_starts(window)?;
    // Only what is on disk is sent: a crash must never leave a sent mail whose decision
    // was not recorded, or the message would be triaged and sent again. The same flush
    // makes the end of any clean-stop note durable before a mail can be in flight.
    store.flush_async().await?;
    let mut d = Drain::new(entries, store, transport, window);
    loop {
        d.start_ready();
        let Some(answers) = d.answers().await else {
            break;
        };
        let finished = d.record(store, answers)?;
        // Written at once: until the removal is on disk a crash sends the mail again, and
        // its place among the first `window` entries is not given to the next one before.
        store.flush_async().await?;
        d.finish(finished);
    }
    d.counts.left = d.pending.len();
    Ok(d.counts)
}

/// What became of one mail handed over, once known: its outbox entry and the answer.
type Answer = Result<(tokio::task::Id, Result<(), SmtpError>), JoinError>;

/// An outbox entry done for good, with its mail when the server accepted it.
type Finished = (u64, Option<Arc<Stored>>);

/// A drain under way.
struct Drain<'a> {
    store: &'a Store,
    transport: &'a Transport,
    window: usize,
    /// In outbox order, until removed for good.
    pending: VecDeque<Pending>,
    running: JoinSet<Result<(), SmtpError>>,
    in_flight: HashMap<tokio::task::Id, u64>,
    /// A delivery failed for now: nothing new is handed over in this drain.
    failed: bool,
    counts: Drained,
}

impl<'a> Drain<'a> {
    fn new(
        entries: Vec<(u64, Stored)>,
        store: &'a Store,
        transport: &'a Transport,
        window: usize,
    ) -> Drain<'a> {
        let pending = entries
            .into_iter()
            .map(|(key, m)| Pending {
                key,
                mail: Arc::new(m),
                started: false,
            })
            .collect();
        Drain {
            store,
            transport,
            window,
            pending,
            running: JoinSet::new(),
            in_flight: HashMap::new(),
            failed: false,
            counts: Drained::default(),
        }
    }

    /// Hands over every entry [`ready`] allows, unless a delivery failed.
    fn start_ready(&mut self) {
        if self.failed {
            return;
        }
        let view: Vec<(&str, bool)> = self
            .pending
            .iter()
            .take(self.window)
            .map(|p| (p.mail.mail.ticket.as_str(), p.started))
            .collect();
        for i in ready(&view, self.window) {
            let p = &mut self.pending[i];
            p.started = true;
            let (t, m, store) = (self.transport.clone(), p.mail.clone(), self.store.clone());
            // One mail's bytes in memory per connection, whatever the outbox holds.
            let task = self
                .running
                .spawn(async move { t.deliver(&store.with_bytes(&m)?).await });
            self.in_flight.insert(task.id(), p.key);
        }
    }

    /// The next answers: the first to come, with any that came in together (they share
    /// one flush); `None` when nothing is in flight.
    async fn answers(&mut self) -> Option<Vec<Answer>> {
        let first = self.running.join_next_with_id().await?;
        let mut answers = vec![first];
        while let Some(r) = self.running.try_join_next_with_id() {
            answers.push(r);
        }
        Some(answers)
    }

    /// Records each answer in the store: an accepted mail leaves the outbox, a refused
    /// one goes to the dead letters, a failure stops new hand-overs. Returns the entries
    /// done for good, with the mail when it was accepted.
    fn record(&mut self, store: &Store, answers: Vec<Answer>) -> Result<Vec<Finished>, SmtpError> {
        let mut finished = Vec::new();
        for answer in answers {
            let (key, delivery) = match answer {
                Ok((id, delivery)) => (self.in_flight.remove(&id), delivery),
                Err(e) => (self.in_flight.remove(&e.id()), Err(SmtpError::Task(e))),
            };
            let Some(key) = key else { continue };
            let stored = self
                .pending
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.mail.clone())
                .expect("a mail in flight is pending");
            let m = &stored.mail;
            match delivery {
                Ok(()) => {
                    store.outbox_done(key)?;
                    finished.push((key, Some(stored.clone())));
                }
                Err(e) if !e.is_temporary() => {
                    store.outbox_dead(key, &e.to_string())?;
                    self.counts.refused += 1;
                    tracing::error!(ticket = %m.ticket, message_id = %m.message_id, to = ?m.to, reason = %e, "Mail refused for good; kept in dead letters.");
                    finished.push((key, None));
                }
                Err(e) => {
                    if e.needs_operator() {
                        let section = self.transport.section_of(m);
                        tracing::error!(%section, ticket = %m.ticket, message_id = %m.message_id, reason = %e, "SMTP login failed; the mails this login sends wait until its password or token is mended.");
                    } else {
                        tracing::warn!(ticket = %m.ticket, message_id = %m.message_id, reason = %e, "Delivery failed; will retry.");
                    }
                    self.failed = true;
                }
            }
        }
        Ok(finished)
    }

    /// Drops the entries done for good, now that the store has it on disk.
    fn finish(&mut self, finished: Vec<Finished>) {
        for (key, accepted) in finished {
            self.pending.retain(|p| p.key != key);
            if let Some(m) = accepted.as_ref().map(|s| &s.mail) {
                self.counts.sent += 1;
                tracing::info!(ticket = %m.ticket, message_id = %m.message_id, kind = ?m.kind, to = ?m.to, "Mail accepted.");
            }
        }
    }
}

/// The longest wait between two drains while the server fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle sender looks at the outbox without being woken.
const IDLE_RESCAN: Duration = Duration::from_secs(30);

/// What the sender task is woken by and tells.
pub struct Signals {
    /// Mails are waiting: drain now.
    pub wake: Arc<Notify>,
    /// An operator sent refused mail again ([`Retry`]).
    pub retry: Retry,
    /// Told when a mail was refused for good (moved to the dead letters).
    pub refused: Arc<Notify>,
    pub stop: CancellationToken,
}

/// How an operator's retry of a refused mail reaches the sender: the next drain opens
/// new SMTP connections. The kept ones began their session before the cause was mended,
/// and a server may read its address tables only when a session starts (Postfix does),
/// so the mail would meet the old refusal again.
#[derive(Clone, Default)]
pub struct Retry(Arc<AtomicBool>);

impl Retry {
    /// A refused mail is back in the outbox.
    pub fn asked(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// The sender task: the only one that drains the outbox while the daemon runs (two
/// drainers could send one entry twice). It drains on every wake-up and on a timer,
/// backs off while the server fails, and on `stop` drains once more, bounded by
/// `final_drain`, so mails decided just before a stop go out now.
pub async fn run(store: Store, transport: Transport, signals: Signals, final_drain: Duration) {
    let Signals {
        wake,
        retry,
        refused,
        stop,
    } = signals;
    // A drain cut short by an error drops the mails it had in flight, whose answers are
    // then unknown: after that, no stop of this run is called clean.
    let mut clean = true;
    let mut backoff = Duration::from_secs(1);
    loop {
        if retry.take() {
            transport.close_idle().await;
        }
        let drained = drain(&store, &transport).await;
        if drained.as_ref().is_ok_and(|d| d.refused > 0) {
            refused.notify_one();
        }
        let wait = match drained {
            Ok(d) if d.left == 0 => {
                backoff = Duration::from_secs(1);
                IDLE_RESCAN
            }
            Ok(_) => grow(&mut backoff),
            Err(e) => {
                clean = false;
                tracing::error!(error = %e, "Outbox cannot be read; will retry.");
                grow(&mut backoff)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified(), if wait == IDLE_RESCAN => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    last_drain(&store, &transport, final_drain, clean).await;
}

/// The wait now; the next one is twice as long, up to [`MAX_BACKOFF`].
fn grow(backoff: &mut Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    wait
}

/// The drain at stop, within `limit`; notes a clean stop when every mail handed over in
/// this run got its answer.
async fn last_drain(store: &Store, transport: &Transport, limit: Duration, clean: bool) {
    match tokio::time::timeout(limit, drain(store, transport)).await {
        Ok(Ok(d)) => {
            if d.left > 0 {
                tracing::warn!(
                    left = d.left,
                    "Outbox not empty at stop; it is sent at the next start."
                );
            }
            // Every mail handed over got its answer: the next start has nothing to look up.
            if clean {
                if let Err(e) = store.outbox_stopped_clean().await {
                    tracing::warn!(error = %e, "Cannot note the clean stop; the next start looks up the first mails of the outbox.");
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "Last outbox drain failed; the outbox is kept."),
        // Dropping the drain dropped the mails in flight: their answers are unknown, and
        // the next start looks them up.
        Err(_) => {
            tracing::warn!("Last outbox drain took too long; the rest is sent at the next start.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::OutMail;

    fn ticket(id: &str) -> crate::ticket::Ticket {
        crate::ticket::Ticket::new(
            id.into(),
            "c@example.test".into(),
            "s".into(),
            "support".into(),
            "en".into(),
            "2026-12-01T00:00:00Z".into(),
        )
    }

    #[tokio::test]
    async fn a_long_outbox_is_sent_whole_a_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let n = DRAIN_BATCH * 2 + 7;
        let mails: Vec<OutMail> = (0..n)
            .map(|i| OutMail {
                message_id: format!("T-{i}.1.ack@mailtriage.example.test"),
                kind: crate::ticket::MailKind::Acknowledgement,
                ticket: format!("T-{i}"),
                envelope_from: None,
                to: vec![format!("c{i}@example.test")],
                identity: None,
                raw: format!("Subject: {i}\r\n\r\nhello\r\n").into_bytes(),
            })
            .collect();
        let t = ticket("T-0");
        store.commit_ticket(&t, &mails).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let d = drain(&store, &Transport::files(&out)).await.unwrap();
        assert_eq!(
            d,
            Drained {
                sent: n,
                refused: 0,
                left: 0
            }
        );
        assert_eq!(store.outbox_len(), 0);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), n);
    }

    #[tokio::test]
    async fn big_mails_are_sent_whole_from_the_spool_which_empties() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open(&state).unwrap();
        let body = "x".repeat(76) + "\r\n";
        let mails: Vec<OutMail> = (0..3)
            .map(|i| OutMail {
                message_id: format!("T-1.{i}@mailtriage.example.test"),
                kind: crate::ticket::MailKind::Forward,
                ticket: "T-1".into(),
                envelope_from: Some("triage@example.test".into()),
                to: vec!["support@example.test".into()],
                identity: None,
                raw: format!("Subject: {i}\r\n\r\n{}", body.repeat(4000)).into_bytes(),
            })
            .collect();
        let t = ticket("T-1");
        store.commit_ticket(&t, &mails).unwrap();
        assert_eq!(std::fs::read_dir(state.join("spool")).unwrap().count(), 3);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let d = drain(&store, &Transport::files(&out)).await.unwrap();
        assert_eq!(d.sent, 3);
        for e in std::fs::read_dir(&out).unwrap() {
            let sent = std::fs::read(e.unwrap().path()).unwrap();
            let sent = String::from_utf8_lossy(&sent);
            assert!(sent.contains(&body.repeat(4000)), "the whole mail");
        }
        assert_eq!(std::fs::read_dir(state.join("spool")).unwrap().count(), 0);
    }

    fn pending<'a>(entries: &[(&'a str, bool)]) -> Vec<(&'a str, bool)> {
        entries.to_vec()
    }

    #[test]
    fn first_entries_of_different_tickets_start_together() {
        let p = pending(&[
            ("T-1", false),
            ("T-2", false),
            ("T-3", false),
            ("T-4", false),
        ]);
        assert_eq!(ready(&p, 3), vec![0, 1, 2]);
        assert_eq!(ready(&p, 1), vec![0]);
    }

    #[test]
    fn a_ticket_waits_for_its_earlier_mail() {
        // T-1's second mail waits while its first is in flight, and keeps its place:
        // T-3 is beyond the window and waits too.
        let p = pending(&[
            ("T-1", true),
            ("T-1", false),
            ("T-2", false),
            ("T-3", false),
        ]);
        assert_eq!(ready(&p, 3), vec![2]);
        // Also when the earlier mail has not started either.
        let p = pending(&[("T-1", false), ("T-1", false), ("T-2", false)]);
        assert_eq!(ready(&p, 3), vec![0, 2]);
    }

    #[test]
    fn nothing_beyond_the_window_starts_even_when_the_head_is_busy() {
        let p = pending(&[("T-1", true), ("T-2", true), ("T-3", true), ("T-4", false)]);
        assert!(ready(&p, 3).is_empty());
        assert_eq!(ready(&p, 4), vec![3]);
    }

    #[test]
    fn in_flight_entries_are_not_started_again_and_empty_is_empty() {
        let p = pending(&[("T-1", true), ("T-2", false)]);
        assert_eq!(ready(&p, 16), vec![1]);
        assert!(ready::<&str>(&[], 3).is_empty());
    }
}
