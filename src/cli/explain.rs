//! `mailtriage explain`: what the daemon would do with one message, and why. It runs
//! the same evaluation as the daemon and touches nothing. A reply is matched to its
//! ticket in the state: the running daemon's (asked over its control socket, since it
//! holds the state), or the state directory read directly when no daemon runs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ask_daemon, load_rules, mailbox_for, read, refused, render, Cli, CliError};
use crate::config::{Rules, Settings};
use crate::pipeline::{self, Report};
use crate::record::Store;
use crate::runtime::control::Request;

pub fn explain(
    cli: &Cli,
    file: &Path,
    mailbox: Option<&str>,
    json: bool,
    state: Option<&Path>,
) -> Result<(), CliError> {
    let rules = load_rules(&cli.rules)?;
    let raw = read(file)?;
    if let Err(source) = pipeline::read_mail(&rules, &raw) {
        return Err(CliError::NotAMessage {
            file: file.to_path_buf(),
            source,
        });
    }
    let mb = mailbox_for(&rules, mailbox, &raw, file)?;
    let report = match state_of(cli, state) {
        Some(dir) => explain_in_state(cli, &rules, &mb.key, &raw, &dir)?,
        None => pipeline::explain(&rules, None, mb, &raw, SystemTime::now())?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::explain_text(&rules, &report));
    }
    Ok(())
}

/// The state to look the thread up in: `--state`, else the configured one when the
/// settings can be read and it exists (a first try of the rules has neither).
fn state_of(cli: &Cli, state: Option<&Path>) -> Option<PathBuf> {
    if let Some(s) = state {
        return Some(s.to_path_buf());
    }
    let dir = Settings::load(&cli.config).ok()?.state_dir;
    dir.join("db").exists().then_some(dir)
}

/// Asks the daemon that holds `dir`; with none, reads `dir` itself.
fn explain_in_state(
    cli: &Cli,
    rules: &Rules,
    mailbox: &str,
    raw: &[u8],
    dir: &Path,
) -> Result<Report, CliError> {
    use base64::Engine;
    let text = std::fs::read_to_string(&cli.rules).map_err(|source| CliError::Read {
        file: cli.rules.clone(),
        source,
    })?;
    let req = Request::Explain {
        mailbox: mailbox.to_string(),
        rules_file: cli.rules.clone(),
        rules: text,
        mail: base64::engine::general_purpose::STANDARD.encode(raw),
    };
    if let Some(resp) = ask_daemon(dir, &req)? {
        return match (resp.ok, resp.report) {
            (true, Some(report)) => Ok(report),
            (_, _) => Err(refused(resp.error, "explain request failed")),
        };
    }
    let store = Store::open(dir)?;
    let mb = &rules.mailboxes[mailbox];
    Ok(pipeline::explain(
        rules,
        Some(&store),
        mb,
        raw,
        SystemTime::now(),
    )?)
}
