//! The daemon: loads and checks the configuration, opens the state, and wires the
//! tasks: a runner per watched folder, the outbox sender, the follow-up clock, reloads,
//! systemd and the control socket. Only this module knows the wiring. SIGTERM/SIGINT
//! stop it cleanly (a second signal exits at once); SIGHUP and a change to rules.toml
//! reload the rules ([`crate::runtime::reload`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, ConfigErrors, Rules, Settings};
use crate::pipeline::ruletest;
use crate::record::{Store, StoreError};
use crate::runtime::runner::{self, Shared};
use crate::runtime::status::Board;
use crate::runtime::{control, followup, refused, reload, retention, systemd};
use crate::send::{self, settle, SmtpError, Transport};
use crate::source::{self, Source};
use crate::tls::{ImapTls, TlsError};

/// How long tasks get to finish the message in hand after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long the start waits for a mail in flight at the last stop to be delivered where
/// it is looked for: Postfix delivers an accepted mail within milliseconds, unless busy.
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(5);

/// What the daemon is started with.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// rules.toml: watched, and reloaded when it changes.
    pub rules: PathBuf,
    /// mailtriage.toml: read once at start.
    pub config: PathBuf,
    /// Decide and record only: send nothing, change nothing on the server.
    pub shadow: bool,
}

/// Why the daemon could not start, or could not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("{errors}\n{}: {} error(s); nothing was changed", .path.display(), .errors.0.len())]
    Rules { path: PathBuf, errors: ConfigErrors },
    #[error("{errors}\n{}: {} error(s)", .path.display(), .errors.0.len())]
    Settings { path: PathBuf, errors: ConfigErrors },
    /// The settings do not fit the rules (a mailbox without a login, ...).
    #[error("{0}")]
    Mismatch(ConfigErrors),
    #[error("state directory {}: {source}", .path.display())]
    State { path: PathBuf, source: StoreError },
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Metrics(String),
    #[error("state: {0}")]
    Flush(StoreError),
}

impl DaemonError {
    /// Whether starting again may help; otherwise an operator must fix the files, the
    /// state directory or the address.
    pub fn is_temporary(&self) -> bool {
        match self {
            DaemonError::Signal(_) | DaemonError::Flush(_) => true,
            DaemonError::Smtp(e) => e.is_temporary(),
            _ => false,
        }
    }
}

/// What the start loaded and opened.
struct Loaded {
    rules: Rules,
    settings: Settings,
    store: Store,
    transport: Transport,
    tls: ImapTls,
}

/// The running tasks, in the order they stop.
struct Tasks {
    shared: Shared,
    /// The runners and the follow-up clock.
    mailboxes: TaskTracker,
    control: JoinHandle<()>,
    /// The sender has its own token: it keeps draining while the mailboxes finish the
    /// message in hand, and stops last.
    sender_stop: CancellationToken,
    sender: JoinHandle<()>,
    /// The state itself, not shadowed.
    store: Store,
}

pub async fn run(inputs: &Inputs) -> Result<(), DaemonError> {
    // First of all: a SIGTERM during start-up (loading, recovery, connecting) must stop
    // the daemon cleanly once it is up, not kill it with the default action.
    let mut signals = Signals::new();
    // Listened to before anything else: SIGHUP's default action would end the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signal)?;
    let loaded = load(inputs)?;
    super::now::init();
    settle_in_flight(&loaded).await;
    start_metrics(&loaded.settings)?;
    let tasks = start(loaded, inputs, hup);
    signals.recv().await;
    stop(tasks, signals).await
}

/// The rules (with their `[[tests]]` run, as `check` and every reload run them), the
/// settings, the state, and the TLS and SMTP set-up, checked in this order before
/// anything runs.
fn load(inputs: &Inputs) -> Result<Loaded, DaemonError> {
    let rules = ruletest::load(&inputs.rules).map_err(|errors| DaemonError::Rules {
        path: inputs.rules.clone(),
        errors,
    })?;
    for w in &rules.warnings {
        tracing::warn!(warning = %w, "Rules warning.");
    }
    let settings = Settings::load(&inputs.config).map_err(|errors| DaemonError::Settings {
        path: inputs.config.clone(),
        errors,
    })?;
    let mismatch: Vec<ConfigError> = settings.check_against(&rules);
    if !mismatch.is_empty() {
        return Err(DaemonError::Mismatch(ConfigErrors(mismatch)));
    }
    for w in settings.blind_queues(&rules) {
        tracing::warn!(warning = %w, "Staff answers cannot be seen.");
    }
    let store = open_state(&settings.state_dir)?;
    let archive = settings.archive.as_ref().map(|a| a.address.as_str());
    let transport = Transport::smtp(&settings.smtp, &settings.smtp_identities(), archive)?;
    let tls = ImapTls::new(&settings)?;
    Ok(Loaded {
        rules,
        settings,
        store,
        transport,
        tls,
    })
}

/// The state, or a fresh one when it would not open (the old one moved aside).
fn open_state(dir: &Path) -> Result<Store, DaemonError> {
    let (store, recovered) = Store::open_or_recover(dir).map_err(|source| DaemonError::State {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some((aside, why)) = recovered {
        // Tickets, history and unsent mail of the old state are not in the new one: an
        // operator should look at what was moved aside.
        tracing::error!(moved_to = %aside.display(), error = %why, "State database would not open; it was moved aside and a fresh state started. Messages marked on the server are not triaged again; tickets and unsent mail of the old state are in the moved directory.");
        raise_ticket_numbers(&store);
    }
    // A state written before the open index: built once, before anything writes.
    match store.migrate_lifecycle() {
        Ok(Some(m)) => {
            tracing::info!(
                tickets = m.tickets,
                entries = m.entries,
                "Open-ticket index and retention index built for the existing state."
            )
        }
        Ok(None) => {}
        Err(source) => {
            return Err(DaemonError::State {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    Ok(store)
}

/// New tickets must not reuse numbers the lost state gave out: they continue from a
/// number that only grows with time (seconds since 2020), above the old ones unless the
/// old state opened more than one ticket a second on average.
fn raise_ticket_numbers(store: &Store) {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(1_577_836_800);
    if let Err(e) = store.raise_ticket_numbers(1_000_000 + seconds) {
        tracing::warn!(error = %e, "Cannot raise ticket numbers after recovery.");
    }
}

/// Settles the mails in flight at the last stop (see [`settle`]): every place is
/// searched at once, within one patience.
async fn settle_in_flight(l: &Loaded) {
    let in_flight = settle::in_flight(&l.store, &l.rules, &l.settings);
    if in_flight.is_empty() {
        return;
    }
    let searches = settle::searches(&in_flight)
        .into_iter()
        .map(|(name, (login, ids))| {
            let src = Source::new(name, &l.settings, login, &l.tls, true);
            async move {
                let r = source::messages_present(&src, &ids, IN_FLIGHT_PATIENCE).await;
                (src.name, r)
            }
        });
    let mut found = settle::Found::new();
    for (name, r) in futures::future::join_all(searches).await {
        match r {
            Ok(ids) => {
                found.insert(name, ids);
            }
            Err(e) => {
                tracing::warn!(mailbox = %name, error = %e, "Cannot look for the mails in flight at the last stop; they are sent again, and a receiver may see one twice.");
            }
        }
    }
    settle::settle(&l.store, in_flight, &found, l.settings.archive.is_some());
}

fn start_metrics(settings: &Settings) -> Result<(), DaemonError> {
    if let Some(addr) = settings.metrics_listen {
        crate::runtime::status::serve_metrics(addr).map_err(DaemonError::Metrics)?;
        tracing::info!(listen = %addr, "Metrics endpoint listening.");
    }
    Ok(())
}

/// Starts every task.
fn start(l: Loaded, inputs: &Inputs, hup: tokio::signal::unix::Signal) -> Tasks {
    let board = Arc::new(Board::new(
        &inputs.rules.display().to_string(),
        &l.rules.version,
        inputs.shadow,
    ));
    board.set_unhealthy_after(l.settings.imap_options.unhealthy_after);
    if let Some(health) = l.transport.health() {
        board.watch_smtp(health);
    }
    if inputs.shadow {
        tracing::warn!("Shadow mode: messages are triaged and recorded; nothing is sent and nothing is changed on the server.");
    }
    let shared = Shared {
        rules: Arc::new(ArcSwap::from_pointee(l.rules)),
        // A daemon in shadow mode records every mail as a shadow mail, reminders too.
        store: if inputs.shadow {
            l.store.shadowed()
        } else {
            l.store.clone()
        },
        outbox: Arc::new(Notify::new()),
        stop: CancellationToken::new(),
        board,
        shadow: inputs.shadow,
        budget: l.settings.limits.triage_budget,
        fetch_bytes: l.settings.limits.fetch_bytes,
        careful: Arc::new(Mutex::new(careful(&l.store, &l.settings))),
    };
    let sender_stop = CancellationToken::new();
    let refused = Arc::new(Notify::new());
    let retry = send::Retry::default();
    let signals = send::Signals {
        wake: shared.outbox.clone(),
        retry: retry.clone(),
        refused: refused.clone(),
        stop: sender_stop.clone(),
    };
    let sender = start_sender(&l.store, l.transport, signals);
    let mailboxes = TaskTracker::new();
    let keys = start_mailboxes(&l.settings, &l.tls, &shared, &mailboxes);
    // Reminders, escalations and status mails for tickets nobody answered in time.
    mailboxes.spawn(followup::clock(shared.clone()));
    // A mail refused for good goes into its ticket's history, and a queue is told.
    mailboxes.spawn(refused::run(shared.clone(), refused));
    // Resolved tickets and index entries older than the retention leave the state.
    mailboxes.spawn(retention::run(shared.clone()));
    mailboxes.close();
    let control = tokio::spawn(control::serve(
        control::socket_path(&l.settings.state_dir),
        l.store.clone(),
        shared.board.clone(),
        (shared.outbox.clone(), retry),
        shared.stop.clone(),
    ));
    let (rules, config) = (inputs.rules.clone(), inputs.config.clone());
    tokio::spawn(reload::run(rules, config, shared.clone(), hup));
    tokio::spawn(systemd::run(keys, shared.clone()));
    tracing::info!(mailboxes = l.settings.mailboxes.len(), state = %l.settings.state_dir.display(), "mailtriage running.");
    Tasks {
        shared,
        mailboxes,
        control,
        sender_stop,
        sender,
        store: l.store,
    }
}

/// The folders whose first batch counts attempts durably: all of them when the last
/// run died with messages perhaps in hand (see [`Store::triage_begins`]).
fn careful(store: &Store, settings: &Settings) -> BTreeSet<String> {
    match store.triage_begins() {
        Ok(false) => BTreeSet::new(),
        Ok(true) => settings.mailboxes.keys().cloned().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read how the last run stopped; every folder's first batch is triaged with its attempts flushed.");
            settings.mailboxes.keys().cloned().collect()
        }
    }
}

fn start_sender(store: &Store, transport: Transport, signals: send::Signals) -> JoinHandle<()> {
    tokio::spawn(send::run(
        store.clone(),
        transport,
        signals,
        Duration::from_secs(10),
    ))
}

/// A runner per mailbox, and one per Sent folder watched; returns their keys.
fn start_mailboxes(
    settings: &Settings,
    tls: &ImapTls,
    shared: &Shared,
    tracker: &TaskTracker,
) -> Vec<String> {
    let mut keys = Vec::new();
    for (name, login) in &settings.mailboxes {
        let source = Source::new(name.clone(), settings, login.clone(), tls, false);
        if let Some(sent) = &login.sent_folder {
            let observer = Source {
                folder: sent.clone(),
                observe: true,
                ..source.clone()
            };
            keys.push(observer.checkpoint_key());
            tracker.spawn(runner::run(observer, shared.clone()));
        }
        keys.push(source.checkpoint_key());
        tracker.spawn(runner::run(source, shared.clone()));
    }
    keys
}

/// Stops the tasks: the mailboxes finish the message in hand, then the control socket,
/// then the sender after one more drain of its own; the state is flushed last.
async fn stop(tasks: Tasks, mut signals: Signals) -> Result<(), DaemonError> {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("Stopping: finishing the messages in hand.");
    tasks.shared.stop.cancel();
    // The same listeners: a second signal that arrives before this task first runs is
    // still seen (a listener made now would miss it).
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.mailboxes.wait())
        .await
        .is_err()
    {
        tracing::warn!("Mailbox tasks did not stop in time; what they held is fetched again on the next start.");
    } else if let Err(e) = tasks.store.triage_stopped_clean() {
        tracing::warn!(error = %e, "Cannot note the clean stop of the mailboxes.");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.control).await;
    tasks.sender_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), tasks.sender).await;
    tasks
        .store
        .flush_async()
        .await
        .map_err(DaemonError::Flush)?;
    tracing::info!(outbox = tasks.store.outbox_len(), "mailtriage stopped.");
    Ok(())
}

/// SIGTERM and SIGINT, listened to from the start, so that no signal is missed between
/// two waits.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
        }
    }
}
