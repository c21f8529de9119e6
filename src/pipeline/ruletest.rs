//! Rule tests (`[[tests]]` in rules.toml): sample messages with what the rules must do
//! with them. They run through the very pipeline the daemon uses ([`super::explain`]
//! with no state), so `check`, the daemon's start and every reload load rules through
//! [`load`] and refuse rules that no longer route the samples as their author meant.
//! Config compiles and checks the tests; running them is the pipeline's job.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use super::Report;
use crate::config::{ConfigError, ConfigErrors, Expect, RuleTest, Rules};

/// Reads and compiles a rules file, then runs its rule tests: rules whose tests fail
/// are refused, each failure an error naming the test.
pub fn load(path: &Path) -> Result<Rules, ConfigErrors> {
    passing(path, Rules::load(path)?)
}

/// [`load`] for rules given as text; `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<Rules, ConfigErrors> {
    passing(path, Rules::parse(path, text)?)
}

/// The rules when every test passes. Tests run only on rules that compiled: with
/// errors already found they would only repeat them.
fn passing(path: &Path, rules: Rules) -> Result<Rules, ConfigErrors> {
    let failures = run_all(path, &rules);
    if failures.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigErrors(failures))
    }
}

/// Runs every test of `rules`; each failure is an error naming the test.
pub fn run_all(path: &Path, rules: &Rules) -> Vec<ConfigError> {
    let now = SystemTime::now();
    rules
        .tests
        .iter()
        .filter_map(|t| run(rules, t, now).err().map(|why| t.failure(path, &why)))
        .collect()
}

/// The message a test describes, as it would arrive from a customer.
pub fn message(rules: &Rules, t: &RuleTest) -> Vec<u8> {
    let to = rules
        .mailboxes
        .get(&t.mailbox)
        .map(|m| m.address.as_str())
        .unwrap_or("mailbox@example.invalid");
    let mut m = String::new();
    let _ = write!(
        m,
        "From: {}\r\nTo: {to}\r\nSubject: {}\r\nMessage-ID: <rule-test-{}@mailtriage.invalid>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n",
        t.sender,
        t.subject.replace(['\r', '\n'], " "),
        t.index
    );
    for (k, v) in &t.headers {
        let _ = write!(m, "{k}: {}\r\n", v.replace(['\r', '\n'], " "));
    }
    m.push_str(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    m.push_str(&t.body.replace("\r\n", "\n").replace('\n', "\r\n"));
    m.push_str("\r\n");
    m.into_bytes()
}

/// Runs one test; `Err` says every way the outcome differs from what was expected.
pub fn run(rules: &Rules, t: &RuleTest, now: SystemTime) -> Result<Report, String> {
    let mailbox = rules
        .mailboxes
        .get(&t.mailbox)
        .ok_or_else(|| format!("unknown mailbox {:?}", t.mailbox))?;
    let raw = message(rules, t);
    let r = super::explain(rules, None, mailbox, &raw, now).map_err(|e| e.to_string())?;
    let diffs = differences(&t.expect, &r);
    if diffs.is_empty() {
        Ok(r)
    } else {
        Err(format!("{}; {}", diffs.join("; "), fired(&r)))
    }
}

/// Each expected outcome the report does not show, in words.
fn differences(e: &Expect, r: &Report) -> Vec<String> {
    let mut diffs = Vec::new();
    if let Some(a) = &e.action {
        if r.action.as_str() != a {
            diffs.push(format!(
                "action: expected {a:?}, got {:?}",
                r.action.as_str()
            ));
        }
    }
    if let Some(q) = &e.queue {
        if r.queue.as_deref() != Some(q.as_str()) {
            diffs.push(format!(
                "queue: expected {q:?}, got {}",
                quoted_or_none(r.queue.as_deref())
            ));
        }
    }
    if let Some(k) = &e.category {
        if r.category.as_deref() != Some(k.as_str()) {
            diffs.push(format!(
                "category: expected {k:?}, got {}",
                quoted_or_none(r.category.as_deref())
            ));
        }
    }
    if let Some(f) = e.forwarded {
        let got = r.action == crate::pipeline::Action::Forward;
        if got != f {
            diffs.push(format!("forwarded: expected {f}, got {got}"));
        }
    }
    if let Some(a) = e.ack {
        if r.acknowledgement.send != a {
            let why = r
                .acknowledgement
                .suppressed
                .map(|s| format!(" (suppressed: {s})"))
                .unwrap_or_default();
            diffs.push(format!(
                "ack: expected {a}, got {}{why}",
                r.acknowledgement.send
            ));
        }
    }
    if let Some(want) = &e.flags {
        diffs.extend(flag_difference(want, r));
    }
    diffs
}

fn quoted_or_none(v: Option<&str>) -> String {
    v.map(|s| format!("{s:?}")).unwrap_or_else(|| "none".into())
}

/// The red flags are compared as sets: order and repeats do not matter.
fn flag_difference(want: &[String], r: &Report) -> Option<String> {
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort_unstable();
    want.dedup();
    let mut got: Vec<&str> = r.flags.iter().map(|f| f.rule.as_str()).collect();
    got.sort_unstable();
    got.dedup();
    (want != got).then(|| format!("flags: expected {want:?}, got {got:?}"))
}

/// The rules that fired, so the author sees why the outcome differs.
fn fired(r: &Report) -> String {
    let mut fired: Vec<&str> = r.rules.iter().map(|f| f.rule.as_str()).collect();
    fired.dedup();
    if fired.is_empty() {
        "no rule fired".to_string()
    } else {
        format!("rules fired: {}", fired.join(", "))
    }
}
