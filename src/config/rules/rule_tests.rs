//! `[[tests]]`: sample messages with what the rules must do with them. Here they are
//! only checked against the names the file declares and kept with their place in the
//! file; `pipeline::ruletest` runs them through the pipeline and reports a failure at
//! that place.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::matching::Rule;
use super::raw;
use super::routing::{Category, Mailbox, Queue};
use super::values::{span, UniqueNames};
use crate::config::error::{Collector, ConfigError};

/// One `[[tests]]` entry: a message built from `subject`, `body`, `sender` and
/// `headers`, sent through `pipeline::explain` with no state.
#[derive(Debug, Clone)]
pub struct RuleTest {
    pub name: String,
    /// Index in `[[tests]]`, for the key path in errors.
    pub index: usize,
    /// The line the entry starts on, for errors.
    pub line: Option<usize>,
    pub mailbox: String,
    pub subject: String,
    pub body: String,
    pub sender: String,
    pub headers: BTreeMap<String, String>,
    pub expect: Expect,
}

impl RuleTest {
    /// The error that reports this test failed in `file`, at its key and line; `why`
    /// says how the outcome differs from what was expected.
    pub fn failure(&self, file: &Path, why: &str) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            key: format!("tests[{}]", self.index),
            line: self.line,
            message: format!("rule test {:?} failed: {why}", self.name),
        }
    }
}

/// What a rule test expects; keys left out are not checked.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// "forward", "keep", "leave", "robot", "ignore".
    pub action: Option<String>,
    pub queue: Option<String>,
    pub category: Option<String>,
    pub forwarded: Option<bool>,
    pub ack: Option<bool>,
    /// The red flags that fire, all of them (order does not matter).
    pub flags: Option<Vec<String>>,
}

impl Expect {
    fn is_empty(&self) -> bool {
        self.action.is_none()
            && self.queue.is_none()
            && self.category.is_none()
            && self.forwarded.is_none()
            && self.ack.is_none()
            && self.flags.is_none()
    }
}

/// The names a test may use: those the rest of the file declares.
pub(super) struct Declared<'a> {
    pub queues: &'a BTreeMap<String, Queue>,
    pub categories: &'a BTreeMap<String, Category>,
    pub mailboxes: &'a BTreeMap<String, Mailbox>,
    pub flags: &'a [Rule],
}

/// A test being checked: its key path, name and place, for the errors about it.
struct At<'a> {
    base: &'a str,
    name: &'a str,
    span: Option<Range<usize>>,
}

/// Checks the `[[tests]]` entries against the declared names; they are run once the
/// whole file has compiled.
pub(super) fn compile_tests(
    c: &mut Collector<'_>,
    raw: Vec<Spanned<raw::RuleTest>>,
    declared: &Declared<'_>,
) -> Vec<RuleTest> {
    let mut names = UniqueNames::new("tests", "test");
    raw.into_iter()
        .enumerate()
        .map(|(i, t)| compile_test(c, i, t, declared, &mut names))
        .collect()
}

fn compile_test(
    c: &mut Collector<'_>,
    i: usize,
    t: Spanned<raw::RuleTest>,
    declared: &Declared<'_>,
    names: &mut UniqueNames,
) -> RuleTest {
    let span_of_test = span(&t);
    let t = t.into_inner();
    let base = format!("tests[{i}]");
    let name = t.name.get_ref().clone();
    let at = At {
        base: &base,
        name: &name,
        span: span_of_test.clone(),
    };
    names.check(c, i, &t.name);
    check_message(c, &at, &t, declared.mailboxes);
    let expect = compile_expect(c, &at, t.expect, declared);
    RuleTest {
        name,
        index: i,
        line: span_of_test.map(|s| c.line_of(&s)),
        mailbox: t.mailbox.into_inner(),
        subject: t.subject,
        body: t.body,
        sender: t.sender.into_inner(),
        headers: t.headers,
        expect,
    }
}

/// The sample message can be built: a known mailbox, some text, a sender address.
fn check_message(
    c: &mut Collector<'_>,
    at: &At<'_>,
    t: &raw::RuleTest,
    mailboxes: &BTreeMap<String, Mailbox>,
) {
    let (base, name) = (at.base, at.name);
    if !mailboxes.contains_key(t.mailbox.get_ref()) {
        c.at(
            span(&t.mailbox),
            format!("{base}.mailbox"),
            format!(
                "test {name:?}: unknown mailbox {:?} (declared: {})",
                t.mailbox.get_ref(),
                mailboxes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if t.subject.is_empty() && t.body.is_empty() {
        c.at(
            at.span.clone(),
            base,
            format!("test {name:?} has neither subject nor body"),
        );
    }
    if t.sender
        .get_ref()
        .parse::<lettre::message::Mailbox>()
        .is_err()
    {
        c.at(
            span(&t.sender),
            format!("{base}.sender"),
            format!("test {name:?}: not an address (write \"Name <user@example.com>\")"),
        );
    }
}

fn compile_expect(
    c: &mut Collector<'_>,
    at: &At<'_>,
    e: Spanned<raw::Expect>,
    declared: &Declared<'_>,
) -> Expect {
    let espan = span(&e);
    let e = e.into_inner();
    check_expected_names(c, at, &e, declared);
    let expect = Expect {
        action: e.action.map(Spanned::into_inner),
        queue: e.queue.map(Spanned::into_inner),
        category: e.category.map(Spanned::into_inner),
        forwarded: e.forwarded,
        ack: e.ack,
        flags: e
            .flags
            .map(|v| v.into_iter().map(Spanned::into_inner).collect()),
    };
    if expect.is_empty() {
        let name = at.name;
        c.at(
            espan.or(at.span.clone()),
            format!("{}.expect", at.base),
            format!("test {name:?} expects nothing: give queue, action, category, forwarded, ack or flags"),
        );
    }
    expect
}

/// An expected action is one the daemon takes; queues, categories and flags are declared.
fn check_expected_names(
    c: &mut Collector<'_>,
    at: &At<'_>,
    e: &raw::Expect,
    declared: &Declared<'_>,
) {
    let (base, name) = (at.base, at.name);
    if let Some(a) = &e.action {
        if !["forward", "keep", "leave", "robot", "ignore"].contains(&a.get_ref().as_str()) {
            c.at(
                span(a),
                format!("{base}.expect.action"),
                format!(
                    "test {name:?}: action {:?} is not one of forward, keep, leave, robot, ignore",
                    a.get_ref()
                ),
            );
        }
    }
    if let Some(q) = &e.queue {
        let known = declared.queues.contains_key(q.get_ref());
        check_known(c, at, known, "queue", format!("{base}.expect.queue"), q);
    }
    if let Some(k) = &e.category {
        let known = declared.categories.contains_key(k.get_ref());
        check_known(
            c,
            at,
            known,
            "category",
            format!("{base}.expect.category"),
            k,
        );
    }
    for (j, f) in e.flags.iter().flatten().enumerate() {
        let known = declared.flags.iter().any(|r| &r.name == f.get_ref());
        check_known(c, at, known, "flag", format!("{base}.expect.flags[{j}]"), f);
    }
}

/// A queue, category or flag a test expects must be declared; `known` says if it is.
fn check_known(
    c: &mut Collector<'_>,
    at: &At<'_>,
    known: bool,
    what: &str,
    key: String,
    v: &Spanned<String>,
) {
    if !known {
        let name = at.name;
        c.at(
            span(v),
            key,
            format!("test {name:?}: unknown {what} {:?}", v.get_ref()),
        );
    }
}
