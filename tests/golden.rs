//! Golden fixtures: every `tests/fixtures/NAME.eml` goes through the very pipeline the
//! daemon runs, with the shipped rules.toml, and must give what `NAME.toml` says
//! (format in tests/fixtures/README.md). `explain` (no state) and `triage` (fresh
//! state, mails composed) must agree with the fixture and with each other.

mod support;

use std::path::PathBuf;
use std::time::SystemTime;

use mailtriage::config::Rules;
use mailtriage::pipeline::{self, Incoming};
use mailtriage::record::Store;
use serde::Deserialize;
use support::{root, shipped_rules_file};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Expect {
    mailbox: String,
    category: String,
    queue: String,
    forwarded: bool,
    ack: bool,
    ack_suppressed: Option<String>,
    language: String,
}

fn fixtures() -> Vec<(PathBuf, Expect)> {
    let dir = root().join("tests/fixtures");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "eml") {
            let t = p.with_extension("toml");
            let text =
                std::fs::read_to_string(&t).unwrap_or_else(|e| panic!("{}: {e}", t.display()));
            let exp: Expect =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", t.display()));
            out.push((p, exp));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 14,
        "expected the golden fixtures in {}",
        dir.display()
    );
    out
}

fn check(name: &str, exp: &Expect, r: &pipeline::Report, failures: &mut Vec<String>) {
    let mut fail = |what: &str, got: String, want: String| {
        if got != want {
            failures.push(format!("{name}: {what}: got {got:?}, want {want:?}"));
        }
    };
    fail(
        "category",
        r.category.clone().unwrap_or_default(),
        exp.category.clone(),
    );
    fail(
        "queue",
        r.queue.clone().unwrap_or_default(),
        exp.queue.clone(),
    );
    fail(
        "forwarded",
        r.misdirected.to_string(),
        exp.forwarded.to_string(),
    );
    fail(
        "ack",
        r.acknowledgement.send.to_string(),
        exp.ack.to_string(),
    );
    fail(
        "ack_suppressed",
        r.acknowledgement
            .suppressed
            .map_or("", |s| s.code())
            .to_string(),
        exp.ack_suppressed.clone().unwrap_or_default(),
    );
    if r.action != "ignore" {
        fail(
            "language",
            r.language.clone().unwrap_or_default(),
            exp.language.clone(),
        );
    }
}

#[test]
fn fixtures_match_explain() {
    let rules = Rules::load(&shipped_rules_file()).unwrap();
    let mut failures = Vec::new();
    for (path, exp) in fixtures() {
        let raw = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mb = &rules.mailboxes[&exp.mailbox];
        let r = pipeline::explain(&rules, None, mb, &raw, SystemTime::now()).unwrap();
        check(&name, &exp, &r, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_match_triage_and_its_mails() {
    let rules = Rules::load(&shipped_rules_file()).unwrap();
    let mut failures = Vec::new();
    for (path, exp) in fixtures() {
        // A fresh state per fixture: the expectations assume no earlier thread.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let raw = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mb = &rules.mailboxes[&exp.mailbox];
        let r = pipeline::triage(
            &rules,
            &store,
            Incoming {
                mailbox: mb,
                raw: &raw,
                source: None,
                folder: None,
            },
            SystemTime::now(),
        )
        .unwrap();
        check(&name, &exp, &r, &mut failures);
        let out = store.outbox().unwrap();
        let forwards: Vec<_> = out
            .iter()
            .filter(|(_, m)| m.kind == mailtriage::ticket::MailKind::Forward)
            .collect();
        let acks: Vec<_> = out
            .iter()
            .filter(|(_, m)| m.kind == mailtriage::ticket::MailKind::Acknowledgement)
            .collect();
        if exp.forwarded {
            let q = &rules.queues[&exp.queue];
            if forwards.len() != 1 || forwards[0].1.to != vec![q.address.clone()] {
                failures.push(format!(
                    "{name}: want one forward to {}, outbox has {:?}",
                    q.address,
                    out.iter()
                        .map(|(_, m)| (&m.kind, &m.to))
                        .collect::<Vec<_>>()
                ));
            } else {
                // The original travels unchanged inside the forward.
                let fwd = mail_parser::MessageParser::default()
                    .parse(&forwards[0].1.raw)
                    .unwrap();
                let inner = fwd
                    .attachment(0)
                    .and_then(|a| a.message())
                    .map(|m| m.raw_message().to_vec());
                if inner.as_deref() != Some(&raw[..]) {
                    failures.push(format!(
                        "{name}: the forwarded original differs from the message"
                    ));
                }
            }
        } else if !forwards.is_empty() {
            failures.push(format!("{name}: unexpected forward"));
        }
        if acks.len() != usize::from(exp.ack) {
            failures.push(format!(
                "{name}: want {} acknowledgement(s), outbox has {}",
                u8::from(exp.ack),
                acks.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
