//! Record, compaction: part of opening the state. sled reclaims the space of what was
//! removed only in part: a desk whose tickets go to the shelf every day keeps a few MB
//! live in sled, yet its file grew to 60 MB over the year bench, and sled's memory at
//! open follows the file. When the file has grown past [`MIN_BYTES`] and twice its size
//! after the last compaction, [`Store::open`](super::Store::open) copies every tree into
//! a fresh database beside it, which takes its place:
//! - `db.compacting` is written and synced whole while `db` is untouched;
//! - `db` becomes `db.before-compaction`, `db.compacting` becomes `db`, the directory is
//!   synced, and `db.before-compaction` is removed.
//!
//! A crash at any step leaves a whole database: with `db` missing,
//! `db.before-compaction` is put back ([`finish_interrupted`]); a `db.compacting` left
//! over is removed. sled's id generator starts again from zero in the fresh database,
//! so the old one's next id is kept in `meta` as the base of every new key
//! ([`ID_BASE`]): outbox keys keep their order.

use std::path::Path;

use super::{be_u64, io_error, StoreError};

/// Below this, the file is left as it is, whatever its garbage.
const MIN_BYTES: u64 = 16 << 20;
/// Meta key: the file's size right after the last compaction.
const COMPACTED_BYTES: &[u8] = b"compacted_bytes";
/// Meta key: added to sled's generated ids (see the module note).
pub(super) const ID_BASE: &[u8] = b"id_base";
/// Entries copied per batch.
const BATCH: usize = 10_000;

fn file_bytes(db: &Path) -> u64 {
    std::fs::metadata(db.join("db"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Puts back whatever a crash during a compaction left (see the module note). Run
/// before sled opens `db`. A copy that cannot be removed is only a WARN: the state is
/// whole without it.
pub(super) fn finish_interrupted(dir: &Path) -> Result<(), StoreError> {
    let (db, before, fresh) = (
        dir.join("db"),
        dir.join("db.before-compaction"),
        dir.join("db.compacting"),
    );
    if before.exists() && !db.exists() {
        tracing::warn!(state = %dir.display(), "A compaction was interrupted; the state from before it is kept.");
        std::fs::rename(&before, &db).map_err(io_error)?;
    }
    for leftover in [before, fresh] {
        if leftover.exists() {
            if let Err(e) = std::fs::remove_dir_all(&leftover) {
                tracing::warn!(path = %leftover.display(), error = %e, "A copy left by a compaction could not be removed.");
            }
        }
    }
    Ok(())
}

/// True when `db` (open, at `dir/db`) should be compacted.
pub(super) fn due(dir: &Path, db: &sled::Db) -> Result<bool, StoreError> {
    due_past(dir, db, MIN_BYTES)
}

fn due_past(dir: &Path, db: &sled::Db, min_bytes: u64) -> Result<bool, StoreError> {
    let bytes = file_bytes(&dir.join("db"));
    if bytes < min_bytes {
        return Ok(false);
    }
    let after_last = db
        .open_tree("meta")?
        .get(COMPACTED_BYTES)?
        .and_then(|b| be_u64(&b))
        .unwrap_or(0);
    Ok(grown(bytes, after_last, min_bytes))
}

/// A file of `bytes` is worth compacting: past `min_bytes`, and twice what the last
/// compaction left (so a state that is big because it holds much is not copied at
/// every start).
fn grown(bytes: u64, after_last: u64, min_bytes: u64) -> bool {
    bytes >= min_bytes && bytes >= after_last.saturating_mul(2)
}

/// Copies every tree of `db` into `dir/db.compacting`, synced; returns the file sizes
/// before and after. `db` is dropped by the caller, then [`swap`] puts the copy in place.
pub(super) fn copy(dir: &Path, db: &sled::Db, cache: u64) -> Result<(u64, u64), StoreError> {
    let fresh_dir = dir.join("db.compacting");
    if fresh_dir.exists() {
        std::fs::remove_dir_all(&fresh_dir).map_err(io_error)?;
    }
    let fresh = sled::Config::new()
        .path(&fresh_dir)
        .cache_capacity(cache)
        .open()?;
    for name in db.tree_names() {
        let (from, to) = (db.open_tree(&name)?, fresh.open_tree(&name)?);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in from.iter() {
            let (k, v) = kv?;
            batch.insert(k, v);
            n += 1;
            if n % BATCH == 0 {
                to.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(batch)?;
    }
    // Every id the old database gave out is below its next one.
    let meta = fresh.open_tree("meta")?;
    let base = meta.get(ID_BASE)?.and_then(|b| be_u64(&b)).unwrap_or(0);
    meta.insert(ID_BASE, &(base + db.generate_id()? + 1).to_be_bytes())?;
    fresh.flush()?;
    let after = file_bytes(&fresh_dir);
    meta.insert(COMPACTED_BYTES, &after.to_be_bytes())?;
    fresh.flush()?;
    Ok((file_bytes(&dir.join("db")), after))
}

/// Puts `db.compacting` in the place of `db` (both closed).
pub(super) fn swap(dir: &Path) -> Result<(), StoreError> {
    let (db, before) = (dir.join("db"), dir.join("db.before-compaction"));
    std::fs::rename(&db, &before).map_err(io_error)?;
    std::fs::rename(dir.join("db.compacting"), &db).map_err(io_error)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)?;
    std::fs::remove_dir_all(&before).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::super::tests::store_with_mails;
    use super::super::{open_db, Listing, Store, CACHE_BYTES};
    use super::*;

    /// The outbox's message ids, in its order.
    fn outbox_ids(s: &Store) -> Vec<String> {
        s.outbox_heads()
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.mail.message_id)
            .collect()
    }

    #[test]
    fn a_compacted_state_holds_the_same_and_new_keys_come_after_the_old_ones() {
        let (dir, s) = store_with_mails(3);
        let before = outbox_ids(&s);
        let last_key = s.outbox_heads().unwrap().last().unwrap().0;
        let ticket = s.listing(Listing::All, usize::MAX).unwrap().tickets;
        drop(s);
        let db = open_db(dir.path()).unwrap();
        assert!(due_past(dir.path(), &db, 0).unwrap(), "never compacted");
        copy(dir.path(), &db, CACHE_BYTES).unwrap();
        drop(db);
        swap(dir.path()).unwrap();
        assert!(!dir.path().join("db.before-compaction").exists());

        let s = Store::open(dir.path()).unwrap();
        assert_eq!(outbox_ids(&s), before);
        assert_eq!(s.listing(Listing::All, usize::MAX).unwrap().tickets, ticket);
        assert!(s.message("m2").unwrap().is_some());
        // sled's ids start again in the fresh database; the state's keys do not.
        s.commit(&super::super::tests::record("m4", 4)).unwrap();
        let heads = s.outbox_heads().unwrap();
        assert!(heads.last().unwrap().0 > last_key, "{heads:?}");
        assert_eq!(outbox_ids(&s)[..3], before[..]);
    }

    #[test]
    fn a_file_is_compacted_once_past_the_floor_and_twice_what_the_last_compaction_left() {
        const MB: u64 = 1 << 20;
        assert!(grown(61 * MB, 0, MIN_BYTES), "never compacted");
        assert!(!grown(10 * MB, 0, MIN_BYTES), "small");
        assert!(!grown(20 * MB, 12 * MB, MIN_BYTES), "holds much: not again");
        assert!(grown(24 * MB, 12 * MB, MIN_BYTES));
    }

    #[test]
    fn a_compaction_cut_short_leaves_the_state_from_before_it() {
        let (dir, s) = store_with_mails(2);
        let before = outbox_ids(&s);
        drop(s);
        let db = open_db(dir.path()).unwrap();
        copy(dir.path(), &db, CACHE_BYTES).unwrap();
        drop(db);
        // The crash comes between the two renames.
        std::fs::rename(
            dir.path().join("db"),
            dir.path().join("db.before-compaction"),
        )
        .unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(outbox_ids(&s), before);
        for gone in ["db.before-compaction", "db.compacting"] {
            assert!(!dir.path().join(gone).exists(), "{gone}");
        }
    }
}
