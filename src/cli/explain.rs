//! `mailtriage explain`: what the daemon would do with one message, and why. It runs
//! the same evaluation as the daemon and touches nothing. A reply is matched to its
//! ticket in the state: the running daemon's (asked over its control socket, since it
//! holds the state), or the state directory read directly when no daemon runs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ask_daemon, load_rules, mailbox_for, read, refused, render, Cli, CliError};
use crate::config::{Mailbox, Rules, Settings};
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
    let report = Threads::find(cli, state)?.explain(&rules, mb, &raw)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::explain_text(&rules, &report));
    }
    Ok(())
}

/// Where a message's thread is looked up: the state of `--state`, else the configured
/// one when the settings can be read and it exists (a first try of the rules has
/// neither), else nowhere. The daemon that holds that state is asked; with none, the
/// state is read directly (never written).
pub(super) struct Threads {
    /// The state directory, and the rules file and its text (sent to the daemon with
    /// each message, so that it explains with the rules the command was given).
    state: Option<(PathBuf, PathBuf, String)>,
    /// The state itself, opened at the first message no daemon answered for.
    store: Option<Store>,
}

impl Threads {
    pub(super) fn find(cli: &Cli, state: Option<&Path>) -> Result<Threads, CliError> {
        let dir = match state {
            Some(s) => Some(s.to_path_buf()),
            None => Settings::load(&cli.config)
                .ok()
                .map(|s| s.state_dir)
                .filter(|dir| dir.join("db").exists()),
        };
        let state = match dir {
            Some(dir) => Some((dir, cli.rules.clone(), read_text(&cli.rules)?)),
            None => None,
        };
        Ok(Threads { state, store: None })
    }

    /// What the daemon would do with `raw` reaching `mb`, its thread looked up here.
    pub(super) fn explain(
        &mut self,
        rules: &Rules,
        mb: &Mailbox,
        raw: &[u8],
    ) -> Result<Report, CliError> {
        use base64::Engine;
        let Some((dir, rules_file, text)) = &self.state else {
            return Ok(pipeline::explain(rules, None, mb, raw, SystemTime::now())?);
        };
        if self.store.is_none() {
            let req = Request::Explain {
                mailbox: mb.key.clone(),
                rules_file: rules_file.clone(),
                rules: text.clone(),
                mail: base64::engine::general_purpose::STANDARD.encode(raw),
            };
            if let Some(resp) = ask_daemon(dir, &req)? {
                return match (resp.ok, resp.report) {
                    (true, Some(report)) => Ok(report),
                    (_, _) => Err(refused(resp.error, "explain request failed")),
                };
            }
        }
        let store = match self.store.take() {
            Some(s) => s,
            None => Store::open(dir)?,
        };
        let report = pipeline::explain(rules, Some(&store), mb, raw, SystemTime::now());
        self.store = Some(store);
        Ok(report?)
    }
}

fn read_text(file: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(file).map_err(|source| CliError::Read {
        file: file.to_path_buf(),
        source,
    })
}
