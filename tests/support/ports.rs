//! Port bases for stacks that run side by side: each claimed by a lock file, so test threads,
//! other test binaries and other clones never share one.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::stack::purge;

/// Port bases tried, in steps of 1000. The highest port used is base+993, and every port stays
/// below 32768, where Linux starts handing out ephemeral ports for outgoing connections (a client
/// socket sitting on base+143 would keep Dovecot from binding it).
const FIRST_BASE: u16 = 11000;
const LAST_BASE: u16 = 31000;
/// Ports used by a stack: LMTP, SMTP, IMAP, SMTPS, submission, IMAPS.
const PORT_OFFSETS: [u16; 6] = [24, 25, 143, 465, 587, 993];
unsafe extern "C" {
    fn flock(fd: std::os::raw::c_int, operation: std::os::raw::c_int) -> std::os::raw::c_int;
}
const LOCK_EX: std::os::raw::c_int = 2;
const LOCK_NB: std::os::raw::c_int = 4;

/// Exclusive claim on a port base: a `flock` on `/tmp/mailtriage-stack-port<BASE>.lock`, held
/// while the stack runs. Other test threads and processes (another `cargo test`, another clone)
/// skip a base that is locked; the kernel drops the lock if the process dies, so a crashed run
/// leaves no stale claim. The file records the state dir, so a later owner purges what a
/// crashed run left running. The files themselves stay (deleting a lock file races with
/// someone opening it).
#[derive(Debug)]
pub(super) struct PortLock {
    pub(super) base: u16,
    file: File,
}

impl PortLock {
    pub(super) fn acquire() -> PortLock {
        let count = (LAST_BASE - FIRST_BASE) / 1000 + 1;
        // random start, so that concurrent starts rarely contend for the same base
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let mut busy = Vec::new();
        for i in 0..count {
            let base = FIRST_BASE + ((seed + u64::from(i)) % u64::from(count)) as u16 * 1000;
            let Some(lock) = PortLock::try_lock(base) else {
                busy.push(format!("{base}: locked"));
                continue;
            };
            lock.purge_leftover();
            match ports_in_use(base) {
                None => return lock,
                Some(port) => busy.push(format!("{base}: port {port} in use")),
            }
        }
        panic!(
            "no free port base in {FIRST_BASE}..={LAST_BASE}: {}",
            busy.join(", ")
        );
    }

    fn try_lock(base: u16) -> Option<PortLock> {
        let path = format!("/tmp/mailtriage-stack-port{base}.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        // SAFETY: flock on a valid, open file descriptor that `file` owns.
        let rc = unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) };
        (rc == 0).then_some(PortLock { base, file })
    }

    /// A state dir recorded here belongs to a run that died without purging it: its daemons may
    /// still hold the ports. Purge it.
    fn purge_leftover(&self) {
        let mut recorded = String::new();
        let _ = (&self.file).read_to_string(&mut recorded);
        let recorded = recorded.trim();
        if !recorded.is_empty() {
            let dir = Path::new(recorded);
            if dir.starts_with("/tmp") && dir.exists() {
                eprintln!("note: purging a stack left by an earlier run: {recorded}");
                purge(self.base, dir);
            }
        }
        self.record(Path::new(""));
    }

    pub(super) fn record(&self, dir: &Path) {
        let mut f = &self.file;
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = f.write_all(dir.to_string_lossy().as_bytes());
    }
}

impl Drop for PortLock {
    fn drop(&mut self) {
        self.record(Path::new("")); // the stack was purged; closing the file releases the lock
    }
}

/// The first of the stack's ports at `base` that cannot be bound on 127.0.0.1.
fn ports_in_use(base: u16) -> Option<u16> {
    PORT_OFFSETS
        .iter()
        .map(|off| base + off)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_err())
}
