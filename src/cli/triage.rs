//! `mailtriage triage` and `mailtriage demo`: .eml files through the whole pipeline
//! offline, as the daemon would triage them, with the outbox written out as .eml files
//! instead of sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{load_rules, mailbox_for, read, render, Cli, CliError};
use crate::config::Rules;
use crate::pipeline::{self, ruletest, Incoming, Report};
use crate::record::Store;
use crate::send::{self, Transport};

/// Offline triage of files through the whole pipeline, then the outbox drained into
/// `outbox` as .eml files. Returns how many messages were quarantined.
pub async fn triage_files(
    rules: &Rules,
    inputs: &[(String, Vec<u8>)],
    mailbox: Option<&str>,
    outbox: &Path,
    state: &Path,
    json: bool,
) -> Result<usize, CliError> {
    std::fs::create_dir_all(outbox).map_err(|source| CliError::Outbox {
        dir: outbox.to_path_buf(),
        source,
    })?;
    let store = Store::open(state).map_err(|source| CliError::State {
        dir: state.to_path_buf(),
        source,
    })?;
    // Keyed by the action's name, so the totals line lists them alphabetically.
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, raw) in inputs {
        let report = triage_one(rules, &store, mailbox, name, raw)?;
        // Keyed by name, so the totals line lists the actions alphabetically.
        *counts.entry(report.action.as_str()).or_default() += 1;
        print_report(name, &report, json)?;
    }
    let drained = send::drain(&store, &Transport::files(outbox)).await?;
    if !json {
        println!(
            "{}",
            render::triage_totals(inputs.len(), &counts, &drained, outbox)
        );
    }
    Ok(counts.get("quarantine").copied().unwrap_or(0))
}

fn triage_one(
    rules: &Rules,
    store: &Store,
    mailbox: Option<&str>,
    name: &str,
    raw: &[u8],
) -> Result<Report, CliError> {
    let mb = mailbox_for(rules, mailbox, raw, Path::new(name))?;
    let incoming = Incoming {
        mailbox: mb,
        raw,
        source: None,
        folder: None,
    };
    Ok(pipeline::triage(rules, store, incoming, SystemTime::now())?)
}

/// One line per message: JSON with the file name added, or a sentence.
fn print_report(name: &str, report: &Report, json: bool) -> Result<(), CliError> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["file"] = serde_json::Value::String(name.to_string());
        println!("{v}");
    } else {
        println!("{}", render::summary_line(name, report));
    }
    Ok(())
}

pub async fn triage(
    cli: &Cli,
    files: &[PathBuf],
    mailbox: Option<&str>,
    outbox: &Path,
    state: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let rules = load_rules(&cli.rules)?;
    let inputs = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<Vec<_>, CliError>>()?;
    let tmp;
    let state = match state {
        Some(s) => s,
        None => {
            tmp = temp_state()?;
            tmp.path()
        }
    };
    let count = triage_files(&rules, &inputs, mailbox, outbox, state, json).await?;
    if count > 0 {
        return Err(CliError::Quarantined { count });
    }
    Ok(())
}

/// A state directory that lives as long as the command: offline runs start afresh.
fn temp_state() -> Result<tempfile::TempDir, CliError> {
    tempfile::tempdir().map_err(CliError::TempDir)
}

/// The sample mail built into the binary, with the shipped rules (or `with_rules`).
pub async fn demo(outbox: &Path, with_rules: Option<&Path>) -> Result<(), CliError> {
    let rules = match with_rules {
        Some(p) => load_rules(p)?,
        None => ruletest::parse(Path::new("rules.toml (built in)"), super::demo::RULES)
            .map_err(CliError::BuiltInRules)?,
    };
    if super::demo::SAMPLES.is_empty() {
        return Err(CliError::NoSamples);
    }
    let inputs: Vec<(String, Vec<u8>)> = super::demo::SAMPLES
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    let tmp = temp_state()?;
    println!(
        "Triaging {} sample messages with the shipped rules (offline; mails go to {}/):",
        inputs.len(),
        outbox.display()
    );
    triage_files(&rules, &inputs, None, outbox, tmp.path(), false).await?;
    Ok(())
}
