//! The daemon under test: `mailtriage run` as a child process with a mailtriage.toml
//! written for a [`Stack`], and the signals the tests send it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{FetchedMail, Stack};

/// The shipped rules.toml, as text, for tests that change it.
pub fn shipped_rules() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml")).unwrap()
}

/// Writes a rules file into `dir` and returns its path.
pub fn write_rules(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("rules.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// How long a test waits for mail to appear.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `mailtriage run`, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with the shipped rules.toml.
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml");
        Daemon::start_with(config, log, &rules)
    }

    /// Starts the daemon with the given rules; its stderr is appended to `log`.
    pub fn start_with(config: &Path, log: &Path, rules: &Path) -> Daemon {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
            .arg("run")
            .arg("--rules")
            .arg(rules)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (a name for kill(1): "TERM", "KILL", "INT").
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("daemon running");
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal} failed");
    }

    /// SIGKILL: the daemon dies wherever it is, with no chance to flush anything.
    pub fn kill(mut self) {
        self.signal("KILL");
        let mut child = self.child.take().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the daemon to exit after a signal already sent; panics with the log
    /// when it has not exited within `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 40 s after SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// mailtriage.toml for this stack: IMAPS with the stack's CA, SMTP with STARTTLS.
pub fn write_config(stack: &Stack, dir: &Path, state: &Path) -> PathBuf {
    write_config_with(stack, dir, state, "")
}

/// As [`write_config`], with `extra` added to every mailbox's login (e.g. a sent_folder).
pub fn write_config_with(stack: &Stack, dir: &Path, state: &Path, extra: &str) -> PathBuf {
    let pw = stack.password_file(dir);
    let mut s = format!(
        r#"state_dir = "{state}"

[imap]
host = "{host}"
port = {imaps}
tls = "implicit"
ca_file = "{ca}"
tls_server_name = "localhost"
timeout = "10s"

[imap_options]
idle_refresh = "1m"
max_backoff = "2s"

[smtp]
host = "{host}"
port = {smtp}
tls = "starttls"
ca_file = "{ca}"
tls_server_name = "localhost"
timeout = "10s"
"#,
        state = state.display(),
        host = stack.host,
        imaps = stack.imaps_port,
        smtp = stack.smtp_port,
        ca = stack.ca_cert.display(),
    );
    for m in ["monitoring", "billing", "sales", "support"] {
        s += &format!(
            "\n[mailboxes.{m}]\nuser = \"{m}@{d}\"\npassword_file = \"{pw}\"\n{extra}",
            d = stack.domain,
            pw = pw.display()
        );
    }
    let path = dir.join("mailtriage.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
    path
}

/// Adds `[archive]` to a config written by [`write_config`]: every mail the daemon sends
/// also goes to `archive@`, which the daemon reads at start (and watches nothing else).
pub fn add_archive(stack: &Stack, cfg: &Path, extra: &str) {
    let pw = stack.password_file(cfg.parent().unwrap());
    let mut f = std::fs::OpenOptions::new().append(true).open(cfg).unwrap();
    write!(
        f,
        "\n[archive]\naddress = \"archive@{d}\"\nuser = \"archive@{d}\"\npassword_file = \"{pw}\"\n{extra}",
        d = stack.domain,
        pw = pw.display()
    )
    .unwrap();
}

pub fn header(raw: &[u8], name: &str) -> Option<String> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.header_raw(name).map(|v| v.trim().to_string()))
}

pub fn subject(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

pub fn is_forward_of(m: &FetchedMail, original_id: &str) -> bool {
    header(&m.raw, "X-Mailtriage").is_some_and(|h| h.contains("kind=forward"))
        && header(&m.raw, "References").is_some_and(|r| r.contains(original_id))
}

pub fn is_ack_of(m: &FetchedMail, original_id: &str) -> bool {
    header(&m.raw, "Auto-Submitted").as_deref() == Some("auto-replied")
        && header(&m.raw, "In-Reply-To").is_some_and(|r| r.contains(original_id))
}

pub fn ticket_of(m: &FetchedMail) -> String {
    let h = header(&m.raw, "X-Mailtriage").unwrap();
    h.split(';')
        .find_map(|p| p.trim().strip_prefix("ticket=").map(str::to_string))
        .unwrap()
}

pub fn message(from: &str, to: &str, id: &str, subject: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Customer <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}
