//! The daemon: loads and checks the configuration, opens the state, and wires the
//! tasks: one source task per mailbox and one outbox sender. Only this module knows the
//! wiring. SIGTERM/SIGINT stop it cleanly (a second signal exits at once); SIGHUP and a
//! change to rules.toml reload the rules ([`crate::runtime::reload`]). Under systemd it reports
//! READY, RELOADING and STOPPING and feeds the watchdog while the mailboxes are healthy.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{load_rules, Cli, Failure};
use crate::config::{Login, Settings};
use crate::record::{OutMail, Store};
use crate::runtime::runner::{self, Shared};
use crate::runtime::status::Board;
use crate::send::{self, Transport};
use crate::source::{self, Source};

/// How long tasks get to finish the message in hand after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long READY waits for every mailbox to connect: a server that is down must not
/// keep the unit in "activating" until systemd gives up on it.
const READY_WAIT: Duration = Duration::from_secs(60);

pub async fn run(cli: &Cli, shadow: bool) -> Result<(), Failure> {
    // First of all: a SIGTERM during start-up (loading, recovery, connecting) must stop
    // the daemon cleanly once it is up, not kill it with the default action.
    let mut signals = Signals::new();
    // Listened to before anything else: SIGHUP's default action would end the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Failure(format!("cannot listen for SIGHUP: {e}")))?;
    let rules = load_rules(&cli.rules)?;
    for w in &rules.warnings {
        tracing::warn!(warning = %w, "Rules warning.");
    }
    let settings = Settings::load(&cli.config).map_err(|e| {
        Failure(format!(
            "{e}\n{}: {} error(s)",
            cli.config.display(),
            e.0.len()
        ))
    })?;
    let mismatch = settings.check_against(&rules);
    if !mismatch.is_empty() {
        let lines: Vec<String> = mismatch.iter().map(|e| e.to_string()).collect();
        return Err(Failure(lines.join("\n")));
    }
    let (store, recovered) = Store::open_or_recover(&settings.state_dir).map_err(|e| {
        Failure(format!(
            "state directory {}: {e}",
            settings.state_dir.display()
        ))
    })?;
    if let Some((aside, why)) = recovered {
        // Tickets, history and unsent mail of the old state are not in the new one: an
        // operator should look at what was moved aside.
        tracing::error!(moved_to = %aside.display(), error = %why, "State database would not open; it was moved aside and a fresh state started. Messages marked on the server are not triaged again; tickets and unsent mail of the old state are in the moved directory.");
        // New tickets must not reuse numbers the lost state gave out: they continue from
        // a number that only grows with time (seconds since 2020), above the old ones
        // unless the old state opened more than one ticket a second on average.
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(1_577_836_800);
        if let Err(e) = store.raise_ticket_numbers(1_000_000 + seconds) {
            tracing::warn!(error = %e, "Cannot raise ticket numbers after recovery.");
        }
    }
    let transport = Transport::smtp(
        &settings.smtp,
        settings.archive.as_ref().map(|a| a.address.as_str()),
    )?;
    let tls = match settings.imap.tls {
        crate::config::TlsMode::Plaintext => None,
        _ => Some(crate::tls::connector(&settings.imap)?),
    };

    settle_uncertain(&rules, &settings, &store, tls.as_ref()).await;

    if let Some(addr) = settings.metrics_listen {
        crate::runtime::status::serve_metrics(addr).map_err(Failure)?;
        tracing::info!(listen = %addr, "Metrics endpoint listening.");
    }
    let board = Arc::new(Board::new(
        &cli.rules.display().to_string(),
        &rules.version,
        shadow,
    ));
    if shadow {
        tracing::warn!("Shadow mode: messages are triaged and recorded; nothing is sent and nothing is changed on the server.");
    }
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let shared = Shared {
        rules: Arc::new(ArcSwap::from_pointee(rules)),
        // A daemon in shadow mode records every mail as a shadow mail, reminders too.
        store: if shadow {
            store.shadowed()
        } else {
            store.clone()
        },
        outbox: wake.clone(),
        stop: stop.clone(),
        board: board.clone(),
        shadow,
    };
    let tracker = TaskTracker::new();
    // The sender has its own token: it keeps draining while the mailboxes finish the
    // message in hand, and stops last.
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn(send::run(
        store.clone(),
        transport,
        wake.clone(),
        sender_stop.clone(),
        Duration::from_secs(10),
    ));
    let mut keys = Vec::new();
    for (name, login) in &settings.mailboxes {
        let source = Source::new(name.clone(), &settings, login.clone(), tls.clone(), false);
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
    // Reminders, escalations and status mails for tickets nobody answered in time.
    tracker.spawn(followups(shared.clone()));
    let control = tokio::spawn(crate::runtime::control::serve(
        crate::runtime::control::socket_path(&settings.state_dir),
        store.clone(),
        board.clone(),
        stop.clone(),
    ));
    tokio::spawn(reloads(
        cli.rules.clone(),
        cli.config.clone(),
        shared.clone(),
        hup,
    ));
    tokio::spawn(systemd(keys, shared.clone()));
    tracker.close();
    tracing::info!(mailboxes = settings.mailboxes.len(), state = %settings.state_dir.display(), "mailtriage running.");

    signals.recv().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("Stopping: finishing the messages in hand.");
    stop.cancel();
    // The same listeners: a second signal that arrives before this task first runs is
    // still seen (a listener made now would miss it).
    tokio::spawn(async move {
        signals.recv().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("Mailbox tasks did not stop in time; what they held is fetched again on the next start.");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), control).await;
    // The sender stops last, after one more drain of its own.
    sender_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), sender).await;
    store
        .flush_async()
        .await
        .map_err(|e| Failure(format!("state: {e}")))?;
    tracing::info!(outbox = store.outbox_len(), "mailtriage stopped.");
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

/// The follow-up timer: checks open tickets every `threading.followup_check`.
async fn followups(shared: Shared) {
    loop {
        let every = shared.rules.load().threading.followup_check;
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let rules = shared.rules.load_full();
        let store = shared.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::runtime::followup::run_once(&rules, &store, std::time::SystemTime::now())
        })
        .await;
        match r {
            Ok(Ok(n)) if n > 0 => shared.outbox.notify_one(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "Follow-up check failed; will retry."),
            Err(e) => tracing::error!(error = %e, "Follow-up check panicked; will retry."),
        }
    }
}

/// How long the start waits for a mail in flight at the last stop to be delivered where
/// it is looked for: Postfix delivers an accepted mail within milliseconds, unless busy.
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(5);

/// SMTP has no two-phase commit: the mails in flight when the last run stopped may or
/// may not have been accepted (the first entries of the outbox; none after a clean
/// stop). Each is looked for by its Message-ID before it is sent again: in the archive,
/// which holds every mail the server accepted; without one, in the watched mailboxes a
/// mail was sent to (a queue's forward). A mail found there leaves the outbox; any other
/// is sent again, since a duplicate is better than a loss.
async fn settle_uncertain(
    rules: &crate::config::Rules,
    settings: &Settings,
    store: &Store,
    tls: Option<&tokio_rustls::TlsConnector>,
) {
    let uncertain = match store.outbox_uncertain() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "Outbox cannot be read at start.");
            return;
        }
    };
    if uncertain.is_empty() {
        return;
    }
    let looked: Vec<_> = uncertain
        .into_iter()
        .map(|(k, m)| {
            let at = where_to_look(rules, settings, &m);
            (k, m, at)
        })
        .collect();
    // Each place is searched once for all the mails it may hold.
    let mut wanted: BTreeMap<String, (Login, Vec<String>)> = BTreeMap::new();
    for (_, m, at) in &looked {
        for (name, login) in at {
            wanted
                .entry(name.clone())
                .or_insert_with(|| (login.clone(), Vec::new()))
                .1
                .push(m.message_id.clone());
        }
    }
    // Every place is searched at once, within one patience.
    let searches = wanted.into_iter().map(|(name, (login, ids))| {
        let src = Source::new(name, settings, login, tls.cloned(), true);
        async move {
            let r = source::messages_present(&src, &ids, IN_FLIGHT_PATIENCE).await;
            (src.name, r)
        }
    });
    let mut present: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for (name, r) in futures::future::join_all(searches).await {
        match r {
            Ok(ids) => {
                present.insert(name, ids);
            }
            Err(e) => {
                tracing::warn!(mailbox = %name, error = %e, "Cannot look for the mails in flight at the last stop; they are sent again, and a receiver may see one twice.");
            }
        }
    }
    for (key, m, at) in looked {
        let found = at.iter().map(|(name, _)| name).find(|name| {
            present
                .get(*name)
                .is_some_and(|ids| ids.contains(&m.message_id))
        });
        match found {
            Some(place) => {
                if store.outbox_done(key).is_ok() {
                    tracing::info!(message_id = %m.message_id, ticket = %m.ticket, found_in = %place, "Mail in flight at the last stop was accepted; not sent again.");
                }
            }
            None if !at.is_empty() && at.iter().all(|(n, _)| present.contains_key(n)) => {
                let looked_in: Vec<&str> = at.iter().map(|(n, _)| n.as_str()).collect();
                tracing::info!(message_id = %m.message_id, ticket = %m.ticket, looked_in = ?looked_in, "Mail in flight at the last stop was not accepted; it is sent now.");
            }
            None if settings.archive.is_some() => tracing::warn!(
                uncertain = %m.message_id,
                ticket = %m.ticket,
                to = ?m.to,
                "Mail in flight at the last stop could not be looked up in the archive; it is sent again with the same Message-ID, and a receiver may see it twice."
            ),
            None => tracing::warn!(
                uncertain = %m.message_id,
                ticket = %m.ticket,
                to = ?m.to,
                "Mail may have been accepted just before the last stop; it is sent again with the same Message-ID, and a receiver may see it twice. An [archive] in mailtriage.toml prevents this."
            ),
        }
    }
    if let Err(e) = store.flush() {
        tracing::warn!(error = %e, "Cannot write what was found about the mails in flight.");
    }
}

/// Where a mail is if the server accepted it: the archive, which gets every mail; else
/// the watched mailboxes it was sent to, when it was sent to nothing else. Empty: it
/// cannot be looked up.
fn where_to_look(
    rules: &crate::config::Rules,
    settings: &Settings,
    m: &OutMail,
) -> Vec<(String, Login)> {
    if let Some(a) = &settings.archive {
        return vec![("archive".to_string(), a.login.clone())];
    }
    let watched: Vec<(String, Login)> =
        m.to.iter()
            .filter_map(|a| rules.mailbox_by_address(a))
            .filter_map(|mb| Some((mb.key.clone(), settings.mailboxes.get(&mb.key)?.clone())))
            .collect();
    if watched.len() == m.to.len() {
        watched
    } else {
        Vec::new()
    }
}

/// Reloads the rules on SIGHUP and when rules.toml changes; says that a change to
/// mailtriage.toml needs a restart.
async fn reloads(
    rules_path: std::path::PathBuf,
    config_path: std::path::PathBuf,
    shared: Shared,
    mut hup: tokio::signal::unix::Signal,
) {
    use crate::runtime::reload::Changed;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Kept alive for as long as this task runs.
    let _watcher = match crate::runtime::reload::watch(&rules_path, &config_path, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(file = %rules_path.display(), error = %e, "Cannot watch the rules file; reload with SIGHUP.");
            None
        }
    };
    loop {
        let cause = tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = hup.recv() => "SIGHUP",
            c = rx.recv() => match c {
                Some(Changed::Rules) => "file changed",
                Some(Changed::Settings) => {
                    tracing::warn!(file = %config_path.display(), "Settings file changed; settings are not reloaded, restart the daemon to apply them.");
                    continue;
                }
                None => std::future::pending().await,
            },
        };
        let mut states = vec![sd_notify::NotifyState::Reloading];
        if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
            states.push(t);
        }
        let _ = sd_notify::notify(&states);
        let (path, rules, board) = (
            rules_path.clone(),
            shared.rules.clone(),
            shared.board.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            crate::runtime::reload::reload(&path, &rules, &board, cause)
        })
        .await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// READY once every mailbox has connected (or after [`READY_WAIT`]), the watchdog fed
/// while the mailbox tasks are healthy, and the outbox depth for the metrics.
async fn systemd(keys: Vec<String>, shared: Shared) {
    use sd_notify::NotifyState;
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    let mut ready = false;
    loop {
        if !ready && (shared.board.all_connected(&keys) || tokio::time::Instant::now() >= deadline)
        {
            ready = true;
            let all = shared.board.all_connected(&keys);
            let _ = sd_notify::notify(&[
                NotifyState::Ready,
                NotifyState::Status(if all {
                    "all mailboxes connected"
                } else {
                    "running; some mailboxes are not connected yet"
                }),
            ]);
            tracing::info!(all_connected = all, "Ready.");
        }
        if watchdog.is_some() && shared.board.healthy(&keys, std::time::SystemTime::now()) {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        metrics::gauge!("mailtriage_outbox_depth").set(shared.store.outbox_len() as f64);
        metrics::gauge!("mailtriage_shadow_mails").set(shared.store.shadow_len() as f64);
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(if ready { tick } else { Duration::from_millis(200) }) => {}
        }
    }
}
