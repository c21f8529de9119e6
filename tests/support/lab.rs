//! The set-up every stack test shares, written once: a [`Lab`] is a fresh [`Stack`], a temp
//! dir holding the daemon's state, its mailtriage.toml and (when a test changes them) its
//! rules, and the daemon started on them. It also sends [`Mail`] and waits for what the
//! daemon makes of it.
//!
//! ```ignore
//! let lab = Lab::setup().rules(&changed_rules).archive().start();
//! let daemon = lab.daemon();
//! ```

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::cli::{cli, Cli};
use super::daemon::{archive_section, write_config, Daemon, START_ALL};
use super::mail::Mail;
use super::{shipped_rules_file, write_rules, FetchedMail, Stack, WAIT};

/// What a test changes in the set-up before the stack starts; see [`Lab::setup`].
#[derive(Default)]
pub struct Setup {
    rules: Option<String>,
    archive: bool,
    config: String,
    /// `start` of every mailbox: `Some(None)` leaves it out (the daemon's default).
    start: Option<Option<String>>,
    /// `MAILSTACK_*` settings the stack starts with.
    stack: Vec<(&'static str, &'static str)>,
}

impl Setup {
    /// The daemon runs these rules (written as `rules.toml` in the lab's dir) instead of
    /// the shipped file.
    pub fn rules(mut self, text: &str) -> Setup {
        self.rules = Some(text.into());
        self
    }

    /// The config gets an `[archive]` on `archive@example.test`.
    pub fn archive(mut self) -> Setup {
        self.archive = true;
        self
    }

    /// Every mailbox gets `start = "RULE"` instead of the tests' `"all"`; `None` leaves
    /// `start` out, for the daemon's own default ("new").
    pub fn first_start(mut self, rule: Option<&str>) -> Setup {
        self.start = Some(rule.map(str::to_string));
        self
    }

    /// The stack starts with this `MAILSTACK_*` setting (see [`Stack::start_with`]).
    pub fn stack(mut self, key: &'static str, value: &'static str) -> Setup {
        self.stack.push((key, value));
        self
    }

    /// `text` is added to the end of mailtriage.toml.
    pub fn config(mut self, text: &str) -> Setup {
        self.config += text;
        self
    }

    /// Starts the stack and writes the files; the daemon is started by [`Lab::daemon`].
    pub fn start(self) -> Lab {
        let stack = Stack::start_with(&self.stack);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = write_config(&stack, dir.path(), &state);
        let mut extra = self.config;
        if self.archive {
            extra.insert_str(0, &archive_section(&stack, dir.path()));
        }
        let mut text = std::fs::read_to_string(&config).unwrap() + &extra;
        if let Some(rule) = self.start {
            let line = rule.map(|r| format!("start = \"{r}\"")).unwrap_or_default();
            text = text.replace(START_ALL, &line);
        }
        std::fs::write(&config, text).unwrap();
        let rules = match self.rules {
            Some(text) => write_rules(dir.path(), &text),
            None => shipped_rules_file(),
        };
        Lab {
            log: dir.path().join("daemon.log"),
            stack,
            state,
            config,
            rules,
            temp: dir,
        }
    }
}

/// A stack with the daemon's files beside it; stops the mail daemons and deletes everything
/// when dropped. Derefs to its [`Stack`].
pub struct Lab {
    pub stack: Stack,
    /// The daemon's `state_dir` (it does not exist before the daemon first starts).
    pub state: PathBuf,
    /// mailtriage.toml.
    pub config: PathBuf,
    /// The rules the daemon runs: the shipped file, or the lab's own `rules.toml`.
    pub rules: PathBuf,
    /// Where every start of the daemon appends its log.
    pub log: PathBuf,
    temp: TempDir,
}

impl Lab {
    /// The stack with the shipped rules and the plain config.
    pub fn start() -> Lab {
        Setup::default().start()
    }

    /// A set-up to change before it starts.
    pub fn setup() -> Setup {
        Setup::default()
    }

    /// The temp dir holding state, config, rules and log, for a test's own files.
    pub fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// Starts `mailtriage run` on the lab's config and rules (again after a stop: same state,
    /// same log). It does not wait for the mailboxes to connect.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with_env(&[])
    }

    /// As [`Lab::daemon`], with these environment variables set for it.
    pub fn daemon_with_env(&self, env: &[(&str, &OsStr)]) -> Daemon {
        Daemon::start(&self.config, &self.rules, &self.log, env)
    }

    /// mailtriage.toml as it stands.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    /// Replaces mailtriage.toml.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    /// Rewrites the first `old` in mailtriage.toml into `new`; panics if there is none.
    pub fn edit_config(&self, old: &str, new: &str) {
        let s = self.config_text();
        assert!(s.contains(old), "{old:?} not in the config");
        self.write_config(&s.replacen(old, new, 1));
    }

    /// A `mailtriage` command on the lab's state and rules (`--state`, `--rules` after `args`).
    pub fn cli(&self, args: &[&str]) -> Cli {
        cli(args).state(&self.state).rules(&self.rules)
    }

    /// Sends `mail` by SMTP, with the envelope its addresses give.
    pub fn send_mail(&self, mail: &Mail) {
        self.stack
            .send(mail.sender(), &mail.recipients(), &mail.raw());
    }

    /// All of `user`'s INBOX.
    pub fn inbox(&self, user: &str) -> Vec<FetchedMail> {
        self.stack.fetch_all(user, "INBOX")
    }

    /// Waits up to [`WAIT`] until `pred` holds for `user`'s INBOX, and returns it.
    pub fn wait_inbox(
        &self,
        user: &str,
        pred: impl Fn(&[FetchedMail]) -> bool,
    ) -> Vec<FetchedMail> {
        self.stack.wait_until(user, "INBOX", WAIT, pred)
    }

    /// Waits for the daemon's forward of the original `id` in `user`'s INBOX, and returns it.
    pub fn wait_forward(&self, user: &str, id: &str) -> FetchedMail {
        self.wait_inbox(user, |ms| ms.iter().any(|m| m.is_forward_of(id)))
            .into_iter()
            .find(|m| m.is_forward_of(id))
            .unwrap()
    }

    /// Waits for the daemon's acknowledgement of the original `id` in `user`'s INBOX, and
    /// returns it.
    pub fn wait_ack(&self, user: &str, id: &str) -> FetchedMail {
        self.wait_inbox(user, |ms| ms.iter().any(|m| m.is_ack_of(id)))
            .into_iter()
            .find(|m| m.is_ack_of(id))
            .unwrap()
    }

    /// Waits until the message `id` in `user`'s INBOX has `flag` (`$Triaged`, `$Forwarded`),
    /// and returns the INBOX.
    pub fn wait_flagged(&self, user: &str, id: &str, flag: &str) -> Vec<FetchedMail> {
        self.wait_inbox(user, |ms| ms.iter().any(|m| m.is(id) && m.has_flag(flag)))
    }

    /// How many forwards of the original `id` are in `user`'s INBOX.
    pub fn forwards_of(&self, user: &str, id: &str) -> usize {
        self.inbox(user)
            .iter()
            .filter(|m| m.is_forward_of(id))
            .count()
    }
}

impl Deref for Lab {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        &self.stack
    }
}
