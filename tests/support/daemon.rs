//! The daemon under test: `mailtriage run` as a child process with a mailtriage.toml
//! written for a [`Stack`], and the signals the tests send it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Stack;

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
            "\n[mailboxes.{m}]\nuser = \"{m}@{d}\"\npassword_file = \"{pw}\"\n",
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
