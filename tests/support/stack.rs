//! One private Dovecot + Postfix per [`Stack`], started and purged through `scripts/mailstack`:
//! mail in by SMTP, mailboxes read back over IMAP, waits that say what was there instead.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ports::PortLock;
use super::{imap, poll, smtp};

/// What to do when the stack cannot be had.
const HOW_TO_GET: &str = "the integration tests need Dovecot and Postfix: run `bash scripts/test` \
                          or `scripts/mailstack install` as root";

/// Files of the Debian packages that `scripts/mailstack install` adds (a subset of what it checks).
const REQUIRED_FILES: [&str; 6] = [
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/lmtp",
    "/usr/lib/dovecot/modules/lib90_sieve_plugin.so",
    "/usr/sbin/postfix",
    "/usr/lib/postfix/sbin/master",
];
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
    /// The HS256 secret (its bytes as they are) Dovecot checks OAuth2 tokens with.
    pub oauth_secret: Vec<u8>,
    /// The `iss` Dovecot accepts in a token.
    pub oauth_issuer: String,
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

    /// Whether it was submitted with `user`'s SMTP login: the stack's Postfix writes
    /// "(Authenticated sender: USER)" into its Received header.
    pub fn sent_with_login(&self, user: &str) -> bool {
        String::from_utf8_lossy(&self.raw).contains(&format!("(Authenticated sender: {user})"))
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
        Stack::start_with(&[])
    }

    /// As [`Stack::start`], with `MAILSTACK_*` settings for `up` (`MAILSTACK_IMAP_HIDE`,
    /// `MAILSTACK_RAWLOG`, `MAILSTACK_NO_KEYWORDS`, `MAILSTACK_DOMAIN`: see the script).
    pub fn start_with(settings: &[(&str, &str)]) -> Stack {
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
                .envs(settings.iter().copied())
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
            oauth_secret: std::fs::read(get("MAILSTACK_OAUTH_SECRET_FILE")?)
                .map_err(|e| format!("MAILSTACK_OAUTH_SECRET_FILE: {e}"))?,
            oauth_issuer: get("MAILSTACK_OAUTH_ISSUER")?,
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
        smtp::send(&self.host, self.smtp_port, mail_from, rcpt_to, raw);
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

    /// Stores `raw` in `folder` of `user` by IMAP APPEND, creating the folder if needed: what
    /// a mail client does with a mail it sent (`Sent`). Panics on failure.
    pub fn append(&self, user: &str, folder: &str, raw: &[u8]) {
        self.append_all(user, folder, &[(raw, None)]);
    }

    /// Stores every message of `mails` in `folder` of `user` on one IMAP connection, each
    /// with the INTERNALDATE given (`"23-Nov-2026 10:00:00 +0000"`): mail that was in the
    /// mailbox long before the daemon came. Panics on failure.
    pub fn append_dated(&self, user: &str, folder: &str, mails: &[(Vec<u8>, String)]) {
        let mails: Vec<(&[u8], Option<&str>)> = mails
            .iter()
            .map(|(raw, date)| (raw.as_slice(), Some(date.as_str())))
            .collect();
        self.append_all(user, folder, &mails);
    }

    fn append_all(&self, user: &str, folder: &str, mails: &[(&[u8], Option<&str>)]) {
        let login = (user, self.password.as_str());
        imap::append(&self.host, self.imap_port, login, folder, mails)
            .unwrap_or_else(|e| panic!("append({user}, {folder}): {e}"))
    }

    /// Gives `user`'s INBOX a new UIDVALIDITY, as a server does after its UID list is
    /// lost: takes the servers down, drops the folder's UID list and indexes (the
    /// keywords stay in the maildir file names), and brings the servers back.
    pub fn renew_uidvalidity(&self, user: &str) {
        self.mailstack(&["down"]);
        let (local, domain) = user.split_once('@').unwrap();
        let maildir = self.dir.join(format!("mail/{domain}/{local}/Maildir"));
        for e in fs::read_dir(&maildir).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if n == "dovecot-uidlist" || n.starts_with("dovecot.index") {
                fs::remove_file(&p).unwrap();
            }
        }
        self.mailstack(&["up"]);
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

    /// Adds the mailbox `address` to the running stack (`mailstack adduser`) and waits until
    /// Dovecot lets it log in: it reads its user file again at most once a second, and mail
    /// delivered to the new address before that would be deferred.
    pub fn add_user(&self, address: &str) {
        self.mailstack(&["adduser", address]);
        let what = format!("{address} able to log in");
        poll(
            &what,
            Duration::from_secs(10),
            Duration::from_millis(100),
            || self.try_fetch(address, "INBOX").map(|_| ()),
        );
    }

    /// What the IMAP clients sent this stack after login, every session's commands one
    /// line each, as Dovecot's rawlog wrote them (`MAILSTACK_RAWLOG=1`; empty without it).
    pub fn imap_commands_sent(&self) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.dir.join("rawlog")) else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "in") {
                let text = fs::read(&p).unwrap_or_default();
                lines.extend(String::from_utf8_lossy(&text).lines().map(str::to_string));
            }
        }
        lines
    }

    /// `Ok(None)` if the folder does not exist.
    fn try_fetch(&self, user: &str, folder: &str) -> Result<Option<Vec<FetchedMail>>, String> {
        imap::fetch_folder(&self.host, self.imap_port, user, &self.password, folder)
    }
}

impl Drop for Stack {
    /// Stops the daemons and deletes the state dir (`scripts/mailstack purge DIR`), then frees
    /// the port base. Problems are printed, not raised: a panic here would abort the test binary.
    fn drop(&mut self) {
        purge(self.port_base, &self.dir);
    }
}

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
pub(super) fn purge(base: u16, dir: &Path) {
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
