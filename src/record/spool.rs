//! The spool: the bytes of outgoing mails, one file each, beside the database. A forward
//! carries its original (up to `company.max_original_attached`, megabytes), and sled
//! reclaims the space of a removed value only lazily: kept in sled, a backlog of big
//! forwards left the state bigger than the mail it came from, and sled held them in
//! memory while it wrote them. The outbox, dead-letter and shadow entries keep the head
//! of a big mail and the name of its file here ([`super::Store`] decides which mails).
//!
//! A file is on disk (written, synced, renamed into place, the directory synced) before
//! the record naming it is committed, and removed only once the record's removal is on
//! disk: a crash leaves at worst a file no record names, which the next start removes
//! ([`Spool::sweep`]) and never sends.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How a finished spool file's name ends; anything else in the directory is a write
/// that never finished.
const SUFFIX: &str = ".eml";

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool under the state directory `state`, made (0700) when missing.
    pub fn open(state: &Path) -> io::Result<Spool> {
        let dir = state.join("spool");
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        Ok(Spool { dir })
    }

    /// The name of the file for the mail with this (outbox or shadow) key.
    pub fn name(key: u64) -> String {
        format!("{key:016x}{SUFFIX}")
    }

    /// Writes each (name, bytes) durably: every file synced and renamed into place, then
    /// the directory synced once, so that all of them are on disk when this returns.
    pub fn put_all(&self, files: &[(String, &[u8])]) -> io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        for (name, bytes) in files {
            let tmp = self.dir.join(format!("{name}.tmp"));
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(name))?;
        }
        File::open(&self.dir)?.sync_all()
    }

    /// The bytes of the file `name`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name)?)
    }

    /// Removes the file `name`; one already gone is no error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every file no record names (`named`), and every unfinished write: what a
    /// crash between a file and its record, or between a record's removal and its file's,
    /// leaves. Returns the names removed. Such a file is never sent: no decision stands
    /// behind it (or the mail was sent already).
    pub fn sweep(&self, named: &HashSet<String>) -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_file() || named.contains(&name) {
                continue;
            }
            fs::remove_file(entry.path())?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// How many files the spool holds, and their bytes.
    pub fn usage(&self) -> io::Result<(usize, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for entry in fs::read_dir(&self.dir)? {
            n += 1;
            bytes += entry?.metadata()?.len();
        }
        Ok((n, bytes))
    }

    /// A name as a path inside the spool; a name a record holds is one this module
    /// made, and anything else (a path, `..`) is a damaged record.
    fn path(&self, name: &str) -> io::Result<PathBuf> {
        let plain = name.ends_with(SUFFIX)
            && name[..name.len() - SUFFIX.len()]
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a spool file name: {name:?}"),
            ));
        }
        Ok(self.dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_the_owner_s_and_a_sweep_keeps_only_the_named() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (a, b) = (Spool::name(1), Spool::name(2));
        spool
            .put_all(&[(a.clone(), b"one"), (b.clone(), b"two")])
            .unwrap();
        fs::write(dir.path().join("spool").join("x.eml.tmp"), b"half").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("spool")), 0o700);
        assert_eq!(mode(&dir.path().join("spool").join(&a)), 0o600);
        let mut gone = spool.sweep(&HashSet::from([a.clone()])).unwrap();
        gone.sort();
        assert_eq!(gone, vec![b.clone(), "x.eml.tmp".to_string()]);
        assert_eq!(spool.read(&a).unwrap(), b"one");
        spool.remove(&a).unwrap();
        spool.remove(&a).unwrap();
        assert!(spool.read(&a).is_err());
        assert!(spool.read("../db").is_err(), "only names it made");
    }
}
