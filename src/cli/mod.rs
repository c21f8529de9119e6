//! Command-line interface, the top of the flow beside [`crate::runtime`]: the arguments,
//! then one file per offline command (`check`, `login-test`, `explain`, `preview`, `triage` and
//! `demo`, `status`, `tickets`, `outbox`), all words on the terminal in [`render`]. `run` hands over to
//! [`crate::runtime::daemon`].

mod check;
pub mod demo;
mod error;
mod explain;
mod login_test;
mod outbox;
mod preview;
mod render;
mod status;
mod tickets;
mod triage;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Mailbox, Rules, Settings, DEFAULT_CONFIG, DEFAULT_RULES};
use crate::parse::parse;
use crate::runtime::control::{self, Request, Response};

pub use check::check;
pub use error::CliError;
pub use explain::explain;
pub use login_test::login_test;
pub use outbox::outbox;
pub use preview::preview;
pub use status::status;
pub use tickets::tickets;
pub use triage::{demo, triage, triage_files};

#[derive(Parser, Debug)]
#[command(
    name = "mailtriage",
    version,
    about = "Triage of shared support mailboxes: forwards misdirected requests to the right team with a context note and acknowledges the customer."
)]
pub struct Cli {
    /// The rules file (what to do with mail).
    #[arg(long, global = true, env = "MAILTRIAGE_RULES", default_value = DEFAULT_RULES)]
    pub rules: PathBuf,
    /// The settings file (servers, logins, state directory).
    #[arg(long, global = true, env = "MAILTRIAGE_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: watch every mailbox, triage new mail, send the outbox.
    Run {
        /// Shadow mode for every mailbox: triage and record what would be done; send
        /// nothing, change nothing on the server.
        #[arg(long)]
        shadow: bool,
    },
    /// Ask the running daemon how it is: each mailbox's state, the outbox, the rules
    /// version, the last errors.
    Status {
        /// The state directory; by default the one in --config.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check rules.toml (and mailtriage.toml, when it exists or --config is given); print every error.
    Check {
        /// Also log in to every mailbox and to the SMTP server, as `run` would.
        #[arg(long)]
        connect: bool,
    },
    /// Connect to each mailbox (or the one named) step by step: TCP, TLS, LOGIN,
    /// CAPABILITY, EXAMINE (read-only); print what worked, what the server offers (IDLE,
    /// MOVE, UIDPLUS) and, for the step that failed, what the server said.
    LoginTest {
        /// A mailbox name from mailtriage.toml; every mailbox by default.
        mailbox: Option<String>,
        /// Also open an SMTP session (EHLO, STARTTLS, AUTH, QUIT) on the mailbox's own
        /// SMTP identity (`[mailboxes.NAME.smtp]`, else `[smtp]`).
        #[arg(long)]
        smtp: bool,
    },
    /// Show what the daemon would do with a message, and why. Touches nothing.
    Explain {
        /// The message, as an .eml file.
        file: PathBuf,
        /// The mailbox it reached (a name from rules.toml); by default found from its recipients.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print JSON (documented in the README) instead of text.
        #[arg(long)]
        json: bool,
        /// Match replies to tickets in this state directory (never written); by default
        /// the one in --config, when it can be read. While the daemon runs, it is asked.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Show what triage would do with the last messages of a live mailbox. Reads the
    /// folder read-only (EXAMINE, BODY.PEEK): marks nothing, sends nothing, records nothing.
    Preview {
        /// The mailbox (a name from rules.toml, with its login in mailtriage.toml).
        mailbox: String,
        /// How many of its last messages.
        #[arg(long, default_value_t = 20)]
        last: u32,
        /// Print JSON (one object per message: `uid`, `arrived`, `keywords`, `marked` and
        /// what `explain --json` says) instead of text.
        #[arg(long)]
        json: bool,
        /// Match replies to tickets in this state directory (never written); by default
        /// the one in --config, when it exists. While the daemon runs, it is asked.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Triage .eml files offline: the whole pipeline, mails written as .eml files.
    Triage {
        /// The messages.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The mailbox they reached; by default found from each message's recipients.
        #[arg(long)]
        mailbox: Option<String>,
        /// Folder the forwards and acknowledgements are written to.
        #[arg(long)]
        outbox: PathBuf,
        /// State directory (tickets, Message-ID index); a fresh temporary one by default.
        #[arg(long)]
        state: Option<PathBuf>,
        /// One JSON report per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show tickets and their timelines, resolve one or record a promise on it (through the running
    /// daemon, or from the state directory when no daemon runs).
    Tickets {
        #[command(subcommand)]
        cmd: TicketsCmd,
        /// The state directory; by default the one in --config.
        #[arg(long, global = true)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// The mails not sent: waiting in the outbox, or refused for good by the SMTP server
    /// (dead letters); send a refused one again, or drop it (through the running daemon,
    /// or from the state directory when no daemon runs).
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
        /// The state directory; by default the one in --config.
        #[arg(long, global = true)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Triage the sample mail built into the binary with the shipped rules, offline.
    Demo {
        /// Folder the forwards and acknowledgements are written to.
        #[arg(long, default_value = "outbox")]
        outbox: PathBuf,
        /// Use this rules file instead of the built-in one.
        #[arg(long = "with-rules")]
        with_rules: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TicketsCmd {
    /// One line per ticket: the newest open ones, oldest of them first.
    List {
        /// Resolved tickets too, those on the shelf included.
        #[arg(long)]
        all: bool,
        /// How many of the newest (at most 1000).
        #[arg(long, default_value_t = crate::runtime::control::DEFAULT_LISTED as u64,
              value_parser = clap::value_parser!(u64).range(1..=crate::runtime::control::MAX_LISTED as u64))]
        limit: u64,
    },
    /// A ticket with its whole timeline, and its mails no server accepted (shadow,
    /// waiting, refused).
    Show {
        id: String,
        /// Print those mails whole, as they would go out.
        #[arg(long)]
        mails: bool,
    },
    /// Resolve a ticket: it gets no more reminders or status mails; a reply of the
    /// customer within threading.reopen_within reopens it.
    Resolve {
        id: String,
        /// Who resolved it, for the history.
        #[arg(long, default_value = "operator")]
        by: String,
        /// What was done, for the history.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record a promise made to the customer; it appears in every later note.
    Promise {
        id: String,
        text: String,
        /// Who promised it.
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxCmd {
    /// One line per mail not sent: id, waiting or refused, ticket, kind, recipients, and
    /// the server's refusal.
    List,
    /// Put a refused mail back in the outbox, to be sent again (once its cause is mended).
    Retry { id: u64 },
    /// Remove a refused mail for good; says what it was.
    Drop { id: u64 },
}

/// The rules, or every mistake in them. Public for the daemon only, until it loads
/// them with an error of its own.
pub(crate) fn load_rules(path: &Path) -> Result<Rules, CliError> {
    crate::pipeline::ruletest::load(path).map_err(|errors| CliError::Rules {
        file: path.to_path_buf(),
        errors,
    })
}

/// The mailbox a message reached: the one named, or the first watched address among
/// its Delivered-To, To and Cc.
fn mailbox_for<'r>(
    rules: &'r Rules,
    name: Option<&str>,
    raw: &[u8],
    file: &Path,
) -> Result<&'r Mailbox, CliError> {
    if let Some(n) = name {
        return rules
            .mailboxes
            .get(n)
            .ok_or_else(|| CliError::NoSuchMailbox {
                name: n.to_string(),
                known: mailbox_names(rules),
            });
    }
    reached_mailbox(rules, raw).ok_or_else(|| CliError::MailboxNotFound {
        file: file.to_path_buf(),
        known: mailbox_names(rules),
    })
}

/// The first watched address among the message's Delivered-To, To and Cc.
fn reached_mailbox<'r>(rules: &'r Rules, raw: &[u8]) -> Option<&'r Mailbox> {
    let mail = parse(raw).ok()?;
    let mut candidates = mail
        .delivered_to
        .iter()
        .map(String::as_str)
        .chain(mail.to.iter().map(|a| a.address.as_str()))
        .chain(mail.cc.iter().map(|a| a.address.as_str()));
    candidates.find_map(|a| rules.mailbox_by_address(a))
}

fn mailbox_names(rules: &Rules) -> String {
    rules
        .mailboxes
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn read(file: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(file).map_err(|source| CliError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// The state directory named, or the one in the settings.
fn state_dir(cli: &Cli, state: Option<&Path>) -> Result<PathBuf, CliError> {
    match state {
        Some(s) => Ok(s.to_path_buf()),
        None => Ok(Settings::load(&cli.config)
            .map_err(CliError::Settings)?
            .state_dir),
    }
}

/// The running daemon's answer on its control socket; `None` when no daemon listens.
fn ask_daemon(state: &Path, req: &Request) -> Result<Option<Response>, CliError> {
    control::ask(&control::socket_path(state), req)
        .transpose()
        .map_err(CliError::ControlSocket)
}

/// A request turned down, in the words of the daemon (or of the state, with no daemon).
fn refused(error: Option<String>, fallback: &str) -> CliError {
    CliError::Refused(error.unwrap_or_else(|| fallback.into()))
}
