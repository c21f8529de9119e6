//! The daemon: loads and checks the configuration, opens the state, and wires the
//! tasks: one source task per mailbox and one outbox sender. Only this module knows the
//! wiring. SIGTERM/SIGINT stop it cleanly (a second signal exits at once).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{load_rules, Cli, Failure};
use crate::config::Settings;
use crate::imap::{self, Shared, Source};
use crate::smtp::{self, Transport};
use crate::store::Store;

/// How long tasks get to finish the message in hand after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub async fn run(cli: &Cli) -> Result<(), Failure> {
    let rules = load_rules(&cli.rules)?;
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
    }
    let transport = Transport::smtp(&settings.smtp)?;
    let tls = match settings.imap.tls {
        crate::config::TlsMode::Plaintext => None,
        _ => Some(imap::tls_connector(&settings.imap)?),
    };

    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let shared = Shared {
        rules: Arc::new(ArcSwap::from_pointee(rules)),
        store: store.clone(),
        outbox: wake.clone(),
        stop: stop.clone(),
    };
    let tracker = TaskTracker::new();
    // The sender has its own token: it keeps draining while the mailboxes finish the
    // message in hand, and stops last.
    let sender_stop = CancellationToken::new();
    let sender = tokio::spawn(smtp::run(
        store.clone(),
        transport,
        wake.clone(),
        sender_stop.clone(),
        Duration::from_secs(10),
    ));
    for (name, login) in &settings.mailboxes {
        let source = Source {
            name: name.clone(),
            server: settings.imap.clone(),
            login: login.clone(),
            options: settings.imap_options.clone(),
            tls: tls.clone(),
            folder: login.folder.clone(),
            observe: false,
        };
        if let Some(sent) = &login.sent_folder {
            let observer = Source {
                folder: sent.clone(),
                observe: true,
                ..source.clone()
            };
            tracker.spawn(imap::run(observer, shared.clone()));
        }
        tracker.spawn(imap::run(source, shared.clone()));
    }
    // Reminders, escalations and status mails for tickets nobody answered in time.
    tracker.spawn(followups(shared.clone()));
    let control = tokio::spawn(crate::control::serve(
        crate::control::socket_path(&settings.state_dir),
        store.clone(),
        stop.clone(),
    ));
    tracker.close();
    tracing::info!(mailboxes = settings.mailboxes.len(), state = %settings.state_dir.display(), "mailtriage running.");

    let mut signals = Signals::new();
    signals.recv().await;
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
            crate::followup::run_once(&rules, &store, std::time::SystemTime::now())
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
