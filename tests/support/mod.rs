//! Harness for mailtriage's integration tests: a real Dovecot (IMAP, LMTP) and Postfix (SMTP) on
//! loopback, one private instance per [`Stack`], started by the project's own `scripts/mailstack`,
//! plus small blocking SMTP and IMAP clients to feed it mail and to read the mailboxes back.
//!
//! Most tests want the daemon on such a stack: [`lab::Lab`] is the stack, a temp dir with the
//! state, the config and the rules, and `mailtriage run` started on them; [`mail::Mail`] writes a
//! customer's message with each address once; [`cli::cli`] runs one `mailtriage` command.
//! Below them: `stack.rs` (start, send, read back, wait, purge), `ports.rs` (a port base per
//! stack), `smtp.rs` and `imap.rs` (the clients).
//!
//! ```ignore
//! mod support;
//! use support::{lab::Lab, mail::Mail};
//!
//! #[test]
//! fn mail_reaches_support() {
//!     let lab = Lab::start();
//!     let daemon = lab.daemon();
//!     lab.send_mail(
//!         &Mail::from("customer1@example.test")
//!             .to("billing@example.test")
//!             .id("m1@client.test")
//!             .subject("Website is down")
//!             .body("Error 500."),
//!     );
//!     let fwd = lab.wait_forward("support@example.test", "m1@client.test");
//!     assert!(fwd.text().contains("billing@example.test"));
//!     assert!(daemon.stop().success());
//! } // dropping the Lab stops the mail daemons and deletes the state dirs
//! ```
//!
//! The stack has the users `monitoring billing support sales abuse supervisor postmaster sink`,
//! `archive` (for the daemon's `[archive]`, watched by nothing) and `customer1` .. `customer20`,
//! all `@example.test`, all with the password `secret`. Mail for
//! any other domain never leaves the machine: Postfix rewrites it to `sink@example.test`.
//!
//! Worth knowing when writing tests: Postfix delivers concurrently, so mails sent one after the
//! other may get UIDs in another order; Dovecot tells IDLE clients about new mail about 500 ms
//! after delivery (a poll sees it within ~10 ms); a failed IMAP login is answered after up to
//! 0.5 s; Sieve `redirect` ignores a Message-ID it has redirected before, so give every test
//! message its own Message-ID. The daemons' logs are in `dir/log/` (dovecot.log, postfix.log).
//!
//! A server that offers less: `Lab::setup().stack("MAILSTACK_IMAP_HIDE", "IDLE MOVE")` (or
//! [`Stack::start_with`]) starts a Dovecot that hides those capabilities (it still accepts the
//! commands), `MAILSTACK_NO_KEYWORDS` one whose folders keep no new keywords, and
//! `MAILSTACK_RAWLOG` keeps what every IMAP client sent after login, read back with
//! [`Stack::imap_commands_sent`]. A second stack with its own `MAILSTACK_DOMAIN`, users and
//! password, whose `MAILSTACK_RELAY_HOST` is the first one's SMTP, is another provider.
//!
//! Needs root and the Debian packages that `scripts/mailstack install` adds (`bash scripts/test`
//! runs it). Without them [`Stack::start`] panics and says how to get them: these tests never skip.
//!
//! Everything here blocks (std::net, std::thread::sleep). In an async test use
//! `#[tokio::test(flavor = "multi_thread")]` or `tokio::task::spawn_blocking`: blocking a
//! current-thread runtime (in `wait_until`, say) also stops the daemon's tasks running on it.
#![allow(dead_code)]

pub mod cli;
pub mod crafted;
pub mod daemon;
mod imap;
pub mod lab;
pub mod mail;
pub mod oauth;
pub mod ops;
mod ports;
mod smtp;
mod stack;

use std::fs;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use stack::{FetchedMail, Stack};

/// Socket read/write timeout of the SMTP and IMAP clients.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for mail, a log line or a status to appear.
pub const WAIT: Duration = Duration::from_secs(60);

/// The project's own files (rules.toml, samples, fixtures) are found from here.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped rules.toml.
pub fn shipped_rules_file() -> PathBuf {
    root().join("rules.toml")
}

/// The shipped rules.toml, as text, for tests that change it.
pub fn shipped_rules() -> String {
    fs::read_to_string(shipped_rules_file()).unwrap()
}

/// Writes a rules file (named `rules.toml`, as errors quote it) into `dir` and returns its path.
pub fn write_rules(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rules.toml");
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Calls `probe` every `step` until it gives `Ok`, and returns that. After `timeout` it panics
/// with `what` and the last `Err`, which says what was there instead.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    step: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(done) => return done,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: condition not met after {timeout:?}; {why}")
            }
            Err(_) => std::thread::sleep(step),
        }
    }
}

/// A TCP connection to `host:port` with the clients' timeouts; the SMTP and IMAP clients share it.
fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}
