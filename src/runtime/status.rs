//! What the running daemon knows about itself, for operators: each mailbox's connection
//! state, the last errors, the rules in force and the reloads. The mailbox tasks and the
//! reloader write it ([`Board`]); `mailtriage status` reads it over the control socket,
//! the systemd watchdog asks it whether the mailboxes are healthy, and the same events
//! move the Prometheus metrics (no-ops unless `[metrics] listen` is set).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::pipeline::{Action, Report};
use crate::record::{Adoption, Quarantined, Store};
use crate::send::{SmtpHealth, SmtpStatus};
use crate::source::Mode;

/// How many recent errors `status` shows.
const LAST_ERRORS: usize = 10;
/// How many of the last quarantined messages `status` lists.
const LAST_QUARANTINED: usize = 10;
/// By default, a mailbox that has not had a working connection for this long, or has
/// made no progress in a sync for this long, makes the daemon unhealthy for the systemd
/// watchdog: a restart is worth a try (`imap_options.unhealthy_after`).
pub const FAILING_TOO_LONG: Duration = Duration::from_secs(15 * 60);

/// A mailbox task's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Connecting,
    /// Connected and caught up (IDLE).
    Idle,
    /// Fetching and triaging.
    Syncing,
    /// The last connection failed; the task is waiting to reconnect.
    Failing,
    /// The task has ended (only at shutdown).
    Stopped,
}

impl State {
    fn code(self) -> f64 {
        match self {
            State::Connecting => 0.0,
            State::Idle => 1.0,
            State::Syncing => 2.0,
            State::Failing => 3.0,
            State::Stopped => 4.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MailboxStatus {
    pub state: State,
    /// Since when it is in this state (RFC 3339).
    pub since: String,
    /// When it last caught up with the server (RFC 3339).
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    /// Decides and records only; sends nothing and marks nothing.
    pub shadow: bool,
    /// When the last message was handled (RFC 3339).
    #[serde(default)]
    pub last_progress: Option<String>,
    /// Why the mailbox counts as unhealthy now (down, or stuck), if it does.
    #[serde(default)]
    pub problem: Option<String>,
    /// How the folder was taken on when first met (or met at a new UIDVALIDITY): what
    /// of the mail already there was left alone, and by which `start`.
    #[serde(default)]
    pub adoption: Option<Adoption>,
    /// How it runs on its server (push or poll, move or copy, marks on the server or
    /// in the state), from what the server offered at the last connection.
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(skip)]
    since_at: Option<SystemTime>,
    /// The start of the sync, or the last message handled in it.
    #[serde(skip)]
    progress_at: Option<SystemTime>,
    #[serde(skip)]
    ever_connected: bool,
}

/// The answer to `mailtriage status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub started: String,
    pub mailboxes: BTreeMap<String, MailboxStatus>,
    /// Mails waiting to be sent.
    pub outbox: usize,
    /// Mails shadow mode decided and did not send.
    pub shadow_mails: usize,
    /// Mails the SMTP server refused for good, kept as dead letters.
    #[serde(default)]
    pub dead_letters: usize,
    /// Messages kept for an operator (unreadable, over the time budget, or the daemon
    /// died on them twice), marked `$Quarantined` where they lie.
    #[serde(default)]
    pub quarantined: usize,
    /// The last of them, most recent first: where each lies and why.
    #[serde(default)]
    pub last_quarantined: Vec<Quarantined>,
    /// The whole daemon runs in shadow mode (`run --shadow`).
    pub shadow: bool,
    pub rules_file: String,
    /// Digest of the rules file in force.
    pub rules_version: String,
    pub rules_loaded: String,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The file on disk was refused, "TIME  WHY", until a reload succeeds: the rules in
    /// force are older than the file.
    #[serde(default)]
    pub rules_refused: Option<String>,
    /// Most recent first: "TIME  WHAT".
    pub last_errors: Vec<String>,
    /// The SMTP side: whether mail gets out, the server's last answer, counts.
    #[serde(default)]
    pub smtp: Option<SmtpStatus>,
}

#[derive(Default)]
struct Inner {
    report: StatusReport,
    errors: VecDeque<String>,
    smtp: Option<std::sync::Arc<SmtpHealth>>,
    unhealthy_after: Duration,
}

/// Shared by every task of the daemon.
#[derive(Default)]
pub struct Board {
    inner: Mutex<Inner>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Board {
    pub fn new(rules_file: &str, rules_version: &str, shadow: bool) -> Board {
        let now = SystemTime::now();
        let b = Board::default();
        {
            let mut i = b.lock();
            i.report.started = crate::when::stamp(now);
            i.report.rules_file = rules_file.to_string();
            i.report.rules_version = rules_version.to_string();
            i.report.rules_loaded = crate::when::stamp(now);
            i.report.shadow = shadow;
            i.unhealthy_after = FAILING_TOO_LONG;
        }
        b
    }

    /// How long a mailbox may be down, or make no progress, before it is unhealthy.
    pub fn set_unhealthy_after(&self, d: Duration) {
        self.lock().unhealthy_after = d;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves data that is still worth showing.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SMTP side whose health `status` shows.
    pub fn watch_smtp(&self, health: std::sync::Arc<SmtpHealth>) {
        metrics::gauge!("mailtriage_smtp_failing").set(0.0);
        self.lock().smtp = Some(health);
    }

    /// A mailbox task changes state. `key` is the mailbox name (or `name#folder` for a
    /// Sent-folder observer).
    pub fn set(&self, key: &str, state: State, shadow: bool) {
        let now = SystemTime::now();
        let mut i = self.lock();
        let m = i
            .report
            .mailboxes
            .entry(key.to_string())
            .or_insert_with(|| MailboxStatus {
                state,
                since: crate::when::stamp(now),
                last_sync: None,
                last_error: None,
                shadow,
                last_progress: None,
                problem: None,
                adoption: None,
                mode: None,
                since_at: Some(now),
                progress_at: None,
                ever_connected: false,
            });
        m.shadow = shadow;
        // Reconnecting after a failure is still failing: "since" stays at the first
        // failure, so `status` and the watchdog see how long the mailbox has been down.
        let down = |s: State| matches!(s, State::Connecting | State::Failing);
        if m.state != state && !(down(m.state) && down(state)) {
            m.since = crate::when::stamp(now);
            m.since_at = Some(now);
        }
        if state == State::Syncing && m.state != State::Syncing {
            m.progress_at = Some(now);
        }
        m.state = state;
        if matches!(state, State::Idle | State::Syncing) {
            m.ever_connected = true;
        }
        metrics::gauge!("mailtriage_mailbox_state", "mailbox" => key.to_string()).set(state.code());
        metrics::gauge!("mailtriage_mailbox_connected", "mailbox" => key.to_string()).set(
            if matches!(state, State::Idle | State::Syncing) {
                1.0
            } else {
                0.0
            },
        );
    }

    /// How a folder was taken on (see [`crate::runtime::adopt`]).
    pub fn adopted(&self, key: &str, adoption: &Adoption) {
        let mut i = self.lock();
        if let Some(m) = i.report.mailboxes.get_mut(key) {
            m.adoption = Some(adoption.clone());
        }
    }

    /// A mailbox connected and runs in `mode`.
    pub fn mode(&self, key: &str, mode: Mode) {
        let mut i = self.lock();
        if let Some(m) = i.report.mailboxes.get_mut(key) {
            m.mode = Some(mode);
        }
    }

    /// A mailbox handled one more message: it is not stuck.
    pub fn progressed(&self, key: &str) {
        let now = SystemTime::now();
        let mut i = self.lock();
        if let Some(m) = i.report.mailboxes.get_mut(key) {
            m.progress_at = Some(now);
            m.last_progress = Some(crate::when::stamp(now));
        }
    }

    /// A mailbox caught up with its server.
    pub fn synced(&self, key: &str, shadow: bool) {
        let now = SystemTime::now();
        self.set(key, State::Idle, shadow);
        let mut i = self.lock();
        if let Some(m) = i.report.mailboxes.get_mut(key) {
            m.last_sync = Some(crate::when::stamp(now));
        }
        metrics::gauge!("mailtriage_mailbox_last_sync_seconds", "mailbox" => key.to_string())
            .set(unix(now));
    }

    /// A mailbox connection failed.
    pub fn failed(&self, key: &str, error: &str, shadow: bool) {
        self.set(key, State::Failing, shadow);
        {
            let mut i = self.lock();
            if let Some(m) = i.report.mailboxes.get_mut(key) {
                m.last_error = Some(error.to_string());
            }
        }
        self.error(&format!("mailbox {key}: {error}"));
    }

    /// Anything an operator may want to see in `status`.
    pub fn error(&self, what: &str) {
        let mut i = self.lock();
        i.errors
            .push_front(format!("{}  {what}", crate::when::stamp(SystemTime::now())));
        i.errors.truncate(LAST_ERRORS);
    }

    pub fn reloaded(&self, version: &str) {
        let mut i = self.lock();
        i.report.rules_version = version.to_string();
        i.report.rules_loaded = crate::when::stamp(SystemTime::now());
        i.report.reloads_ok += 1;
        i.report.rules_refused = None;
        metrics::counter!("mailtriage_reloads_total", "result" => "ok").increment(1);
    }

    pub fn reload_failed(&self, why: &str) {
        {
            let mut i = self.lock();
            i.report.reloads_failed += 1;
            let at = crate::when::stamp(SystemTime::now());
            i.report.rules_refused = Some(format!("{at}  {why}"));
        }
        metrics::counter!("mailtriage_reloads_total", "result" => "failed").increment(1);
        self.error(&format!("reload refused: {why}"));
    }

    /// Every mailbox in `keys` has connected at least once: the daemon is ready.
    pub fn all_connected(&self, keys: &[String]) -> bool {
        let i = self.lock();
        keys.iter()
            .all(|k| i.report.mailboxes.get(k).is_some_and(|m| m.ever_connected))
    }

    /// For the watchdog: every mailbox task is running, none has been down and none has
    /// made no progress in a sync for longer than `unhealthy_after`. Also sets each
    /// mailbox's `mailtriage_mailbox_healthy` gauge.
    pub fn healthy(&self, keys: &[String], now: SystemTime) -> bool {
        let i = self.lock();
        let mut all = true;
        for k in keys {
            // Not started yet: nothing is wrong with it.
            let ok = i
                .report
                .mailboxes
                .get(k)
                .is_none_or(|m| problem(m, now, i.unhealthy_after).is_none());
            metrics::gauge!("mailtriage_mailbox_healthy", "mailbox" => k.clone())
                .set(f64::from(ok));
            all &= ok;
        }
        all
    }

    pub fn snapshot(&self, depths: Depths) -> StatusReport {
        self.snapshot_at(depths, SystemTime::now())
    }

    /// The report as of `now`, each mailbox with its problem if it has one.
    pub fn snapshot_at(&self, depths: Depths, now: SystemTime) -> StatusReport {
        let i = self.lock();
        let mut r = i.report.clone();
        for m in r.mailboxes.values_mut() {
            m.problem = problem(m, now, i.unhealthy_after);
        }
        r.outbox = depths.outbox;
        r.shadow_mails = depths.shadow_mails;
        r.dead_letters = depths.dead_letters;
        r.quarantined = depths.quarantined;
        r.last_quarantined = depths.last_quarantined;
        r.last_errors = i.errors.iter().cloned().collect();
        r.smtp = i.smtp.as_ref().map(|h| h.snapshot());
        r
    }
}

/// How many mails the state holds that have not gone out, by why, and the messages it
/// keeps for an operator.
#[derive(Debug, Clone, Default)]
pub struct Depths {
    /// Waiting to be sent.
    pub outbox: usize,
    /// Decided in shadow mode, never sent.
    pub shadow_mails: usize,
    /// Refused for good.
    pub dead_letters: usize,
    /// Messages quarantined.
    pub quarantined: usize,
    /// The last of them, most recent first.
    pub last_quarantined: Vec<Quarantined>,
}

impl Depths {
    /// The counts alone, as cheap as reading a few lengths (for the periodic gauges).
    pub fn of(store: &Store) -> Depths {
        Depths {
            outbox: store.outbox_len(),
            shadow_mails: store.shadow_len(),
            dead_letters: store.dead_letters_len(),
            quarantined: store.quarantined_len(),
            last_quarantined: Vec::new(),
        }
    }

    /// The counts and the last quarantined messages, for `status`.
    pub fn with_details(store: &Store) -> Depths {
        Depths {
            last_quarantined: store.quarantined(LAST_QUARANTINED).unwrap_or_default(),
            ..Depths::of(store)
        }
    }

    /// Sets the gauges of the mails not sent and the messages kept.
    pub fn measure(&self) {
        metrics::gauge!("mailtriage_outbox_depth").set(self.outbox as f64);
        metrics::gauge!("mailtriage_shadow_mails").set(self.shadow_mails as f64);
        metrics::gauge!("mailtriage_dead_letters").set(self.dead_letters as f64);
        metrics::gauge!("mailtriage_quarantined").set(self.quarantined as f64);
    }
}

/// Why mailbox `m` is unhealthy at `now`: down, or stuck in a sync, for longer than
/// `limit`, or stopped.
fn problem(m: &MailboxStatus, now: SystemTime, limit: Duration) -> Option<String> {
    let longer = |t: Option<SystemTime>| {
        t.and_then(|t| now.duration_since(t).ok())
            .filter(|d| *d >= limit)
            .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())))
    };
    match m.state {
        State::Stopped => Some("stopped".into()),
        State::Failing | State::Connecting => {
            longer(m.since_at).map(|d| format!("not connected for {d}"))
        }
        State::Syncing => longer(m.progress_at)
            .map(|d| format!("no progress for {d}: stuck in one message or one sync")),
        State::Idle => None,
    }
}

/// Counts one triaged message in the metrics.
pub fn count_message(mailbox: &str, r: &Report, shadow: bool) {
    let mb = mailbox.to_string();
    let mode = if shadow { "shadow" } else { "live" };
    metrics::counter!("mailtriage_messages_seen_total", "mailbox" => mb.clone(), "action" => r.action.as_str(), "mode" => mode)
        .increment(1);
    if r.action == Action::Forward {
        metrics::counter!("mailtriage_messages_forwarded_total", "mailbox" => mb.clone(), "mode" => mode)
            .increment(1);
    }
    if r.action == Action::Quarantine {
        metrics::counter!("mailtriage_messages_quarantined_total", "mailbox" => mb.clone())
            .increment(1);
    }
    if r.acknowledgement.send {
        metrics::counter!("mailtriage_messages_acknowledged_total", "mailbox" => mb.clone(), "mode" => mode)
            .increment(1);
    } else if let Some(reason) = r.acknowledgement.suppressed {
        metrics::counter!("mailtriage_acknowledgements_suppressed_total", "mailbox" => mb.clone(), "reason" => reason.code())
            .increment(1);
    }
    if !r.flags.is_empty() {
        metrics::counter!("mailtriage_messages_flagged_total", "mailbox" => mb).increment(1);
    }
}

/// Starts the Prometheus endpoint on `addr` (GET /metrics).
pub fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics endpoint on {addr}: {e}"))?;
    describe_metrics();
    Ok(())
}

/// The `# HELP` line of every metric, as the README's table says it.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("mailtriage_messages_seen_total", "Messages triaged.");
    describe_counter!(
        "mailtriage_messages_forwarded_total",
        "Messages forwarded to another queue."
    );
    describe_counter!(
        "mailtriage_messages_acknowledged_total",
        "Messages whose customer gets an acknowledgement."
    );
    describe_counter!(
        "mailtriage_acknowledgements_suppressed_total",
        "Messages that get no acknowledgement, by reason code."
    );
    describe_counter!(
        "mailtriage_messages_flagged_total",
        "Messages on which red flags fired."
    );
    describe_counter!(
        "mailtriage_messages_quarantined_total",
        "Messages that could not be triaged (unreadable, over the time budget, or the daemon died on them twice) and were kept for an operator."
    );
    describe_counter!(
        "mailtriage_reloads_total",
        "Rule reloads, applied or refused."
    );
    describe_counter!(
        "mailtriage_mails_total",
        "Mails handed to SMTP, by result: sent, deferred (retried), refused (dead letters)."
    );
    describe_gauge!(
        "mailtriage_smtp_failing",
        "1 while mails cannot get through to the SMTP server."
    );
    describe_gauge!("mailtriage_outbox_depth", "Mails waiting to be sent.");
    describe_gauge!(
        "mailtriage_quarantined",
        "Messages kept for an operator, marked $Quarantined where they lie: `mailtriage status`."
    );
    describe_gauge!(
        "mailtriage_shadow_mails",
        "Mails shadow mode decided and kept."
    );
    describe_gauge!(
        "mailtriage_dead_letters",
        "Mails the SMTP server refused for good (dead letters): `mailtriage outbox list`."
    );
    describe_gauge!(
        "mailtriage_mailbox_connected",
        "1 while the mailbox is connected."
    );
    describe_gauge!(
        "mailtriage_mailbox_healthy",
        "0 while the mailbox is down or stuck for longer than imap_options.unhealthy_after."
    );
    describe_gauge!(
        "mailtriage_mailbox_state",
        "0 connecting, 1 idle, 2 syncing, 3 failing, 4 stopped."
    );
    describe_gauge!(
        "mailtriage_mailbox_last_sync_seconds",
        "Unix time of the mailbox's last catch-up."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_that_keeps_failing_is_failing_since_its_first_failure() {
        let b = Board::new("rules.toml", "v1", false);
        let keys = vec!["billing".to_string()];
        b.set("billing", State::Connecting, false);
        b.failed("billing", "login refused", false);
        let first = b.snapshot(Depths::default()).mailboxes["billing"]
            .since
            .clone();
        std::thread::sleep(Duration::from_millis(20));
        // Each retry connects and fails again.
        for _ in 0..3 {
            b.set("billing", State::Connecting, false);
            b.failed("billing", "login refused", false);
        }
        assert_eq!(
            b.snapshot(Depths::default()).mailboxes["billing"].since,
            first
        );
        let later = SystemTime::now() + FAILING_TOO_LONG + Duration::from_secs(1);
        assert!(!b.healthy(&keys, later), "the watchdog must see it");
        // Connected again: a new "since", and healthy.
        b.synced("billing", false);
        assert_ne!(
            b.snapshot(Depths::default()).mailboxes["billing"].since,
            first
        );
        assert!(b.healthy(&keys, later));
    }

    #[test]
    fn a_mailbox_stuck_in_one_message_is_unhealthy_and_says_so() {
        let b = Board::new("rules.toml", "v1", false);
        b.set_unhealthy_after(Duration::from_secs(60));
        let keys = vec!["billing".to_string()];
        let t0 = SystemTime::now();
        b.set("billing", State::Syncing, false);
        // A long backlog that moves on is healthy, however long it takes.
        b.progressed("billing");
        assert!(b.healthy(&keys, t0 + Duration::from_secs(59)));
        let stuck = t0 + Duration::from_secs(120);
        assert!(!b.healthy(&keys, stuck), "no progress for two minutes");
        let st = b.snapshot_at(Depths::default(), stuck);
        let problem = st.mailboxes["billing"].problem.clone().unwrap_or_default();
        assert!(problem.contains("no progress"), "{problem}");
        assert!(st.mailboxes["billing"].last_progress.is_some());
        // Idle is healthy whatever the time.
        b.synced("billing", false);
        assert!(b.healthy(&keys, stuck));
        assert_eq!(
            b.snapshot_at(Depths::default(), stuck).mailboxes["billing"].problem,
            None
        );
    }
}
