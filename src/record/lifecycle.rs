//! Record, tickets that end: the index of open tickets (the follow-up clock reads only
//! those) and the retention of resolved tickets and of the Message-ID index. Two trees,
//! both written in the same transaction as the ticket or index entry they follow:
//! - `open_tickets`: id -> the record of every ticket not resolved;
//! - `retention`: what the sweep needs to find its work without a scan of everything:
//!   - `r` + resolution time + id: resolved tickets, oldest first;
//!   - `t` + id + NUL + `m` + key: the Message-ID index entries of each ticket (and
//!     `s` + key, its subject entries, in states written before those aged on their
//!     own);
//!   - `a` + time + key: index entries of no ticket, oldest first;
//!   - `u` + time + key: subject entries, by when they were written;
//!   - `h` + time + key: shadow mails, by when shadow mode decided them.
//!
//! [`Store::sweep`] removes, a bounded number per pass, resolved tickets whose
//! resolution is older than the retention with their entries, index entries of no
//! ticket as old, subject entries older than the subject window (threading by subject
//! looks no further back, so a year of them would only weigh), shadow mails older than
//! `threading.shadow_mails_kept` (each holds a whole forward, original and all: a month
//! of trying rules on a busy desk would otherwise stay for good), and cap counters of
//! past days. [`Store::migrate_lifecycle`] builds
//! both trees once for a state written by a version without them.

use std::time::Duration;

use sled::transaction::{
    ConflictableTransactionError, Transactional, TransactionalTree, UnabortableTransactionError,
};
use time::OffsetDateTime;

use super::packed::{pack, unpack, unpack_ok};
use super::shelf::{self, Shelved};
use super::{from_json, json, MessageRecord, Store, StoreError, SubjectRecord};
use crate::ticket::Ticket;
use crate::when;

type TxResult = Result<(), UnabortableTransactionError>;

/// Meta key: the open index and the retention tree are built (see the module note).
const LIFECYCLE_INDEXED: &[u8] = b"lifecycle_indexed";
/// Meta key: every subject entry is noted by its time (see [`Store::age_subjects`]).
const SUBJECTS_AGED: &[u8] = b"subjects_aged";
/// Meta key: every shadow mail is noted by its time (see [`Store::age_shadow_mails`]).
const SHADOW_MAILS_AGED: &[u8] = b"shadow_mails_aged";
/// Meta key: where the last pass over the cap counters stopped.
const COUNTERS_SWEPT_TO: &[u8] = b"counters_swept_to";
/// Resolved this long ago, a ticket may go to the shelf: a late "thank you" that
/// reopens it finds it in sled.
const SHELVE_AFTER: u64 = 86400;
/// Tickets per segment of the shelf.
const SHELVE_BATCH: usize = 1024;
/// How long past [`SHELVE_AFTER`] a smaller batch waits for more.
const SHELVE_WAIT: u64 = 7 * 86400;

/// Why a resolved ticket leaves sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Letting {
    /// Retention passed: it goes for good.
    Remove,
    /// It goes to the shelf.
    Shelve,
}

/// Cap counters are per day at most: those of days before yesterday are of no use.
const COUNTERS_KEPT_DAYS: i64 = 2;

/// Seconds since 1970 of a stored time; 0 when it does not parse (swept first).
fn secs(at: &str) -> u64 {
    when::parse(at)
        .map(|t| t.unix_timestamp().max(0) as u64)
        .unwrap_or(0)
}

/// A retention key of a time-ordered kind: `kind` + the time in seconds + `key`.
fn timed_key(kind: u8, secs: u64, key: &[u8]) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(&secs.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn resolved_key(at: &str, id: &str) -> Vec<u8> {
    timed_key(b'r', secs(at), id.as_bytes())
}

fn ref_prefix(ticket: &str) -> Vec<u8> {
    let mut k = b"t".to_vec();
    k.extend_from_slice(ticket.as_bytes());
    k.push(0);
    k
}

fn ref_key(ticket: &str, kind: u8, key: &[u8]) -> Vec<u8> {
    let mut k = ref_prefix(ticket);
    k.push(kind);
    k.extend_from_slice(key);
    k
}

fn age_key(at: &str, key: &[u8]) -> Vec<u8> {
    timed_key(b'a', secs(at), key)
}

/// The time in a `r` or `a` key.
fn key_secs(k: &[u8]) -> u64 {
    k.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Writes a ticket where it belongs: an open ticket's record in the open index, where
/// the follow-up clock reads it every minute (a small tree that stays in sled's cache,
/// whatever a year of resolved tickets weighs), a resolved one's in `tickets`, with
/// the order of resolutions for the sweep. An open entry with an empty value (written
/// before records moved there) names a record still in `tickets`.
pub(super) fn put_ticket(
    tickets: &TransactionalTree,
    open: &TransactionalTree,
    retention: &TransactionalTree,
    t: &Ticket,
) -> TxResult {
    match &t.resolved {
        None => {
            open.insert(t.id.as_bytes(), pack(t))?;
            tickets.remove(t.id.as_bytes())?;
        }
        Some(r) => {
            tickets.insert(t.id.as_bytes(), pack(t))?;
            open.remove(t.id.as_bytes())?;
            retention.insert(resolved_key(&r.at, &t.id), &[])?;
        }
    }
    Ok(())
}

/// Writes a Message-ID index entry, noted under its ticket (or its age, with none) for
/// the sweep.
pub(super) fn put_message(
    msgs: &TransactionalTree,
    retention: &TransactionalTree,
    key: &[u8],
    rec: &MessageRecord,
) -> TxResult {
    msgs.insert(key, pack(rec))?;
    match &rec.ticket {
        Some(t) => retention.insert(ref_key(t, b'm', key), &[])?,
        None => retention.insert(age_key(&rec.at, key), &[])?,
    };
    Ok(())
}

/// The wall clock in seconds, for the notes of what has no time of its own.
pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The retention key of shadow mail `key`, decided at `secs`.
pub(super) fn shadow_age_key(secs: u64, key: &[u8]) -> Vec<u8> {
    timed_key(b'h', secs, key)
}

fn subject_age_key(at: &str, key: &[u8]) -> Vec<u8> {
    timed_key(b'u', secs(at), key)
}

/// Writes a (sender, subject) entry, noted by its time for the sweep: it ages on its
/// own, whatever becomes of its ticket.
pub(super) fn put_subject(
    subjects: &TransactionalTree,
    retention: &TransactionalTree,
    key: &[u8],
    rec: &SubjectRecord,
) -> TxResult {
    subjects.insert(key, json(rec))?;
    retention.insert(subject_age_key(&rec.at, key), &[])?;
    Ok(())
}

/// How long the sweep keeps what it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Resolved tickets and their index entries, after the resolution; index entries of
    /// no ticket, after they arrived (`threading.retention`).
    pub retention: Duration,
    /// (sender, subject) entries, after they were last written: threading by subject
    /// looks no further back (`threading.subject_window`).
    pub subjects: Duration,
    /// Shadow mails, after shadow mode decided them (`threading.shadow_mails_kept`).
    pub shadow_mails: Duration,
}

/// A ticket's record as stored, not decoded yet, with its version (see
/// [`Store::open_tickets_but`]).
pub struct StoredTicket {
    bytes: sled::IVec,
    pub version: u64,
}

impl StoredTicket {
    pub fn decode(&self) -> Result<Ticket, StoreError> {
        unpack("ticket", &self.bytes)
    }
}

/// What one pass of the sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Tickets removed for good (from sled, or with their segment from the shelf).
    pub tickets: usize,
    /// Tickets put on the shelf.
    pub shelved: usize,
    /// Index entries (Message-ID, subject) and cap counters.
    pub entries: usize,
    /// Shadow mails removed, with their spool files.
    pub shadow_mails: usize,
    /// The pass stopped at its bound with more to remove: the next one should come soon.
    pub more: bool,
}

/// What the migration found in a state without the lifecycle trees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Migrated {
    pub tickets: usize,
    pub entries: usize,
}

impl Store {
    /// The open tickets (not resolved), read through the open index: what the
    /// follow-up clock looks at.
    pub fn open_tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        self.open_tickets_but(|_, _| false)?
            .iter()
            .map(StoredTicket::decode)
            .collect()
    }

    /// The open tickets, each with the version of its record (a digest of the stored
    /// bytes: any write changes it), except those `known(id, version)` says the caller
    /// knows already: those are not decoded, which is most of the cost of reading one.
    /// They come as stored, each decoded by the caller in turn: a scan holds one
    /// decoded ticket at a time, not every open ticket at once.
    pub fn open_tickets_but(
        &self,
        mut known: impl FnMut(&str, u64) -> bool,
    ) -> Result<Vec<StoredTicket>, StoreError> {
        let mut open = Vec::new();
        for r in self.open.iter() {
            let (id, v) = r?;
            let Some(v) = self.ticket_bytes(&id, Some(v))? else {
                continue;
            };
            let version = version_of(&v);
            if known(&String::from_utf8_lossy(&id), version) {
                continue;
            }
            open.push(StoredTicket { bytes: v, version });
        }
        Ok(open)
    }

    /// The stored record of ticket `id`, given its open index entry (`None`: not open):
    /// an open entry holds the record, or is empty when an earlier version left the
    /// record in `tickets` (see [`put_ticket`]); a resolved ticket's is in `tickets`.
    pub(super) fn ticket_bytes(
        &self,
        id: &[u8],
        open: Option<sled::IVec>,
    ) -> Result<Option<sled::IVec>, StoreError> {
        match open {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Ok(self.tickets.get(id)?),
        }
    }

    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    /// Writes a ticket alone (an operator's resolution, or the clock's) and keeps the open
    /// index with it, in one transaction.
    pub fn put_ticket(&self, t: &Ticket) -> Result<(), StoreError> {
        (&self.tickets, &self.open, &self.retention).transaction(|(tickets, open, ret)| {
            put_ticket(tickets, open, ret, t)?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// Builds the open index and the retention tree for a state written before they
    /// existed (every ticket was open then); `None` when they are built already. Run
    /// at start, before anything else writes.
    pub fn migrate_lifecycle(&self) -> Result<Option<Migrated>, StoreError> {
        if self.meta.contains_key(LIFECYCLE_INDEXED)? {
            self.age_subjects()?;
            self.age_shadow_mails()?;
            return Ok(None);
        }
        let mut done = Migrated::default();
        for r in self.tickets.iter() {
            let (id, v) = r?;
            let t: Ticket = unpack("ticket", &v)?;
            match &t.resolved {
                None => self.open.insert(id, &[])?,
                Some(r) => self.retention.insert(resolved_key(&r.at, &t.id), &[])?,
            };
            done.tickets += 1;
        }
        for r in self.messages.iter() {
            let (k, v) = r?;
            let rec: MessageRecord = unpack("message record", &v)?;
            match &rec.ticket {
                Some(t) => self.retention.insert(ref_key(t, b'm', &k), &[])?,
                None => self.retention.insert(age_key(&rec.at, &k), &[])?,
            };
            done.entries += 1;
        }
        done.entries += self.age_subjects()?;
        self.age_shadow_mails()?;
        self.meta.insert(LIFECYCLE_INDEXED, &[])?;
        self.flush()?;
        Ok(Some(done))
    }

    /// Notes every subject entry by its time, once: a state written while they aged with
    /// their tickets gets them swept by age from now on. Returns how many were noted.
    fn age_subjects(&self) -> Result<usize, StoreError> {
        self.note_once(
            SUBJECTS_AGED,
            self.subjects.iter().map(|r| {
                let (k, v) = r?;
                let rec: SubjectRecord = from_json("subject record", &v)?;
                Ok(subject_age_key(&rec.at, &k))
            }),
        )
    }

    /// Notes every shadow mail as decided now, once: a state written while they were
    /// kept for good gets them swept `threading.shadow_mails_kept` after this start.
    fn age_shadow_mails(&self) -> Result<usize, StoreError> {
        let now = now_secs();
        self.note_once(
            SHADOW_MAILS_AGED,
            self.shadow_mails
                .iter()
                .keys()
                .map(|k| Ok(shadow_age_key(now, &k?))),
        )
    }

    /// Writes the retention `notes` unless meta's `done` says they were written, then
    /// says so; returns how many were written. The notes are read only when due.
    fn note_once(
        &self,
        done: &[u8],
        notes: impl Iterator<Item = Result<Vec<u8>, StoreError>>,
    ) -> Result<usize, StoreError> {
        if self.meta.contains_key(done)? {
            return Ok(0);
        }
        let mut n = 0;
        for note in notes {
            self.retention.insert(note?, &[])?;
            n += 1;
        }
        self.meta.insert(done, &[])?;
        self.flush()?;
        Ok(n)
    }

    /// One pass of retention at `now`: at most `limit` resolved tickets resolved longer
    /// than `keep.retention` ago, with their index entries; at most `limit` index entries
    /// of no ticket that old; once those are done, one batch of quiet resolved tickets to
    /// the shelf, and the shelf's segments past retention; at most `limit` subject entries
    /// older than `keep.subjects`; at most `limit` shadow mails older than
    /// `keep.shadow_mails`; and at most `limit` cap counters looked at. Open
    /// tickets and everything of theirs are kept, however old.
    pub fn sweep(
        &self,
        now: OffsetDateTime,
        keep: Keep,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        let secs_now = now.unix_timestamp().max(0) as u64;
        let cutoff = secs_now.saturating_sub(keep.retention.as_secs());
        let mut swept = Swept::default();
        let due = self.retention.scan_prefix(b"r").keys().take(limit + 1);
        for (n, k) in due.enumerate() {
            let k = k?;
            if key_secs(&k) > cutoff {
                break;
            }
            if n == limit {
                swept.more = true;
                break;
            }
            let id = String::from_utf8_lossy(&k[9..]).into_owned();
            if let Some(entries) = self.remove_resolved(&k, &id)? {
                swept.tickets += 1;
                swept.entries += entries;
            }
        }
        let (entries, more) = self.sweep_untracked(cutoff, limit)?;
        swept.entries += entries;
        swept.more |= more;
        // Only what retention keeps goes to the shelf.
        if !swept.more {
            let (shelved, more) = self.shelve(secs_now)?;
            swept.shelved = shelved;
            swept.more |= more;
        }
        swept.tickets += self
            .shelf
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .expire(cutoff)?;
        let subjects_cutoff = secs_now.saturating_sub(keep.subjects.as_secs());
        let (entries, more) = self.sweep_subjects(subjects_cutoff, limit)?;
        swept.entries += entries;
        swept.more |= more;
        let shadow_cutoff = secs_now.saturating_sub(keep.shadow_mails.as_secs());
        let (shadow_mails, more) = self.sweep_shadow_mails(shadow_cutoff, limit)?;
        swept.shadow_mails = shadow_mails;
        swept.more |= more;
        let (counters, more) = self.sweep_counters(now, limit)?;
        swept.entries += counters;
        swept.more |= more;
        if swept.tickets + swept.shelved + swept.entries + swept.shadow_mails > 0 {
            self.flush()?;
        }
        Ok(swept)
    }

    /// Removes ticket `id` and its index entries when it is still the ticket resolved at
    /// the time `rkey` names; the stale `rkey` of a ticket reopened since goes alone.
    /// Returns how many index entries went, or `None` when the ticket stays.
    fn remove_resolved(&self, rkey: &[u8], id: &str) -> Result<Option<usize>, StoreError> {
        match self.resolved_as(rkey, id)? {
            Some((before, _)) => self.let_go(rkey, id, &before, Letting::Remove),
            None => {
                self.retention.remove(rkey)?;
                Ok(None)
            }
        }
    }

    /// Ticket `id`'s stored bytes and record when it is still the ticket resolved at the
    /// time `rkey` names.
    fn resolved_as(
        &self,
        rkey: &[u8],
        id: &str,
    ) -> Result<Option<(sled::IVec, Ticket)>, StoreError> {
        let Some(before) = self.tickets.get(id.as_bytes())? else {
            return Ok(None);
        };
        let t: Ticket = unpack("ticket", &before)?;
        let current = t
            .resolved
            .as_ref()
            .is_some_and(|r| resolved_key(&r.at, id) == rkey);
        Ok(current.then_some((before, t)))
    }

    /// Takes resolved ticket `id` out of sled with its retention notes and its Message-ID
    /// entries, unless it changed since it was read as `before` (a message joined it: the
    /// next pass decides). Its subject entries go too when it is removed for good; when
    /// it is shelved they stay and age on their own (they name the ticket, which the
    /// shelf still finds). Returns how many index entries went, or `None`.
    fn let_go(
        &self,
        rkey: &[u8],
        id: &str,
        before: &sled::IVec,
        how: Letting,
    ) -> Result<Option<usize>, StoreError> {
        let refs: Vec<sled::IVec> = self
            .retention
            .scan_prefix(ref_prefix(id))
            .keys()
            .collect::<Result<_, _>>()?;
        let skip = ref_prefix(id).len();
        let trees = (
            &self.tickets,
            &self.open,
            &self.retention,
            &self.messages,
            &self.subjects,
            &self.shadow_tickets,
        );
        let removed = trees.transaction(|(tickets, open, ret, msgs, subjects, shadow)| {
            if tickets.get(id.as_bytes())?.as_ref() != Some(before) {
                return Ok(None);
            }
            tickets.remove(id.as_bytes())?;
            open.remove(id.as_bytes())?;
            shadow.remove(id.as_bytes())?;
            ret.remove(rkey)?;
            for r in &refs {
                ret.remove(r)?;
                let (kind, key) = (r[skip], &r[skip + 1..]);
                let index = match kind {
                    b'm' => msgs,
                    _ if how == Letting::Shelve => continue,
                    _ => subjects,
                };
                if still_of(index.get(key)?.as_deref(), id) {
                    index.remove(key)?;
                }
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(Some(refs.len()))
        })?;
        Ok(removed)
    }

    /// Puts on the shelf the resolved tickets quiet for [`SHELVE_AFTER`], a batch of
    /// [`SHELVE_BATCH`] at a time, or fewer once the oldest has waited [`SHELVE_WAIT`]
    /// more (a quiet desk's segments are a week's, not a day's). The segment is on disk
    /// before sled lets go of any of them. Returns how many were shelved, and whether a
    /// full batch more is ready.
    fn shelve(&self, now: u64) -> Result<(usize, bool), StoreError> {
        let ready = now.saturating_sub(SHELVE_AFTER);
        let mut due = Vec::new();
        let mut more = false;
        for k in self.retention.scan_prefix(b"r").keys() {
            let k = k?;
            if key_secs(&k) > ready {
                break;
            }
            // A shadow ticket stays where shadow mode's bookkeeping is.
            if self.shadow_tickets.contains_key(&k[9..])? {
                continue;
            }
            if due.len() == SHELVE_BATCH {
                more = true;
                break;
            }
            due.push(k);
        }
        let waited = due
            .first()
            .is_some_and(|k| key_secs(k) <= ready.saturating_sub(SHELVE_WAIT));
        if due.len() < SHELVE_BATCH && !waited {
            return Ok((0, false));
        }
        let mut batch = Vec::new();
        let mut taken = Vec::new();
        for k in due {
            let id = String::from_utf8_lossy(&k[9..]).into_owned();
            let Some((before, ticket)) = self.resolved_as(&k, &id)? else {
                self.retention.remove(&k)?;
                continue;
            };
            batch.push(Shelved {
                messages: self.entries_of(&id)?,
                resolved: key_secs(&k),
                ticket,
            });
            taken.push((k, id, before));
        }
        if batch.is_empty() {
            return Ok((0, more));
        }
        shelf::write(&self.shelf, &batch)?;
        let mut shelved = 0;
        for (k, id, before) in &taken {
            if self.let_go(k, id, before, Letting::Shelve)?.is_some() {
                shelved += 1;
            }
        }
        Ok((shelved, more))
    }

    /// The Message-ID index entries that name ticket `id`, with what was done with each.
    fn entries_of(&self, id: &str) -> Result<Vec<(Vec<u8>, super::Disposition)>, StoreError> {
        let skip = ref_prefix(id).len();
        let mut entries = Vec::new();
        for r in self.retention.scan_prefix(ref_prefix(id)).keys() {
            let r = r?;
            if r[skip] != b'm' {
                continue;
            }
            let key = &r[skip + 1..];
            if let Some(v) = self.messages.get(key)? {
                let rec: MessageRecord = unpack("message record", &v)?;
                if rec.ticket.as_deref() == Some(id) {
                    entries.push((key.to_vec(), rec.disposition));
                }
            }
        }
        Ok(entries)
    }

    /// Removes index entries of no ticket that arrived before `cutoff`, at most `limit`.
    fn sweep_untracked(&self, cutoff: u64, limit: usize) -> Result<(usize, bool), StoreError> {
        let (old, more) = self.aged(b"a", cutoff, limit)?;
        self.remove_untracked(&old).map(|n| (n, more))
    }

    /// The first `limit` retention keys under `prefix` (a time-ordered kind: `a` or `u`)
    /// whose time is at or before `cutoff`, and whether more such keys follow.
    fn aged(
        &self,
        prefix: &[u8],
        cutoff: u64,
        limit: usize,
    ) -> Result<(Vec<sled::IVec>, bool), StoreError> {
        let mut old = Vec::new();
        for k in self.retention.scan_prefix(prefix).keys() {
            let k = k?;
            if key_secs(&k) > cutoff {
                break;
            }
            if old.len() == limit {
                return Ok((old, true));
            }
            old.push(k);
        }
        Ok((old, false))
    }

    fn remove_untracked(&self, keys: &[sled::IVec]) -> Result<usize, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        (&self.messages, &self.retention).transaction(|(msgs, ret)| {
            for k in keys {
                ret.remove(k)?;
                let key = &k[9..];
                let rec = msgs.get(key)?;
                let untracked = rec
                    .and_then(|v| unpack_ok::<MessageRecord>(&v))
                    .is_some_and(|r| r.ticket.is_none());
                if untracked {
                    msgs.remove(key)?;
                }
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(keys.len())
    }

    /// Removes subject entries last written before `cutoff`, at most `limit`. A key
    /// written again since has a later `u` entry of its own: only its stale one goes.
    fn sweep_subjects(&self, cutoff: u64, limit: usize) -> Result<(usize, bool), StoreError> {
        let (old, more) = self.aged(b"u", cutoff, limit)?;
        if old.is_empty() {
            return Ok((0, false));
        }
        let removed = (&self.subjects, &self.retention).transaction(|(subjects, ret)| {
            let mut removed = 0;
            for k in &old {
                ret.remove(k)?;
                let key = &k[9..];
                let stale = subjects
                    .get(key)?
                    .and_then(|v| serde_json::from_slice::<SubjectRecord>(&v).ok())
                    .is_some_and(|r| secs(&r.at) <= cutoff);
                if stale {
                    subjects.remove(key)?;
                    removed += 1;
                }
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(removed)
        })?;
        Ok((removed, more))
    }

    /// Removes shadow mails decided before `cutoff`, at most `limit`; their spool files
    /// go after the flush that makes the removal lasting.
    fn sweep_shadow_mails(&self, cutoff: u64, limit: usize) -> Result<(usize, bool), StoreError> {
        let (old, more) = self.aged(b"h", cutoff, limit)?;
        if old.is_empty() {
            return Ok((0, false));
        }
        let removed = (&self.shadow_mails, &self.retention).transaction(|(shadow, ret)| {
            let mut removed = Vec::new();
            for k in &old {
                ret.remove(k)?;
                if let Some(v) = shadow.remove(&k[9..])? {
                    removed.push(v);
                }
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(removed)
        })?;
        for v in &removed {
            self.doom(v);
        }
        Ok((removed.len(), more))
    }

    /// Looks at the next `limit` cap counters (from where the last pass stopped) and
    /// removes those of days before yesterday; returns how many went, and whether the
    /// pass stopped before the end (a state that has not been swept for long, or at
    /// all, has many more counters than one pass looks at).
    fn sweep_counters(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<(usize, bool), StoreError> {
        let from = self.meta.get(COUNTERS_SWEPT_TO)?.unwrap_or_default();
        let before = when::day((now - time::Duration::days(COUNTERS_KEPT_DAYS)).into());
        let mut removed = 0;
        let (mut seen, mut last) = (0, None);
        for r in self.acks.range(from.to_vec()..).take(limit) {
            let k = r?.0;
            // `who NUL day` or `who NUL dayTHH`: the day is the first 10 characters.
            let day = k
                .iter()
                .position(|b| *b == 0)
                .and_then(|p| k.get(p + 1..p + 11));
            if day.is_some_and(|d| d < before.as_bytes()) {
                self.acks.remove(&k)?;
                removed += 1;
            }
            seen += 1;
            last = Some(k);
        }
        let more = match last {
            // Past the last one next time; from the start once the end is reached.
            Some(k) if seen == limit => {
                let mut next = k.to_vec();
                next.push(0);
                self.meta.insert(COUNTERS_SWEPT_TO, next)?;
                true
            }
            _ => {
                self.meta.remove(COUNTERS_SWEPT_TO)?;
                false
            }
        };
        Ok((removed, more))
    }
}

/// A stored record's version: a digest of its bytes.
fn version_of(v: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The index entry `v` still belongs to ticket `id` (another ticket may have taken its
/// key since: a subject reused, above all).
fn still_of(v: Option<&[u8]>, id: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Owner {
        ticket: Option<String>,
    }
    v.and_then(unpack_ok::<Owner>)
        .and_then(|o| o.ticket)
        .is_some_and(|t| t == id)
}

#[cfg(test)]
mod tests {
    use super::super::{id_key, Checkpoint, Committed, Disposition, Listed, Listing, Record};
    use super::*;
    use crate::ticket::ResolvedHow;

    const DAY: u64 = 86400;

    fn ticket(id: &str) -> Ticket {
        Ticket::new(
            id.into(),
            "ivan@mail.example".into(),
            "Refund".into(),
            "billing".into(),
            "en".into(),
            "2025-01-01T10:00:00Z".into(),
        )
    }

    /// A message of `ticket` (or of none) recorded at `at`, with its subject entry.
    fn record(key: &str, ticket: Option<&Ticket>, at: &str) -> Record {
        Record {
            key: key.into(),
            mailbox: "billing".into(),
            source: Some(Checkpoint {
                uid_validity: 1,
                last_uid: 1,
            }),
            message: MessageRecord {
                ticket: ticket.map(|t| t.id.clone()),
                mailbox: "billing".into(),
                disposition: match ticket {
                    Some(_) => Disposition::Kept,
                    None => Disposition::Left,
                },
                at: at.into(),
                reason: None,
            },
            ticket: ticket.cloned(),
            outgoing: Vec::new(),
            mark: None,
            counted: Vec::new(),
            subject_key: ticket.map(|t| format!("ivan@mail.example\0{}", t.id)),
        }
    }

    /// The ids of a listing's tickets, in its order.
    fn ids(l: &Listed) -> Vec<String> {
        l.tickets.iter().map(|t| t.id.clone()).collect()
    }

    fn t(s: &str) -> OffsetDateTime {
        when::parse(s).unwrap()
    }

    /// Tickets kept `retention` after their resolution, subject entries as long.
    fn keeping(retention: Duration) -> Keep {
        Keep {
            retention,
            subjects: retention,
            shadow_mails: retention,
        }
    }

    #[test]
    fn tickets_and_index_entries_are_stored_packed_and_an_earlier_states_plain_ones_still_serve() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut a = ticket("T-1001");
        a.resolve(
            "2025-01-02T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit(&record("a1@x", Some(&a), "2025-01-01T10:00:00Z"))
            .unwrap();
        // Resolved: its record is in `tickets`, none in the open index.
        assert_eq!(s.open.get(b"T-1001").unwrap(), None);
        let stored = s.tickets.get(b"T-1001").unwrap().unwrap();
        let plain = serde_json::to_vec(&a).unwrap();
        assert_eq!(stored[0], 1, "packed");
        assert!(
            stored.len() * 2 < plain.len(),
            "{} of {}",
            stored.len(),
            plain.len()
        );
        let entry = s.messages.get(id_key("a1@x")).unwrap().unwrap();
        assert_eq!(entry[0], 1, "packed");
        assert_eq!(
            s.message("a1@x").unwrap().unwrap().ticket.as_deref(),
            Some("T-1001")
        );

        // As a state written before packing holds them: plain JSON.
        let b = ticket("T-1002");
        s.commit(&record("b1@x", Some(&b), "2025-01-01T11:00:00Z"))
            .unwrap();
        // As a state written before packing holds an open ticket: its record plain in
        // `tickets`, an empty entry in the open index.
        s.open.insert(b"T-1002", &[]).unwrap();
        s.tickets
            .insert(b"T-1002", serde_json::to_vec(&b).unwrap())
            .unwrap();
        let old = s.message("b1@x").unwrap().unwrap();
        s.messages.insert(id_key("b1@x"), json(&old)).unwrap();
        assert_eq!(s.ticket("T-1002").unwrap().unwrap(), b);
        assert_eq!(s.message("b1@x").unwrap(), Some(old));
        assert_eq!(s.open_tickets().unwrap(), vec![b.clone()]);
        // A message seen again is known through its plain entry.
        assert!(matches!(
            s.commit(&record("b1@x", Some(&b), "2025-01-01T11:00:00Z"))
                .unwrap(),
            Committed::AlreadyKnown(_)
        ));
        assert_eq!(
            s.listing(Listing::All, usize::MAX).unwrap().tickets.len(),
            2
        );
        // Written again, it is packed, and kept in the open index, where the clock reads it.
        s.put_ticket(&b).unwrap();
        assert_eq!(s.open.get(b"T-1002").unwrap().unwrap()[0], 1);
        assert_eq!(s.tickets.get(b"T-1002").unwrap(), None);
        assert_eq!(s.ticket("T-1002").unwrap().unwrap(), b);
        assert_eq!(s.open_tickets().unwrap(), vec![b.clone()]);
        assert_eq!(
            ids(&s.listing(Listing::All, usize::MAX).unwrap()),
            ["T-1001", "T-1002"]
        );

        // The sweep reads both kinds: the resolved ticket and its entries go.
        let keep = keeping(Duration::from_secs(30 * DAY));
        let swept = s.sweep(t("2025-03-01T00:00:00Z"), keep, 100).unwrap();
        assert_eq!(swept.tickets, 1);
        assert!(s.ticket("T-1001").unwrap().is_none());
        assert!(s.message("a1@x").unwrap().is_none());
        assert!(s.message("b1@x").unwrap().is_some());
    }

    #[test]
    fn the_open_index_follows_every_ticket_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut a = ticket("T-1001");
        s.commit(&record("a1@x", Some(&a), "2025-01-01T10:00:00Z"))
            .unwrap();
        s.commit_ticket(&ticket("T-1002"), &[]).unwrap();
        let ids = |s: &Store| -> Vec<String> {
            s.open_tickets()
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(&s), vec!["T-1001", "T-1002"]);
        a.resolve(
            "2025-01-02T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit_ticket(&a, &[]).unwrap();
        assert_eq!(ids(&s), vec!["T-1002"]);
        a.reopen("2025-01-03T10:00:00Z", "ivan@mail.example");
        s.commit(&record("a2@x", Some(&a), "2025-01-03T10:00:00Z"))
            .unwrap();
        assert_eq!(ids(&s), vec!["T-1001", "T-1002"]);
    }

    #[test]
    fn retention_removes_old_resolved_tickets_with_their_entries_and_keeps_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut old = ticket("T-1001");
        s.commit(&record("old@x", Some(&old), "2025-01-01T10:00:00Z"))
            .unwrap();
        old.resolve(
            "2025-01-02T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit(&record("old-2@x", Some(&old), "2025-01-02T10:00:00Z"))
            .unwrap();
        // Open as long, and resolved lately: both kept.
        let open = ticket("T-1002");
        s.commit(&record("open@x", Some(&open), "2025-01-01T10:00:00Z"))
            .unwrap();
        let mut recent = ticket("T-1003");
        recent.resolve(
            "2026-01-01T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit(&record("recent@x", Some(&recent), "2025-06-01T10:00:00Z"))
            .unwrap();
        // An alert of no ticket, old, and one of today.
        s.commit(&record("alert-old@x", None, "2025-01-01T10:00:00Z"))
            .unwrap();
        s.commit(&record("alert-new@x", None, "2026-01-10T10:00:00Z"))
            .unwrap();
        let keep = keeping(Duration::from_secs(365 * DAY));
        let swept = s.sweep(t("2026-01-10T12:00:00Z"), keep, 100).unwrap();
        assert_eq!((swept.tickets, swept.more), (1, false));
        assert_eq!(s.ticket("T-1001").unwrap(), None);
        for gone in ["old@x", "old-2@x", "alert-old@x"] {
            assert_eq!(s.message(gone).unwrap(), None, "{gone}");
        }
        assert_eq!(s.by_subject("ivan@mail.example\0T-1001").unwrap(), None);
        for kept in ["open@x", "recent@x", "alert-new@x"] {
            assert!(s.message(kept).unwrap().is_some(), "{kept}");
        }
        assert!(s.ticket("T-1002").unwrap().is_some());
        assert!(s.ticket("T-1003").unwrap().is_some());
        // Its subject entry aged on its own: a year is past the subject window.
        assert!(s.by_subject("ivan@mail.example\0T-1002").unwrap().is_none());
        assert_eq!(
            s.retention.scan_prefix(ref_prefix("T-1001")).count(),
            0,
            "nothing of it is left behind"
        );
        let again = s.sweep(t("2026-01-10T12:00:00Z"), keep, 100).unwrap();
        assert_eq!(again, Swept::default());
    }

    #[test]
    fn subject_entries_go_after_the_subject_window_and_their_ticket_stays() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = ticket("T-1001");
        let b = ticket("T-1002");
        s.commit(&record("a1@x", Some(&a), "2025-01-01T10:00:00Z"))
            .unwrap();
        s.commit(&record("b1@x", Some(&b), "2025-01-01T10:00:00Z"))
            .unwrap();
        // The same sender and subject again: its entry is as recent as this message.
        s.commit(&record("b2@x", Some(&b), "2025-01-08T10:00:00Z"))
            .unwrap();
        let keep = Keep {
            retention: Duration::from_secs(365 * DAY),
            subjects: Duration::from_secs(7 * DAY),
            shadow_mails: Duration::from_secs(30 * DAY),
        };
        let swept = s.sweep(t("2025-01-09T09:00:00Z"), keep, 100).unwrap();
        assert_eq!((swept.tickets, swept.entries), (0, 1), "{swept:?}");
        assert_eq!(s.by_subject("ivan@mail.example\0T-1001").unwrap(), None);
        let kept = s.by_subject("ivan@mail.example\0T-1002").unwrap().unwrap();
        assert_eq!(kept.at, "2025-01-08T10:00:00Z");
        // The tickets and their Message-ID entries stay: only the subject entry aged.
        assert!(s.ticket("T-1001").unwrap().is_some());
        assert!(s.message("a1@x").unwrap().is_some());
        // A week after the last message, that entry goes too, and nothing is left noted.
        let swept = s.sweep(t("2025-01-16T10:00:00Z"), keep, 100).unwrap();
        assert_eq!(swept.entries, 1);
        assert_eq!(s.subjects.len(), 0);
        assert_eq!(s.retention.scan_prefix(b"u").count(), 0);
    }

    fn resolved(id: &str, at: &str) -> Ticket {
        let mut t = ticket(id);
        t.resolve(at, "anna@example.test", ResolvedHow::Mail, "");
        t
    }

    fn segments(dir: &std::path::Path) -> Vec<String> {
        super::super::tests::file_names(&dir.join("resolved"))
    }

    #[test]
    fn quiet_resolved_tickets_go_to_the_shelf_and_are_found_there_until_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = resolved("T-1001", "2025-01-02T10:00:00Z");
        let b = resolved("T-1002", "2025-01-02T11:00:00Z");
        let open = ticket("T-1003");
        s.commit(&record("a1@x", Some(&a), "2025-01-02T10:00:00Z"))
            .unwrap();
        s.commit(&record("b1@x", Some(&b), "2025-01-02T11:00:00Z"))
            .unwrap();
        s.commit(&record("c1@x", Some(&open), "2025-01-01T09:00:00Z"))
            .unwrap();
        let keep = Keep {
            retention: Duration::from_secs(365 * DAY),
            subjects: Duration::from_secs(7 * DAY),
            shadow_mails: Duration::from_secs(30 * DAY),
        };
        // Two tickets are not a batch: they wait a week past their quiet day.
        let swept = s.sweep(t("2025-01-05T10:00:00Z"), keep, 100).unwrap();
        assert_eq!(swept.shelved, 0);
        assert!(segments(dir.path()).is_empty());
        let swept = s.sweep(t("2025-01-10T12:00:00Z"), keep, 100).unwrap();
        assert_eq!((swept.shelved, swept.tickets), (2, 0), "{swept:?}");
        assert_eq!(segments(dir.path()), ["00000001.seg"]);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let shelf = dir.path().join("resolved");
            assert_eq!(mode(&shelf), 0o700);
            assert_eq!(mode(&shelf.join("00000001.seg")), 0o600);
        }
        // Out of sled, tickets and index entries alike; the open one stays.
        assert_eq!(s.tickets.len(), 0);
        assert_eq!(s.messages.get(id_key("a1@x")).unwrap(), None);
        assert_eq!(s.retention.scan_prefix(b"r").count(), 0);
        assert_eq!(s.retention.scan_prefix(b"t").count(), 1, "the open one's");
        assert!(s.open.get(b"T-1003").unwrap().is_some());
        // Found on the shelf, after a restart as well.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.ticket("T-1001").unwrap(), Some(a.clone()));
        let m = s.message("<A1@x>").unwrap().unwrap();
        assert_eq!(
            (m.ticket.as_deref(), m.disposition),
            (Some("T-1001"), Disposition::Kept)
        );
        assert_eq!(m.at, "2025-01-02T10:00:00Z", "the ticket's resolution");
        assert!(s.message("zz@x").unwrap().is_none());
        assert!(s.ticket("T-1009").unwrap().is_none());
        assert_eq!(
            ids(&s.listing(Listing::All, usize::MAX).unwrap()),
            ["T-1001", "T-1002", "T-1003"]
        );
        // A message seen again is known through the shelf.
        assert!(matches!(
            s.commit(&record("b1@x", Some(&b), "2025-01-02T11:00:00Z"))
                .unwrap(),
            Committed::AlreadyKnown(_)
        ));

        // A reply reopens T-1001: sled's copy is read from then on.
        let mut back = s.ticket("T-1001").unwrap().unwrap();
        back.reopen("2025-01-20T10:00:00Z", "ivan@mail.example");
        s.commit(&record("a2@x", Some(&back), "2025-01-20T10:00:00Z"))
            .unwrap();
        assert_eq!(s.ticket("T-1001").unwrap(), Some(back.clone()));
        assert_eq!(s.open_len(), 2);

        // A year after the last resolution in it, the segment goes, and what was only
        // on the shelf with it; the reopened ticket is sled's and stays.
        let swept = s.sweep(t("2026-01-03T12:00:00Z"), keep, 100).unwrap();
        assert_eq!(swept.tickets, 2, "{swept:?}");
        assert!(segments(dir.path()).is_empty());
        assert!(s.ticket("T-1002").unwrap().is_none());
        assert!(s.message("b1@x").unwrap().is_none());
        assert_eq!(s.ticket("T-1001").unwrap(), Some(back));
    }

    #[test]
    fn a_listing_holds_the_newest_tickets_up_to_its_limit_open_ones_or_all_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let created = |id: &str, at: &str, resolved_at: Option<&str>| {
            let mut t = ticket(id);
            t.created = at.into();
            if let Some(r) = resolved_at {
                t.resolve(r, "anna@example.test", ResolvedHow::Mail, "");
            }
            s.commit(&record(&format!("{id}@x"), Some(&t), at)).unwrap();
            t
        };
        // Numbered out of the order they came in: a listing follows creation, not ids.
        let old = created(
            "T-1005",
            "2025-01-01T09:00:00Z",
            Some("2025-01-01T12:00:00Z"),
        );
        let gone = created(
            "T-1001",
            "2025-01-01T10:00:00Z",
            Some("2025-01-01T12:00:00Z"),
        );
        let open_a = created("T-1002", "2025-01-02T09:00:00Z", None);
        let open_b = created("T-1003", "2025-01-03T09:00:00Z", None);
        let recent = created(
            "T-1004",
            "2025-01-04T09:00:00Z",
            Some("2025-01-11T12:00:00Z"),
        );
        // The two resolved first go to the shelf; one of them comes back to life in sled
        // (a reply), and is still listed once.
        let keep = keeping(Duration::from_secs(365 * DAY));
        assert_eq!(
            s.sweep(t("2025-01-12T00:00:00Z"), keep, 100)
                .unwrap()
                .shelved,
            2
        );
        let mut back = s.ticket("T-1001").unwrap().unwrap();
        back.flags.push("vip".into());
        s.put_ticket(&back).unwrap();

        let open = s.listing(Listing::Open, 10).unwrap();
        assert_eq!(
            (ids(&open), open.more),
            (vec!["T-1002".into(), "T-1003".into()], 0)
        );
        assert_eq!(open.tickets, vec![open_a, open_b.clone()]);

        let all = s.listing(Listing::All, 10).unwrap();
        assert_eq!(
            ids(&all),
            ["T-1005", "T-1001", "T-1002", "T-1003", "T-1004"]
        );
        assert_eq!(all.tickets[0], old, "from the shelf");
        assert_eq!(all.tickets[1], back, "sled's copy, not the shelf's");
        assert_ne!(back, gone);

        // The newest up to the limit, oldest first; the rest counted.
        let two = s.listing(Listing::All, 2).unwrap();
        assert_eq!((two.tickets, two.more), (vec![open_b, recent], 3));
        let counted = s.listing(Listing::All, 0).unwrap();
        assert_eq!((counted.tickets.len(), counted.more), (0, 5));
    }

    #[test]
    fn a_crash_between_a_segment_and_sleds_letting_go_leaves_the_ticket_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut a = resolved("T-1001", "2025-01-02T10:00:00Z");
        s.commit(&record("a1@x", Some(&a), "2025-01-02T10:00:00Z"))
            .unwrap();
        // The segment is on disk; the daemon dies before sled lets go of the ticket.
        let stale = a.clone();
        shelf::write(
            &s.shelf,
            &[Shelved {
                ticket: stale.clone(),
                resolved: secs("2025-01-02T10:00:00Z"),
                messages: s.entries_of("T-1001").unwrap(),
            }],
        )
        .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        // Sled's copy is read, and is the one that changes.
        a.flags.push("vip".into());
        s.put_ticket(&a).unwrap();
        assert_eq!(s.ticket("T-1001").unwrap(), Some(a.clone()));
        assert_eq!(
            s.listing(Listing::All, usize::MAX).unwrap().tickets,
            vec![a.clone()],
            "listed once"
        );
        // The next pass shelves it again; the newer segment's copy is the one read.
        let keep = keeping(Duration::from_secs(365 * DAY));
        assert_eq!(
            s.sweep(t("2025-01-12T12:00:00Z"), keep, 100)
                .unwrap()
                .shelved,
            1
        );
        assert_eq!(segments(dir.path()), ["00000001.seg", "00000002.seg"]);
        assert_eq!(s.ticket("T-1001").unwrap(), Some(a.clone()));
        assert_eq!(
            s.listing(Listing::All, usize::MAX).unwrap().tickets,
            vec![a]
        );
        assert_eq!(
            s.message("a1@x").unwrap().unwrap().ticket.as_deref(),
            Some("T-1001")
        );
        // Both go at retention.
        let swept = s.sweep(t("2026-01-03T12:00:00Z"), keep, 100).unwrap();
        assert_eq!(swept.tickets, 2, "two copies: {swept:?}");
        assert!(segments(dir.path()).is_empty());
        assert!(s.ticket("T-1001").unwrap().is_none());
    }

    #[test]
    fn a_damaged_shelf_segment_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = resolved("T-1001", "2025-01-02T10:00:00Z");
        s.commit(&record("a1@x", Some(&a), "2025-01-02T10:00:00Z"))
            .unwrap();
        let keep = keeping(Duration::from_secs(365 * DAY));
        assert_eq!(
            s.sweep(t("2025-01-12T12:00:00Z"), keep, 100)
                .unwrap()
                .shelved,
            1
        );
        drop(s);
        let seg = dir.path().join("resolved/00000001.seg");
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let err = Store::open_or_recover(dir.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("resolved/00000001.seg"), "{err}");
        assert!(err.contains("footer"), "{err}");
        // The rest of the state is sound: it is not moved aside for a segment.
        assert!(dir.path().join("db").exists());
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("broken")));
    }

    #[test]
    fn a_ticket_reopened_since_its_resolution_is_kept_and_each_pass_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut back = ticket("T-1001");
        back.resolve(
            "2025-01-02T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit_ticket(&back, &[]).unwrap();
        back.reopen("2025-01-10T10:00:00Z", "ivan@mail.example");
        s.commit_ticket(&back, &[]).unwrap();
        for n in 2..=6 {
            let mut done = ticket(&format!("T-100{n}"));
            done.resolve(
                "2025-01-03T10:00:00Z",
                "anna@example.test",
                ResolvedHow::Mail,
                "",
            );
            s.commit_ticket(&done, &[]).unwrap();
        }
        let keep = keeping(Duration::from_secs(30 * DAY));
        let first = s.sweep(t("2026-01-01T00:00:00Z"), keep, 3).unwrap();
        // The reopened ticket's stale entry counts towards the bound but removes nothing.
        assert_eq!((first.tickets, first.more), (2, true));
        let second = s.sweep(t("2026-01-01T00:00:00Z"), keep, 3).unwrap();
        assert_eq!((second.tickets, second.more), (3, false));
        assert!(s.ticket("T-1001").unwrap().is_some(), "open again: kept");
        assert_eq!(
            s.listing(Listing::All, usize::MAX).unwrap().tickets.len(),
            1
        );
    }

    #[test]
    fn a_state_from_before_the_open_index_gets_it_at_the_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(&record(
            "a@x",
            Some(&ticket("T-1001")),
            "2025-01-01T10:00:00Z",
        ))
        .unwrap();
        s.commit(&record("b@x", None, "2025-01-01T10:00:00Z"))
            .unwrap();
        // As an earlier version left it: tickets (every record in `tickets`) and index,
        // no lifecycle trees.
        let record_of_1001 = s.open.get(b"T-1001").unwrap().unwrap();
        s.tickets.insert(b"T-1001", record_of_1001).unwrap();
        s.open.clear().unwrap();
        s.retention.clear().unwrap();
        let m = s.migrate_lifecycle().unwrap();
        assert_eq!(
            m,
            Some(Migrated {
                tickets: 1,
                entries: 3
            })
        );
        assert_eq!(s.open_len(), 1);
        assert_eq!(s.migrate_lifecycle().unwrap(), None, "once");
        let mut t1 = s.ticket("T-1001").unwrap().unwrap();
        t1.resolve(
            "2025-01-02T10:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        s.commit_ticket(&t1, &[]).unwrap();
        let keep = keeping(Duration::from_secs(DAY));
        let swept = s.sweep(t("2026-01-01T00:00:00Z"), keep, 10).unwrap();
        assert_eq!(
            (swept.tickets, swept.entries),
            (1, 3),
            "its entries, and the alert"
        );
        assert_eq!(s.message("a@x").unwrap(), None);
    }

    /// A state with one mail counted nine days ago and one today (3 counters each), at
    /// `now`; the cap keys of both.
    fn counters_of_two_days() -> (
        tempfile::TempDir,
        Store,
        OffsetDateTime,
        Vec<String>,
        Vec<String>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let now = t("2026-01-10T12:00:00Z");
        let old = crate::decide::cap_keys("a@x.example", t("2026-01-01T09:00:00Z"));
        let today = crate::decide::cap_keys("a@x.example", now);
        s.count(&old).unwrap();
        s.count(&today).unwrap();
        (dir, s, now, old, today)
    }

    #[test]
    fn cap_counters_of_past_days_go_a_bounded_number_at_a_time() {
        let (_dir, s, now, old, today) = counters_of_two_days();
        let keep = keeping(Duration::from_secs(365 * DAY));
        let mut removed = 0;
        for _ in 0..4 {
            removed += s.sweep(now, keep, 2).unwrap().entries;
        }
        assert_eq!(removed, 3);
        assert_eq!(s.counted(&today).unwrap(), vec![1, 1, 1]);
        assert_eq!(s.counted(&old).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn a_pass_that_stops_at_its_bound_in_the_cap_counters_says_there_is_more() {
        let (_dir, s, now, old, today) = counters_of_two_days();
        let keep = keeping(Duration::from_secs(365 * DAY));
        let first = s.sweep(now, keep, 2).unwrap();
        assert!(first.more, "6 counters, 2 looked at: {first:?}");
        // The daemon comes back soon while there is more; the pass that reaches the end
        // says it is done, and by then every counter of a past day is gone.
        let mut passes = 1;
        while s.sweep(now, keep, 2).unwrap().more {
            passes += 1;
            assert!(passes < 10, "the passes never end");
        }
        assert_eq!(s.counted(&old).unwrap(), vec![0, 0, 0]);
        assert_eq!(s.counted(&today).unwrap(), vec![1, 1, 1]);
    }
}
