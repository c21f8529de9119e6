//! The daemon's "now" for tickets: the time messages are triaged at and the follow-up
//! check counts from. The system clock, unless `MAILTRIAGE_NOW_FILE` names a file that
//! holds a time (RFC 3339, e.g. "2026-11-27T17:30:00+03:00"): then that time, read again
//! at every use, so a rehearsal or a test can put the daemon on a Friday evening and
//! move it to Monday by writing the file. Everything else (timeouts, backoff, the
//! status board) keeps the real clock.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The environment variable that names the file.
pub const NOW_FILE: &str = "MAILTRIAGE_NOW_FILE";

static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Reads `MAILTRIAGE_NOW_FILE` once, at the daemon's start; says so when it is set,
/// since then tickets do not follow the real time.
pub fn init() {
    let file = FILE.get_or_init(|| std::env::var_os(NOW_FILE).map(PathBuf::from));
    if let Some(f) = file {
        tracing::warn!(file = %f.display(), "The time of tickets is read from a file, not the system clock ({NOW_FILE}).");
    }
}

/// Now, for tickets: the file's time when one is set and readable, else the system's.
pub fn now() -> SystemTime {
    let Some(Some(file)) = FILE.get() else {
        return SystemTime::now();
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| crate::when::parse(s.trim()))
        .map(SystemTime::from)
        .unwrap_or_else(SystemTime::now)
}
