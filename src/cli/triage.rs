//! `mailtriage triage` and `mailtriage demo`: .eml files through the whole pipeline
//! offline, as the daemon would triage them, with the outbox written out as .eml files
//! instead of sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{load_rules, mailbox_for, read, render, Cli, Failure};
use crate::config::Rules;
use crate::pipeline::{self, Incoming, Report};
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
) -> Result<usize, Failure> {
    std::fs::create_dir_all(outbox)
        .map_err(|e| Failure(format!("outbox {}: {e}", outbox.display())))?;
    let store =
        Store::open(state).map_err(|e| Failure(format!("state {}: {e}", state.display())))?;
    // Keyed by the action's name, so the totals line lists them alphabetically.
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, raw) in inputs {
        let report = triage_one(rules, &store, mailbox, name, raw)?;
        *counts.entry(render::action(&report)).or_default() += 1;
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
) -> Result<Report, Failure> {
    let mb = mailbox_for(rules, mailbox, raw, Path::new(name))?;
    let incoming = Incoming {
        mailbox: mb,
        raw,
        source: None,
    };
    Ok(pipeline::triage(rules, store, incoming, SystemTime::now())?)
}

/// One line per message: JSON with the file name added, or a sentence.
fn print_report(name: &str, report: &Report, json: bool) -> Result<(), Failure> {
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
) -> Result<(), Failure> {
    let rules = load_rules(&cli.rules)?;
    let inputs = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    let tmp;
    let state = match state {
        Some(s) => s,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let quarantined = triage_files(&rules, &inputs, mailbox, outbox, state, json).await?;
    if quarantined > 0 {
        return Err(Failure(format!(
            "{quarantined} message(s) could not be read and were quarantined (see above)"
        )));
    }
    Ok(())
}

/// The sample mail built into the binary, with the shipped rules (or `with_rules`).
pub async fn demo(outbox: &Path, with_rules: Option<&Path>) -> Result<(), Failure> {
    let rules = match with_rules {
        Some(p) => load_rules(p)?,
        None => Rules::parse(Path::new("rules.toml (built in)"), super::demo::RULES)
            .map_err(|e| Failure(e.to_string()))?,
    };
    if super::demo::SAMPLES.is_empty() {
        return Err(Failure(
            "this binary was built without sample mail (samples/ was empty)".into(),
        ));
    }
    let inputs: Vec<(String, Vec<u8>)> = super::demo::SAMPLES
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    let tmp = tempfile::tempdir()?;
    println!(
        "Triaging {} sample messages with the shipped rules (offline; mails go to {}/):",
        inputs.len(),
        outbox.display()
    );
    triage_files(&rules, &inputs, None, outbox, tmp.path(), false).await?;
    Ok(())
}
