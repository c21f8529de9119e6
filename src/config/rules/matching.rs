//! What classify looks for in a message: `[[rules]]` (the request's category),
//! `[[flags]]` (red flags that escalate), `[[incidents]]` (known outages the
//! acknowledgement mentions), `[languages]` and the ticket tag in subjects.

use std::collections::BTreeMap;

use regex::Regex;
use toml::Spanned;

use super::patterns::{compile_patterns, compile_regex, Pattern, PatternSource};
use super::raw;
use super::routing::Category;
use super::values::{datetime_key, optional_datetime_key, span, UniqueNames};
use crate::classify::matcher::{single_class, CharClass};
use crate::config::error::Collector;

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub category: String,
    pub priority: i32,
    pub patterns: Vec<Pattern>,
    /// `match = "all"`: the rule fires only when every one of its patterns matches
    /// (an alert subject from an alert sender); otherwise one is enough.
    pub all: bool,
}

#[derive(Debug, Clone)]
pub struct Language {
    pub code: String,
    pub detect: Regex,
    /// `detect` when it is one character class: counted per character, with no regex
    /// search per match.
    pub class: Option<CharClass>,
}

#[derive(Debug, Clone)]
pub struct Incident {
    pub id: String,
    pub patterns: Vec<Pattern>,
    pub since: time::OffsetDateTime,
    pub next_update: Option<time::OffsetDateTime>,
    pub until: Option<time::OffsetDateTime>,
    /// The notice for acknowledgements, by language.
    pub text: BTreeMap<String, String>,
}

impl Incident {
    pub fn active_at(&self, now: time::OffsetDateTime) -> bool {
        self.since <= now && self.until.is_none_or(|u| now < u)
    }

    pub fn text_in(&self, lang: &str) -> &str {
        self.text
            .get(lang)
            .or_else(|| self.text.values().next())
            .map(String::as_str)
            .unwrap_or("")
    }
}

pub(super) fn compile_rules(
    c: &mut Collector<'_>,
    raw: Vec<Spanned<raw::Rule>>,
    categories: &BTreeMap<String, Category>,
) -> Vec<Rule> {
    let mut names = UniqueNames::new("rules", "rule");
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| compile_rule(c, i, r, categories, &mut names))
        .collect()
}

fn compile_rule(
    c: &mut Collector<'_>,
    i: usize,
    r: Spanned<raw::Rule>,
    categories: &BTreeMap<String, Category>,
    names: &mut UniqueNames,
) -> Rule {
    let rspan = span(&r);
    let r = r.into_inner();
    let base = format!("rules[{i}]");
    let name = r.name.get_ref().clone();
    names.check(c, i, &r.name);
    if !categories.contains_key(r.category.get_ref()) {
        c.at(
            span(&r.category),
            format!("{base}.category"),
            format!("rule {name:?}: unknown category {:?}", r.category.get_ref()),
        );
    }
    let patterns = compile_patterns(
        c,
        &base,
        &format!("rule {name:?}"),
        rspan,
        PatternSource {
            subject: &r.subject,
            body: &r.body,
            sender: &r.sender,
            headers: &r.headers,
        },
    );
    let all = match_all(c, &base, &name, r.match_mode.as_ref(), patterns.len());
    Rule {
        name,
        category: r.category.into_inner(),
        priority: r.priority,
        patterns,
        all,
    }
}

/// A rule's `match`: `"any"` (the default) or `"all"`. `"all"` on a rule with one
/// pattern is no mistake in the file but says something the rule does not do.
fn match_all(
    c: &mut Collector<'_>,
    base: &str,
    name: &str,
    mode: Option<&Spanned<String>>,
    patterns: usize,
) -> bool {
    let Some(mode) = mode else {
        return false;
    };
    let key = format!("{base}.match");
    match mode.get_ref().as_str() {
        "any" => false,
        "all" => {
            if patterns == 1 {
                c.warn_at(
                    span(mode),
                    key,
                    format!("rule {name:?} has one pattern, so match = \"all\" changes nothing; add the pattern that must match as well (a `sender`, say), or remove the key"),
                );
            }
            true
        }
        other => {
            c.at(
                span(mode),
                key,
                format!("rule {name:?}: match must be \"any\" (one pattern that matches fires the rule, the default) or \"all\" (every pattern must match); {other:?} is neither"),
            );
            false
        }
    }
}

/// The languages whose `detect` compiles; the others are reported.
pub(super) fn compile_languages(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Language>>,
) -> Vec<Language> {
    let mut languages = Vec::new();
    for (code, l) in raw {
        let l = l.into_inner();
        let key = format!("languages.{code}.detect");
        if let Some(detect) = compile_regex(c, &key, &format!("language {code:?}"), &l.detect) {
            let class = single_class(detect.as_str()).map(CharClass::new);
            languages.push(Language {
                code,
                detect,
                class,
            });
        }
    }
    languages
}

/// The red flags as rules whose category is the flag's name, and each flag's reason in
/// words by language. Flags need an `[escalation]` queue to send flagged mail to.
pub(super) fn compile_flags(
    c: &mut Collector<'_>,
    raw: Vec<Spanned<raw::Flag>>,
    has_escalation: bool,
) -> (Vec<Rule>, BTreeMap<String, BTreeMap<String, String>>) {
    let mut flags: Vec<Rule> = Vec::new();
    let mut reasons = BTreeMap::new();
    for (i, fl) in raw.into_iter().enumerate() {
        let (flag, reason) = compile_flag(c, i, fl, &flags);
        reasons.insert(flag.name.clone(), reason);
        flags.push(flag);
    }
    if !flags.is_empty() && !has_escalation {
        c.at(
            None,
            "escalation",
            "[[flags]] are declared but there is no [escalation] queue to send flagged mail to",
        );
    }
    (flags, reasons)
}

/// `before` are the flags compiled so far: a name is used once.
fn compile_flag(
    c: &mut Collector<'_>,
    i: usize,
    fl: Spanned<raw::Flag>,
    before: &[Rule],
) -> (Rule, BTreeMap<String, String>) {
    let at = span(&fl);
    let fl = fl.into_inner();
    let base = format!("flags[{i}]");
    let name = fl.name.get_ref().clone();
    let patterns = compile_patterns(
        c,
        &base,
        &format!("flag {name:?}"),
        at,
        PatternSource {
            subject: &fl.subject,
            body: &fl.body,
            sender: &fl.sender,
            headers: &fl.headers,
        },
    );
    if before.iter().any(|r| r.category == name) {
        c.at(
            span(&fl.name),
            format!("{base}.name"),
            format!("flag name {name:?} is used twice"),
        );
    }
    let flag = Rule {
        name: name.clone(),
        category: name,
        priority: 1,
        patterns,
        all: false,
    };
    (flag, fl.reason)
}

/// The incidents whose `since` is a valid time; every mistake is reported.
pub(super) fn compile_incidents(
    c: &mut Collector<'_>,
    raw: Vec<Spanned<raw::Incident>>,
) -> Vec<Incident> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, inc)| compile_incident(c, i, inc))
        .collect()
}

fn compile_incident(
    c: &mut Collector<'_>,
    i: usize,
    inc: Spanned<raw::Incident>,
) -> Option<Incident> {
    let at = span(&inc);
    let inc = inc.into_inner();
    let base = format!("incidents[{i}]");
    let id = inc.id.get_ref().clone();
    let patterns = compile_patterns(
        c,
        &base,
        &format!("incident {id:?}"),
        at,
        PatternSource {
            subject: &inc.subject,
            body: &inc.body,
            sender: &None,
            headers: &BTreeMap::new(),
        },
    );
    let since = datetime_key(c, &format!("{base}.since"), &inc.since);
    let next_update = optional_datetime_key(c, &format!("{base}.next_update"), &inc.next_update);
    let until = optional_datetime_key(c, &format!("{base}.until"), &inc.until);
    if inc.text.is_empty() {
        c.at(
            span(&inc.id),
            format!("{base}.text"),
            "needs the notice in at least one language",
        );
    }
    Some(Incident {
        id,
        patterns,
        since: since?,
        next_update,
        until,
        text: inc.text,
    })
}

/// "[#T-1042]" as sent, and what people and other systems make of it: "[T-1042]",
/// "#T-1042", "T-1042", "T1042". The bare forms are only trusted for the same customer.
pub(super) fn ticket_tag(prefix: &str) -> Regex {
    Regex::new(&format!(
        r"(?i)(\[\s*#?\s*|#|\b){}-?(\d{{3,}})\b\s*\]?",
        regex::escape(prefix)
    ))
    .expect("an escaped prefix makes a valid regex")
}
