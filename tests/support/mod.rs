//! Harness for mailtriage's integration tests: a real Dovecot (IMAP, LMTP) and Postfix (SMTP) on
//! loopback, one private instance per [`Stack`], started by the project's own `scripts/mailstack`,
//! plus small blocking SMTP and IMAP clients to feed it mail and to read the mailboxes back.
//!
//! Most tests want the daemon on such a stack: [`lab::Lab`] is the stack, a temp dir with the
//! state, the config and the rules, and `mailtriage run` started on them; [`mail::Mail`] writes a
//! customer's message with each address once; [`cli::cli`] runs one `mailtriage` command.
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
//! Needs root and the Debian packages that `scripts/mailstack install` adds (`bash scripts/test`
//! runs it). Without them [`Stack::start`] panics and says how to get them: these tests never skip.
//!
//! Everything here blocks (std::net, std::thread::sleep). In an async test use
//! `#[tokio::test(flavor = "multi_thread")]` or `tokio::task::spawn_blocking`: blocking a
//! current-thread runtime (in `wait_until`, say) also stops the daemon's tasks running on it.
#![allow(dead_code)]

pub mod cli;
pub mod daemon;
pub mod lab;
pub mod mail;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What to do when the stack cannot be had.
const HOW_TO_GET: &str = "the integration tests need Dovecot and Postfix: run `bash scripts/test` \
                          or `scripts/mailstack install` as root";

/// Port bases tried, in steps of 1000. The highest port used is base+993, and every port stays
/// below 32768, where Linux starts handing out ephemeral ports for outgoing connections (a client
/// socket sitting on base+143 would keep Dovecot from binding it).
const FIRST_BASE: u16 = 11000;
const LAST_BASE: u16 = 31000;
/// Ports used by a stack: LMTP, SMTP, IMAP, SMTPS, submission, IMAPS.
const PORT_OFFSETS: [u16; 6] = [24, 25, 143, 465, 587, 993];
/// Files of the Debian packages that `scripts/mailstack install` adds (a subset of what it checks).
const REQUIRED_FILES: [&str; 6] = [
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/lmtp",
    "/usr/lib/dovecot/modules/lib90_sieve_plugin.so",
    "/usr/sbin/postfix",
    "/usr/lib/postfix/sbin/master",
];
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

/// One running Dovecot + Postfix pair with its own state dir and ports; stopped and deleted on drop.
#[derive(Debug)]
pub struct Stack {
    /// State dir (config, TLS files, logs in `log/`, mail in `mail/`), under /tmp.
    pub dir: PathBuf,
    /// Port base: every port below is this plus a fixed offset.
    pub port_base: u16,
    /// Address every service listens on: `127.0.0.1`.
    pub host: String,
    /// Plain IMAP (STARTTLS offered; LOGIN allowed without TLS): base+143.
    pub imap_port: u16,
    /// IMAP over implicit TLS: base+993.
    pub imaps_port: u16,
    /// Plain SMTP, no AUTH needed from loopback (STARTTLS offered): base+25.
    pub smtp_port: u16,
    /// Submission, STARTTLS then AUTH required: base+587.
    pub submission_port: u16,
    /// SMTP over implicit TLS, AUTH required: base+465.
    pub smtps_port: u16,
    /// CA certificate (PEM) that signed the servers' certificate; connect with server name `localhost`.
    pub ca_cert: PathBuf,
    /// Password of every user: `secret`.
    pub password: String,
    /// Mail domain of the users: `example.test`.
    pub domain: String,
    lock: PortLock,
}

/// One message as read over IMAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMail {
    /// IMAP UID in its folder.
    pub uid: u32,
    /// Flags and keywords as the server lists them (`\Seen`, `$Forwarded`, ...), without the
    /// session-dependent `\Recent`.
    pub flags: Vec<String>,
    /// The whole message as stored (`BODY.PEEK[]`).
    pub raw: Vec<u8>,
}

impl FetchedMail {
    /// First header field `name` (case-insensitive), unfolded and trimmed; not RFC 2047-decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.raw, name)
    }

    /// Whether the message has `flag` (case-insensitive), e.g. `"\\Seen"` or `"$Forwarded"`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// First header field `name` (case-insensitive) of the RFC 5322 message `raw`, unfolded and
/// trimmed, bytes decoded lossily as UTF-8; not RFC 2047-decoded. `None` if it is absent.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let mut found: Option<Vec<u8>> = None;
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header section
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(v) = found.as_mut() {
                v.extend_from_slice(line); // continuation: unfold (drop the line break only)
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
            {
                found = Some(line[colon + 1..].to_vec());
            }
        }
    }
    found.map(|v| String::from_utf8_lossy(v.trim_ascii()).into_owned())
}

impl Stack {
    /// Starts a fresh stack: its own state dir under /tmp and its own free port base, through
    /// `scripts/mailstack up` (about 1 s), whose `export X=...` lines give the settings.
    ///
    /// Panics with a message saying how to get the stack ("the integration tests need Dovecot and
    /// Postfix: run `bash scripts/test` or `scripts/mailstack install` as root") when the packages
    /// are missing, when not run as root, or when `up` fails. Never skips.
    pub fn start() -> Stack {
        let script = script();
        if !script.is_file() {
            panic!("{} is missing; {HOW_TO_GET}", script.display());
        }
        let missing: Vec<&str> = REQUIRED_FILES
            .iter()
            .copied()
            .filter(|f| !Path::new(f).exists())
            .collect();
        if !missing.is_empty() {
            panic!("{HOW_TO_GET} (missing here: {})", missing.join(" "));
        }
        if !is_root() {
            panic!("{HOW_TO_GET}; they must run as root, since Postfix's master starts as root");
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lock = PortLock::acquire();
            let base = lock.base;
            let dir = make_state_dir(base);
            lock.record(&dir);
            let out = mailstack_command(base, &dir)
                .arg("up")
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run bash {}: {e}; {HOW_TO_GET}", script.display())
                });
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                match Stack::from_env(&parse_exports(&stdout), dir.clone(), lock) {
                    Ok(stack) => return stack,
                    Err(e) => {
                        purge(base, &dir);
                        panic!("cannot read the output of `mailstack up`: {e}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}")
                    }
                }
            }
            purge(base, &dir);
            drop(lock);
            // another program took one of the ports between our check and the daemons' bind
            if stderr.contains("already in use") && attempt < 3 {
                continue;
            }
            panic!(
                "`scripts/mailstack up` failed (port base {base}, state dir {}, {}):\n{}\n{HOW_TO_GET}",
                dir.display(),
                out.status,
                tail(&stderr, 40)
            );
        }
    }

    fn from_env(
        env: &BTreeMap<String, String>,
        dir: PathBuf,
        lock: PortLock,
    ) -> Result<Stack, String> {
        let get = |k: &str| env.get(k).cloned().ok_or_else(|| format!("no {k}"));
        let port =
            |k: &str| -> Result<u16, String> { get(k)?.parse().map_err(|e| format!("{k}: {e}")) };
        Ok(Stack {
            port_base: port("MAILSTACK_PORT_BASE")?,
            host: get("MAILSTACK_HOST")?,
            imap_port: port("MAILSTACK_IMAP_PORT")?,
            imaps_port: port("MAILSTACK_IMAPS_PORT")?,
            smtp_port: port("MAILSTACK_SMTP_PORT")?,
            submission_port: port("MAILSTACK_SUBMISSION_PORT")?,
            smtps_port: port("MAILSTACK_SMTPS_PORT")?,
            ca_cert: PathBuf::from(get("MAILSTACK_CA_CERT")?),
            password: get("MAILSTACK_PASSWORD")?,
            domain: get("MAILSTACK_DOMAIN")?,
            dir,
            lock,
        })
    }

    /// `local@domain` for a local part (`"support"`); an address with `@` is returned as is.
    pub fn address(&self, local: &str) -> String {
        if local.contains('@') {
            local.to_string()
        } else {
            format!("{local}@{}", self.domain)
        }
    }

    /// Sends `raw` (an RFC 5322 message) by plain SMTP to `smtp_port` with the given envelope,
    /// as an MTA would: bare LF line ends become CRLF, lines starting with `.` are dot-stuffed,
    /// `BODY=8BITMIME` is declared when the message has 8-bit bytes. Blocks until Postfix has
    /// queued it (delivery follows within milliseconds; see [`Stack::drain`]). Panics on any
    /// refused command, e.g. an unknown `@example.test` recipient (550 5.1.1).
    pub fn send(&self, mail_from: &str, rcpt_to: &[&str], raw: &[u8]) {
        assert!(!rcpt_to.is_empty(), "send: no recipients");
        let mut smtp = Smtp::connect(&self.host, self.smtp_port);
        smtp.expect("greeting", &[220]);
        let ehlo = smtp.command("EHLO client.test", &[250]);
        let eight_bit = raw.iter().any(|&b| b >= 0x80) && ehlo.contains("8BITMIME");
        let body_param = if eight_bit { " BODY=8BITMIME" } else { "" };
        smtp.command(&format!("MAIL FROM:<{mail_from}>{body_param}"), &[250]);
        for rcpt in rcpt_to {
            smtp.command(&format!("RCPT TO:<{rcpt}>"), &[250, 251]);
        }
        smtp.command("DATA", &[354]);
        smtp.write(&smtp_data(raw));
        smtp.expect("end of DATA", &[250]);
        smtp.command("QUIT", &[221]);
    }

    /// All messages in `folder` (IMAP name as on the wire: `INBOX`, `Junk`, `INBOX.Sub`) of
    /// `user` (full address, e.g. `support@example.test`), with their flags, in UID order.
    /// Logs in over plain IMAP (`imap_port`), opens the folder read-only (EXAMINE) and fetches
    /// `UID FLAGS BODY.PEEK[]`, so nothing is marked seen. A folder that does not exist yields an
    /// empty list. Panics on a failed login or a broken connection.
    pub fn fetch_all(&self, user: &str, folder: &str) -> Vec<FetchedMail> {
        self.try_fetch(user, folder)
            .unwrap_or_else(|e| panic!("fetch_all({user}, {folder}): {e}"))
            .unwrap_or_default()
    }

    /// Polls [`Stack::fetch_all`] every 100 ms until `pred` holds for the list, and returns that
    /// list. After `timeout` it panics, listing what the folder held (UID, flags, From, To,
    /// Subject, Message-ID of each message).
    pub fn wait_until(
        &self,
        user: &str,
        folder: &str,
        timeout: Duration,
        pred: impl Fn(&[FetchedMail]) -> bool,
    ) -> Vec<FetchedMail> {
        let what = format!("wait_until({user}, {folder})");
        poll(&what, timeout, Duration::from_millis(100), || {
            match self.try_fetch(user, folder) {
                Err(e) => panic!("{what}: {e}"),
                Ok(found) if pred(found.as_deref().unwrap_or_default()) => {
                    Ok(found.unwrap_or_default())
                }
                Ok(None) => Err("the folder does not exist".to_string()),
                Ok(Some(list)) => Err(describe(&list)),
            }
        })
    }

    /// Waits (up to 60 s) until Postfix's queue is empty, i.e. everything sent so far has been
    /// delivered to Dovecot or bounced (`scripts/mailstack drain`). Panics on timeout.
    pub fn drain(&self) {
        self.mailstack(&["drain", "60"]);
    }

    /// Writes a file holding the users' common password and a newline, mode 0600, as
    /// `dir/mailstack-password`, and returns its path.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("mailstack-password");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        f.write_all(format!("{}\n", self.password).as_bytes())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
        path
    }

    /// Runs `scripts/mailstack ARGS...` against this stack (e.g. `["adduser", "x@example.test"]`,
    /// `["sieve", "support@example.test", "/path/script.sieve"]`) and returns its stdout.
    /// Panics, with its stderr, if it fails.
    pub fn mailstack(&self, args: &[&str]) -> String {
        let out = mailstack_command(self.port_base, &self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/mailstack: {e}"));
        if !out.status.success() {
            panic!(
                "`scripts/mailstack {}` failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `Ok(None)` if the folder does not exist.
    fn try_fetch(&self, user: &str, folder: &str) -> Result<Option<Vec<FetchedMail>>, String> {
        let mut imap = Imap::connect(&self.host, self.imap_port)?;
        let result = imap.fetch_all(user, &self.password, folder);
        imap.logout();
        result
    }
}

impl Drop for Stack {
    /// Stops the daemons and deletes the state dir (`scripts/mailstack purge DIR`), then frees
    /// the port base. Problems are printed, not raised: a panic here would abort the test binary.
    fn drop(&mut self) {
        purge(self.port_base, &self.dir);
    }
}

// ------------------------------------------------------------------------------------------
// stack control

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("mailstack")
}

fn is_root() -> bool {
    // the owner of /proc/self is this process's effective uid
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `bash scripts/mailstack` with this stack's port base and state dir, no inherited
/// MAILSTACK_* settings (a developer's shell may hold a testbed's), and no apt-get.
fn mailstack_command(base: u16, dir: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(script());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MAILSTACK_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("MAILSTACK_PORT_BASE", base.to_string())
        .env("MAILSTACK_DIR", dir)
        .env("MAILSTACK_EXTRA_USERS", "archive")
        .env("MAILSTACK_NO_INSTALL", "1");
    cmd
}

/// `mailstack purge DIR`, and make sure the dir is gone; complains on stderr only.
fn purge(base: u16, dir: &Path) {
    if dir.join(".mailstack").exists() {
        match mailstack_command(base, dir)
            .arg("purge")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: `mailstack purge {}` failed ({}): {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run mailstack purge: {e}"),
        }
    }
    if dir.exists() {
        if let Err(e) = fs::remove_dir_all(dir) {
            eprintln!("warning: cannot remove {}: {e}", dir.display());
        }
    }
}

/// A new, empty, short state dir under /tmp (the mail daemons' users must be able to enter it,
/// and its path must stay short: unix socket paths inside it are limited to 108 bytes).
fn make_state_dir(base: u16) -> PathBuf {
    for n in 0..1000 {
        let dir = PathBuf::from(format!("/tmp/mailtriage-{base}-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
    panic!("cannot create a state dir under /tmp");
}

fn parse_exports(stdout: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((key, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            env.insert(key.to_string(), value.to_string());
        }
    }
    env
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

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
struct PortLock {
    base: u16,
    file: File,
}

impl PortLock {
    fn acquire() -> PortLock {
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

    fn record(&self, dir: &Path) {
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

// ------------------------------------------------------------------------------------------
// SMTP

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

/// The DATA payload: CRLF line ends, dot-stuffed, ending in CRLF `.` CRLF.
fn smtp_data(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    peer: String,
}

impl Smtp {
    fn connect(host: &str, port: u16) -> Smtp {
        let stream = connect(host, port).unwrap_or_else(|e| panic!("SMTP: {e}"));
        let writer = stream.try_clone().expect("clone TcpStream");
        Smtp {
            reader: BufReader::new(stream),
            writer,
            peer: format!("{host}:{port}"),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .unwrap_or_else(|e| panic!("SMTP {}: write failed: {e}", self.peer));
    }

    /// Reads one (possibly multi-line) reply; panics unless its code is in `ok`.
    fn expect(&mut self, what: &str, ok: &[u16]) -> String {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => panic!(
                    "SMTP {}: connection closed waiting for the reply to {what}; so far: {text}",
                    self.peer
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "SMTP {}: reading the reply to {what}: {e}; so far: {text}",
                    self.peer
                ),
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            text.push_str(&line);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| {
                    panic!("SMTP {}: malformed reply to {what}: {line:?}", self.peer)
                });
            if line.as_bytes().get(3) != Some(&b'-') {
                if !ok.contains(&code) {
                    panic!(
                        "SMTP {}: {what} was answered {}",
                        self.peer,
                        text.trim_end()
                    );
                }
                return text;
            }
        }
    }

    fn command(&mut self, cmd: &str, ok: &[u16]) -> String {
        self.write(format!("{cmd}\r\n").as_bytes());
        self.expect(cmd, ok)
    }
}

// ------------------------------------------------------------------------------------------
// IMAP: a minimal blocking client (LOGIN, EXAMINE, UID FETCH, LOGOUT)

fn imap_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// Tagged completion of a command.
struct Done {
    ok: bool,
    text: String,
}

impl Imap {
    fn connect(host: &str, port: u16) -> Result<Imap, String> {
        let stream = connect(host, port).map_err(|e| format!("IMAP: {e}"))?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
        };
        let greeting = imap.read_response()?;
        if !greeting.starts_with(b"* OK") {
            return Err(format!(
                "IMAP greeting: {}",
                String::from_utf8_lossy(&greeting).trim_end()
            ));
        }
        Ok(imap)
    }

    fn fetch_all(
        &mut self,
        user: &str,
        password: &str,
        folder: &str,
    ) -> Result<Option<Vec<FetchedMail>>, String> {
        let (_, done) = self.command(&format!(
            "LOGIN {} {}",
            imap_quote(user),
            imap_quote(password)
        ))?;
        if !done.ok {
            return Err(format!("login as {user} failed: {}", done.text));
        }
        if !folder.is_ascii() {
            return Err("folder names must be ASCII (modified UTF-7 for others)".into());
        }
        let (untagged, done) = self.command(&format!("EXAMINE {}", imap_quote(folder)))?;
        if !done.ok {
            if done.text.contains("NONEXISTENT") || done.text.contains("doesn't exist") {
                return Ok(None);
            }
            return Err(format!("EXAMINE {folder} failed: {}", done.text));
        }
        let exists = untagged.iter().find_map(|r| {
            let line = std::str::from_utf8(r).ok()?;
            let n = line
                .strip_prefix("* ")?
                .trim_end()
                .strip_suffix(" EXISTS")?;
            n.parse::<u32>().ok()
        });
        if exists == Some(0) {
            return Ok(Some(Vec::new()));
        }
        let (untagged, done) = self.command("UID FETCH 1:* (UID FLAGS BODY.PEEK[])")?;
        if !done.ok {
            return Err(format!("UID FETCH in {folder} failed: {}", done.text));
        }
        let mut by_seq: BTreeMap<u32, Partial> = BTreeMap::new();
        for response in &untagged {
            if let Some((seq, items)) = parse_fetch(response)? {
                let entry = by_seq.entry(seq).or_default();
                for (key, value) in items {
                    match (key.to_ascii_uppercase().as_str(), value) {
                        ("UID", Token::Atom(n)) => {
                            entry.uid = String::from_utf8_lossy(&n).parse().ok();
                        }
                        ("FLAGS", Token::List(flags)) => {
                            entry.flags = flags
                                .into_iter()
                                .filter_map(|f| match f {
                                    Token::Atom(a) => {
                                        Some(String::from_utf8_lossy(&a).into_owned())
                                    }
                                    _ => None,
                                })
                                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                                .collect();
                        }
                        ("BODY[]" | "RFC822", Token::Str(body)) => entry.raw = Some(body),
                        _ => {}
                    }
                }
            }
        }
        let mut mails: Vec<FetchedMail> = by_seq
            .into_values()
            .filter_map(|p| {
                Some(FetchedMail {
                    uid: p.uid?,
                    flags: p.flags,
                    raw: p.raw?,
                })
            })
            .collect();
        mails.sort_by_key(|m| m.uid);
        Ok(Some(mails))
    }

    fn logout(&mut self) {
        let _ = self.command("LOGOUT");
    }

    /// Sends `cmd` with a new tag; returns the untagged responses and the tagged completion.
    fn command(&mut self, cmd: &str) -> Result<(Vec<Vec<u8>>, Done), String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|e| format!("IMAP write: {e}"))?;
        let verb = cmd.split(' ').next().unwrap_or(cmd);
        let mut untagged = Vec::new();
        loop {
            let response = self
                .read_response()
                .map_err(|e| format!("{e} (during {verb})"))?;
            if let Some(rest) = response.strip_prefix(format!("{tag} ").as_bytes()) {
                let text = String::from_utf8_lossy(rest).trim_end().to_string();
                return Ok((
                    untagged,
                    Done {
                        ok: text.starts_with("OK"),
                        text,
                    },
                ));
            }
            if response.starts_with(b"+") {
                return Err(format!(
                    "IMAP: unexpected continuation request during {verb}"
                ));
            }
            untagged.push(response);
        }
    }

    /// One whole response: a line, plus any literals `{N}` it announces and the lines after them.
    fn read_response(&mut self) -> Result<Vec<u8>, String> {
        let mut response = Vec::new();
        loop {
            let start = response.len();
            match self.reader.read_until(b'\n', &mut response) {
                Ok(0) => return Err("IMAP: connection closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("IMAP read: {e}")),
            }
            let line = &response[start..];
            match literal_len(line) {
                Some(n) => {
                    let from = response.len();
                    response.resize(from + n, 0);
                    self.reader
                        .read_exact(&mut response[from..])
                        .map_err(|e| format!("IMAP read of a {n}-byte literal: {e}"))?;
                }
                None => return Ok(response),
            }
        }
    }
}

/// N if `line` ends with a literal announcement `{N}` or `{N+}` and CRLF.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// What the FETCH responses for one sequence number said so far.
#[derive(Default)]
struct Partial {
    uid: Option<u32>,
    flags: Vec<String>,
    raw: Option<Vec<u8>>,
}

/// The `KEY VALUE` pairs of one FETCH response.
type FetchItems = Vec<(String, Token)>;

#[derive(Debug)]
enum Token {
    Atom(Vec<u8>),
    /// Quoted string or literal.
    Str(Vec<u8>),
    List(Vec<Token>),
    Nil,
}

/// `* SEQ FETCH (KEY VALUE ...)` into SEQ and the pairs; `Ok(None)` for other responses.
fn parse_fetch(response: &[u8]) -> Result<Option<(u32, FetchItems)>, String> {
    let Some(rest) = response.strip_prefix(b"* ") else {
        return Ok(None);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(after) = rest[digits..].strip_prefix(b" FETCH ") else {
        return Ok(None);
    };
    if digits == 0 {
        return Ok(None);
    }
    let seq: u32 = std::str::from_utf8(&rest[..digits])
        .unwrap()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut parser = Parser { b: after, i: 0 };
    let bad = |e: String| {
        let shown = &response[..response.len().min(200)];
        format!(
            "cannot parse FETCH response ({e}): {}",
            String::from_utf8_lossy(shown)
        )
    };
    let Token::List(items) = parser.value().map_err(bad)? else {
        return Err(bad("not a list".into()));
    };
    let mut pairs = Vec::new();
    let mut it = items.into_iter();
    while let Some(key) = it.next() {
        let Token::Atom(key) = key else {
            return Err(bad("item name is not an atom".into()));
        };
        let value = it.next().ok_or_else(|| bad("item without value".into()))?;
        pairs.push((String::from_utf8_lossy(&key).into_owned(), value));
    }
    Ok(Some((seq, pairs)))
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self) -> Result<Token, String> {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        match self.peek() {
            None => Err("unexpected end".into()),
            Some(b'(') => {
                self.i += 1;
                let mut list = Vec::new();
                loop {
                    while self.peek() == Some(b' ') {
                        self.i += 1;
                    }
                    match self.peek() {
                        Some(b')') => {
                            self.i += 1;
                            return Ok(Token::List(list));
                        }
                        None => return Err("unterminated list".into()),
                        _ => list.push(self.value()?),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err("unterminated quoted string".into()),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Token::Str(s));
                        }
                        Some(b'\\') => {
                            s.push(*self.b.get(self.i + 1).ok_or("bad escape")?);
                            self.i += 2;
                        }
                        Some(c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(b'{') => {
                let close = self.b[self.i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("bad literal")?
                    + self.i;
                let spec =
                    std::str::from_utf8(&self.b[self.i + 1..close]).map_err(|e| e.to_string())?;
                let n: usize = spec
                    .trim_end_matches('+')
                    .parse()
                    .map_err(|_| format!("bad literal {{{spec}}}"))?;
                let start = close
                    + 1
                    + if self.b[close + 1..].starts_with(b"\r\n") {
                        2
                    } else {
                        1
                    };
                let end = start + n;
                if end > self.b.len() {
                    return Err("literal runs past the response".into());
                }
                self.i = end;
                Ok(Token::Str(self.b[start..end].to_vec()))
            }
            Some(_) => {
                let start = self.i;
                let mut depth = 0usize; // inside [...] anything goes: BODY[HEADER.FIELDS (A B)]
                while let Some(c) = self.peek() {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let atom = self.b[start..self.i].to_vec();
                if atom.is_empty() {
                    return Err(format!("unexpected byte {:?}", self.peek().map(char::from)));
                }
                Ok(if atom.eq_ignore_ascii_case(b"NIL") {
                    Token::Nil
                } else {
                    Token::Atom(atom)
                })
            }
        }
    }
}

fn describe(list: &[FetchedMail]) -> String {
    if list.is_empty() {
        return "the folder is empty".into();
    }
    let mut s = format!("the folder holds {} message(s):", list.len());
    for m in list.iter().take(30) {
        s.push_str(&format!(
            "\n  uid {} flags {:?}, {} bytes",
            m.uid,
            m.flags,
            m.raw.len()
        ));
        for name in ["From", "To", "Subject", "Message-ID"] {
            if let Some(v) = m.header(name) {
                s.push_str(&format!("\n      {name}: {v}"));
            }
        }
    }
    if list.len() > 30 {
        s.push_str("\n  ...");
    }
    s
}
