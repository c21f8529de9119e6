//! The daemon under test: `mailtriage run` as a child process with a mailtriage.toml
//! written for a [`Stack`], the signals the tests send it and the log it writes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{poll, Stack, WAIT};

/// The `start` line of every mailbox in the config the tests write.
pub const START_ALL: &str = "start = \"all\"";

/// How long a SIGTERM may take to stop the daemon.
const STOP_LIMIT: Duration = Duration::from_secs(40);

/// A running `mailtriage run`, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `mailtriage run` with the given config and rules, `RUST_LOG=info` and `env`
    /// on top; its stderr is appended to `log`.
    pub fn start(config: &Path, rules: &Path, log: &Path, env: &[(&str, &OsStr)]) -> Daemon {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let child = Command::new(env!("CARGO_BIN_EXE_mailtriage"))
            .arg("run")
            .arg("--rules")
            .arg(rules)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mailtriage run: {e}"));
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Everything the daemon (and its earlier runs on the same log) has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first log line with `text` in it, once there is one (one entry, as journald
    /// would keep it); panics with the log after [`WAIT`].
    pub fn log_line(&self, text: &str) -> String {
        self.wait_log(text);
        let log = self.log();
        log.lines().find(|l| l.contains(text)).unwrap().to_string()
    }

    /// Polls the log until it holds `text`; panics with the log after [`WAIT`].
    pub fn wait_log(&self, text: &str) {
        self.wait_log_until(&format!("the log saying {text:?}"), |log| {
            log.contains(text)
        });
    }

    /// Polls the log until `pred` holds for it; panics with `what` and the log after [`WAIT`].
    pub fn wait_log_until(&self, what: &str, pred: impl Fn(&str) -> bool) {
        poll(what, WAIT, Duration::from_millis(100), || {
            let log = self.log();
            if pred(&log) {
                Ok(())
            } else {
                Err(format!("log:\n{log}"))
            }
        });
    }

    /// Sends `signal` (a name for kill(1): "TERM", "KILL", "INT", "HUP").
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

    /// Waits for the daemon to exit after a signal already sent; kills it and panics with
    /// the log when it has not exited within `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        let what = format!("the daemon exiting within {limit:?}");
        let status = poll(&what, limit, Duration::from_millis(50), || {
            match self.child.as_mut().expect("daemon running").try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err(format!("log:\n{}", self.log())),
                Err(e) => panic!("cannot wait for the daemon: {e}"),
            }
        });
        self.child = None;
        status
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(STOP_LIMIT)
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

/// mailtriage.toml for this stack, as `dir/mailtriage.toml`: IMAPS with the stack's CA, SMTP
/// with STARTTLS, the mailboxes monitoring, billing, sales and support, the state in `state`.
/// Each mailbox has `start = "all"`: a test's mail may land before the daemon's first
/// connection, and must be triaged all the same (the tests of `start` itself change it,
/// see [`super::lab::Setup::first_start`]).
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
            "\n[mailboxes.{m}]\nuser = \"{m}@{d}\"\npassword_file = \"{pw}\"\n{START_ALL}\n",
            d = stack.domain,
            pw = pw.display()
        );
    }
    let path = dir.join("mailtriage.toml");
    std::fs::write(&path, s).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// The `[archive]` section for a config in `dir`: every mail the daemon sends also goes to
/// `archive@`, which the daemon reads at start (and watches nothing else).
pub fn archive_section(stack: &Stack, dir: &Path) -> String {
    format!(
        "\n[archive]\naddress = \"archive@{d}\"\nuser = \"archive@{d}\"\npassword_file = \"{pw}\"\n",
        d = stack.domain,
        pw = stack.password_file(dir).display()
    )
}
