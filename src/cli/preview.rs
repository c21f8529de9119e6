//! `mailtriage preview MAILBOX [--last N]`: what triage would do with the last messages
//! of a live mailbox, before the daemon is let loose on it. It logs in as the daemon
//! does, but EXAMINEs the folder (read-only) and reads with BODY.PEEK: no flag changes,
//! nothing is sent, nothing is recorded. Each message goes through the evaluation
//! `explain` runs, its thread looked up as `explain` looks it up (the running daemon's
//! state over its control socket, else the state read directly, else none).

use std::path::Path;

use serde::Serialize;

use super::explain::Threads;
use super::{load_rules, mailbox_names, render, Cli, CliError};
use crate::config::Settings;
use crate::pipeline::Report;
use crate::source::{Connection, Fetched, Source};
use crate::ticket::{KEYWORD_QUARANTINED, KEYWORD_TRIAGED};

/// One message of the preview: where it is, and what triage would do with it.
#[derive(Debug, Serialize)]
pub(super) struct Previewed {
    pub uid: u32,
    /// When the server got it (RFC 3339).
    pub arrived: Option<String>,
    /// Its keywords on the server.
    pub keywords: Vec<String>,
    /// Marked by an earlier run (`$Triaged`, `$Quarantined`): the daemon leaves it.
    pub marked: bool,
    #[serde(flatten)]
    pub report: Report,
}

pub async fn preview(
    cli: &Cli,
    mailbox: &str,
    last: u32,
    json: bool,
    state: Option<&Path>,
) -> Result<(), CliError> {
    let rules = load_rules(&cli.rules)?;
    let mb = rules
        .mailboxes
        .get(mailbox)
        .ok_or_else(|| CliError::NoSuchMailbox {
            name: mailbox.to_string(),
            known: mailbox_names(&rules),
        })?;
    let messages = last_messages(cli, mailbox, last).await?;
    let mut threads = Threads::find(cli, state)?;
    let mut previewed = Vec::new();
    for m in messages {
        let report = threads.explain(&rules, mb, &m.raw)?;
        let marked = m
            .keywords
            .iter()
            .any(|k| k == KEYWORD_TRIAGED || k == KEYWORD_QUARANTINED);
        previewed.push(Previewed {
            uid: m.uid,
            arrived: m.arrived.map(crate::when::stamp),
            keywords: m.keywords,
            marked,
            report,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&previewed)?);
    } else {
        print!("{}", render::preview_text(&rules, mailbox, &previewed));
    }
    Ok(())
}

/// The last `last` messages of the mailbox's folder, read on a read-only session.
async fn last_messages(cli: &Cli, mailbox: &str, last: u32) -> Result<Vec<Fetched>, CliError> {
    let settings = Settings::load(&cli.config).map_err(CliError::Settings)?;
    let login = settings
        .mailboxes
        .get(mailbox)
        .ok_or_else(|| CliError::NoLogin {
            name: mailbox.to_string(),
            file: cli.config.clone(),
        })?;
    let tls = crate::tls::ImapTls::new(&settings)?;
    let source = Source::new(mailbox.to_string(), &settings, login.clone(), &tls, false);
    let imap = |source| CliError::Imap {
        mailbox: mailbox.to_string(),
        folder: login.folder.clone(),
        source,
    };
    let mut conn = Connection::examine(&source).await.map_err(imap)?;
    let messages = conn.fetch_last(last).await.map_err(imap)?;
    conn.logout().await;
    Ok(messages)
}
