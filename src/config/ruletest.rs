//! Rule tests (`[[tests]]` in rules.toml): sample messages with what the rules must do
//! with them. They run through the very pipeline the daemon uses ([`pipeline::explain`]
//! with no state) when the file is loaded, so `check`, the daemon's start and every
//! reload refuse rules that no longer route the samples as their author meant.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::error::Collector;
use super::rules::{RuleTest, Rules};
use crate::pipeline::{self, Report};

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
    let r = pipeline::explain(rules, None, mailbox, &raw, now).map_err(|e| e.to_string())?;
    let e = &t.expect;
    let mut diffs = Vec::new();
    let show = |v: Option<&str>| v.map(|s| format!("{s:?}")).unwrap_or_else(|| "none".into());
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
                show(r.queue.as_deref())
            ));
        }
    }
    if let Some(k) = &e.category {
        if r.category.as_deref() != Some(k.as_str()) {
            diffs.push(format!(
                "category: expected {k:?}, got {}",
                show(r.category.as_deref())
            ));
        }
    }
    if let Some(f) = e.forwarded {
        let got = r.action == pipeline::Action::Forward;
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
        let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
        want.sort_unstable();
        want.dedup();
        let mut got: Vec<&str> = r.flags.iter().map(|f| f.rule.as_str()).collect();
        got.sort_unstable();
        got.dedup();
        if want != got {
            diffs.push(format!("flags: expected {want:?}, got {got:?}"));
        }
    }
    if diffs.is_empty() {
        Ok(r)
    } else {
        let mut fired: Vec<&str> = r.rules.iter().map(|f| f.rule.as_str()).collect();
        fired.dedup();
        let fired = if fired.is_empty() {
            "no rule fired".to_string()
        } else {
            format!("rules fired: {}", fired.join(", "))
        };
        Err(format!("{}; {fired}", diffs.join("; ")))
    }
}

/// Runs every test of `rules`; each failure is an error naming the test.
pub(crate) fn run_all(c: &mut Collector<'_>, rules: &Rules) {
    let now = SystemTime::now();
    for t in &rules.tests {
        if let Err(why) = run(rules, t, now) {
            c.at(
                t.span.clone(),
                format!("tests[{}]", t.index),
                format!("rule test {:?} failed: {why}", t.name),
            );
        }
    }
}
