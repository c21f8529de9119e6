//! Record: the one module that owns sled. It keeps, per state directory:
//! - `checkpoints`: per mailbox, the (UIDVALIDITY, last UID) already triaged;
//! - `messages`: the Message-ID index (every message seen, and every mail sent) -> ticket;
//! - `tickets`: id -> [`Ticket`] with its history;
//! - `outbox`: mails decided but not yet accepted by the SMTP server, in order;
//! - `marks`: IMAP keywords/moves decided but not yet applied on the server;
//! - `acks`: mails to customers per address and day, per domain and hour, and per hour
//!   (the caps).
//! - `dead_letters`: mails the SMTP server refused for good, with its answer, and
//!   `dead_letters_untold`: those whose ticket and queue have not heard of them yet;
//! - `adoptions`: per folder, how it was taken on when first met ([`adopt`]);
//! - `open_tickets` and `retention`: the tickets not resolved, and what the retention
//!   sweep removes when ([`lifecycle`]);
//! - `attempts`: per (mailbox, UIDVALIDITY, UID), how many times triage of a message
//!   began and never ended (the daemon died on it), cleared by the message's commit;
//! - `quarantined`: the messages kept for an operator, where they lie and why.
//!
//! A message's decision, the mails it implies, its mark and the checkpoint advance are
//! written in one transaction ([`Store::commit`]); a message is therefore either wholly
//! triaged or not at all, and a resend after a crash sends the stored bytes again.

mod adopt;
mod lifecycle;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ticket::{OutMail, Ticket};

pub use adopt::{Adoption, Take};
pub use lifecycle::{Migrated, Swept};

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

/// An outbox entry: a length-prefixed JSON head, then the raw mail.
fn encode_out(m: &OutMail) -> Vec<u8> {
    let head = serde_json::to_vec(m).expect("OutMail serialises");
    let mut v = Vec::with_capacity(4 + head.len() + m.raw.len());
    v.extend_from_slice(&(head.len() as u32).to_be_bytes());
    v.extend_from_slice(&head);
    v.extend_from_slice(&m.raw);
    v
}

fn decode_out(b: &[u8]) -> Result<OutMail, StoreError> {
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
    let mut m: OutMail = serde_json::from_slice(&b[4..4 + n]).map_err(|e| bad(e.to_string()))?;
    m.raw = b[4 + n..].to_vec();
    Ok(m)
}

/// A dead letter: the server's answer, a NUL, then the outbox entry as it was.
fn decode_dead(v: &[u8]) -> Result<(String, OutMail), StoreError> {
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

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
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

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled(e.into()))?;
        owner_only(dir).map_err(|e| StoreError::Sled(e.into()))?;
        // sled releases its file lock from a background thread a moment after the last
        // handle is dropped: a restart (or a test) that opens at once waits for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
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
                r => break r?,
            }
        };
        Ok(Store {
            meta: db.open_tree("meta")?,
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
            db,
        })
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
        if !db.exists() || matches!(err, StoreError::Held(_)) {
            return Err(err);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = dir.join(format!("db.broken-{stamp}"));
        std::fs::rename(&db, &aside).map_err(|e| StoreError::Sled(e.into()))?;
        let store = Store::open(dir)?;
        Ok((store, Some((aside, err.to_string()))))
    }

    /// Makes everything written so far durable. Called once per batch, before any mail
    /// of that batch is handed to SMTP.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
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

    pub fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.messages
            .get(id_key(id))?
            .map(|v| from_json("message record", &v))
            .transpose()
    }

    pub fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        self.tickets
            .get(id.as_bytes())?
            .map(|v| from_json("ticket", &v))
            .transpose()
    }

    pub fn tickets(&self) -> Result<Vec<Ticket>, StoreError> {
        self.tickets
            .iter()
            .map(|r| {
                let (_, v) = r?;
                from_json("ticket", &v)
            })
            .collect()
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

    /// Mails shadow mode decided, in the order they were decided.
    pub fn shadow_mails(&self) -> Result<Vec<OutMail>, StoreError> {
        self.shadow_mails
            .iter()
            .map(|r| {
                let (_, v) = r?;
                decode_out(&v)
            })
            .collect()
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
        for m in outgoing {
            let k = self.db.generate_id()?;
            self.shadow_mails.insert(k.to_be_bytes(), encode_out(m))?;
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
                Some(t) => !self.tickets.contains_key(t.id.as_bytes())?,
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

    fn commit_live(&self, rec: &Record) -> Result<Committed, StoreError> {
        let outbox_keys: Vec<u64> = rec
            .outgoing
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
        let kept = self.quarantine_entry(rec)?;
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
            if let Some(prev) = msgs.get(id_key(&rec.key))? {
                let prev: MessageRecord = serde_json::from_slice(&prev).map_err(|e| {
                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                        what: "message record".into(),
                        err: e.to_string(),
                    })
                })?;
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
            for (m, k) in rec.outgoing.iter().zip(&outbox_keys) {
                let index = (msgs, ret);
                put_outgoing(outbox, index, *k, m, &rec.mailbox, &rec.message.at)?;
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
        let keys: Vec<u64> = outgoing
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
        let trees = (
            &self.tickets,
            &self.outbox,
            &self.messages,
            &self.open,
            &self.retention,
        );
        trees.transaction(|(tickets, outbox, msgs, open, ret)| {
            lifecycle::put_ticket(tickets, open, ret, ticket)?;
            let at = ticket
                .history
                .last()
                .map(|e| e.at.clone())
                .unwrap_or_default();
            for (m, k) in outgoing.iter().zip(&keys) {
                put_outgoing(outbox, (msgs, ret), *k, m, "", &at)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// Outbox entries in the order they were decided.
    pub fn outbox(&self) -> Result<Vec<(u64, OutMail)>, StoreError> {
        self.outbox_first(usize::MAX)
    }

    /// The first `n` outbox entries, in the order they were decided.
    pub fn outbox_first(&self, n: usize) -> Result<Vec<(u64, OutMail)>, StoreError> {
        self.outbox
            .iter()
            .take(n)
            .map(|r| {
                let (k, v) = r?;
                let key = be_u64(&k).unwrap_or(0);
                Ok((key, decode_out(&v)?))
            })
            .collect()
    }

    /// The first outbox entries, in order: at most `n`, and no more once they hold
    /// `bytes` (the first is always taken, whatever its size). Also says whether entries
    /// were left beyond them.
    pub fn outbox_first_within(
        &self,
        n: usize,
        bytes: usize,
    ) -> Result<(Vec<(u64, OutMail)>, bool), StoreError> {
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

    /// The SMTP server accepted the mail: it leaves the outbox. The caller flushes soon
    /// after: until the removal is written, a crash sends the mail again.
    pub fn outbox_done(&self, key: u64) -> Result<(), StoreError> {
        self.outbox.remove(key.to_be_bytes())?;
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
    pub fn outbox_uncertain(&self) -> Result<Vec<(u64, OutMail)>, StoreError> {
        if self.meta.contains_key(OUTBOX_STOPPED_CLEAN)? {
            return Ok(Vec::new());
        }
        // Earlier versions sent on one connection, in order: the first entry.
        let window = self
            .meta
            .get(OUTBOX_WINDOW)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1);
        self.outbox_first(window as usize)
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

    /// Mails the server refused for good, with the reason.
    pub fn dead_letters(&self) -> Result<Vec<(String, OutMail)>, StoreError> {
        Ok(self
            .dead_letter_entries()?
            .into_iter()
            .map(|(_, reason, m)| (reason, m))
            .collect())
    }

    /// Mails the server refused for good, by their key (their outbox key, which names
    /// them in `mailtriage outbox`), with the reason.
    pub fn dead_letter_entries(&self) -> Result<Vec<(u64, String, OutMail)>, StoreError> {
        self.dead
            .iter()
            .map(|r| {
                let (k, v) = r?;
                let (reason, m) = decode_dead(&v)?;
                Ok((be_u64(&k).unwrap_or(0), reason, m))
            })
            .collect()
    }

    /// The dead letter `key`, with the reason, if there is one.
    pub fn dead_letter(&self, key: u64) -> Result<Option<(String, OutMail)>, StoreError> {
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
        let new = self.db.generate_id()?;
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
            Ok::<_, ConflictableTransactionError<StoreError>>(Some(requeue.unwrap_or(key)))
        })?;
        Ok(r)
    }

    /// The dead letters whose ticket and queue have not heard of them yet.
    pub fn untold_dead_letters(&self) -> Result<Vec<(u64, String, OutMail)>, StoreError> {
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
        let keys: Vec<u64> = notes
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
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
        trees.transaction(|(untold, tickets, outbox, msgs, open, ret)| {
            untold.remove(&key.to_be_bytes())?;
            if let Some(t) = ticket {
                lifecycle::put_ticket(tickets, open, ret, t)?;
            }
            for (m, k) in notes.iter().zip(&keys) {
                put_outgoing(outbox, (msgs, ret), *k, m, "", &at)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
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
            self.db.generate_id()?,
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
    key: u64,
    m: &OutMail,
    mailbox: &str,
    at: &str,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    outbox.insert(&key.to_be_bytes(), encode_out(m))?;
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

    fn record(key: &str, uid: u32) -> Record {
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
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("db")],
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
    fn store_with_mails(n: u32) -> (tempfile::TempDir, Store) {
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
        let ids = |v: Vec<(u64, OutMail)>| -> Vec<String> {
            v.into_iter().map(|(_, m)| m.message_id).collect()
        };
        // A state that never sent (or an older version's): the first entry.
        assert_eq!(ids(s.outbox_uncertain().unwrap()).len(), 1);
        s.outbox_sending_starts(3).unwrap();
        let first3: Vec<String> = ids(s.outbox().unwrap()).into_iter().take(3).collect();
        assert_eq!(ids(s.outbox_uncertain().unwrap()), first3);
        futures::executor::block_on(s.outbox_stopped_clean()).unwrap();
        assert!(s.outbox_uncertain().unwrap().is_empty());
        s.outbox_sending_starts(2).unwrap();
        assert_eq!(ids(s.outbox_uncertain().unwrap()), first3[..2].to_vec());
    }

    #[test]
    fn the_outbox_is_read_in_batches_bounded_by_count_and_bytes() {
        let (_dir, s) = store_with_mails(5);
        let keys = |v: &[(u64, OutMail)]| v.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        let all = keys(&s.outbox().unwrap());
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

    #[test]
    fn checkpoint_never_goes_back_within_a_uidvalidity() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(&record("a", 9)).unwrap();
        s.commit(&record("b", 3)).unwrap();
        assert_eq!(s.checkpoint("billing").unwrap().unwrap().last_uid, 9);
    }
}
