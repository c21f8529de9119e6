//! Runtime, systemd: READY once every mailbox has connected (or after [`READY_WAIT`]),
//! the watchdog fed while the mailbox tasks are healthy, STOPPING at the stop (sent by
//! the daemon), RELOADING around a reload ([`crate::runtime::reload`]); and, on the same
//! tick, the gauges of the mails not sent (outbox, shadow mails, dead letters). Without systemd the notifications go nowhere.

use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;

use crate::runtime::runner::Shared;
use crate::runtime::status::Depths;

/// How long READY waits for every mailbox to connect: a server that is down must not
/// keep the unit in "activating" until systemd gives up on it.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Runs until `shared.stop`; `keys` are the status keys of the mailbox tasks.
pub async fn run(keys: Vec<String>, shared: Shared) {
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
            notify_ready(shared.board.all_connected(&keys));
        }
        // Always asked: it also sets the health gauges.
        let healthy = shared.board.healthy(&keys, SystemTime::now());
        if watchdog.is_some() && healthy {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        Depths::of(&shared.store).measure();
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(if ready { tick } else { Duration::from_millis(200) }) => {}
        }
    }
}

fn notify_ready(all_connected: bool) {
    let _ = sd_notify::notify(&[
        NotifyState::Ready,
        NotifyState::Status(if all_connected {
            "all mailboxes connected"
        } else {
            "running; some mailboxes are not connected yet"
        }),
    ]);
    tracing::info!(all_connected, "Ready.");
}

/// RELOADING, with the monotonic time systemd asks for.
pub fn notify_reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(t) = NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    let _ = sd_notify::notify(&states);
}

pub fn notify_reloaded() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}
