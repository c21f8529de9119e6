//! The `mailtriage` command line as an admin runs it, for the tests of the commands: [`cli`]
//! builds one call (arguments in the order given, no MAILTRIAGE_* or RUST_LOG from the
//! developer's shell), [`Run`] is what it printed and how it ended.
//!
//! ```ignore
//! let o = cli(&["explain", "--json"]).shipped_rules().arg(&eml).run();
//! assert!(o.status.success(), "{}", o.text());
//! ```

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, ExitStatus};

use tempfile::TempDir;

use super::{shipped_rules_file, write_rules};

/// One `mailtriage` call with `args` first; more follow from the builder's methods.
pub fn cli(args: &[&str]) -> Cli {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailtriage"));
    cmd.env_remove("MAILTRIAGE_RULES")
        .env_remove("MAILTRIAGE_CONFIG")
        .env_remove("RUST_LOG")
        .args(args);
    Cli { cmd, temp: None }
}

/// A `mailtriage` call being built; [`Cli::run`] runs it.
pub struct Cli {
    cmd: Command,
    /// Holds a rules file written by [`Cli::rules_text`] until the run is over.
    temp: Option<TempDir>,
}

impl Cli {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cli {
        self.cmd.arg(arg);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Cli {
        self.cmd.args(args);
        self
    }

    /// `--rules PATH`.
    pub fn rules(self, path: &Path) -> Cli {
        self.arg("--rules").arg(path)
    }

    /// `--rules` with the shipped rules.toml.
    pub fn shipped_rules(self) -> Cli {
        self.rules(&shipped_rules_file())
    }

    /// `--rules` with `text` written to a temp `rules.toml`.
    pub fn rules_text(mut self, text: &str) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let path = write_rules(dir.path(), text);
        self.temp = Some(dir);
        self.rules(&path)
    }

    /// `--state DIR`.
    pub fn state(self, dir: &Path) -> Cli {
        self.arg("--state").arg(dir)
    }

    /// `--outbox DIR`.
    pub fn outbox(self, dir: &Path) -> Cli {
        self.arg("--outbox").arg(dir)
    }

    /// Runs in `dir` instead of the test's working directory.
    pub fn current_dir(mut self, dir: &Path) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// Sets an environment variable for the command (the caller's MAILTRIAGE_* are
    /// cleared, so this is the only way one reaches it).
    pub fn env(mut self, key: &str, value: &str) -> Cli {
        self.cmd.env(key, value);
        self
    }

    /// Runs the command to its end.
    pub fn run(mut self) -> Run {
        Run::of(&mut self.cmd).unwrap_or_else(|e| panic!("cannot run mailtriage: {e}"))
    }
}

/// How a command ended and what it printed (decoded lossily as UTF-8).
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to its end, capturing its output.
    pub fn of(cmd: &mut Command) -> std::io::Result<Run> {
        let out = cmd.output()?;
        Ok(Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The exit code; `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr, one after the other.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// stdout as one JSON value; panics with stderr when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: not JSON on stdout; stderr:\n{}", self.stderr))
    }
}
