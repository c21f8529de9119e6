//! Runtime, taking a folder on: what a runner does with the mail already in a folder
//! the state does not know at its UIDVALIDITY, before it catches up from the checkpoint.
//!
//! - No checkpoint at all (the first start on a mailbox, a state that was lost): the
//!   login's `start` says what of the mail already there is triaged ("new": none of
//!   it; "since 2d", "since 2026-11-01": what arrived since; "unseen"; "all"). The
//!   checkpoint is set at the folder's last UID in the same transaction as the record
//!   of what is still to take, so a stop in the middle goes on with the same messages.
//! - A checkpoint at another UIDVALIDITY (the server renumbered the folder): every
//!   stored UID is void, but the state knows the folder. The Message-ID index and the
//!   keywords on the server keep what it triaged from being triaged twice; what it
//!   never triaged because it was there before the daemon watched the folder is left
//!   alone by taking only what arrived since then (INTERNALDATE).
//! - A checkpoint at this UIDVALIDITY: the runner goes on after it, first finishing a
//!   taking on that a stop cut short.

use std::fmt;
use std::time::SystemTime;

use crate::config::Start;
use crate::record::{Adoption, Checkpoint, Store, StoreError, Take};
use crate::runtime::runner::{self, RunError, Shared};
use crate::runtime::status::State;
use crate::source::{Connection, ImapError, Source};
use crate::when;

/// How a runner goes on with the folder it has just selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Known at this UIDVALIDITY: on after `last`, with how it was taken on, if known.
    Resume {
        last: u32,
        adoption: Option<Adoption>,
    },
    /// Not known at this UIDVALIDITY: taken on as the plan says.
    Adopt(Plan),
}

/// How a folder is to be taken on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    take: Take,
    /// The rule, for the record and the log.
    start: String,
    watched_from: Option<String>,
    resynced_from: Option<u32>,
}

impl fmt::Display for Opening {
    /// The checkpoint, as the "Mailbox connected." line says it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opening::Resume { last, .. } => write!(f, "{last}"),
            Opening::Adopt(Plan {
                resynced_from: Some(old),
                ..
            }) => write!(f, "void (UIDVALIDITY was {old})"),
            Opening::Adopt(_) => write!(f, "none"),
        }
    }
}

/// How the folder of `source`, found at `uid_validity`, is gone on with at `now`.
pub fn opening(
    source: &Source,
    store: &Store,
    uid_validity: u32,
    now: SystemTime,
) -> Result<Opening, StoreError> {
    let key = source.checkpoint_key();
    let adoption = store.adoption(&key)?;
    Ok(match store.checkpoint(&key)? {
        Some(cp) if cp.uid_validity == uid_validity => Opening::Resume {
            last: cp.last_uid,
            adoption,
        },
        Some(cp) => Opening::Adopt(resync(cp.uid_validity, adoption.as_ref())),
        None => Opening::Adopt(first_sight(source.login.start, now)),
    })
}

/// A folder the state has never seen: as `start` says. What arrives from now on (or
/// from the `since` time on) is the daemon's business from here on.
fn first_sight(start: Start, now: SystemTime) -> Plan {
    let (take, watched_from) = match start {
        Start::New => (Take::Nothing, Some(now)),
        Start::Since(_) => {
            let from = start.cutoff(now).unwrap_or(now);
            let take = Take::Since {
                from: when::stamp(from),
            };
            (take, Some(from))
        }
        Start::Unseen => (Take::Unseen, Some(now)),
        Start::All => (Take::All, None),
    };
    Plan {
        take,
        start: start.to_string(),
        watched_from: watched_from.map(when::stamp),
        resynced_from: None,
    }
}

/// A folder the state knows at another UIDVALIDITY: what arrived since the daemon
/// watches it, or everything when it always took everything (or the state is older
/// than the record of how it took the folder on).
fn resync(old: u32, known: Option<&Adoption>) -> Plan {
    let watched_from = known.and_then(|a| a.watched_from.clone());
    Plan {
        take: match &watched_from {
            Some(from) => Take::Since { from: from.clone() },
            None => Take::All,
        },
        start: known.map_or_else(|| Start::All.to_string(), |a| a.start.clone()),
        watched_from,
        resynced_from: Some(old),
    }
}

/// Carries out `opening` on the folder; returns the UID to catch up from.
pub async fn open(
    conn: &mut Connection,
    source: &Source,
    shared: &Shared,
    opening: Opening,
) -> Result<u32, RunError> {
    match opening {
        Opening::Resume { last, adoption } => {
            if let Some(a) = adoption {
                shared.board.adopted(&source.checkpoint_key(), &a);
                if !a.done && a.uid_validity == conn.uid_validity() {
                    take(conn, source, shared, a).await?;
                }
            }
            Ok(last)
        }
        Opening::Adopt(plan) => adopt(conn, source, shared, plan).await,
    }
}

/// Takes the folder on: records how, with the checkpoint at its last UID (unless it
/// takes everything, which goes from UID 1 as new mail does), says so, and handles
/// the messages taken.
async fn adopt(
    conn: &mut Connection,
    source: &Source,
    shared: &Shared,
    plan: Plan,
) -> Result<u32, RunError> {
    let (key, uid_validity) = (source.checkpoint_key(), conn.uid_validity());
    if let Some(old) = plan.resynced_from {
        let arrived_since = plan.watched_from.as_deref().unwrap_or("any time");
        tracing::warn!(mailbox = %source.name, folder = %source.folder, old, new = uid_validity, arrived_since, "UIDVALIDITY changed; resynchronising the folder.");
    }
    let through = conn.last_uid().await?;
    let uids = taken(conn, &plan.take, through).await?;
    let everything = plan.take == Take::All;
    let taken = if everything {
        conn.exists()
    } else {
        u32::try_from(uids.len()).unwrap_or(u32::MAX)
    };
    let a = Adoption {
        uid_validity,
        start: plan.start,
        at: when::stamp(SystemTime::now()),
        through,
        take: plan.take,
        skipped: conn.exists().saturating_sub(taken),
        taken,
        watched_from: plan.watched_from,
        resynced_from: plan.resynced_from,
        progress: 0,
        done: uids.is_empty(),
    };
    let checkpoint = (!everything).then_some(Checkpoint {
        uid_validity,
        last_uid: through,
    });
    shared.store.adopt(&key, &a, checkpoint)?;
    shared.store.flush_async().await?;
    tracing::info!(mailbox = %source.name, folder = %source.folder, start = %a.start, skipped = a.skipped, taken = a.taken, through_uid = through, "Folder taken on: the messages already there are left alone but for those start takes.");
    shared.board.adopted(&key, &a);
    if everything {
        return Ok(0);
    }
    if !a.done {
        take(conn, source, shared, a).await?;
    }
    Ok(through)
}

/// The UIDs up to `through` that `take` triages, ascending. "All" is none here: it is
/// read from UID 1 on like new mail.
async fn taken(conn: &mut Connection, take: &Take, through: u32) -> Result<Vec<u32>, ImapError> {
    match take {
        Take::Nothing | Take::All => Ok(Vec::new()),
        Take::Unseen => conn.uids_unseen(through).await,
        Take::Since { from } => {
            // A time that does not read back takes nothing old rather than everything.
            let from = when::parse(from).map_or_else(SystemTime::now, SystemTime::from);
            conn.uids_arrived_since(from, through).await
        }
    }
}

/// Handles the messages `a` takes that are still to be handled, in batches, noting
/// after each how far it got; stops between batches when the daemon stops (the next
/// start goes on from there).
async fn take(
    conn: &mut Connection,
    source: &Source,
    shared: &Shared,
    a: Adoption,
) -> Result<(), RunError> {
    let key = source.checkpoint_key();
    let uids: Vec<u32> = taken(conn, &a.take, a.through)
        .await?
        .into_iter()
        .filter(|u| *u > a.progress)
        .collect();
    if let Some(first) = uids.first() {
        tracing::info!(mailbox = %source.name, count = uids.len(), from_uid = first, start = %a.start, "Older messages taken as start says.");
    }
    shared.show(source, State::Syncing);
    for chunk in conn.batches(&uids, shared.fetch_bytes).await? {
        if shared.stop.is_cancelled() {
            return Ok(());
        }
        runner::handle(conn, source, shared, &chunk).await?;
        let last = chunk.last().copied().unwrap_or(0);
        shared.store.adoption_progress(&key, last, false)?;
    }
    shared.store.adoption_progress(&key, a.through, true)?;
    shared.store.flush_async().await?;
    if let Some(done) = shared.store.adoption(&key)? {
        shared.board.adopted(&key, &done);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn source(start: Start) -> Source {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/mailtriage.toml");
        let settings = crate::config::Settings::load(std::path::Path::new(dir)).unwrap();
        let mut login = settings.mailboxes["billing"].clone();
        login.start = start;
        let tls = crate::tls::ImapTls::new(&settings).unwrap();
        Source::new("billing".into(), &settings, login, &tls, false)
    }

    fn at(s: &str) -> SystemTime {
        when::parse(s).unwrap().into()
    }

    #[test]
    fn a_folder_never_seen_is_taken_on_as_start_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = at("2026-11-23T10:00:00Z");
        let plan = |start| match opening(&source(start), &store, 7, now).unwrap() {
            Opening::Adopt(p) => p,
            other => panic!("{other:?}"),
        };
        let new = plan(Start::New);
        assert_eq!(new.take, Take::Nothing);
        assert_eq!(new.watched_from.as_deref(), Some("2026-11-23T10:00:00Z"));
        let since = plan(Start::Since(crate::config::Since::Ago(
            Duration::from_secs(2 * 86400),
        )));
        let from = "2026-11-21T10:00:00Z".to_string();
        assert_eq!(since.take, Take::Since { from: from.clone() });
        assert_eq!(since.watched_from, Some(from));
        assert_eq!(plan(Start::Unseen).take, Take::Unseen);
        let all = plan(Start::All);
        assert_eq!((all.take, all.watched_from), (Take::All, None));
    }

    #[test]
    fn a_known_folder_at_a_new_uidvalidity_takes_only_what_arrived_since_it_was_watched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = at("2026-11-23T10:00:00Z");
        let Opening::Adopt(plan) = opening(&source(Start::New), &store, 7, now).unwrap() else {
            panic!("not adopted")
        };
        let a = Adoption {
            uid_validity: 7,
            start: plan.start.clone(),
            at: when::stamp(now),
            through: 30_000,
            take: plan.take.clone(),
            skipped: 30_000,
            taken: 0,
            watched_from: plan.watched_from.clone(),
            resynced_from: None,
            progress: 0,
            done: true,
        };
        let cp = Checkpoint {
            uid_validity: 7,
            last_uid: 30_000,
        };
        store.adopt("billing", &a, Some(cp)).unwrap();
        let later = at("2026-12-01T10:00:00Z");
        // The same UIDVALIDITY: on from the checkpoint.
        assert_eq!(
            opening(&source(Start::New), &store, 7, later).unwrap(),
            Opening::Resume {
                last: 30_000,
                adoption: Some(a)
            }
        );
        // Renumbered: the 30,000 messages that were there before stay alone, whatever
        // `start` says now.
        let Opening::Adopt(resync) = opening(&source(Start::All), &store, 8, later).unwrap() else {
            panic!("not resynchronised")
        };
        assert_eq!(
            resync.take,
            Take::Since {
                from: "2026-11-23T10:00:00Z".into()
            }
        );
        assert_eq!(resync.resynced_from, Some(7));
        // A state of an earlier version, which took every folder whole: everything, and
        // the index and the keywords keep it from doing anything twice.
        let older = tempfile::tempdir().unwrap();
        let older = Store::open(older.path()).unwrap();
        older.set_checkpoint("billing", cp).unwrap();
        let Opening::Adopt(whole) = opening(&source(Start::New), &older, 8, later).unwrap() else {
            panic!("not resynchronised")
        };
        assert_eq!(whole.take, Take::All);
    }
}
