//! Runtime, the runner: one task per watched folder. It drives the source (connect,
//! take the folder on or go on from the checkpoint ([`crate::runtime::adopt`]), catch
//! up, wait for new mail, again), hands every fetched message
//! to the pipeline off the async threads, counts and logs what became of it, carries
//! out the marks the pipeline recorded, and keeps the status board current. Any failure
//! drops the connection and reconnects with capped exponential backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Mailbox, Rules};
use crate::pipeline::{self, Budget, Incoming, PipelineError, Report};
use crate::record::{Checkpoint, Mark, Store, StoreError};
use crate::runtime::adopt;
use crate::runtime::status::{self, Board, State};
use crate::source::{self, Connection, Fetched, ImapError, Marks, Mode, Source};
use crate::ticket::{KEYWORD_QUARANTINED, KEYWORD_TRIAGED};

/// Attempts at one message the daemon may die in before the message is quarantined.
const ATTEMPTS: u32 = 2;

/// Why a mailbox's session ended; the runner reconnects after any of them.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error("state: {0}")]
    Store(#[from] StoreError),
    #[error("triage: {0}")]
    Pipeline(#[from] PipelineError),
    #[error("triage: mailbox {0:?} is no longer in the rules")]
    MailboxGone(String),
    #[error("triage: {0} task failed: {1}")]
    Task(&'static str, tokio::task::JoinError),
}

impl RunError {
    /// Whether reconnecting may help; otherwise an operator must fix the settings. A
    /// message the pipeline failed on is tried again after the reconnect.
    pub fn is_temporary(&self) -> bool {
        match self {
            RunError::Imap(e) => e.is_temporary(),
            _ => true,
        }
    }
}

/// What the mailbox tasks share with the rest of the daemon.
#[derive(Clone)]
pub struct Shared {
    pub rules: Arc<ArcSwap<Rules>>,
    pub store: Store,
    /// Wakes the outbox sender once a batch is on disk.
    pub outbox: Arc<Notify>,
    pub stop: CancellationToken,
    /// Connection states and errors, for `status`, the watchdog and metrics.
    pub board: Arc<Board>,
    /// The whole daemon runs in shadow mode (`run --shadow`).
    pub shadow: bool,
    /// The CPU time one message may take (`[limits] triage_budget`).
    pub budget: Duration,
    /// The bytes of mail one fetch may bring in (`[limits] fetch_bytes`).
    pub fetch_bytes: u64,
    /// Folders whose next batch counts each message's attempt durably before triage:
    /// every folder after a run that died, until a batch of it went through.
    pub careful: Arc<Mutex<BTreeSet<String>>>,
}

impl Shared {
    /// Whether this mailbox runs in shadow mode now (the rules can change it).
    fn shadow(&self, mailbox: &str) -> bool {
        self.shadow
            || self
                .rules
                .load()
                .mailboxes
                .get(mailbox)
                .is_some_and(|m| m.shadow)
    }

    fn careful(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.careful.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source's state on the status board.
    pub(super) fn show(&self, source: &Source, state: State) {
        let shadow = self.shadow(&source.name);
        self.board.set(&source.checkpoint_key(), state, shadow);
    }
}

/// Runs one mailbox until `stop`: connect, sync, idle; reconnect with backoff on failure.
pub async fn run(source: Source, shared: Shared) {
    let mut backoff = Duration::from_secs(1);
    // The mode last said, so that it is said once, not at every reconnect.
    let mut said = None;
    while !shared.stop.is_cancelled() {
        let started = Instant::now();
        shared.show(&source, State::Connecting);
        let Err(e) = session(&source, &shared, &mut said).await else {
            break;
        };
        let shadow = shared.shadow(&source.name);
        shared
            .board
            .failed(&source.checkpoint_key(), &e.to_string(), shadow);
        // A session that ran for a while was healthy: start the backoff again.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        log_failure(&source.name, &e, backoff);
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(source.options.max_backoff);
    }
    shared.show(&source, State::Stopped);
    tracing::info!(mailbox = %source.name, "Mailbox task stopped.");
}

fn log_failure(mailbox: &str, e: &RunError, retry_in: Duration) {
    if e.is_temporary() {
        tracing::warn!(mailbox = %mailbox, error = %e, retry_in = ?retry_in, "Mailbox connection failed; reconnecting.")
    } else {
        let section = format!("mailboxes.{mailbox}");
        tracing::error!(mailbox = %mailbox, section = %section, error = %e, retry_in = ?retry_in, "Mailbox cannot log in; an operator must fix the settings.")
    }
}

/// One connection: catch up, wait for mail, catch up again, until `stop` or a failure.
async fn session(
    source: &Source,
    shared: &Shared,
    said: &mut Option<Mode>,
) -> Result<(), RunError> {
    let mut conn = Connection::open(source).await?;
    shared.board.mode(&source.checkpoint_key(), conn.mode());
    if said.replace(conn.mode()) != Some(conn.mode()) && !source.observe {
        say_mode(source, &conn);
    }
    let opening = adopt::opening(
        source,
        &shared.store,
        conn.uid_validity(),
        SystemTime::now(),
    )?;
    tracing::info!(mailbox = %source.name, folder = %source.folder, uid_validity = conn.uid_validity(), checkpoint = %opening, exists = conn.exists(), "Mailbox connected.");
    if !source.observe {
        apply_marks(&mut conn, source, &shared.store).await?;
    }
    let mut last = adopt::open(&mut conn, source, shared, opening).await?;
    // Until when the mailbox is asked with NOOP rather than IDLE, after new mail.
    let mut poll_until = Instant::now();
    loop {
        shared.show(source, State::Syncing);
        let before = last;
        last = catch_up(&mut conn, source, shared, last).await?;
        if last > before {
            poll_until = Instant::now() + source.options.poll_after_mail;
        }
        let shadow = shared.shadow(&source.name);
        shared.board.synced(&source.checkpoint_key(), shadow);
        if shared.stop.is_cancelled() {
            conn.logout().await;
            return Ok(());
        }
        conn = conn.wait_for_mail(poll_until, &shared.stop).await?;
    }
}

/// Says how the mailbox runs on this server (once at start, and again only when it
/// changes): an INFO line, and a WARN when the marks live in the state only.
fn say_mode(source: &Source, conn: &Connection) {
    let (mode, offered) = (conn.mode(), conn.offered());
    tracing::info!(mailbox = %source.name, folder = %source.folder, wait = %mode.wait, moves = %mode.moves, marks = %mode.marks, idle = offered.idle, r#move = offered.moves, uidplus = offered.uidplus, "Mailbox mode set from what the server offers.");
    if mode.marks == Marks::State {
        tracing::warn!(mailbox = %source.name, folder = %source.folder, "The folder keeps no new keywords (no \\* in PERMANENTFLAGS): marks such as $Triaged live in the state only; other clients will not see them.");
    }
}

/// Fetches and handles everything above `last`, in UID order, in bounded batches.
async fn catch_up(
    conn: &mut Connection,
    source: &Source,
    shared: &Shared,
    mut last: u32,
) -> Result<u32, RunError> {
    let uids = conn.uids_after(last).await?;
    if uids.is_empty() {
        return Ok(last);
    }
    tracing::info!(mailbox = %source.name, count = uids.len(), from_uid = uids[0], "New messages.");
    for chunk in conn.batches(&uids, shared.fetch_bytes).await? {
        last = last.max(handle(conn, source, shared, &chunk).await?);
    }
    Ok(last)
}

/// Fetches and handles the messages `uids` (a batch of [`Connection::batches`]): triages
/// them and sets their marks, or, in a Sent folder, observes them. Returns the last UID
/// handled (0 when the server had none of them any more).
pub(super) async fn handle(
    conn: &mut Connection,
    source: &Source,
    shared: &Shared,
    uids: &[u32],
) -> Result<u32, RunError> {
    let fetched = conn.fetch(uids).await?;
    let batch = Batch::new(source, shared, conn.uid_validity(), fetched);
    if source.observe {
        let key = source.checkpoint_key();
        let observed = tokio::task::spawn_blocking(move || batch.observe(&key));
        return observed.await.map_err(|e| RunError::Task("observe", e))?;
    }
    let triaged = tokio::task::spawn_blocking(move || batch.triage());
    let last = triaged.await.map_err(|e| RunError::Task("triage", e))??;
    shared.careful().remove(&source.checkpoint_key());
    shared.outbox.notify_one();
    apply_marks(conn, source, &shared.store).await?;
    Ok(last)
}

/// One fetched batch and what handling it needs, for a blocking thread: parse, classify
/// and record are blocking work (sled and the regexes).
struct Batch {
    rules: Arc<Rules>,
    store: Store,
    /// Told of every message handled, so that a stuck sync shows.
    board: Arc<Board>,
    key: String,
    mailbox: String,
    /// The folder the messages lie in.
    folder: String,
    shadow: bool,
    uid_validity: u32,
    messages: Vec<Fetched>,
    /// The CPU time each message may take.
    budget: Duration,
    /// Each message's attempt is flushed before its triage (see [`Shared::careful`]).
    careful: bool,
}

impl Batch {
    fn new(source: &Source, shared: &Shared, uid_validity: u32, messages: Vec<Fetched>) -> Batch {
        let rules = shared.rules.load_full();
        let shadow = shared.shadow(&source.name);
        Batch {
            rules,
            // Shadow mode records the decisions and keeps their mails and marks from
            // ever leaving: see Store::shadowed.
            store: if shadow {
                shared.store.shadowed()
            } else {
                shared.store.clone()
            },
            board: shared.board.clone(),
            key: source.checkpoint_key(),
            mailbox: source.name.clone(),
            folder: source.folder.clone(),
            shadow,
            uid_validity,
            messages,
            budget: shared.budget,
            careful: shared.careful().contains(&source.checkpoint_key()),
        }
    }

    fn checkpoint(&self, uid: u32) -> Checkpoint {
        Checkpoint {
            uid_validity: self.uid_validity,
            last_uid: uid,
        }
    }

    /// A Sent folder's batch: each message updates its ticket, if any; returns the last UID.
    fn observe(self, key: &str) -> Result<u32, RunError> {
        let mut last = 0;
        for m in &self.messages {
            if let Some(ticket) =
                pipeline::observe_sent(&self.rules, &self.store, &m.raw, super::now::now())?
            {
                tracing::info!(mailbox = %self.mailbox, uid = m.uid, ticket = %ticket, "Staff reply seen in the ticket.");
            }
            self.store.advance_checkpoint(key, self.checkpoint(m.uid))?;
            self.board.progressed(&self.key);
            last = m.uid;
        }
        self.store.flush()?;
        Ok(last)
    }

    /// Triages every message of the batch in UID order; returns the last UID.
    fn triage(self) -> Result<u32, RunError> {
        let mailbox = self
            .rules
            .mailboxes
            .get(&self.mailbox)
            .ok_or_else(|| RunError::MailboxGone(self.mailbox.clone()))?;
        let mut last = 0;
        for m in &self.messages {
            let cp = self.checkpoint(m.uid);
            if m.keywords
                .iter()
                .any(|k| k == KEYWORD_TRIAGED || k == KEYWORD_QUARANTINED)
            {
                // Marked on the server by an earlier run: handled, whatever the local state says.
                self.store.advance_checkpoint(&self.mailbox, cp)?;
                tracing::info!(mailbox = %self.mailbox, uid = m.uid, "Already marked as triaged on the server; skipped.");
            } else {
                let span = tracing::info_span!("message", mailbox = %self.mailbox, uid = m.uid);
                let _g = span.enter();
                // On failure the message stays above the checkpoint and is tried again
                // after a reconnect; it is never skipped silently.
                let r = self.attempt(mailbox, m, cp)?;
                status::count_message(&self.mailbox, &r, self.shadow);
                log_triaged(&r, self.shadow);
            }
            self.board.progressed(&self.key);
            last = m.uid;
        }
        self.store.flush()?;
        Ok(last)
    }

    /// One attempt at a message, counted in the state before it begins: a message the
    /// daemon died on twice (a crash, a kill, the watchdog after a hang) is quarantined
    /// for good instead of being tried a third time, so no message can keep a mailbox
    /// in a loop of restarts.
    fn attempt(
        &self,
        mailbox: &Mailbox,
        m: &Fetched,
        cp: Checkpoint,
    ) -> Result<Report, PipelineError> {
        let incoming = Incoming {
            mailbox,
            raw: &m.raw,
            source: Some(cp),
            folder: Some(&self.folder),
        };
        let died = self.store.attempt(&self.mailbox, cp, self.careful)?;
        if died >= ATTEMPTS {
            let reason = format!("the daemon stopped {died} times while triaging this message (a crash, a kill or a hang): it is not tried again");
            let now = SystemTime::now();
            return Ok(pipeline::quarantine_unread(
                &self.store,
                incoming,
                reason,
                now,
            )?);
        }
        let r = self.triage_one(incoming);
        if r.is_err() {
            // The state failed, not the message: the attempt does not count.
            self.store.attempt_ended(&self.mailbox, cp)?;
        }
        r
    }

    /// The pipeline on one message, within the CPU budget. A panic on it quarantines
    /// the message, so that one message cannot stop its mailbox.
    fn triage_one(&self, incoming: Incoming<'_>) -> Result<Report, PipelineError> {
        let budget = Budget::start(self.budget);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::triage_within(
                &self.rules,
                &self.store,
                incoming,
                &budget,
                super::now::now(),
            )
        }))
        .unwrap_or_else(|p| {
            let reason = format!("triage failed on this message: {}", panic_text(&*p));
            let now = super::now::now();
            Ok(pipeline::quarantine_unread(
                &self.store,
                incoming,
                reason,
                now,
            )?)
        })
    }
}

/// What a panic said, when it said it with a string.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn log_triaged(r: &Report, shadow: bool) {
    tracing::info!(
        shadow,
        message_id = %r.message_id.as_deref().unwrap_or("-"),
        from = %r.from.as_deref().unwrap_or("-"),
        ticket = %r.ticket.as_deref().unwrap_or("-"),
        action = %r.action,
        category = %r.category.as_deref().unwrap_or("-"),
        queue = %r.queue.as_deref().unwrap_or("-"),
        ack = r.acknowledgement.send,
        suppressed = %r.acknowledgement.suppressed.map_or("-", |s| s.code()),
        "Message triaged."
    );
}

/// Carries out the marks recorded for this mailbox: keywords, then the move when
/// configured; each is done once the server has it.
async fn apply_marks(
    conn: &mut Connection,
    source: &Source,
    store: &Store,
) -> Result<(), RunError> {
    for ((keywords, move_to), marks) in marks_alike(store, &source.name, conn.uid_validity())? {
        for chunk in marks.chunks(source::MARK_BATCH) {
            let uids: Vec<u32> = chunk.iter().map(|m| m.uid).collect();
            conn.mark(&uids, &keywords, move_to.as_deref()).await?;
            for m in chunk {
                store.mark_done(m)?;
            }
        }
    }
    Ok(())
}

/// What a mark does: the keywords it adds, the folder it moves the message to.
type MarkKind = (Vec<String>, Option<String>);

/// The marks waiting for this mailbox, grouped by keywords and move: one UID STORE (and
/// one UID MOVE) per set of marks that are alike, not one per message, so a backlog of a
/// thousand messages costs a few round trips, not thousands.
fn marks_alike(
    store: &Store,
    mailbox: &str,
    uid_validity: u32,
) -> Result<BTreeMap<MarkKind, Vec<Mark>>, StoreError> {
    let mut groups: BTreeMap<_, Vec<Mark>> = BTreeMap::new();
    for m in store.pending_marks(mailbox)? {
        if m.uid_validity != uid_validity {
            // The UIDs of another UIDVALIDITY mean nothing now.
            store.mark_done(&m)?;
            continue;
        }
        groups
            .entry((m.keywords.clone(), m.move_to.clone()))
            .or_default()
            .push(m);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary(n: u32) -> Vec<u8> {
        format!("From: Ivan <ivan{n}@client.example>\r\nTo: billing@example.test\r\nSubject: The site is down\r\nMessage-ID: <m{n}@client.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe website has been down since the morning.\r\n").into_bytes()
    }

    /// A message whose parse alone takes longer than an ordinary message's whole triage:
    /// 24 MB of body in one line, the long word the shipped rules run over.
    fn heavy() -> Vec<u8> {
        let mut raw = b"From: x@client.example\r\nTo: billing@example.test\r\nSubject: big\r\nMessage-ID: <heavy@client.example>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".to_vec();
        // 24 MB, just under max_message_size: its parse alone took 85 ms in a release
        // build and 800 ms in the debug one, an ordinary message's whole triage 2-3 ms in
        // the debug one: the test's 20 ms budget lies well between, in either build.
        raw.extend("=D1=81=D1=87=D1=91=D1=82".repeat(1_000_000).as_bytes());
        raw.extend_from_slice(b"\r\n");
        raw
    }

    fn batch(store: &Store, budget: Duration, raws: Vec<Vec<u8>>) -> Batch {
        let messages = raws
            .into_iter()
            .zip(1..)
            .map(|(raw, uid)| Fetched {
                uid,
                keywords: Vec::new(),
                arrived: None,
                raw,
            })
            .collect();
        Batch {
            rules: Arc::new(crate::config::testing::shipped()),
            store: store.clone(),
            board: Arc::new(Board::default()),
            key: "billing".into(),
            mailbox: "billing".into(),
            folder: "INBOX".into(),
            shadow: false,
            uid_validity: 7,
            messages,
            budget,
            careful: false,
        }
    }

    fn cp(uid: u32) -> Checkpoint {
        Checkpoint {
            uid_validity: 7,
            last_uid: uid,
        }
    }

    #[test]
    fn a_message_past_its_time_budget_is_quarantined_and_the_mailbox_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raws = vec![ordinary(1), heavy(), ordinary(3)];
        let last = batch(&store, Duration::from_millis(20), raws)
            .triage()
            .unwrap();
        assert_eq!(last, 3);
        assert_eq!(store.checkpoint("billing").unwrap(), Some(cp(3)));
        let kept = store.quarantined(10).unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            (kept[0].mailbox.as_str(), kept[0].uid),
            ("billing", Some(2))
        );
        assert!(
            kept[0]
                .reason
                .contains("time budget of 20ms CPU (limits.triage_budget)"),
            "{}",
            kept[0].reason
        );
        // Marked where it lies, so that it is not fetched again; the others forwarded.
        let marks = store.pending_marks("billing").unwrap();
        let of = |uid: u32| {
            marks
                .iter()
                .find(|m| m.uid == uid)
                .unwrap()
                .keywords
                .clone()
        };
        assert_eq!(of(2), vec!["$Quarantined".to_string()]);
        assert!(of(1).contains(&"$Forwarded".to_string()));
        assert!(of(3).contains(&"$Forwarded".to_string()));
        // Each message's triage ended: no attempt is left counted.
        for uid in 1..=3 {
            assert_eq!(store.attempt("billing", cp(uid), false).unwrap(), 0);
        }
    }

    #[test]
    fn a_message_the_daemon_died_on_twice_is_quarantined_for_good_and_once_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Two runs died while triaging UID 2, one while triaging UID 3.
        for uid in [2, 2, 3] {
            store.attempt("billing", cp(uid), true).unwrap();
        }
        let raws = vec![ordinary(1), ordinary(2), ordinary(3)];
        batch(&store, Duration::from_secs(2), raws)
            .triage()
            .unwrap();
        let kept = store.quarantined(10).unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(kept[0].uid, Some(2));
        assert!(
            kept[0].reason.contains("stopped 2 times while triaging"),
            "{}",
            kept[0].reason
        );
        assert_eq!(
            store.message("m2@client.example").unwrap(),
            None,
            "never read: known by its digest"
        );
        let t3 = store.message("m3@client.example").unwrap().unwrap();
        assert_eq!(
            t3.disposition.as_str(),
            "forwarded",
            "one death: tried again"
        );
        assert_eq!(store.attempt("billing", cp(2), false).unwrap(), 0);
    }

    #[test]
    fn the_runs_after_a_death_count_attempts_durably() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(
            !store.triage_begins().unwrap(),
            "a fresh state: nothing died"
        );
        batch(&store, Duration::from_secs(2), vec![ordinary(1)])
            .triage()
            .unwrap();
        assert!(store.triage_begins().unwrap(), "no clean stop was noted");
        store.triage_stopped_clean().unwrap();
        assert!(!store.triage_begins().unwrap());
        assert!(store.triage_begins().unwrap(), "the note is used once");
    }
}
