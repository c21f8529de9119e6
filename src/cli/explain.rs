//! `mailtriage explain`: what the daemon would do with one message, and why. It runs
//! the same evaluation as the daemon and touches nothing.

use std::path::Path;
use std::time::SystemTime;

use super::{load_rules, mailbox_for, read, render, Cli, CliError};
use crate::pipeline;
use crate::record::Store;

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
    let store = state.map(Store::open).transpose()?;
    let report = pipeline::explain(&rules, store.as_ref(), mb, &raw, SystemTime::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::explain_text(&rules, &report));
    }
    Ok(())
}
