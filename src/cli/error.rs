//! What can go wrong in a command, typed at the edge of the command line: main prints
//! each as `error: ` and its words, and exits with status 1 (clap's own usage errors
//! exit with 2 before a command runs).

use std::io;
use std::path::PathBuf;

use crate::config::{ConfigError, ConfigErrors};
use crate::parse::ParseError;
use crate::pipeline::PipelineError;
use crate::record::StoreError;
use crate::runtime::daemon::DaemonError;
use crate::send::SmtpError;
use crate::source::ImapError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The rules file has mistakes; nothing was loaded.
    #[error("{errors}\n{}: {} error(s); nothing was changed", file.display(), errors.0.len())]
    Rules { file: PathBuf, errors: ConfigErrors },
    /// The rules built into the binary do not load (only with a broken build).
    #[error("{0}")]
    BuiltInRules(ConfigErrors),
    /// `check` found mistakes in the rules, the settings, or between the two.
    #[error("{}\n{} error(s)", lines(.0), .0.len())]
    Check(Vec<ConfigError>),
    /// `check --connect`: logins that failed, each with its section and what the
    /// server said.
    #[error("{}\n{} login(s) failed", .0.join("\n"), .0.len())]
    Connect(Vec<String>),
    /// `login-test`: how many mailboxes or SMTP identities failed; each failing step is
    /// printed with what the server said.
    #[error("login-test: {0} failed (the step and the server's words are above)")]
    LoginTest(usize),
    #[error("check --connect needs the settings: {} does not exist (pass --config FILE)", file.display())]
    ConnectWithoutSettings { file: PathBuf },
    /// The settings, read only to find the state directory, have mistakes.
    #[error("{0}\n(pass --state DIR to name the state directory directly)")]
    Settings(ConfigErrors),

    #[error("no [mailboxes.{name}] login in {}: the mailbox cannot be read", file.display())]
    NoLogin { name: String, file: PathBuf },
    /// The mailbox could not be read (`preview`).
    #[error("mailboxes.{mailbox}: folder {folder}: {source}")]
    Imap {
        mailbox: String,
        folder: String,
        source: ImapError,
    },
    #[error("imap: {0}")]
    Tls(#[from] TlsError),
    #[error("no mailbox {name:?} in the rules (there are: {known})")]
    NoSuchMailbox { name: String, known: String },
    #[error("{}: cannot tell which mailbox this message reached; pass --mailbox (one of: {known})", file.display())]
    MailboxNotFound { file: PathBuf, known: String },
    #[error("{}: not a message mailtriage can read: {source}", file.display())]
    NotAMessage { file: PathBuf, source: ParseError },
    /// `triage` went through, but some messages could only be quarantined.
    #[error("{count} message(s) could not be read and were quarantined (see above)")]
    Quarantined { count: usize },
    #[error("this binary was built without sample mail (samples/ was empty)")]
    NoSamples,

    #[error("{}: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    #[error("outbox {}: {source}", dir.display())]
    Outbox { dir: PathBuf, source: io::Error },
    /// The temporary state directory of `triage` and `demo`.
    #[error(transparent)]
    TempDir(io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    #[error("{}: no mailtriage state here", dir.display())]
    NoState { dir: PathBuf },
    #[error("state {}: {source}", dir.display())]
    State { dir: PathBuf, source: StoreError },
    /// With no daemon answering, the state would not open: most likely a daemon holds it.
    #[error("state {}: {source} (is a daemon running without its control socket?)", dir.display())]
    StateHeld { dir: PathBuf, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Send(#[from] SmtpError),

    #[error("no mailtriage daemon answers on {} (is it running with this state directory?)", socket.display())]
    NoDaemon { socket: PathBuf },
    #[error("the daemon did not answer on its control socket: {0}")]
    ControlSocket(io::Error),
    /// The daemon, or the state with no daemon, turned the request down; in its words.
    #[error("{0}")]
    Refused(String),
    /// `run` failed to start or stopped on an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

impl CliError {
    /// Whether the same command could succeed later, unchanged: a daemon starting up, a
    /// state directory held for a moment, a full disk. Mistakes in the configuration,
    /// the arguments or the message are permanent.
    pub fn is_temporary(&self) -> bool {
        match self {
            CliError::Rules { .. }
            | CliError::BuiltInRules(_)
            | CliError::Check(_)
            | CliError::Settings(_)
            | CliError::NoSuchMailbox { .. }
            | CliError::MailboxNotFound { .. }
            | CliError::NotAMessage { .. }
            | CliError::Quarantined { .. }
            | CliError::NoSamples
            | CliError::Json(_)
            | CliError::NoState { .. }
            | CliError::ConnectWithoutSettings { .. }
            | CliError::NoLogin { .. }
            | CliError::Tls(_)
            | CliError::Refused(_) => false,
            CliError::Imap { source, .. } => source.is_temporary(),
            // A server that is down and a refused password alike: an operator looks.
            CliError::Connect(_) | CliError::LoginTest(_) => false,
            CliError::Read { source, .. } | CliError::Outbox { source, .. } => {
                io_is_temporary(source)
            }
            CliError::TempDir(e) => io_is_temporary(e),
            CliError::State { source, .. } | CliError::StateHeld { source, .. } => {
                source.is_temporary()
            }
            CliError::Store(e) => e.is_temporary(),
            CliError::Pipeline(e) => e.is_temporary(),
            CliError::Send(e) => e.is_temporary(),
            CliError::Daemon(e) => e.is_temporary(),
            CliError::NoDaemon { .. } | CliError::ControlSocket(_) => true,
        }
    }
}

/// A missing file or a refused permission stays so until someone acts.
fn io_is_temporary(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::InvalidData
    )
}

fn lines(errors: &[ConfigError]) -> String {
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    text.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(key: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from("rules.toml"),
            key: key.into(),
            line: Some(3),
            message: "unknown key".into(),
        }
    }

    #[test]
    fn a_rules_error_lists_each_mistake_then_counts_them_in_the_file() {
        let e = CliError::Rules {
            file: PathBuf::from("rules.toml"),
            errors: ConfigErrors(vec![config_error("a"), config_error("b")]),
        };
        assert_eq!(
            e.to_string(),
            "rules.toml:3: a: unknown key\nrules.toml:3: b: unknown key\nrules.toml: 2 error(s); nothing was changed"
        );
    }

    #[test]
    fn check_counts_every_mistake_found() {
        let e = CliError::Check(vec![config_error("a"), config_error("b")]);
        assert_eq!(
            e.to_string(),
            "rules.toml:3: a: unknown key\nrules.toml:3: b: unknown key\n2 error(s)"
        );
    }

    #[test]
    fn mistakes_are_permanent_and_a_daemon_not_answering_is_temporary() {
        assert!(!CliError::Check(vec![config_error("a")]).is_temporary());
        assert!(!CliError::Quarantined { count: 1 }.is_temporary());
        let missing = io::Error::from(io::ErrorKind::NotFound);
        let e = CliError::Read {
            file: PathBuf::from("x.eml"),
            source: missing,
        };
        assert!(!e.is_temporary());
        let e = CliError::NoDaemon {
            socket: PathBuf::from("control.sock"),
        };
        assert!(e.is_temporary());
    }
}
