//! Record, the shelf: where resolved tickets go once they have been quiet for a day,
//! out of sled. A ticket and the Message-ID index entries that name it are written,
//! a batch at a time, to a segment file under `state_dir/resolved/`, written once and
//! never changed, and removed whole when retention has passed for every ticket in it.
//!
//! Why: sled rewrites a ticket whole at each event and takes several times its live
//! data on disk, and opening it costs memory in proportion to its entries. A year of
//! resolved tickets is most of the state and is read only when a customer writes again
//! to an old ticket, or an operator looks one up; on the shelf, compressed together,
//! it takes a fraction of the space and no memory but a small table per segment.
//!
//! The shelf is read after sled: a ticket that comes back to life (a reply reopens it,
//! a late refusal is noted) is written to sled again and sled's copy wins; when it is
//! shelved again, the newer segment's copy wins over the older one. A crash after a
//! segment is written and before sled lets go of its tickets leaves them in both:
//! sled's copy is read, and the next pass shelves them again.
//!
//! A segment is:
//! - `MAGIC`;
//! - frames: up to [`FRAME_TICKETS`] tickets each, as JSON lines, zstd-compressed
//!   against the state's vocabulary (`vocabulary-1.txt`);
//! - keys: sorted entries of 13 bytes: the first 8 bytes of SHA-256 of a key (a
//!   Message-ID as the index keys it, or a ticket id), the ticket's place in the segment
//!   (4 bytes), and what the key is (a [`Disposition`] of the message, or [`TICKET`]);
//! - the frame table: per frame, its offset (8 bytes), length and unpacked length (4
//!   bytes each);
//! - the footer ([`FOOTER`] bytes): tickets, frames and keys (4 bytes each), 4 spare,
//!   the offsets of keys and of the frame table, the latest resolution in it (seconds,
//!   8 bytes each), and `MAGIC` again.
//!
//! Two different keys share a digest once in about 10^19 pairs: a year's half a
//! million keys never meet one.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use super::packed::VOCABULARY_1_TEXT;
use super::{io_error, Disposition, MessageRecord, StoreError};
use crate::ticket::Ticket;

const MAGIC: &[u8; 8] = b"mtshelf1";
const FOOTER: usize = 4 * 4 + 8 * 3 + 8;
const ENTRY: usize = 13;
/// Tickets per frame: a lookup unpacks one frame (about 150 KB of JSON).
pub(super) const FRAME_TICKETS: usize = 64;
/// The kind of a key that is a ticket's id.
const TICKET: u8 = 255;
/// zstd's level: a segment is written once an hour at most, off the path of messages,
/// and read rarely; the highest levels pack a tenth better for several times the time.
const LEVEL: i32 = 15;
/// No frame the daemon writes comes near this: a larger one is damage.
const MAX_FRAME: u32 = 64 << 20;

const DISPOSITIONS: [Disposition; 7] = [
    Disposition::Forwarded,
    Disposition::Kept,
    Disposition::Left,
    Disposition::Ignored,
    Disposition::Duplicate,
    Disposition::Quarantined,
    Disposition::Sent,
];

fn kind_of(d: Disposition) -> u8 {
    DISPOSITIONS.iter().position(|x| *x == d).unwrap_or(0) as u8
}

fn digest(key: &[u8]) -> u64 {
    let h = Sha256::digest(key);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A ticket to shelve, with the index entries that name it.
pub(super) struct Shelved {
    pub ticket: Ticket,
    /// When it was resolved, in seconds.
    pub resolved: u64,
    /// Message-ID index keys of its messages and mails, with what was done with each.
    pub messages: Vec<(Vec<u8>, Disposition)>,
}

/// Which digests a segment may hold: a Bloom filter of 10 bits per key and 7 probes
/// (about 1 % let in wrongly). A message the state has never seen (every new one)
/// is looked up in every segment; without it each costs a read of the segment's keys.
/// The digests are SHA-256 already, so their own bits place the probes.
struct Filter {
    bits: Vec<u64>,
}

impl Filter {
    const BITS_PER_KEY: usize = 10;
    const PROBES: u64 = 7;

    fn of(keys: impl ExactSizeIterator<Item = u64>) -> Filter {
        let words = (keys.len() * Self::BITS_PER_KEY).div_ceil(64);
        let mut f = Filter {
            bits: vec![0; words],
        };
        for k in keys {
            for bit in f.probes(k) {
                f.bits[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        f
    }

    fn may_hold(&self, key: u64) -> bool {
        !self.bits.is_empty()
            && self
                .probes(key)
                .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// The bits of `key`: double hashing over its two halves.
    fn probes(&self, key: u64) -> impl Iterator<Item = u64> {
        let m = self.bits.len() as u64 * 64;
        let (h1, h2) = (key, key.rotate_left(32) | 1);
        (0..Self::PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1))
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// One segment file, as the shelf keeps it in memory: where its parts are, the first
/// entry of its keys for each first byte of a digest, and which digests it may hold.
struct Segment {
    number: u64,
    path: PathBuf,
    file: File,
    tickets: u32,
    keys_at: u64,
    fanout: Vec<u32>,
    filter: Filter,
    frames: Vec<(u64, u32, u32)>,
    latest: u64,
    bytes: u64,
}

impl Segment {
    fn read(number: u64, path: PathBuf) -> Result<Segment, StoreError> {
        let corrupt = |err: &str| StoreError::Shelf {
            path: path.clone(),
            err: err.to_string(),
        };
        let file = File::open(&path).map_err(io_error)?;
        let bytes = file.metadata().map_err(io_error)?.len();
        if bytes < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt("shorter than its footer"));
        }
        let mut foot = vec![0u8; FOOTER];
        file.read_exact_at(&mut foot, bytes - FOOTER as u64)
            .map_err(io_error)?;
        if &foot[FOOTER - 8..] != MAGIC {
            return Err(corrupt("no footer (written in part?)"));
        }
        let (tickets, frames_n, keys_n) = (be32(&foot), be32(&foot[4..]), be32(&foot[8..]));
        let (keys_at, table_at, latest) = (be64(&foot[16..]), be64(&foot[24..]), be64(&foot[32..]));
        let table_len = frames_n as u64 * 16;
        let keys_len = keys_n as u64 * ENTRY as u64;
        if keys_at + keys_len != table_at || table_at + table_len + FOOTER as u64 != bytes {
            return Err(corrupt("its parts do not add up to its size"));
        }
        let mut table = vec![0u8; table_len as usize];
        file.read_exact_at(&mut table, table_at).map_err(io_error)?;
        let frames = table
            .chunks(16)
            .map(|c| (be64(c), be32(&c[8..]), be32(&c[12..])))
            .collect();
        // The fanout is built from the keys once; the keys themselves stay on disk.
        let mut keys = vec![0u8; keys_len as usize];
        file.read_exact_at(&mut keys, keys_at).map_err(io_error)?;
        let mut fanout = vec![0u32; 257];
        for e in keys.chunks(ENTRY) {
            fanout[e[0] as usize + 1] += 1;
        }
        for i in 1..257 {
            fanout[i] += fanout[i - 1];
        }
        let filter = Filter::of(keys.chunks(ENTRY).map(be64));
        Ok(Segment {
            number,
            path,
            file,
            tickets,
            keys_at,
            fanout,
            filter,
            frames,
            latest,
            bytes,
        })
    }

    /// The place of the ticket the key names, and what the key is.
    fn find(
        &self,
        digest: u64,
        want: impl Fn(u8) -> bool,
    ) -> Result<Option<(u32, u8)>, StoreError> {
        let b = (digest >> 56) as usize;
        let (from, to) = (self.fanout[b], self.fanout[b + 1]);
        if from == to || !self.filter.may_hold(digest) {
            return Ok(None);
        }
        let mut entries = vec![0u8; (to - from) as usize * ENTRY];
        self.file
            .read_exact_at(&mut entries, self.keys_at + from as u64 * ENTRY as u64)
            .map_err(io_error)?;
        Ok(entries
            .chunks(ENTRY)
            .find(|e| be64(e) == digest && want(e[12]))
            .map(|e| (be32(&e[8..]), e[12])))
    }

    fn frame(&self, n: usize) -> Result<Vec<Ticket>, StoreError> {
        let corrupt = |err: String| StoreError::Corrupt {
            what: format!("shelf segment {} frame {n}", self.path.display()),
            err,
        };
        let &(at, len, unpacked) = self
            .frames
            .get(n)
            .ok_or_else(|| corrupt("no such frame".into()))?;
        if unpacked > MAX_FRAME {
            return Err(corrupt(format!("claims {unpacked} bytes")));
        }
        let mut packed = vec![0u8; len as usize];
        self.file.read_exact_at(&mut packed, at).map_err(io_error)?;
        let json = zstd::bulk::Decompressor::with_dictionary(VOCABULARY_1_TEXT)
            .and_then(|mut d| d.decompress(&packed, unpacked as usize))
            .map_err(|e| corrupt(e.to_string()))?;
        json.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).map_err(|e| corrupt(e.to_string())))
            .collect()
    }

    fn ticket_at(&self, place: u32) -> Result<Option<Ticket>, StoreError> {
        let place = place as usize;
        Ok(self
            .frame(place / FRAME_TICKETS)?
            .into_iter()
            .nth(place % FRAME_TICKETS))
    }
}

/// The segments of one state, newest first.
pub(super) struct Shelf {
    dir: PathBuf,
    segments: Vec<Segment>,
}

impl Shelf {
    /// Reads every segment's table; removes what a crash left half written. The
    /// directory is made (0700) when missing: it holds customers' mail.
    pub fn open(state: &Path) -> Result<Shelf, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state.join("resolved");
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io_error(e)),
            _ => {}
        }
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(io_error)?;
                continue;
            }
            if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                segments.push(Segment::read(n, path)?);
            }
        }
        segments.sort_by_key(|s| std::cmp::Reverse(s.number));
        Ok(Shelf { dir, segments })
    }

    /// The newest copy of ticket `id` on the shelf.
    pub fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let d = digest(id.as_bytes());
        for s in &self.segments {
            if let Some((place, _)) = s.find(d, |k| k == TICKET)? {
                if let Some(t) = s.ticket_at(place)?.filter(|t| t.id == id) {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }

    /// The index entry of a message of a shelved ticket. Its `mailbox` is the ticket's
    /// and its `at` the ticket's resolution: what the entry held is not kept.
    pub fn message(&self, key: &[u8]) -> Result<Option<MessageRecord>, StoreError> {
        let d = digest(key);
        for s in &self.segments {
            if let Some((place, kind)) = s.find(d, |k| k != TICKET)? {
                if let Some(t) = s.ticket_at(place)? {
                    return Ok(Some(MessageRecord {
                        mailbox: t.mailbox.clone(),
                        at: t.resolved.map(|r| r.at).unwrap_or_default(),
                        ticket: Some(t.id),
                        disposition: DISPOSITIONS
                            .get(kind as usize)
                            .copied()
                            .unwrap_or(Disposition::Forwarded),
                        reason: None,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Hands `f` every ticket on the shelf, the newest copy of each, one at a time.
    /// Copies are told apart by a digest of the id: 8 bytes per shelved ticket, not
    /// the ticket.
    pub fn each_ticket(
        &self,
        mut f: impl FnMut(Ticket) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        for s in &self.segments {
            for n in 0..s.frames.len() {
                for t in s.frame(n)? {
                    if seen.insert(digest(t.id.as_bytes())) {
                        f(t)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Segments, tickets in them (copies counted), and bytes.
    pub fn usage(&self) -> (usize, u64, u64) {
        let tickets = self.segments.iter().map(|s| s.tickets as u64).sum();
        let bytes = self.segments.iter().map(|s| s.bytes).sum();
        (self.segments.len(), tickets, bytes)
    }

    /// Removes the segments whose every ticket was resolved at or before `cutoff`
    /// (seconds); returns how many tickets went with them.
    pub fn expire(&mut self, cutoff: u64) -> Result<usize, StoreError> {
        let mut gone = 0;
        while let Some(i) = self.segments.iter().rposition(|s| s.latest <= cutoff) {
            let s = self.segments.remove(i);
            std::fs::remove_file(&s.path).map_err(io_error)?;
            gone += s.tickets as usize;
        }
        Ok(gone)
    }
}

/// Writes one segment of `batch` and puts it on `shelf`, on disk before this returns
/// (file and directory synced): only then may sled let go of them. The shelf is locked
/// only to add the segment: lookups go on while the batch is compressed and written.
/// One writer at a time (the retention pass).
pub(super) fn write(shelf: &RwLock<Shelf>, batch: &[Shelved]) -> Result<(), StoreError> {
    let (number, dir) = {
        let s = shelf.read().unwrap_or_else(|e| e.into_inner());
        (
            s.segments.first().map_or(1, |s| s.number + 1),
            s.dir.clone(),
        )
    };
    let path = dir.join(format!("{number:08}.seg"));
    let tmp = dir.join(format!("{number:08}.tmp"));
    let bytes = encode(batch).map_err(io_error)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error)?;
    f.write_all(&bytes).map_err(io_error)?;
    f.sync_all().map_err(io_error)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_error)?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)?;
    let segment = Segment::read(number, path)?;
    shelf
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .segments
        .insert(0, segment);
    Ok(())
}

/// A segment's bytes (see the module note).
fn encode(batch: &[Shelved]) -> std::io::Result<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    let mut frames = Vec::new();
    let mut z = zstd::bulk::Compressor::with_dictionary(LEVEL, VOCABULARY_1_TEXT)?;
    for chunk in batch.chunks(FRAME_TICKETS) {
        let mut json = Vec::new();
        for s in chunk {
            serde_json::to_writer(&mut json, &s.ticket).map_err(std::io::Error::other)?;
            json.push(b'\n');
        }
        let packed = z.compress(&json)?;
        frames.push((out.len() as u64, packed.len() as u32, json.len() as u32));
        out.extend_from_slice(&packed);
    }
    let mut keys: Vec<(u64, u32, u8)> = Vec::new();
    for (place, s) in batch.iter().enumerate() {
        keys.push((digest(s.ticket.id.as_bytes()), place as u32, TICKET));
        for (k, d) in &s.messages {
            keys.push((digest(k), place as u32, kind_of(*d)));
        }
    }
    keys.sort_unstable();
    let keys_at = out.len() as u64;
    for (d, place, kind) in &keys {
        out.extend_from_slice(&d.to_be_bytes());
        out.extend_from_slice(&place.to_be_bytes());
        out.push(*kind);
    }
    let table_at = out.len() as u64;
    for (at, len, unpacked) in &frames {
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&unpacked.to_be_bytes());
    }
    let latest = batch.iter().map(|s| s.resolved).max().unwrap_or(0);
    for n in [batch.len(), frames.len(), keys.len(), 0] {
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for n in [keys_at, table_at, latest] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(MAGIC);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segments_filter_holds_every_key_and_turns_away_nearly_every_other() {
        let keys: Vec<u64> = (0..10_000u32).map(|i| digest(&i.to_be_bytes())).collect();
        let filter = Filter::of(keys.iter().copied());
        assert!(
            keys.iter().all(|k| filter.may_hold(*k)),
            "no key is ever turned away"
        );
        let others = (10_000..110_000u32).map(|i| digest(&i.to_be_bytes()));
        let let_in = others.filter(|k| filter.may_hold(*k)).count();
        assert!(let_in < 2_000, "{let_in} of 100,000 others let in");
        assert!(
            filter.bytes() <= 10_000 * 10 / 8 + 8,
            "{} bytes",
            filter.bytes()
        );
        // A segment of no keys holds nothing.
        assert!(!Filter::of(std::iter::empty()).may_hold(keys[0]));
    }
}
