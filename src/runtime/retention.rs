//! Retention: the daemon's sweep of what the state no longer needs. Every hour (sooner
//! while a pass stops at its bound) it has the store remove resolved tickets older than
//! `threading.retention`, with their Message-ID and subject entries, index entries of no
//! ticket as old, subject entries past `threading.subject_window`, and cap counters of
//! past days, and put resolved tickets quiet for a day on the shelf ([`Store::sweep`]),
//! so the state stays the size of what is recent, not of everything ever seen. Each
//! pass is bounded, so a first start on a year of state does not stall the daemon.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::config::Threading;
use crate::record::{Keep, Store, StoreError, Swept};
use crate::runtime::runner::Shared;

/// The sweep's period when it found no more work than a pass removes.
const EVERY: Duration = Duration::from_secs(3600);
/// The period while a pass stopped at its bound.
const SOON: Duration = Duration::from_secs(5);
/// Tickets, index entries and counters one pass removes at most (each).
pub const PER_PASS: usize = 500;

/// What the rules keep, and for how long.
pub fn keep(t: &Threading) -> Keep {
    Keep {
        retention: t.retention,
        subjects: t.subject_window,
        shadow_mails: t.shadow_mails_kept,
    }
}

/// One pass at `now` with the rules' retention.
pub fn sweep_once(store: &Store, keep: Keep, now: SystemTime) -> Result<Swept, StoreError> {
    store.sweep(OffsetDateTime::from(now), keep, PER_PASS)
}

/// The sweep: a first pass a moment after the start (READY comes first), then every
/// [`EVERY`], or every [`SOON`] while there is more to remove.
pub async fn run(shared: Shared) {
    let mut wait = SOON;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let keep = keep(&shared.rules.load().threading);
        let store = shared.store.clone();
        let r =
            tokio::task::spawn_blocking(move || sweep_once(&store, keep, SystemTime::now())).await;
        wait = match r {
            Ok(Ok(s)) => {
                if s.shelved > 0 {
                    // A segment was compressed: its buffers need not stay.
                    crate::memory::give_back();
                }
                if s.tickets + s.shelved + s.entries + s.shadow_mails > 0 {
                    tracing::info!(
                        tickets = s.tickets,
                        shelved = s.shelved,
                        entries = s.entries,
                        shadow_mails = s.shadow_mails,
                        more = s.more,
                        "Retention removed old resolved tickets, index entries and shadow mails, and shelved quiet ones."
                    );
                }
                if s.more {
                    SOON
                } else {
                    EVERY
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Retention sweep failed; will retry.");
                EVERY
            }
            Err(e) => {
                tracing::error!(error = %e, "Retention sweep panicked; will retry.");
                EVERY
            }
        };
    }
}
