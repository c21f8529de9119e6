//! The regexes of rules, red flags and incidents: each is checked when the file is
//! loaded (a bad one is an error at its key, one that matches nothing or everything a
//! warning), then all of them are compiled together for classify's one scan per field.

use std::collections::BTreeMap;
use std::ops::Range;

use regex::{Regex, RegexBuilder};
use toml::Spanned;

use super::matching::{Incident, Rule};
use super::values::span;
use crate::classify::matcher::Matchers;
pub use crate::classify::matcher::{Field, Pattern};
use crate::config::error::Collector;

/// Regexes are compiled with a bounded size so a pathological pattern is a load error,
/// not a memory blow-up at run time.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

/// The pattern keys of a rule, flag or incident, as written.
pub(super) struct PatternSource<'a> {
    pub subject: &'a Option<Spanned<String>>,
    pub body: &'a Option<Spanned<String>>,
    pub sender: &'a Option<Spanned<String>>,
    pub headers: &'a BTreeMap<String, Spanned<String>>,
}

impl PatternSource<'_> {
    fn is_empty(&self) -> bool {
        self.subject.is_none()
            && self.body.is_none()
            && self.sender.is_none()
            && self.headers.is_empty()
    }
}

/// Compiles one regex; `what` names its rule, flag or language in errors.
pub(super) fn compile_regex(
    c: &mut Collector<'_>,
    key: &str,
    what: &str,
    pat: &Spanned<String>,
) -> Option<Regex> {
    match RegexBuilder::new(pat.get_ref())
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(r) => {
            warn_if_degenerate(c, key, what, pat);
            Some(r)
        }
        Err(e) => {
            c.at(span(pat), key, format!("{what}: bad regex: {e}"));
            None
        }
    }
}

/// The size of what a pattern can match tells two design mistakes apart from a working
/// pattern: nothing at all, or the empty string (it then fires on every message).
fn warn_if_degenerate(c: &mut Collector<'_>, key: &str, what: &str, pat: &Spanned<String>) {
    let min = regex_syntax::parse(pat.get_ref())
        .ok()
        .map(|h| h.properties().minimum_len());
    match min {
        Some(None) => c.warn_at(
            span(pat),
            key,
            format!("{what}: this pattern can never match anything; check it with `mailtriage explain` on a sample"),
        ),
        Some(Some(0)) => c.warn_at(
            span(pat),
            key,
            format!("{what}: this pattern matches the empty string, so it fires on every message; an empty alternative (`a|`) or a `*` on everything is the usual cause"),
        ),
        _ => {}
    }
}

/// Compiles the patterns of a rule, flag or incident; `what` names it in errors.
pub(super) fn compile_patterns(
    c: &mut Collector<'_>,
    base: &str,
    what: &str,
    at: Option<Range<usize>>,
    src: PatternSource<'_>,
) -> Vec<Pattern> {
    let mut patterns = Vec::new();
    let fields = [
        (Field::Subject, "subject", src.subject),
        (Field::Body, "body", src.body),
        (Field::Sender, "sender", src.sender),
    ];
    for (field, name, pat) in fields {
        if let Some(p) = pat {
            add_pattern(c, &mut patterns, what, field, format!("{base}.{name}"), p);
        }
    }
    for (h, p) in src.headers {
        let field = Field::Header(h.to_ascii_lowercase());
        add_pattern(
            c,
            &mut patterns,
            what,
            field,
            format!("{base}.headers.{h}"),
            p,
        );
    }
    if src.is_empty() {
        c.at(
            at,
            base.to_string(),
            format!("{what} has no pattern (subject, body, sender or headers)"),
        );
    }
    patterns
}

/// Checks a pattern and keeps it when it compiles.
fn add_pattern(
    c: &mut Collector<'_>,
    patterns: &mut Vec<Pattern>,
    what: &str,
    field: Field,
    key: String,
    pat: &Spanned<String>,
) {
    if compile_regex(c, &key, what, pat).is_some() {
        patterns.push(Pattern {
            field,
            source: pat.get_ref().clone(),
        });
    }
}

/// One scan per field for all three lists: the automaton's cost is per byte of text
/// read, hardly per pattern, so three scans cost three times one. A hit's entry index
/// counts through rules, then flags, then incidents.
pub(super) fn all_matchers(
    c: &mut Collector<'_>,
    rules: &[Rule],
    flags: &[Rule],
    incidents: &[Incident],
) -> Matchers {
    let entries = rules
        .iter()
        .chain(flags)
        .map(|r| &r.patterns[..])
        .chain(incidents.iter().map(|i| &i.patterns[..]));
    let patterns = entries.enumerate().flat_map(|(ei, patterns)| {
        patterns
            .iter()
            .enumerate()
            .map(move |(pi, p)| ((ei, pi), p))
    });
    Matchers::build(patterns, REGEX_SIZE_LIMIT).unwrap_or_else(|e| {
        c.at(None, "rules, flags and incidents", e);
        Matchers::default()
    })
}
