//! Record: the one module that owns sled. It keeps, per state directory:
//! - `checkpoints`: per mailbox, the (UIDVALIDITY, last UID) already triaged;
//! - `messages`: the Message-ID index (every message seen, and every mail sent) -> ticket;
//! - `tickets`: id -> resolved [`Ticket`] with its history;
//! - `outbox`: mails decided but not yet accepted by the SMTP server, in order;
//! - `marks`: IMAP keywords/moves decided but not yet applied on the server;
//! - `acks`: mails to customers per address and day, per domain and hour, and per hour
//!   (the caps).
//! - `dead_letters`: mails the SMTP server refused for good, with its answer, and
//!   `dead_letters_untold`: those whose ticket and queue have not heard of them yet;
//! - `adoptions`: per folder, how it was taken on when first met ([`adopt`]);
//! - `open_tickets` and `retention`: the tickets not resolved, each with its record (or
//!   an empty value naming one still in `tickets`), and what the retention
//!   sweep removes when ([`lifecycle`]);
//! - `attempts`: per (mailbox, UIDVALIDITY, UID), how many times triage of a message
//!   began and never ended (the daemon died on it), cleared by the message's commit;
//! - `quarantined`: the messages kept for an operator, where they lie and why.
//!
//! Beside the database, the spool ([`spool`]) holds the bytes of the big outgoing mails
//! that `outbox`, `dead_letters` and `shadow_mails` entries name.
//!
//! A message's decision, the mails it implies, its mark and the checkpoint advance are
//! written in one transaction ([`Store::commit`]); a message is therefore either wholly
//! triaged or not at all, and a resend after a crash sends the stored bytes again.

mod adopt;
mod compact;
mod lifecycle;
mod packed;
mod shelf;
mod spool;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::ticket::{OutMail, Ticket};

pub use adopt::{Adoption, Take};
pub use lifecycle::{Keep, Migrated, StoredTicket, Swept};
use shelf::Shelf;
use spool::Spool;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

/// sled's default cache is 1 GiB; a triage daemon needs a few MB.
const CACHE_BYTES: u64 = 16 << 20;

/// How often sled's own thread writes what no caller flushed and reclaims space. Every
/// write a crash must not lose is flushed by its caller (a batch of messages, a drain of
/// the outbox, a follow-up pass, a control request) before anything depends on it, so this
/// is housekeeping: at sled's default of 500 ms its fsync and epoch collection were most of
/// what an idle daemon spent.
const HOUSEKEEPING_MS: u64 = 5_000;

/// Meta key: the sender stopped cleanly, with no mail in flight.
const OUTBOX_STOPPED_CLEAN: &[u8] = b"outbox_stopped_clean";
/// Meta key: how many outbox entries the sender may have in flight at once.
const OUTBOX_WINDOW: &[u8] = b"outbox_window";
/// Meta key: the mailbox tasks stopped cleanly, with no message in hand.
const TRIAGE_STOPPED_CLEAN: &[u8] = b"triage_stopped_clean";
/// How many quarantined messages the state lists; older ones are in the index still.
const QUARANTINE_KEPT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    #[error("state database holds a record that does not decode ({what}): {err}")]
    Corrupt { what: String, err: String },
    /// A segment of the shelf does not read: the rest of the state is sound, so it is
    /// not moved aside for it.
    #[error("shelf segment {} is damaged ({err}): move it out of that directory and start again; the resolved tickets in it will no longer be found", .path.display())]
    Shelf { path: PathBuf, err: String },
    /// Another process holds the state: the daemon, most likely.
    #[error("state {} is in use by another mailtriage process (the daemon?): stop it first; `mailtriage status` and `tickets` ask a running daemon instead", .0.display())]
    Held(PathBuf),
}

impl StoreError {
    /// Permanent when the database is damaged, holds a record this version cannot read,
    /// or is used in a way sled refuses: retrying cannot help, an operator must act.
    /// Anything else (an I/O error above all) may pass: retry with backoff.
    pub fn is_temporary(&self) -> bool {
        !matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Shelf { .. }
                | StoreError::Sled(
                    sled::Error::Corruption { .. }
                        | sled::Error::Unsupported(_)
                        | sled::Error::ReportableBug(_)
                )
        )
    }
}

impl<E> From<TransactionError<E>> for StoreError
where
    StoreError: From<E>,
{
    fn from(e: TransactionError<E>) -> Self {
        match e {
            TransactionError::Abort(e) => e.into(),
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// What the index knows about one Message-ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub ticket: Option<String>,
    pub mailbox: String,
    pub disposition: Disposition,
    pub at: String,
    /// Why a quarantined message could not be triaged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What was done with a message, as the index keeps it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Disposition {
    Forwarded,
    Kept,
    /// Not a customer request: left where it arrived.
    Left,
    /// The daemon's own mail.
    Ignored,
    /// A message triaged before.
    Duplicate,
    Quarantined,
    /// A mail the daemon sent (so a reply to it finds the ticket).
    Sent,
}

impl Disposition {
    /// Its name, as serde writes it (one derive gives both, so they cannot drift apart).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Mails bigger than this keep their bytes in the spool ([`spool`]), not in their entry:
/// sled reclaims a removed value's space only lazily, and holds a value it writes in
/// memory. Acknowledgements and notes (a few KB) stay in the entry, without a file and its
/// fsyncs; a forward with its original goes to the spool.
const SPOOL_ABOVE: usize = 16 << 10;

/// The head of an outbox (dead-letter, shadow) entry: the mail's fields, and the spool
/// file holding its bytes when the entry does not.
#[derive(Serialize)]
struct HeadOut<'a> {
    #[serde(flatten)]
    mail: &'a OutMail,
    #[serde(skip_serializing_if = "Option::is_none")]
    spool: Option<&'a str>,
}

#[derive(Deserialize)]
struct HeadIn {
    #[serde(flatten)]
    mail: OutMail,
    /// Entries of earlier versions have none: their bytes follow the head.
    #[serde(default)]
    spool: Option<String>,
}

/// An outbox entry: a length-prefixed JSON head, then the raw mail, unless the head names
/// the spool file that holds it (`spool`).
fn encode_out(m: &OutMail, spool: Option<&str>) -> Vec<u8> {
    let head = serde_json::to_vec(&HeadOut { mail: m, spool }).expect("OutMail serialises");
    let body: &[u8] = if spool.is_some() { &[] } else { &m.raw };
    let mut v = Vec::with_capacity(4 + head.len() + body.len());
    v.extend_from_slice(&(head.len() as u32).to_be_bytes());
    v.extend_from_slice(&head);
    v.extend_from_slice(body);
    v
}

/// A stored outgoing mail: its head, with `raw` when the entry holds the bytes, or the
/// name of the spool file that does (then `raw` is empty until [`Store::with_bytes`]).
#[derive(Debug, Clone)]
pub struct Stored {
    pub mail: OutMail,
    spool: Option<String>,
}

fn decode_out(b: &[u8]) -> Result<Stored, StoreError> {
    let bad = |err: String| StoreError::Corrupt {
        what: "outbox entry".into(),
        err,
    };
    if b.len() < 4 {
        return Err(bad("too short".into()));
    }
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if b.len() < 4 + n {
        return Err(bad("truncated".into()));
    }
    let head: HeadIn = serde_json::from_slice(&b[4..4 + n]).map_err(|e| bad(e.to_string()))?;
    let mut mail = head.mail;
    if head.spool.is_none() {
        mail.raw = b[4 + n..].to_vec();
    }
    Ok(Stored {
        mail,
        spool: head.spool,
    })
}

/// The spool file an entry names, read from its head alone.
fn spooled_in(b: &[u8]) -> Option<String> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    #[derive(Deserialize)]
    struct Spooled {
        spool: Option<String>,
    }
    let head: Spooled = serde_json::from_slice(b.get(4..4 + n)?).ok()?;
    head.spool
}

/// A dead letter: the server's answer, a NUL, then the outbox entry as it was.
fn decode_dead(v: &[u8]) -> Result<(String, Stored), StoreError> {
    let nul = v.iter().position(|b| *b == 0).unwrap_or(0);
    Ok((
        String::from_utf8_lossy(&v[..nul]).into_owned(),
        decode_out(&v[nul + 1..])?,
    ))
}

/// A message kept for an operator: where it lies on the server, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub mailbox: String,
    pub uid_validity: Option<u32>,
    pub uid: Option<u32>,
    /// Its key in the index: the Message-ID, or the digest of its bytes.
    pub message: String,
    pub reason: String,
    pub at: String,
}

/// An IMAP change to make on the server after the decision is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub mailbox: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub keywords: Vec<String>,
    pub move_to: Option<String>,
}

impl Mark {
    /// The same mark with its ticket keyword, if it has one, naming `ticket` instead: a
    /// copy recorded second belongs to the ticket recorded first.
    fn of_ticket(&self, ticket: Option<&str>) -> Mark {
        let prefix = crate::ticket::TICKET_KEYWORD;
        let mut m = self.clone();
        if m.keywords.iter().any(|k| k.starts_with(prefix)) {
            m.keywords.retain(|k| !k.starts_with(prefix));
            m.keywords
                .extend(ticket.and_then(crate::ticket::ticket_keyword));
        }
        m
    }
}

/// Everything one triaged message changes, written at once.
#[derive(Debug, Clone)]
pub struct Record {
    /// Message-ID, or a digest of the bytes when there is none.
    pub key: String,
    pub mailbox: String,
    /// Where it came from on the server: advances the checkpoint.
    pub source: Option<Checkpoint>,
    pub message: MessageRecord,
    /// The ticket's new state, when the message opened or joined one.
    pub ticket: Option<Ticket>,
    pub outgoing: Vec<OutMail>,
    pub mark: Option<Mark>,
    /// The cap counters a mail to a customer moves (`decide::cap_keys`).
    pub counted: Vec<String>,
    /// (sender, normalised subject) -> ticket, for threading by subject.
    pub subject_key: Option<String>,
}

/// Where a (sender, subject) pair was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRecord {
    pub ticket: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Done,
    /// Another path (a second mailbox, a resync) recorded the same message first;
    /// nothing was written.
    AlreadyKnown(MessageRecord),
}

/// Which tickets a listing holds ([`Store::listing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Listing {
    /// Not resolved.
    #[default]
    Open,
    /// Open, resolved and shelved.
    All,
}

/// The newest tickets of a listing, oldest of them first, and how many more matched.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Listed {
    pub tickets: Vec<Ticket>,
    pub more: usize,
}

/// The `limit` newest tickets offered so far, by creation (then id).
struct Newest {
    limit: usize,
    kept: std::collections::BinaryHeap<std::cmp::Reverse<ByCreation>>,
    seen: usize,
}

struct ByCreation(Ticket);

impl ByCreation {
    fn key(&self) -> (&str, &str) {
        (&self.0.created, &self.0.id)
    }
}

impl PartialEq for ByCreation {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByCreation {}

impl PartialOrd for ByCreation {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByCreation {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Newest {
    fn new(limit: usize) -> Newest {
        Newest {
            limit,
            // Reserved up to a point: the limit may be "every ticket".
            kept: std::collections::BinaryHeap::with_capacity(limit.min(1024) + 1),
            seen: 0,
        }
    }

    fn offer(&mut self, t: Ticket) {
        self.seen += 1;
        self.kept.push(std::cmp::Reverse(ByCreation(t)));
        if self.kept.len() > self.limit {
            self.kept.pop();
        }
    }

    fn into_listed(self) -> Listed {
        let more = self.seen - self.kept.len();
        // Ascending Reverse is descending creation: turned around, oldest first.
        let mut tickets: Vec<Ticket> = self
            .kept
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.0 .0)
            .collect();
        tickets.reverse();
        Listed { tickets, more }
    }
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    /// Added to sled's generated ids: the next id of the database before the last
    /// compaction ([`compact`]).
    id_base: u64,
    checkpoints: sled::Tree,
    messages: sled::Tree,
    tickets: sled::Tree,
    outbox: sled::Tree,
    marks: sled::Tree,
    acks: sled::Tree,
    subjects: sled::Tree,
    adoptions: sled::Tree,
    /// Unfinished triage attempts per message on the server.
    attempts: sled::Tree,
    /// Messages kept for an operator, in the order they were kept.
    quarantined: sled::Tree,
    /// Mails the SMTP server refused for good, with its answer, by outbox key.
    dead: sled::Tree,
    /// Keys of the dead letters whose ticket and queue have not heard of them yet.
    untold: sled::Tree,
    /// Mails shadow mode decided and never sends, by outbox-style key.
    shadow_mails: sled::Tree,
    /// Ids of tickets opened in shadow mode: their later mails are shadow mails too.
    shadow_tickets: sled::Tree,
    /// Ids of the tickets not resolved: the follow-up clock reads only these.
    open: sled::Tree,
    /// What the retention sweep removes, in the order it does ([`lifecycle`]).
    retention: sled::Tree,
    /// This handle records in shadow mode (see [`Store::shadowed`]).
    shadow: bool,
    /// The bytes of big outgoing mails ([`SPOOL_ABOVE`]).
    spool: Spool,
    /// Spool files whose records are removed but perhaps not on disk yet: they go after
    /// the next flush, so that a crash never leaves a record without its bytes.
    doomed: Arc<Mutex<Vec<String>>>,
    /// Resolved tickets that left sled ([`shelf`]): read where sled has nothing.
    shelf: Arc<RwLock<Shelf>>,
}

/// An I/O error of the state's own files (the directory, the spool, the shelf, a
/// compaction), as sled reports its own.
fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Sled(e.into())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state records serialise")
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        err: e.to_string(),
    })
}

fn mark_key(m: &Mark) -> Vec<u8> {
    uid_key(&m.mailbox, m.uid_validity, m.uid)
}

/// A message's place on the server, as a key: mailbox, UIDVALIDITY, UID.
fn uid_key(mailbox: &str, uid_validity: u32, uid: u32) -> Vec<u8> {
    format!("{mailbox}\0{uid_validity:010}\0{uid:010}").into_bytes()
}

/// Message-IDs are compared without brackets and case: relays and clients differ on
/// both, and a missed match here means a message triaged twice.
fn id_key(id: &str) -> Vec<u8> {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
        .into_bytes()
}

/// Makes `dir` and everything in it the owner's alone (directories 0700, files 0600),
/// whatever the umask was when they were made: the state holds customers' mail. The
/// directory's own mode is what guards files sled makes later.
fn owner_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    let mode = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // A socket (control.sock) is set apart; links are not followed.
            let kind = entry.file_type()?;
            if kind.is_dir() || kind.is_file() {
                owner_only(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Opens sled at `dir/db`. sled releases its file lock from a background thread a
/// moment after the last handle is dropped: a restart (or a test) that opens at once
/// waits for it.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(HOUSEKEEPING_MS))
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                return Err(StoreError::Held(dir.to_path_buf()));
            }
            r => return Ok(r?),
        }
    }
}

/// `db` compacted ([`compact`]), or as it is when that fails: a compaction is never a
/// reason not to start (the state is sound, only bigger than it needs to be).
fn compacted(dir: &Path, db: sled::Db) -> Result<sled::Db, StoreError> {
    let (before, after) = match compact::copy(dir, &db, CACHE_BYTES) {
        Ok(sizes) => sizes,
        Err(e) => {
            tracing::warn!(state = %dir.display(), error = %e, "State database not compacted; it is used as it is.");
            compact::finish_interrupted(dir)?;
            return Ok(db);
        }
    };
    drop(db);
    match compact::swap(dir) {
        Ok(()) => tracing::info!(
            state = %dir.display(),
            before_bytes = before,
            after_bytes = after,
            "State database compacted."
        ),
        Err(e) => {
            tracing::warn!(state = %dir.display(), error = %e, "State database not compacted; it is used as it is.");
            compact::finish_interrupted(dir)?;
        }
    }
    owner_only(dir).map_err(io_error)?;
    let db = open_db(dir)?;
    // Opening the grown database took memory in proportion to its file; the compacted
    // one needs a fraction of it.
    crate::memory::give_back();
    Ok(db)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_error)?;
        owner_only(dir).map_err(io_error)?;
        compact::finish_interrupted(dir)?;
        let mut db = open_db(dir)?;
        if compact::due(dir, &db)? {
            db = compacted(dir, db)?;
        }
        let meta = db.open_tree("meta")?;
        let id_base = meta
            .get(compact::ID_BASE)?
            .and_then(|b| be_u64(&b))
            .unwrap_or(0);
        Ok(Store {
            meta,
            id_base,
            checkpoints: db.open_tree("checkpoints")?,
            messages: db.open_tree("messages")?,
            tickets: db.open_tree("tickets")?,
            outbox: db.open_tree("outbox")?,
            marks: db.open_tree("marks")?,
            acks: db.open_tree("acks")?,
            subjects: db.open_tree("subjects")?,
            adoptions: db.open_tree("adoptions")?,
            attempts: db.open_tree("attempts")?,
            quarantined: db.open_tree("quarantined")?,
            dead: db.open_tree("dead_letters")?,
            untold: db.open_tree("dead_letters_untold")?,
            shadow_mails: db.open_tree("shadow_mails")?,
            shadow_tickets: db.open_tree("shadow_tickets")?,
            open: db.open_tree("open_tickets")?,
            retention: db.open_tree("retention")?,
            shadow: false,
            spool: Spool::open(dir).map_err(io_error)?,
            doomed: Arc::default(),
            shelf: Arc::new(RwLock::new(Shelf::open(dir)?)),
            db,
        }
        .swept())
    }

    /// Removes the spool files no record names: a crash between a file and its record
    /// (the message is triaged again), or between a record's removal and its file's (the
    /// mail was sent or dropped). Neither is ever sent.
    fn swept(self) -> Store {
        let named = [&self.outbox, &self.shadow_mails]
            .into_iter()
            .flat_map(|t| t.iter().values())
            .map(|v| v.ok().and_then(|v| spooled_in(&v)))
            .chain(self.dead.iter().values().map(|v| {
                let v = v.ok()?;
                let nul = v.iter().position(|b| *b == 0)?;
                spooled_in(&v[nul + 1..])
            }))
            .flatten()
            .collect::<HashSet<String>>();
        match self.spool.sweep(&named) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(files = ?gone, "Spool files no outgoing mail names removed (left by a crash); none is sent.")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Spool cannot be swept; files no mail names stay.")
            }
        }
        self
    }

    /// Writes the bytes of each big mail of `outgoing` (under its key) to the spool,
    /// durably; returns, per mail, the file that holds it, if any.
    fn spool_out(
        &self,
        outgoing: &[OutMail],
        keys: &[u64],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let names: Vec<Option<String>> = outgoing
            .iter()
            .zip(keys)
            .map(|(m, k)| (m.raw.len() > SPOOL_ABOVE).then(|| Spool::name(*k)))
            .collect();
        let files: Vec<(String, &[u8])> = names
            .iter()
            .zip(outgoing)
            .filter_map(|(n, m)| Some((n.clone()?, &m.raw[..])))
            .collect();
        if let Err(e) = self.spool.put_all(&files) {
            self.unspool(&names);
            return Err(io_error(e));
        }
        Ok(names)
    }

    /// Removes at once spool files no committed record names.
    fn unspool(&self, names: &[Option<String>]) {
        for n in names.iter().flatten() {
            if let Err(e) = self.spool.remove(n) {
                tracing::warn!(file = %n, error = %e, "Spool file cannot be removed; the next start does.");
            }
        }
    }

    /// The spool file of a removed entry goes after the next flush.
    fn doom(&self, entry: &[u8]) {
        if let Some(n) = spooled_in(entry) {
            self.doomed.lock().expect("doomed list").push(n);
        }
    }

    /// The spool files of the entries removed so far: taken before a flush begins, since
    /// only the removals written before it began are surely on disk when it ends.
    fn doomed_now(&self) -> Vec<String> {
        std::mem::take(&mut *self.doomed.lock().expect("doomed list"))
    }

    /// After a flush: removes the files of `doomed`, whose entries' removal is on disk
    /// when it `worked`, or keeps them for the next flush.
    fn flushed(&self, doomed: Vec<String>, worked: bool) {
        if worked {
            self.unspool(&doomed.into_iter().map(Some).collect::<Vec<_>>());
        } else {
            self.doomed.lock().expect("doomed list").extend(doomed);
        }
    }

    /// `s` with its bytes, read from the spool when the entry does not hold them.
    pub fn with_bytes(&self, s: &Stored) -> Result<OutMail, StoreError> {
        let mut m = s.mail.clone();
        if let Some(n) = &s.spool {
            m.raw = self.spool.read(n).map_err(|e| StoreError::Corrupt {
                what: format!("spool file {n} of mail {}", m.message_id),
                err: e.to_string(),
            })?;
        }
        Ok(m)
    }

    fn loaded(&self, s: Stored) -> Result<OutMail, StoreError> {
        match s.spool {
            None => Ok(s.mail),
            Some(_) => self.with_bytes(&s),
        }
    }

    /// Opens the state, or, when sled cannot open it (truncated or corrupt files, a
    /// panic inside sled), moves the database aside as `db.broken-UNIXTIME` and opens a
    /// fresh one. Returns the path it was moved to, for the operator. The marks the
    /// daemon leaves on the server (`$Triaged`, `$Quarantined`) keep a fresh state from
    /// triaging handled messages again.
    pub fn open_or_recover(dir: &Path) -> Result<(Store, Option<(PathBuf, String)>), StoreError> {
        let opened = std::panic::catch_unwind(|| Store::open(dir)).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "sled panicked".into());
            Err(StoreError::Corrupt {
                what: "database".into(),
                err: what,
            })
        });
        let err = match opened {
            Ok(s) => return Ok((s, None)),
            Err(e) => e,
        };
        let db = dir.join("db");
        // A state another process holds is not broken: moving it aside under a running
        // daemon would start a second one on empty state, sending everything again.
        if !db.exists() || matches!(err, StoreError::Held(_) | StoreError::Shelf { .. }) {
            return Err(err);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = dir.join(format!("db.broken-{stamp}"));
        std::fs::rename(&db, &aside).map_err(io_error)?;
        // The bytes of its mails go with it: the fresh state names none of them, and
        // would sweep them away.
        let spool = dir.join("spool");
        if spool.exists() {
            let spool_aside = dir.join(format!("spool.broken-{stamp}"));
            std::fs::rename(&spool, spool_aside).map_err(io_error)?;
        }
        let store = Store::open(dir)?;
        Ok((store, Some((aside, err.to_string()))))
    }

    /// Makes everything written so far durable. Called once per batch, before any mail
    /// of that batch is handed to SMTP.
    pub fn flush(&self) -> Result<(), StoreError> {
        let doomed = self.doomed_now();
        let r = self.db.flush();
        self.flushed(doomed, r.is_ok());
        r?;
        Ok(())
    }

    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let doomed = self.doomed_now();
        let r = self.db.flush_async().await;
        self.flushed(doomed, r.is_ok());
        r?;
        Ok(())
    }

    pub fn checkpoint(&self, mailbox: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.checkpoints
            .get(mailbox.as_bytes())?
            .map(|v| from_json("checkpoint", &v))
            .transpose()
    }

    /// Sets a checkpoint outright (a new UIDVALIDITY starts again from 0).
    pub fn set_checkpoint(&self, mailbox: &str, cp: Checkpoint) -> Result<(), StoreError> {
        self.checkpoints.insert(mailbox.as_bytes(), json(&cp))?;
        Ok(())
    }

    /// The next ticket number. A number taken by a message whose record never committed
    /// is skipped, never reused for a different ticket.
    pub fn next_ticket_number(&self) -> Result<u64, StoreError> {
        let v = self.meta.update_and_fetch(b"next_ticket", |old| {
            let n = old.and_then(be_u64).unwrap_or(1000);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        let b = v.expect("update_and_fetch returns the new value");
        Ok(be_u64(&b).unwrap_or(0))
    }

    /// Moves ticket numbering up to at least `floor`. After a state was lost, numbers
    /// from the old state still stand in customers' subjects: the new state must not hand
    /// them out again, or a reply with an old tag would join a stranger's ticket.
    /// Numbers below `floor` are also remembered as "perhaps handed out by the lost
    /// state" ([`Store::lost_ticket_number`]).
    pub fn raise_ticket_numbers(&self, floor: u64) -> Result<(), StoreError> {
        for key in [&b"next_ticket"[..], b"lost_below"] {
            self.meta.update_and_fetch(key, |old| {
                let n = old.and_then(be_u64).unwrap_or(1000);
                Some(n.max(floor).to_be_bytes().to_vec())
            })?;
        }
        Ok(())
    }

    /// True when `number` may be a ticket of a state that was lost: below the numbers
    /// this state hands out, and this state never gave it. A reply that names it by its
    /// tag keeps that number instead of getting a new one the customer has never seen.
    pub fn lost_ticket_number(&self, number: u64) -> Result<bool, StoreError> {
        Ok(self
            .meta
            .get(b"lost_below")?
            .and_then(|b| be_u64(&b))
            .is_some_and(|below| number < below))
    }

    /// True when this state gave out `number` (not a lost state before it): a ticket of
    /// that number that is not in the state was resolved and removed by the retention
    /// sweep (or its number was taken by a message whose record never committed, and no
    /// mail ever carried it).
    pub fn gave_ticket_number(&self, number: u64) -> Result<bool, StoreError> {
        let read = |key: &[u8]| -> Result<Option<u64>, StoreError> {
            Ok(self.meta.get(key)?.and_then(|b| be_u64(&b)))
        };
        let first = read(b"lost_below")?.unwrap_or(1000).max(1000);
        let last = read(b"next_ticket")?.unwrap_or(1000);
        Ok(number > first && number <= last)
    }

    /// What the index knows of a message: sled's entry, or, for a message of a ticket
    /// on the shelf, the shelf's.
    pub fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let key = id_key(id);
        match self.messages.get(&key)? {
            Some(v) => packed::unpack("message record", &v).map(Some),
            None => self.shelf().message(&key),
        }
    }

    /// A ticket's record: an open ticket's is in the open index (see
    /// [`lifecycle::put_ticket`]), a resolved one's in `tickets`, or on the shelf once
    /// it has been quiet for a while.
    pub fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let open = self.open.get(id.as_bytes())?;
        match self.ticket_bytes(id.as_bytes(), open)? {
            Some(v) => packed::unpack("ticket", &v).map(Some),
            None => self.shelf().ticket(id),
        }
    }

    fn has_ticket(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.open.contains_key(id.as_bytes())?
            || self.tickets.contains_key(id.as_bytes())?
            || self.shelf().ticket(id)?.is_some())
    }

    fn shelf(&self) -> std::sync::RwLockReadGuard<'_, Shelf> {
        // A panic while a segment was added leaves the list as it was before or after.
        self.shelf.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest `limit` tickets by creation, oldest of them first: the open ones, or
    /// all (resolved and shelved too), each once, sled's copy before the shelf's; and how
    /// many more there are. Tickets are decoded one at a time and at most `limit` are
    /// kept, so what a listing holds is bounded by its limit, not by the years of
    /// tickets in the state.
    pub fn listing(&self, which: Listing, limit: usize) -> Result<Listed, StoreError> {
        let mut newest = Newest::new(limit);
        for r in self.open.iter() {
            let (id, v) = r?;
            if let Some(v) = self.ticket_bytes(&id, Some(v))? {
                newest.offer(packed::unpack("ticket", &v)?);
            }
        }
        if which == Listing::All {
            for r in self.tickets.iter() {
                let (id, v) = r?;
                // An open ticket of a state from before the open index: listed above.
                if !v.is_empty() && !self.open.contains_key(&id)? {
                    newest.offer(packed::unpack("ticket", &v)?);
                }
            }
            self.shelf().each_ticket(|t| {
                let id = t.id.as_bytes();
                if !self.open.contains_key(id)? && !self.tickets.contains_key(id)? {
                    newest.offer(t);
                }
                Ok(())
            })?;
        }
        Ok(newest.into_listed())
    }

    pub fn counted(&self, keys: &[String]) -> Result<Vec<u32>, StoreError> {
        keys.iter()
            .map(|k| {
                Ok(self
                    .acks
                    .get(k.as_bytes())?
                    .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
                    .unwrap_or(0))
            })
            .collect()
    }

    /// Counts one more mail on each of `keys` (a status mail, which no message record
    /// carries).
    pub fn count(&self, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            self.acks.update_and_fetch(k.as_bytes(), |v| {
                let n = v
                    .and_then(|v| v.try_into().ok().map(u32::from_be_bytes))
                    .unwrap_or(0);
                Some((n + 1).to_be_bytes().to_vec())
            })?;
        }
        Ok(())
    }

    /// A handle on the same state that records in shadow mode: decisions and tickets
    /// are written as usual, but the mails go to the shadow mails (never sent) and no
    /// IMAP mark is recorded, so nothing leaves and nothing changes on the server.
    pub fn shadowed(&self) -> Store {
        Store {
            shadow: true,
            ..self.clone()
        }
    }

    pub fn is_shadow_ticket(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.shadow_tickets.contains_key(id.as_bytes())?)
    }

    /// Mails shadow mode decided, in the order they were decided, with their bytes.
    pub fn shadow_mails(&self) -> Result<Vec<OutMail>, StoreError> {
        self.shadow_heads()?
            .into_iter()
            .map(|s| self.loaded(s))
            .collect()
    }

    /// Mails shadow mode decided, as stored: the bytes of a big one stay in the spool.
    pub fn shadow_heads(&self) -> Result<Vec<Stored>, StoreError> {
        self.shadow_iter().collect()
    }

    /// The same, one at a time: what looks for some of them holds those, not all.
    pub fn shadow_iter(&self) -> impl Iterator<Item = Result<Stored, StoreError>> + '_ {
        self.shadow_mails.iter().map(|r| decode_out(&r?.1))
    }

    pub fn shadow_len(&self) -> usize {
        self.shadow_mails.len()
    }

    /// Records the mails of a shadow decision where nothing sends them.
    fn record_shadow(
        &self,
        ticket: Option<&Ticket>,
        outgoing: &[OutMail],
    ) -> Result<(), StoreError> {
        if let Some(t) = ticket {
            self.shadow_tickets.insert(t.id.as_bytes(), &[])?;
        }
        let keys = self.new_keys(outgoing.len())?;
        let files = self.spool_out(outgoing, &keys)?;
        let now = lifecycle::now_secs();
        for ((m, k), f) in outgoing.iter().zip(&keys).zip(&files) {
            // Noted first: a crash between the two leaves a note the sweep drops, not a
            // mail it never finds.
            self.retention
                .insert(lifecycle::shadow_age_key(now, &k.to_be_bytes()), &[])?;
            self.shadow_mails
                .insert(k.to_be_bytes(), encode_out(m, f.as_deref()))?;
        }
        Ok(())
    }

    /// Writes one message's whole outcome atomically, unless the message is already
    /// known, in which case nothing is written.
    pub fn commit(&self, rec: &Record) -> Result<Committed, StoreError> {
        let shadow = self.shadow
            || match &rec.ticket {
                Some(t) => self.is_shadow_ticket(&t.id)?,
                None => false,
            };
        if shadow {
            let live = Record {
                outgoing: Vec::new(),
                mark: None,
                ..rec.clone()
            };
            // Only a ticket that shadow mode opens is a shadow ticket: a live ticket
            // that a shadow mailbox sees stays live for the mailboxes that are live.
            let opened = match &rec.ticket {
                Some(t) => !self.has_ticket(&t.id)?,
                None => false,
            };
            let r = self.commit_live(&live)?;
            if r == Committed::Done {
                let t = rec.ticket.as_ref().filter(|_| opened && self.shadow);
                self.record_shadow(t, &rec.outgoing)?;
            }
            return Ok(r);
        }
        self.commit_live(rec)
    }

    /// `n` new keys for entries, in order.
    fn new_keys(&self, n: usize) -> Result<Vec<u64>, StoreError> {
        (0..n).map(|_| self.new_id()).collect()
    }

    /// A key above every one given out before, compactions included.
    fn new_id(&self) -> Result<u64, StoreError> {
        Ok(self.id_base + self.db.generate_id()?)
    }

    fn commit_live(&self, rec: &Record) -> Result<Committed, StoreError> {
        // A message of a shelved ticket is known there; the shelf changes only by whole
        // segments, so this need not be in the transaction.
        let shelved = self.shelf().message(&id_key(&rec.key))?;
        let outbox_keys = self.new_keys(rec.outgoing.len())?;
        let kept = self.quarantine_entry(rec)?;
        let files = self.spool_out(&rec.outgoing, &outbox_keys)?;
        let trees = (
            &self.checkpoints,
            &self.messages,
            &self.tickets,
            &self.outbox,
            &self.marks,
            &self.acks,
            &self.subjects,
            &self.open,
            &self.retention,
            &self.attempts,
            &self.quarantined,
        );
        let r = trees.transaction(|trees| {
            let (
                cps,
                msgs,
                tickets,
                outbox,
                marks,
                acks,
                subjects,
                open,
                ret,
                attempts,
                quarantined,
            ) = trees;
            // Whatever became of it, the message's triage ended.
            if let Some(cp) = rec.source {
                attempts.remove(uid_key(&rec.mailbox, cp.uid_validity, cp.last_uid))?;
            }
            let prev = match msgs.get(id_key(&rec.key))? {
                Some(prev) => Some(
                    packed::unpack::<MessageRecord>("message record", &prev)
                        .map_err(ConflictableTransactionError::Abort)?,
                ),
                None => shelved.clone(),
            };
            if let Some(prev) = prev {
                // Still mark the server copy and advance the checkpoint: it is handled,
                // as part of the ticket recorded first.
                if let Some(mark) = &rec.mark {
                    let mark = mark.of_ticket(prev.ticket.as_deref());
                    marks.insert(mark_key(&mark), json(&mark))?;
                }
                if let Some(cp) = rec.source {
                    advance(cps, &rec.mailbox, cp)?;
                }
                return Ok(Committed::AlreadyKnown(prev));
            }
            lifecycle::put_message(msgs, ret, &id_key(&rec.key), &rec.message)?;
            if let Some(t) = &rec.ticket {
                lifecycle::put_ticket(tickets, open, ret, t)?;
                if let Some(k) = &rec.subject_key {
                    let v = SubjectRecord {
                        ticket: t.id.clone(),
                        at: rec.message.at.clone(),
                    };
                    lifecycle::put_subject(subjects, ret, k.as_bytes(), &v)?;
                }
            }
            for ((m, k), f) in rec.outgoing.iter().zip(&outbox_keys).zip(&files) {
                let index = (msgs, ret);
                let out = (*k, m, f.as_deref());
                put_outgoing(outbox, index, out, &rec.mailbox, &rec.message.at)?;
            }
            if let Some(mark) = &rec.mark {
                marks.insert(mark_key(mark), json(mark))?;
            }
            if let Some(cp) = rec.source {
                advance(cps, &rec.mailbox, cp)?;
            }
            if let Some((k, q)) = &kept {
                quarantined.insert(&k.to_be_bytes(), json(q))?;
            }
            for k in &rec.counted {
                let n = acks
                    .get(k.as_bytes())?
                    .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
                    .unwrap_or(0);
                acks.insert(k.as_bytes(), &(n + 1).to_be_bytes())?;
            }
            Ok(Committed::Done)
        });
        if !matches!(r, Ok(Committed::Done)) {
            self.unspool(&files);
        }
        Ok(r?)
    }

    /// The ticket last seen with this (sender, normalised subject) key, and when.
    pub fn by_subject(&self, key: &str) -> Result<Option<SubjectRecord>, StoreError> {
        self.subjects
            .get(key.as_bytes())?
            .map(|v| from_json("subject record", &v))
            .transpose()
    }

    /// Writes a ticket and the mails it implies (reminders, status mails) in one
    /// transaction, outside of any incoming message.
    pub fn commit_ticket(&self, ticket: &Ticket, outgoing: &[OutMail]) -> Result<(), StoreError> {
        if !outgoing.is_empty() && (self.shadow || self.is_shadow_ticket(&ticket.id)?) {
            self.commit_ticket(ticket, &[])?;
            return self.record_shadow(Some(ticket), outgoing);
        }
        let keys = self.new_keys(outgoing.len())?;
        let files = self.spool_out(outgoing, &keys)?;
        let trees = (
            &self.tickets,
            &self.outbox,
            &self.messages,
            &self.open,
            &self.retention,
        );
        let r = trees.transaction(|(tickets, outbox, msgs, open, ret)| {
            lifecycle::put_ticket(tickets, open, ret, ticket)?;
            let at = ticket
                .history
                .last()
                .map(|e| e.at.clone())
                .unwrap_or_default();
            for ((m, k), f) in outgoing.iter().zip(&keys).zip(&files) {
                put_outgoing(outbox, (msgs, ret), (*k, m, f.as_deref()), "", &at)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        });
        if r.is_err() {
            self.unspool(&files);
        }
        Ok(r?)
    }

    /// Outbox entries in the order they were decided, with their bytes (every one in
    /// memory at once: for tests and small outboxes; the sender reads
    /// [`Store::outbox_first_within`], listings [`Store::outbox_heads`]).
    pub fn outbox(&self) -> Result<Vec<(u64, OutMail)>, StoreError> {
        self.outbox_first(usize::MAX)
    }

    /// The first `n` outbox entries, in the order they were decided, with their bytes.
    pub fn outbox_first(&self, n: usize) -> Result<Vec<(u64, OutMail)>, StoreError> {
        self.outbox_stored(n)?
            .into_iter()
            .map(|(k, s)| Ok((k, self.loaded(s)?)))
            .collect()
    }

    /// Outbox entries in the order they were decided, each as stored: the bytes of a
    /// big mail stay in the spool.
    pub fn outbox_heads(&self) -> Result<Vec<(u64, Stored)>, StoreError> {
        self.outbox_iter().collect()
    }

    fn outbox_stored(&self, n: usize) -> Result<Vec<(u64, Stored)>, StoreError> {
        self.outbox_iter().take(n).collect()
    }

    /// Whether outbox entry `key` waits to be sent.
    pub fn is_waiting(&self, key: u64) -> Result<bool, StoreError> {
        Ok(self.outbox.contains_key(key.to_be_bytes())?)
    }

    /// The outbox by key, as stored, one entry at a time: what looks for some of them
    /// holds those, not all.
    pub fn outbox_iter(&self) -> impl Iterator<Item = Result<(u64, Stored), StoreError>> + '_ {
        self.outbox.iter().map(|r| {
            let (k, v) = r?;
            let key = be_u64(&k).unwrap_or(0);
            Ok((key, decode_out(&v)?))
        })
    }

    /// The first outbox entries, in order, as stored (a spooled mail's bytes are read
    /// at hand-over, [`Store::with_bytes`]): at most `n`, and no more once their entries
    /// hold `bytes` (the first is always taken, whatever its size). Also says whether
    /// entries were left beyond them.
    pub fn outbox_first_within(
        &self,
        n: usize,
        bytes: usize,
    ) -> Result<(Vec<(u64, Stored)>, bool), StoreError> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for r in self.outbox.iter() {
            if out.len() >= n || (total >= bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            let (k, v) = r?;
            total += v.len();
            out.push((be_u64(&k).unwrap_or(0), decode_out(&v)?));
        }
        Ok((out, false))
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// What the state holds, tree by tree: (name, entries, bytes of keys and values),
    /// and the spool as ("spool", files, bytes). For the benches and an operator who
    /// wonders where the space went; it reads every entry.
    pub fn sizes(&self) -> Result<Vec<(String, usize, u64)>, StoreError> {
        let mut sizes = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            let (mut n, mut bytes) = (0, 0u64);
            for r in tree.iter() {
                let (k, v) = r?;
                n += 1;
                bytes += (k.len() + v.len()) as u64;
            }
            sizes.push((String::from_utf8_lossy(&name).into_owned(), n, bytes));
        }
        let (files, bytes) = self.spool.usage().map_err(io_error)?;
        sizes.push(("spool".into(), files, bytes));
        let (_, tickets, bytes) = self.shelf().usage();
        sizes.push(("shelf".into(), tickets as usize, bytes));
        Ok(sizes)
    }

    /// The SMTP server accepted the mail: it leaves the outbox. The caller flushes soon
    /// after: until the removal is written, a crash sends the mail again.
    pub fn outbox_done(&self, key: u64) -> Result<(), StoreError> {
        if let Some(v) = self.outbox.remove(key.to_be_bytes())? {
            self.doom(&v);
        }
        Ok(())
    }

    /// Sending starts: the clean-stop note goes (from now on mails may be in flight) and
    /// the number of connections is noted, since it bounds which entries may be in
    /// flight at a crash. Written only when something changes; the caller flushes before
    /// the first mail is handed over, or a crash could leave a stale clean-stop note.
    pub fn outbox_sending_starts(&self, window: usize) -> Result<(), StoreError> {
        let w = (window as u64).to_be_bytes();
        if self.meta.get(OUTBOX_WINDOW)?.as_deref() != Some(&w[..]) {
            self.meta.insert(OUTBOX_WINDOW, &w)?;
        }
        // The per-mail note of earlier versions, left in older states, goes too. Looked
        // at first: a drain runs on every wake-up, and a write costs the flush that follows.
        for key in [OUTBOX_STOPPED_CLEAN, b"outbox_sending"] {
            if self.meta.contains_key(key)? {
                self.meta.remove(key)?;
            }
        }
        Ok(())
    }

    /// The sender stopped with nothing in flight: the next start need not wonder about
    /// any mail. Flushed at once.
    pub async fn outbox_stopped_clean(&self) -> Result<(), StoreError> {
        self.meta.insert(OUTBOX_STOPPED_CLEAN, &[])?;
        self.flush_async().await
    }

    /// The entries the server may or may not have accepted when the last run stopped:
    /// none after a clean stop, else the first `window` entries of the outbox. The sender
    /// hands over only entries among the first `window` not yet removed for good (a
    /// removal is flushed before its place is given to the next entry), so any mail
    /// whose answer was lost is among them. SMTP has no two-phase commit: this is as
    /// close as the sender can name them.
    pub fn outbox_uncertain(&self) -> Result<Vec<(u64, Stored)>, StoreError> {
        if self.meta.contains_key(OUTBOX_STOPPED_CLEAN)? {
            return Ok(Vec::new());
        }
        // Earlier versions sent on one connection, in order: the first entry.
        let window = self
            .meta
            .get(OUTBOX_WINDOW)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1);
        self.outbox_stored(window as usize)
    }

    /// The SMTP server refused the mail for good: it moves to `dead_letters`, where
    /// an operator finds it with the reason, instead of being retried for ever; and it is
    /// noted as not told yet, so that its ticket and a queue hear of it
    /// ([`Store::untold_dead_letters`]). One transaction: a refusal is never lost nor
    /// told twice.
    pub fn outbox_dead(&self, key: u64, reason: &str) -> Result<(), StoreError> {
        let k = key.to_be_bytes();
        (&self.outbox, &self.dead, &self.untold).transaction(|(outbox, dead, untold)| {
            if let Some(v) = outbox.get(k)? {
                let mut entry = reason.as_bytes().to_vec();
                entry.push(0);
                entry.extend_from_slice(&v);
                dead.insert(&k, entry)?;
                untold.insert(&k, &[])?;
                outbox.remove(&k)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// How many mails the server refused for good are kept.
    pub fn dead_letters_len(&self) -> usize {
        self.dead.len()
    }

    /// Mails the server refused for good, with the reason and their bytes.
    pub fn dead_letters(&self) -> Result<Vec<(String, OutMail)>, StoreError> {
        self.dead_letter_entries()?
            .into_iter()
            .map(|(_, reason, m)| Ok((reason, self.loaded(m)?)))
            .collect()
    }

    /// Mails the server refused for good, by their key (their outbox key, which names
    /// them in `mailtriage outbox`), with the reason; as stored.
    pub fn dead_letter_entries(&self) -> Result<Vec<(u64, String, Stored)>, StoreError> {
        self.dead_letter_iter().collect()
    }

    /// The same, one at a time.
    pub fn dead_letter_iter(
        &self,
    ) -> impl Iterator<Item = Result<(u64, String, Stored), StoreError>> + '_ {
        self.dead.iter().map(|r| {
            let (k, v) = r?;
            let (reason, m) = decode_dead(&v)?;
            Ok((be_u64(&k).unwrap_or(0), reason, m))
        })
    }

    /// The dead letter `key`, with the reason, if there is one; as stored.
    pub fn dead_letter(&self, key: u64) -> Result<Option<(String, Stored)>, StoreError> {
        self.dead
            .get(key.to_be_bytes())?
            .map(|v| decode_dead(&v))
            .transpose()
    }

    /// Puts the dead letter `key` back in the outbox, at its end under a new key (a place
    /// at its head could push a mail in flight out of the first entries the next start
    /// looks up after a crash), with its ticket's new state; returns the new key, or
    /// `None` when there is no such dead letter.
    pub fn retry_dead(&self, key: u64, ticket: Option<&Ticket>) -> Result<Option<u64>, StoreError> {
        let new = self.new_id()?;
        self.take_dead(key, ticket, Some(new))
    }

    /// Removes the dead letter `key` for good, with its ticket's new state; `false` when
    /// there is no such dead letter.
    pub fn drop_dead(&self, key: u64, ticket: Option<&Ticket>) -> Result<bool, StoreError> {
        Ok(self.take_dead(key, ticket, None)?.is_some())
    }

    /// Takes the dead letter `key` out (to the outbox under `requeue`, when given) and
    /// writes `ticket`, in one transaction.
    fn take_dead(
        &self,
        key: u64,
        ticket: Option<&Ticket>,
        requeue: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let k = key.to_be_bytes();
        let trees = (
            &self.dead,
            &self.untold,
            &self.outbox,
            &self.tickets,
            &self.open,
            &self.retention,
        );
        let r = trees.transaction(|(dead, untold, outbox, tickets, open, ret)| {
            let Some(v) = dead.remove(&k)? else {
                return Ok(None);
            };
            untold.remove(&k)?;
            if let Some(new) = requeue {
                let nul = v.iter().position(|b| *b == 0).unwrap_or(0);
                outbox.insert(&new.to_be_bytes(), &v[nul + 1..])?;
            }
            if let Some(t) = ticket {
                lifecycle::put_ticket(tickets, open, ret, t)?;
            }
            let dropped = requeue.is_none().then_some(v);
            Ok::<_, ConflictableTransactionError<StoreError>>(Some((
                requeue.unwrap_or(key),
                dropped,
            )))
        })?;
        Ok(r.map(|(k, dropped)| {
            if let Some(v) = dropped {
                let nul = v.iter().position(|b| *b == 0).unwrap_or(0);
                self.doom(&v[nul + 1..]);
            }
            k
        }))
    }

    /// The dead letters whose ticket and queue have not heard of them yet.
    pub fn untold_dead_letters(&self) -> Result<Vec<(u64, String, Stored)>, StoreError> {
        let mut untold = Vec::new();
        for k in self.untold.iter().keys() {
            let k = k?;
            if let Some(v) = self.dead.get(&k)? {
                let (reason, m) = decode_dead(&v)?;
                untold.push((be_u64(&k).unwrap_or(0), reason, m));
            }
        }
        Ok(untold)
    }

    /// The dead letter `key` is told: its ticket's new state (with the refusal in its
    /// history) and the notes about it, in one transaction with the end of its untold
    /// mark. In shadow mode the notes are shadow mails.
    pub fn commit_refusal(
        &self,
        key: u64,
        ticket: Option<&Ticket>,
        notes: &[OutMail],
    ) -> Result<(), StoreError> {
        if self.shadow && !notes.is_empty() {
            self.commit_refusal(key, ticket, &[])?;
            return self.record_shadow(None, notes);
        }
        let keys = self.new_keys(notes.len())?;
        let files = self.spool_out(notes, &keys)?;
        let at = ticket
            .and_then(|t| t.history.last())
            .map(|e| e.at.clone())
            .unwrap_or_default();
        let trees = (
            &self.untold,
            &self.tickets,
            &self.outbox,
            &self.messages,
            &self.open,
            &self.retention,
        );
        let r = trees.transaction(|(untold, tickets, outbox, msgs, open, ret)| {
            untold.remove(&key.to_be_bytes())?;
            if let Some(t) = ticket {
                lifecycle::put_ticket(tickets, open, ret, t)?;
            }
            for ((m, k), f) in notes.iter().zip(&keys).zip(&files) {
                put_outgoing(outbox, (msgs, ret), (*k, m, f.as_deref()), "", &at)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        });
        if r.is_err() {
            self.unspool(&files);
        }
        Ok(r?)
    }

    /// The entry a quarantining record adds to the list of quarantined messages, under
    /// a new key; `None` for any other record. The list keeps the last
    /// [`QUARANTINE_KEPT`]: the index keeps every one with its reason.
    fn quarantine_entry(&self, rec: &Record) -> Result<Option<(u64, Quarantined)>, StoreError> {
        if rec.message.disposition != Disposition::Quarantined {
            return Ok(None);
        }
        while self.quarantined.len() >= QUARANTINE_KEPT {
            self.quarantined.pop_min()?;
        }
        Ok(Some((
            self.new_id()?,
            Quarantined {
                mailbox: rec.mailbox.clone(),
                uid_validity: rec.source.map(|c| c.uid_validity),
                uid: rec.source.map(|c| c.last_uid),
                message: rec.key.clone(),
                reason: rec.message.reason.clone().unwrap_or_default(),
                at: rec.message.at.clone(),
            },
        )))
    }

    /// The messages kept for an operator, most recent first, at most `n`.
    pub fn quarantined(&self, n: usize) -> Result<Vec<Quarantined>, StoreError> {
        self.quarantined
            .iter()
            .rev()
            .take(n)
            .map(|r| from_json("quarantined message", &r?.1))
            .collect()
    }

    pub fn quarantined_len(&self) -> usize {
        self.quarantined.len()
    }

    /// Triage of the message at `cp` in `mailbox` begins: returns how many earlier
    /// attempts began and never ended (the daemon died on it: a crash, a kill, the
    /// watchdog), and counts this one. The count goes when the message's outcome is
    /// committed. `durable`: flushed before triage begins, so that even a crash at once
    /// is counted; otherwise it reaches the disk with the next flush (within sled's housekeeping period).
    pub fn attempt(&self, mailbox: &str, cp: Checkpoint, durable: bool) -> Result<u32, StoreError> {
        let key = uid_key(mailbox, cp.uid_validity, cp.last_uid);
        let count = |v: Option<&[u8]>| {
            v.and_then(|v| v.try_into().ok())
                .map_or(0, u32::from_be_bytes)
        };
        let before = self
            .attempts
            .fetch_and_update(key, |v| Some((count(v) + 1).to_be_bytes().to_vec()))?;
        if durable {
            self.flush()?;
        }
        Ok(count(before.as_deref()))
    }

    /// Triage of the message at `cp` ended without an outcome (the state could not be
    /// written): it was no fault of the message, so the attempt does not count.
    pub fn attempt_ended(&self, mailbox: &str, cp: Checkpoint) -> Result<(), StoreError> {
        self.attempts
            .remove(uid_key(mailbox, cp.uid_validity, cp.last_uid))?;
        Ok(())
    }

    /// The mailbox tasks begin: returns whether the last run ended without a clean stop
    /// of them while it had triaged something, in which case a message may have been in
    /// hand when it died and its attempts are counted durably (see [`Store::attempt`]).
    pub fn triage_begins(&self) -> Result<bool, StoreError> {
        let clean = self.meta.remove(TRIAGE_STOPPED_CLEAN)?.is_some();
        self.flush()?;
        Ok(!clean && !self.checkpoints.is_empty())
    }

    /// The mailbox tasks stopped with no message in hand. The caller flushes.
    pub fn triage_stopped_clean(&self) -> Result<(), StoreError> {
        self.meta.insert(TRIAGE_STOPPED_CLEAN, &[])?;
        Ok(())
    }

    pub fn pending_marks(&self, mailbox: &str) -> Result<Vec<Mark>, StoreError> {
        let mut prefix = mailbox.as_bytes().to_vec();
        prefix.push(0);
        self.marks
            .scan_prefix(prefix)
            .map(|r| {
                let (_, v) = r?;
                from_json("mark", &v)
            })
            .collect()
    }

    pub fn mark_done(&self, mark: &Mark) -> Result<(), StoreError> {
        self.marks.remove(mark_key(mark))?;
        Ok(())
    }
}

/// Queues one outgoing mail and indexes its Message-ID as sent, so a reply to it joins
/// its ticket and the mail itself is recognised as the daemon's own when it comes back.
fn put_outgoing(
    outbox: &sled::transaction::TransactionalTree,
    (msgs, retention): (
        &sled::transaction::TransactionalTree,
        &sled::transaction::TransactionalTree,
    ),
    (key, m, spool): (u64, &OutMail, Option<&str>),
    mailbox: &str,
    at: &str,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    outbox.insert(&key.to_be_bytes(), encode_out(m, spool))?;
    let sent = MessageRecord {
        ticket: Some(m.ticket.clone()),
        mailbox: mailbox.to_string(),
        disposition: Disposition::Sent,
        at: at.to_string(),
        reason: None,
    };
    lifecycle::put_message(msgs, retention, &id_key(&m.message_id), &sent)?;
    Ok(())
}

fn advance(
    cps: &sled::transaction::TransactionalTree,
    mailbox: &str,
    cp: Checkpoint,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let cur: Option<Checkpoint> = cps
        .get(mailbox.as_bytes())?
        .and_then(|v| serde_json::from_slice(&v).ok());
    let newer = match cur {
        Some(c) if c.uid_validity == cp.uid_validity => cp.last_uid > c.last_uid,
        _ => true,
    };
    if newer {
        cps.insert(mailbox.as_bytes(), json(&cp))?;
    }
    Ok(())
}

/// A number as the store writes it: 8 bytes, big-endian (so keys sort by number).
fn be_u64(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::MailKind;

    #[test]
    fn the_state_is_the_owner_s_alone_whatever_the_umask_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // A state made under umask 022 by an earlier version: readable by everyone.
        let earlier = Store::open(&state).unwrap();
        earlier.flush().unwrap();
        drop(earlier);
        for entry in walk(&state).into_iter().chain([state.clone()]) {
            let mode = if entry.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&entry, PermissionsExt::from_mode(mode)).unwrap();
        }
        let before = walk(&state);
        let _store = Store::open(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        // Files sled makes later follow the umask (the binary sets 077 at start); the
        // directory's 0700 guards them either way.
        for entry in before {
            let want = if entry.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&entry), want, "{}", entry.display());
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                all.extend(walk(&p));
            }
            all.push(p);
        }
        all
    }

    pub(super) fn record(key: &str, uid: u32) -> Record {
        Record {
            key: key.into(),
            mailbox: "billing".into(),
            source: Some(Checkpoint {
                uid_validity: 7,
                last_uid: uid,
            }),
            message: MessageRecord {
                ticket: Some("T-1001".into()),
                mailbox: "billing".into(),
                disposition: Disposition::Forwarded,
                at: "2026-01-01T00:00:00Z".into(),
                reason: None,
            },
            ticket: None,
            outgoing: vec![OutMail {
                message_id: format!("T-1001.{uid}@mailtriage.example.test"),
                kind: MailKind::Forward,
                ticket: "T-1001".into(),
                envelope_from: None,
                to: vec!["support@example.test".into()],
                identity: None,
                raw: b"Subject: x\r\n\r\nbody\xff\r\n".to_vec(),
            }],
            mark: Some(Mark {
                mailbox: "billing".into(),
                uid_validity: 7,
                uid,
                keywords: vec!["$Forwarded".into()],
                move_to: None,
            }),
            counted: vec!["c@example.com\x002026-01-01".into()],
            subject_key: None,
        }
    }

    #[test]
    fn dispositions_are_stored_as_their_words() {
        let words = [
            "forwarded",
            "kept",
            "left",
            "ignored",
            "duplicate",
            "quarantined",
            "sent",
        ];
        for word in words {
            let stored = format!("\"{word}\"");
            let d: Disposition = serde_json::from_str(&stored).unwrap();
            assert_eq!(
                (d.as_str(), serde_json::to_string(&d).unwrap()),
                (word, stored)
            );
        }
    }

    #[test]
    fn a_state_in_use_is_refused_by_name_and_never_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = Store::open_or_recover(dir.path()).map(|_| ()).unwrap_err();
        assert!(matches!(err, StoreError::Held(_)), "{err}");
        assert!(
            err.to_string()
                .contains("in use by another mailtriage process"),
            "{err}"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                std::ffi::OsString::from("db"),
                std::ffi::OsString::from("resolved"),
                std::ffi::OsString::from("spool")
            ],
            "nothing moved aside"
        );
        drop(first);
    }

    #[test]
    fn a_copy_recorded_second_is_marked_with_the_ticket_recorded_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.commit(&record("<A@x>", 5)).unwrap(), Committed::Done);
        // The same message at sales@, decided at the same time with a ticket of its own.
        let mut copy = record("<A@x>", 9);
        copy.mailbox = "sales".into();
        let mark = copy.mark.as_mut().unwrap();
        mark.mailbox = "sales".into();
        mark.keywords = vec!["$Triaged".into(), "$Ticket_T-1002".into()];
        assert!(matches!(
            s.commit(&copy).unwrap(),
            Committed::AlreadyKnown(_)
        ));
        let marks = s.pending_marks("sales").unwrap();
        assert_eq!(
            marks[0].keywords,
            vec!["$Triaged".to_string(), "$Ticket_T-1001".to_string()]
        );
    }

    #[test]
    fn commit_is_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.commit(&record("<A@x>", 5)).unwrap(), Committed::Done);
            assert!(matches!(
                s.commit(&record("a@x", 6)).unwrap(),
                Committed::AlreadyKnown(_)
            ));
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let out = s.outbox().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.raw, b"Subject: x\r\n\r\nbody\xff\r\n");
        assert_eq!(
            s.checkpoint("billing").unwrap(),
            Some(Checkpoint {
                uid_validity: 7,
                last_uid: 6
            })
        );
        // Both server copies are marked: the second one is handled too, by the first.
        assert_eq!(s.pending_marks("billing").unwrap().len(), 2);
        assert_eq!(
            s.counted(&["c@example.com\x002026-01-01".into()]).unwrap(),
            vec![1]
        );
        assert_eq!(
            s.message("T-1001.5@mailtriage.example.test")
                .unwrap()
                .unwrap()
                .disposition
                .as_str(),
            "sent"
        );
        s.outbox_done(out[0].0).unwrap();
        assert_eq!(s.outbox_len(), 0);
    }

    /// A fresh state with messages 1 to `n` committed, each with its mail in the outbox.
    pub(super) fn store_with_mails(n: u32) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for uid in 1..=n {
            s.commit(&record(&format!("m{uid}"), uid)).unwrap();
        }
        (dir, s)
    }

    #[test]
    fn uncertain_mails_are_the_first_of_the_window_unless_the_stop_was_clean() {
        let (_dir, s) = store_with_mails(5);
        let ids = |v: Vec<(u64, Stored)>| -> Vec<String> {
            v.into_iter().map(|(_, s)| s.mail.message_id).collect()
        };
        // A state that never sent (or an older version's): the first entry.
        assert_eq!(ids(s.outbox_uncertain().unwrap()).len(), 1);
        s.outbox_sending_starts(3).unwrap();
        let first3: Vec<String> = ids(s.outbox_heads().unwrap()).into_iter().take(3).collect();
        assert_eq!(ids(s.outbox_uncertain().unwrap()), first3);
        futures::executor::block_on(s.outbox_stopped_clean()).unwrap();
        assert!(s.outbox_uncertain().unwrap().is_empty());
        s.outbox_sending_starts(2).unwrap();
        assert_eq!(ids(s.outbox_uncertain().unwrap()), first3[..2].to_vec());
    }

    #[test]
    fn the_outbox_is_read_in_batches_bounded_by_count_and_bytes() {
        let (_dir, s) = store_with_mails(5);
        let keys = |v: &[(u64, Stored)]| v.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let all = keys(&s.outbox_heads().unwrap());
        let (one, more) = s.outbox_first_within(64, 1).unwrap();
        assert_eq!(
            (keys(&one), more),
            (all[..1].to_vec(), true),
            "one, however big"
        );
        let (two, more) = s.outbox_first_within(2, usize::MAX).unwrap();
        assert_eq!((keys(&two), more), (all[..2].to_vec(), true));
        let (every, more) = s.outbox_first_within(64, 1 << 20).unwrap();
        assert_eq!((keys(&every), more), (all, false));
    }

    #[test]
    fn ticket_numbers_can_be_raised_never_lowered() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.raise_ticket_numbers(500_000).unwrap();
        assert_eq!(s.next_ticket_number().unwrap(), 500_001);
        s.raise_ticket_numbers(10).unwrap();
        assert_eq!(s.next_ticket_number().unwrap(), 500_002);
    }

    #[test]
    fn ticket_numbers_grow() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.next_ticket_number().unwrap();
        let b = s.next_ticket_number().unwrap();
        assert_eq!(a, 1001);
        assert_eq!(b, 1002);
    }

    #[test]
    fn a_dead_letter_goes_back_to_the_end_of_the_outbox_or_away_for_good() {
        let (_dir, s) = store_with_mails(3);
        let keys: Vec<u64> = s.outbox().unwrap().iter().map(|(k, _)| *k).collect();
        s.outbox_dead(keys[0], "550 no such user").unwrap();
        s.outbox_dead(keys[1], "554 rejected").unwrap();
        assert_eq!(s.untold_dead_letters().unwrap().len(), 2);
        assert_eq!(
            s.dead_letter(keys[0]).unwrap().unwrap().0,
            "550 no such user"
        );

        let new = s.retry_dead(keys[0], None).unwrap().unwrap();
        let order: Vec<u64> = s.outbox().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(order, vec![keys[2], new], "at the end, under a new key");
        let (_, m) = &s.outbox().unwrap()[1];
        assert_eq!(m.raw, b"Subject: x\r\n\r\nbody\xff\r\n", "the same bytes");
        assert_eq!(s.retry_dead(keys[0], None).unwrap(), None, "once");

        assert!(s.drop_dead(keys[1], None).unwrap());
        assert!(!s.drop_dead(keys[1], None).unwrap());
        assert_eq!(s.dead_letters_len(), 0);
        assert!(s.untold_dead_letters().unwrap().is_empty());
    }

    /// A record whose one mail is a forward of `n` bytes (above [`SPOOL_ABOVE`]: spooled).
    fn big_record(key: &str, uid: u32, n: usize) -> (Record, Vec<u8>) {
        let mut rec = record(key, uid);
        let raw: Vec<u8> = (0..n).map(|i| b"abcdefgh\r\n"[i % 10]).collect();
        rec.outgoing[0].raw = raw.clone();
        (rec, raw)
    }

    fn spool_files(dir: &Path) -> Vec<String> {
        file_names(&dir.join("spool"))
    }

    /// The names of the files in `dir`, sorted.
    pub(super) fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_big_mail_s_bytes_lie_in_the_spool_until_its_sending_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (rec, raw) = big_record("m1", 1, 200_000);
        s.commit(&rec).unwrap();
        assert_eq!(spool_files(dir.path()).len(), 1);
        let (key, entry) = s.outbox.iter().next().unwrap().unwrap();
        assert!(entry.len() < 2_000, "the entry holds the head alone");
        let (batch, _) = s.outbox_first_within(64, 1 << 20).unwrap();
        assert!(batch[0].1.mail.raw.is_empty(), "read at hand-over");
        assert_eq!(s.with_bytes(&batch[0].1).unwrap().raw, raw);
        assert_eq!(s.outbox().unwrap()[0].1.raw, raw);

        s.outbox_done(be_u64(&key).unwrap()).unwrap();
        assert_eq!(
            spool_files(dir.path()).len(),
            1,
            "kept until the removal is on disk"
        );
        s.flush().unwrap();
        assert!(spool_files(dir.path()).is_empty());
    }

    #[test]
    fn sizes_name_each_tree_and_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(&big_record("m1", 1, 100_000).0).unwrap();
        let sizes = s.sizes().unwrap();
        let of = |name: &str| sizes.iter().find(|(n, _, _)| n == name).cloned().unwrap();
        let (_, n, bytes) = of("outbox");
        assert!(n == 1 && bytes < 2_000, "{sizes:?}");
        assert_eq!(of("spool"), ("spool".into(), 1, 100_000));
        assert_eq!(of("checkpoints").1, 1);
    }

    #[test]
    fn small_mails_keep_their_bytes_in_their_entry() {
        let (dir, s) = store_with_mails(2);
        assert!(spool_files(dir.path()).is_empty());
        assert_eq!(
            s.outbox().unwrap()[0].1.raw,
            b"Subject: x\r\n\r\nbody\xff\r\n"
        );
    }

    #[test]
    fn an_entry_an_earlier_version_wrote_with_its_bytes_still_drains() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (rec, raw) = big_record("m1", 1, 100_000);
        let m = &rec.outgoing[0];
        // The earlier format: the length-prefixed JSON of the mail, then its bytes.
        let head = serde_json::to_vec(m).unwrap();
        let mut v = (head.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&head);
        v.extend_from_slice(&raw);
        s.outbox.insert(7u64.to_be_bytes(), v).unwrap();
        let (batch, more) = s.outbox_first_within(64, 1 << 20).unwrap();
        assert!(!more);
        assert_eq!(batch[0].1.mail.message_id, m.message_id);
        assert_eq!(s.with_bytes(&batch[0].1).unwrap().raw, raw);
        s.outbox_dead(7, "550 no").unwrap();
        let again = s.retry_dead(7, None).unwrap().unwrap();
        assert_eq!(s.outbox().unwrap()[0].1.raw, raw);
        s.outbox_done(again).unwrap();
        s.flush().unwrap();
        assert_eq!(s.outbox_len(), 0);
    }

    #[test]
    fn a_spool_file_no_record_names_is_removed_at_start_and_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let (rec, _) = big_record("m1", 1, 100_000);
            s.commit(&rec).unwrap();
            s.flush().unwrap();
        }
        let kept = spool_files(dir.path());
        // A crash after a file was written and before its record was committed.
        let orphan = Spool::name(u64::MAX);
        std::fs::write(dir.path().join("spool").join(&orphan), b"x").unwrap();
        std::fs::write(dir.path().join("spool").join("half.tmp"), b"x").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(spool_files(dir.path()), kept);
        assert_eq!(s.outbox().unwrap().len(), 1);
    }

    #[test]
    fn a_state_moved_aside_takes_its_spool_with_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.commit(&big_record("m1", 1, 100_000).0).unwrap();
            s.flush().unwrap();
        }
        let files = spool_files(dir.path());
        std::fs::write(dir.path().join("db/conf"), b"\x9c\xff garbage").unwrap();
        let (s, aside) = Store::open_or_recover(dir.path()).unwrap();
        let aside = aside.expect("moved aside").0;
        let stamp = aside
            .to_string_lossy()
            .rsplit('-')
            .next()
            .unwrap()
            .to_string();
        let kept = dir.path().join(format!("spool.broken-{stamp}"));
        assert_eq!(std::fs::read_dir(&kept).unwrap().count(), files.len());
        assert!(spool_files(dir.path()).is_empty());
        assert_eq!(s.outbox_len(), 0);
    }

    #[test]
    fn a_big_dead_letter_keeps_its_bytes_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (rec, raw) = big_record("m1", 1, 100_000);
        s.commit(&rec).unwrap();
        let key = s.outbox().unwrap()[0].0;
        s.outbox_dead(key, "550 no such user").unwrap();
        s.flush().unwrap();
        assert_eq!(s.dead_letters().unwrap()[0].1.raw, raw);
        let new = s.retry_dead(key, None).unwrap().unwrap();
        assert_eq!(s.outbox().unwrap()[0].1.raw, raw, "sent again whole");
        s.outbox_dead(new, "550 still no").unwrap();
        assert!(s.drop_dead(new, None).unwrap());
        assert_eq!(spool_files(dir.path()).len(), 1);
        s.flush().unwrap();
        assert!(spool_files(dir.path()).is_empty());
    }

    #[test]
    fn a_big_shadow_mail_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap().shadowed();
        let (rec, raw) = big_record("m1", 1, 100_000);
        s.commit(&rec).unwrap();
        assert_eq!(s.outbox_len(), 0);
        assert_eq!(s.shadow_mails().unwrap()[0].raw, raw);
        s.flush().unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.shadow_mails().unwrap()[0].raw, raw, "kept at start");
    }

    #[test]
    fn shadow_mails_go_with_their_spool_files_once_kept_their_time() {
        use std::time::Duration;
        const DAY: u64 = 86400;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap().shadowed();
        s.commit(&big_record("m1", 1, 100_000).0).unwrap();
        s.commit(&record("m2", 2)).unwrap();
        s.flush().unwrap();
        assert_eq!((s.shadow_len(), spool_files(dir.path()).len()), (2, 1));
        let keep = Keep {
            retention: Duration::from_secs(365 * DAY),
            subjects: Duration::from_secs(7 * DAY),
            shadow_mails: Duration::from_secs(30 * DAY),
        };
        let now = time::OffsetDateTime::now_utc();
        let swept = s.sweep(now + time::Duration::days(29), keep, 100).unwrap();
        assert_eq!(
            (swept.shadow_mails, s.shadow_len()),
            (0, 2),
            "within their time"
        );
        let swept = s.sweep(now + time::Duration::days(31), keep, 1).unwrap();
        assert_eq!(
            (swept.shadow_mails, swept.more),
            (1, true),
            "a bounded pass"
        );
        let swept = s.sweep(now + time::Duration::days(31), keep, 100).unwrap();
        assert_eq!((swept.shadow_mails, s.shadow_len()), (1, 0));
        assert!(
            spool_files(dir.path()).is_empty(),
            "the big one's bytes went too"
        );

        // Shadow mails of a state from before they aged are noted at the first start,
        // and go their time after it.
        s.commit(&record("m3", 3)).unwrap();
        s.retention
            .remove(
                s.retention
                    .scan_prefix(b"h")
                    .keys()
                    .next()
                    .unwrap()
                    .unwrap(),
            )
            .unwrap();
        s.meta.remove(b"shadow_mails_aged").unwrap();
        let swept = s.sweep(now + time::Duration::days(62), keep, 100).unwrap();
        assert_eq!(
            (swept.shadow_mails, s.shadow_len()),
            (0, 1),
            "not noted: never swept"
        );
        s.meta.insert(b"lifecycle_indexed", &[]).unwrap();
        assert_eq!(s.migrate_lifecycle().unwrap(), None);
        let swept = s.sweep(now + time::Duration::days(29), keep, 100).unwrap();
        assert_eq!(swept.shadow_mails, 0);
        let swept = s.sweep(now + time::Duration::days(31), keep, 100).unwrap();
        assert_eq!((swept.shadow_mails, s.shadow_len()), (1, 0));
    }

    #[test]
    fn a_message_known_already_leaves_no_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(&big_record("m1", 1, 100_000).0).unwrap();
        let first = spool_files(dir.path());
        let again = s.commit(&big_record("m1", 2, 100_000).0).unwrap();
        assert!(matches!(again, Committed::AlreadyKnown(_)));
        assert_eq!(spool_files(dir.path()), first);
    }

    #[test]
    fn checkpoint_never_goes_back_within_a_uidvalidity() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(&record("a", 9)).unwrap();
        s.commit(&record("b", 3)).unwrap();
        assert_eq!(s.checkpoint("billing").unwrap().unwrap().last_uid, 9);
    }
}
