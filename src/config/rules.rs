//! `rules.toml`: the file admins edit. It is read into plain serde structs (`raw`), then
//! checked and compiled into [`Rules`], the immutable value that classify, decide and
//! compose read. Every regex and template is compiled here, at load, and every mistake
//! is reported with its file, key path and line.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use sha2::Digest;
use toml::Spanned;

use super::error::{Collector, ConfigErrors};
use crate::classify::matcher::Matchers;

/// Regexes are compiled with a bounded size so a pathological pattern is a load error,
/// not a memory blow-up at run time.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

mod raw {
    use super::*;

    #[derive(Deserialize)]
    pub struct File {
        pub company: Spanned<Company>,
        #[serde(default)]
        pub queues: BTreeMap<String, Spanned<Queue>>,
        #[serde(default)]
        pub categories: BTreeMap<String, Spanned<Category>>,
        #[serde(default)]
        pub mailboxes: BTreeMap<String, Spanned<Mailbox>>,
        #[serde(default)]
        pub rules: Vec<Spanned<Rule>>,
        #[serde(default)]
        pub languages: BTreeMap<String, Spanned<Language>>,
        #[serde(default)]
        pub templates: BTreeMap<String, Spanned<Templates>>,
        pub escalation: Option<Spanned<Escalation>>,
        #[serde(default)]
        pub threading: Threading,
        #[serde(default)]
        pub flags: Vec<Spanned<Flag>>,
        #[serde(default)]
        pub incidents: Vec<Spanned<Incident>>,
        #[serde(default)]
        pub tests: Vec<Spanned<RuleTest>>,
    }

    /// A sample message and what the rules must do with it; run by `check` and before
    /// every reload.
    #[derive(Deserialize)]
    pub struct RuleTest {
        pub name: Spanned<String>,
        pub mailbox: Spanned<String>,
        #[serde(default)]
        pub subject: String,
        #[serde(default)]
        pub body: String,
        #[serde(default = "default_test_sender")]
        pub sender: Spanned<String>,
        #[serde(default)]
        pub headers: BTreeMap<String, String>,
        pub expect: Spanned<Expect>,
    }

    fn default_test_sender() -> Spanned<String> {
        Spanned::new(0..0, "Customer <customer@example.com>".to_string())
    }

    #[derive(Deserialize)]
    pub struct Expect {
        pub action: Option<Spanned<String>>,
        pub queue: Option<Spanned<String>>,
        pub category: Option<Spanned<String>>,
        pub forwarded: Option<bool>,
        pub ack: Option<bool>,
        pub flags: Option<Vec<Spanned<String>>>,
    }

    #[derive(Deserialize)]
    pub struct Escalation {
        pub queue: Spanned<String>,
        #[serde(default = "default_max_hops")]
        pub max_hops: usize,
        #[serde(default = "default_marker")]
        pub marker: String,
    }

    fn default_max_hops() -> usize {
        2
    }
    fn default_marker() -> String {
        "[ESCALATED]".into()
    }

    #[derive(Deserialize, Default)]
    pub struct Threading {
        pub followup_check: Option<Spanned<String>>,
        pub subject_window: Option<Spanned<String>>,
        pub added_ack_window: Option<Spanned<String>>,
        pub status_window: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    pub struct Flag {
        pub name: Spanned<String>,
        #[serde(default)]
        pub reason: BTreeMap<String, String>,
        pub subject: Option<Spanned<String>>,
        pub body: Option<Spanned<String>>,
        pub sender: Option<Spanned<String>>,
        #[serde(default)]
        pub headers: BTreeMap<String, Spanned<String>>,
    }

    #[derive(Deserialize)]
    pub struct Incident {
        pub id: Spanned<String>,
        pub subject: Option<Spanned<String>>,
        pub body: Option<Spanned<String>>,
        pub since: Spanned<String>,
        pub next_update: Option<Spanned<String>>,
        pub until: Option<Spanned<String>>,
        pub text: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    pub struct Company {
        pub name: String,
        pub domain: Spanned<String>,
        #[serde(default = "default_prefix")]
        pub ticket_prefix: Spanned<String>,
        pub ack_from: Spanned<String>,
        #[serde(default = "default_language")]
        pub default_language: Spanned<String>,
        #[serde(default = "default_ack_cap")]
        pub acks_per_sender_per_day: u32,
        #[serde(default)]
        pub trusted_authserv_ids: Vec<String>,
        pub max_message_size: Option<Spanned<String>>,
    }

    fn default_ack_cap() -> u32 {
        5
    }

    fn default_prefix() -> Spanned<String> {
        Spanned::new(0..0, "T".to_string())
    }
    fn default_language() -> Spanned<String> {
        Spanned::new(0..0, "en".to_string())
    }

    #[derive(Deserialize)]
    pub struct Queue {
        pub address: Spanned<String>,
        pub name: BTreeMap<String, String>,
        pub response_time: Spanned<String>,
        pub business_hours: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    pub struct Category {
        #[serde(default)]
        pub queue: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    pub struct Mailbox {
        pub address: Spanned<String>,
        #[serde(default)]
        pub queue: Option<Spanned<String>>,
        #[serde(default)]
        pub handles: Vec<Spanned<String>>,
        #[serde(default = "keep")]
        pub unmatched: Spanned<String>,
        #[serde(default)]
        pub forwarded_folder: Option<String>,
        #[serde(default)]
        pub shadow: bool,
    }

    fn keep() -> Spanned<String> {
        Spanned::new(0..0, "keep".to_string())
    }

    #[derive(Deserialize)]
    pub struct Rule {
        pub name: Spanned<String>,
        pub category: Spanned<String>,
        #[serde(default = "default_priority")]
        pub priority: i32,
        pub subject: Option<Spanned<String>>,
        pub body: Option<Spanned<String>>,
        pub sender: Option<Spanned<String>>,
        #[serde(default)]
        pub headers: BTreeMap<String, Spanned<String>>,
    }

    fn default_priority() -> i32 {
        10
    }

    #[derive(Deserialize)]
    pub struct Language {
        pub detect: Spanned<String>,
    }

    #[derive(Deserialize)]
    pub struct Templates {
        pub note: Spanned<String>,
        pub ack_subject: Spanned<String>,
        pub ack: Spanned<String>,
        pub added_subject: Spanned<String>,
        pub added: Spanned<String>,
        pub reminder_subject: Spanned<String>,
        pub reminder: Spanned<String>,
        pub status_subject: Spanned<String>,
        pub status: Spanned<String>,
    }
}

/// The whole compiled rule set. Cheap to share (`Arc`) and never changed once built.
#[derive(Debug)]
pub struct Rules {
    pub company: Company,
    pub queues: BTreeMap<String, Queue>,
    pub categories: BTreeMap<String, Category>,
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub rules: Vec<Rule>,
    pub languages: Vec<Language>,
    pub templates: Templates,
    /// The patterns of `rules`, then `flags`, then `incidents`, compiled for classify's
    /// one scan per field: a hit's entry index counts through the three lists in turn.
    pub matchers: Matchers,
    /// Finds ticket tags such as `[#T-1042]` in subjects (also `[T-1042]`, `#T-1042`,
    /// `T1042`, any case).
    pub ticket_tag: Regex,
    /// Where bounced tickets and red flags go; `None` when not configured.
    pub escalation: Option<Escalation>,
    pub threading: Threading,
    /// Red-flag rules: `category` holds the flag's name.
    pub flags: Vec<Rule>,
    /// Reason of each flag in words, by flag name then language.
    pub flag_reasons: BTreeMap<String, BTreeMap<String, String>>,
    pub incidents: Vec<Incident>,
    /// The rule tests of the file, already run once when it was loaded.
    pub tests: Vec<RuleTest>,
    /// Design mistakes that do not stop loading; `check` prints them.
    pub warnings: Vec<super::ConfigError>,
    /// Short digest of the file's text: tells which rules a running daemon uses.
    pub version: String,
}

/// One `[[tests]]` entry: a message built from `subject`, `body`, `sender` and
/// `headers`, sent through `pipeline::explain` with no state.
#[derive(Debug, Clone)]
pub struct RuleTest {
    pub name: String,
    /// Index in `[[tests]]`, for the key path in errors.
    pub index: usize,
    pub span: Option<Range<usize>>,
    pub mailbox: String,
    pub subject: String,
    pub body: String,
    pub sender: String,
    pub headers: BTreeMap<String, String>,
    pub expect: Expect,
}

/// What a rule test expects; keys left out are not checked.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// "forward", "keep", "leave", "ignore".
    pub action: Option<String>,
    pub queue: Option<String>,
    pub category: Option<String>,
    pub forwarded: Option<bool>,
    pub ack: Option<bool>,
    /// The red flags that fire, all of them (order does not matter).
    pub flags: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Escalation {
    /// The queue (e.g. a supervisor) that gets bounced tickets and copies of flagged mail.
    pub queue: String,
    /// Handovers a ticket may make before it goes to `queue` instead.
    pub max_hops: usize,
    /// Put in front of the subject of a flagged forward.
    pub marker: String,
}

#[derive(Debug, Clone)]
pub struct Threading {
    /// How often open tickets are checked for overdue answers.
    pub followup_check: Duration,
    /// A message from the same sender with the same subject joins a ticket this recent.
    pub subject_window: Duration,
    /// At most one "added to your request" mail per ticket in this window.
    pub added_ack_window: Duration,
    /// At most one status mail to the customer per ticket in this window.
    pub status_window: Duration,
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

#[derive(Debug, Clone)]
pub struct Company {
    pub name: String,
    pub domain: String,
    pub ticket_prefix: String,
    /// The From of acknowledgements, as written (`Name <addr>`).
    pub ack_from: String,
    pub default_language: String,
    /// At most this many acknowledgements to one sender per day (UTC): a cap that stops
    /// any loop the RFC 3834 checks miss.
    pub acks_per_sender_per_day: u32,
    /// Authentication-Results from these servers (their authserv-id) are believed: a
    /// message they say fails DMARC gets no acknowledgement (its sender may be forged).
    pub trusted_authserv_ids: Vec<String>,
    /// Bigger messages are forwarded with a note without their body being read.
    pub max_message_size: usize,
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub key: String,
    pub address: String,
    /// Display name per language code.
    pub names: BTreeMap<String, String>,
    pub response_time: Duration,
    /// When reminders and status mails may go out; always when `None`.
    pub business_hours: Option<BusinessHours>,
}

/// "Mon-Fri 09:00-18:00 +03:00": the days, the time of day and the UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    pub from_minute: u16,
    pub to_minute: u16,
    pub offset: time::UtcOffset,
}

impl BusinessHours {
    pub fn parse(s: &str) -> Result<BusinessHours, String> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, hours, rest @ ..] = parts.as_slice() else {
            return Err("write e.g. \"Mon-Fri 09:00-18:00 +03:00\"".into());
        };
        let day = |d: &str| {
            NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("unknown day {d:?} (Mon..Sun)"))
        };
        let mut set = [false; 7];
        for range in days.split(',') {
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        set[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => set[day(range)?] = true,
            }
        }
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| format!("time {t:?} is not HH:MM"))?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| format!("time {t:?}"))?,
                m.parse().map_err(|_| format!("time {t:?}"))?,
            );
            if h > 24 || m > 59 {
                return Err(format!("time {t:?} out of range"));
            }
            Ok(h * 60 + m)
        };
        let (from, to) = hours
            .split_once('-')
            .ok_or("hours are written 09:00-18:00")?;
        let offset = match rest.first() {
            None => time::UtcOffset::UTC,
            Some(o) => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let o = o.trim_start_matches(['+', '-']);
                let (h, m) = o.split_once(':').unwrap_or((o, "0"));
                let h: i8 = h.parse().map_err(|_| format!("offset {o:?}"))?;
                let m: i8 = m.parse().map_err(|_| format!("offset {o:?}"))?;
                time::UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|e| e.to_string())?
            }
        };
        Ok(BusinessHours {
            days: set,
            from_minute: minute(from)?,
            to_minute: minute(to)?,
            offset,
        })
    }

    pub fn open_at(&self, now: time::OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        let day = local.weekday().number_days_from_monday() as usize;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.days[day] && minute >= self.from_minute && minute < self.to_minute
    }
}

impl Queue {
    /// The queue's name in `lang`, falling back to any name it has.
    pub fn name_in(&self, lang: &str) -> &str {
        self.names
            .get(lang)
            .or_else(|| self.names.values().next())
            .map(String::as_str)
            .unwrap_or(&self.key)
    }
}

#[derive(Debug, Clone)]
pub struct Category {
    pub key: String,
    /// The queue that owns such requests; `None` for mail that is not a customer
    /// request (monitoring alerts, say), which stays where it arrived.
    pub queue: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    /// Mail no rule recognises stays in the mailbox, owned by the mailbox's queue.
    Keep,
    /// Mail no rule recognises is forwarded to this queue.
    Forward(String),
}

#[derive(Debug, Clone)]
pub struct Mailbox {
    pub key: String,
    pub address: String,
    /// The queue whose team reads this mailbox; `None` when no team answers customers
    /// from it (everything recognised is forwarded, the rest goes to `unmatched`).
    pub queue: Option<String>,
    /// Categories whose requests stay here.
    pub handles: Vec<String>,
    pub unmatched: Unmatched,
    pub forwarded_folder: Option<String>,
    /// Shadow mode: decide and record, send nothing, mark nothing on the server.
    pub shadow: bool,
}

/// Which part of a message a pattern looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Subject,
    Body,
    Sender,
    /// A named header, lower-cased.
    Header(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Subject => f.write_str("subject"),
            Field::Body => f.write_str("body"),
            Field::Sender => f.write_str("sender"),
            Field::Header(h) => write!(f, "header {h}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pattern {
    pub field: Field,
    /// The regex as written, checked when the file was loaded; `matcher` compiles it
    /// into the form classify runs.
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub category: String,
    pub priority: i32,
    pub patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
pub struct Language {
    pub code: String,
    pub detect: Regex,
    /// `detect` when it is one character class: counted per character, with no regex
    /// search per match.
    pub class: Option<crate::classify::matcher::CharClass>,
}

/// Templates compiled into one minijinja environment; names are `LANG/note`,
/// `LANG/ack_subject`, `LANG/ack`.
pub struct Templates {
    pub env: minijinja::Environment<'static>,
    pub languages: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("languages", &self.languages)
            .finish()
    }
}

impl Rules {
    /// Reads and compiles a rules file.
    pub fn load(path: &Path) -> Result<Rules, ConfigErrors> {
        let text = super::error::read(path)?;
        Self::parse(path, &text)
    }

    /// Compiles rules from text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Rules, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let Some(file) = c.parse::<raw::File>(text) else {
            return Err(ConfigErrors(c.errors));
        };
        let mut rules = compile(&mut c, file);
        rules.version = format!("{:x}", sha2::Sha256::digest(text.as_bytes()))[..12].to_string();
        // The tests need rules that compiled; with errors already found they would
        // only repeat them.
        if c.errors.is_empty() {
            super::ruletest::run_all(&mut c, &rules);
        }
        rules.warnings = std::mem::take(&mut c.warnings);
        c.finish(rules)
    }

    /// The queue a category routes to.
    pub fn queue_of_category(&self, category: &str) -> Option<&Queue> {
        self.categories
            .get(category)
            .and_then(|c| c.queue.as_ref())
            .and_then(|q| self.queues.get(q))
    }

    /// The watched mailbox with this address, if any.
    pub fn mailbox_by_address(&self, address: &str) -> Option<&Mailbox> {
        self.mailboxes
            .values()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    let r = s.span();
    (r.end > 0).then_some(r)
}

fn compile_regex(
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
            // The size of what a pattern can match tells two design mistakes apart
            // from a working pattern: nothing at all, or the empty string (it then
            // fires on every message).
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
            Some(r)
        }
        Err(e) => {
            c.at(span(pat), key, format!("{what}: bad regex: {e}"));
            None
        }
    }
}

/// "25MB", "512 KiB", "1000000": sizes as admins write them.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("not a size: {s:?}; write e.g. \"25MB\""))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?}; use KB, MB or GB")),
    };
    Ok(n * mult)
}

fn looks_like_address(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace),
        None => false,
    }
}

fn compile(c: &mut Collector<'_>, f: raw::File) -> Rules {
    let co = f.company.into_inner();
    if !looks_like_address(&format!("x@{}", co.domain.get_ref())) {
        c.at(span(&co.domain), "company.domain", "not a domain name");
    }
    if co.ticket_prefix.get_ref().is_empty()
        || !co
            .ticket_prefix
            .get_ref()
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric())
    {
        c.at(
            span(&co.ticket_prefix),
            "company.ticket_prefix",
            "must be ASCII letters or digits (it becomes part of subjects and Message-IDs)",
        );
    }
    if co
        .ack_from
        .get_ref()
        .parse::<lettre::message::Mailbox>()
        .is_err()
    {
        c.at(
            span(&co.ack_from),
            "company.ack_from",
            "not an address (write \"Name <user@example.com>\" or \"user@example.com\")",
        );
    }
    if !f.languages.is_empty() && !f.languages.contains_key(co.default_language.get_ref()) {
        c.at(
            span(&co.default_language),
            "company.default_language",
            format!(
                "language {:?} is not declared in [languages]",
                co.default_language.get_ref()
            ),
        );
    }
    let company = Company {
        name: co.name,
        domain: co.domain.into_inner(),
        ticket_prefix: co.ticket_prefix.into_inner(),
        ack_from: co.ack_from.into_inner(),
        default_language: co.default_language.into_inner(),
        acks_per_sender_per_day: co.acks_per_sender_per_day,
        trusted_authserv_ids: co
            .trusted_authserv_ids
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
        max_message_size: match &co.max_message_size {
            None => 25 << 20,
            Some(v) => parse_size(v.get_ref()).unwrap_or_else(|e| {
                c.at(span(v), "company.max_message_size", e);
                25 << 20
            }),
        },
    };

    let mut queues = BTreeMap::new();
    if f.queues.is_empty() {
        c.at(
            None,
            "queues",
            "no queue is declared; at least one [queues.NAME] is needed",
        );
    }
    for (key, q) in f.queues {
        let qspan = span(&q);
        let q = q.into_inner();
        let base = format!("queues.{key}");
        if !looks_like_address(q.address.get_ref()) {
            c.at(
                span(&q.address),
                format!("{base}.address"),
                "not an e-mail address",
            );
        }
        if q.name.is_empty() {
            c.at(
                qspan,
                format!("{base}.name"),
                "needs at least one display name, e.g. { en = \"Billing\" }",
            );
        }
        let response_time = match humantime::parse_duration(q.response_time.get_ref()) {
            Ok(d) if d.as_secs() > 0 => d,
            Ok(_) => {
                c.at(
                    span(&q.response_time),
                    format!("{base}.response_time"),
                    "must be longer than zero",
                );
                Duration::from_secs(1)
            }
            Err(e) => {
                c.at(
                    span(&q.response_time),
                    format!("{base}.response_time"),
                    format!("not a duration ({e}); write e.g. \"4h\", \"1d\", \"30m\""),
                );
                Duration::from_secs(1)
            }
        };
        let business_hours =
            q.business_hours
                .as_ref()
                .and_then(|b| match BusinessHours::parse(b.get_ref()) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        c.at(span(b), format!("{base}.business_hours"), e);
                        None
                    }
                });
        queues.insert(
            key.clone(),
            Queue {
                key,
                address: q.address.into_inner().trim().to_string(),
                names: q.name,
                response_time,
                business_hours,
            },
        );
    }

    let mut categories = BTreeMap::new();
    for (key, cat) in f.categories {
        let cat = cat.into_inner();
        if let Some(q) = &cat.queue {
            if !queues.contains_key(q.get_ref()) {
                c.at(
                    span(q),
                    format!("categories.{key}.queue"),
                    format!("unknown queue {:?}", q.get_ref()),
                );
            }
        }
        categories.insert(
            key.clone(),
            Category {
                key,
                queue: cat.queue.map(Spanned::into_inner),
            },
        );
    }

    let mut mailboxes = BTreeMap::new();
    if f.mailboxes.is_empty() {
        c.at(
            None,
            "mailboxes",
            "no mailbox is declared; at least one [mailboxes.NAME] is needed",
        );
    }
    for (key, m) in f.mailboxes {
        let m = m.into_inner();
        let base = format!("mailboxes.{key}");
        if !looks_like_address(m.address.get_ref()) {
            c.at(
                span(&m.address),
                format!("{base}.address"),
                "not an e-mail address",
            );
        }
        if let Some(q) = &m.queue {
            if !queues.contains_key(q.get_ref()) {
                c.at(
                    span(q),
                    format!("{base}.queue"),
                    format!("unknown queue {:?}", q.get_ref()),
                );
            }
        }
        for (i, h) in m.handles.iter().enumerate() {
            if !categories.contains_key(h.get_ref()) {
                c.at(
                    span(h),
                    format!("{base}.handles[{i}]"),
                    format!("unknown category {:?}", h.get_ref()),
                );
            }
        }
        let unmatched = match m.unmatched.get_ref().as_str() {
            "keep" if m.queue.is_none() => {
                c.at(
                    span(&m.unmatched).or(span(&m.address)),
                    format!("{base}.unmatched"),
                    "a mailbox without `queue` cannot keep unrecognised mail: name the queue it goes to",
                );
                Unmatched::Keep
            }
            "keep" => Unmatched::Keep,
            q if queues.contains_key(q) => Unmatched::Forward(q.to_string()),
            q => {
                c.at(
                    span(&m.unmatched),
                    format!("{base}.unmatched"),
                    format!("must be \"keep\" or a queue name; {q:?} is neither"),
                );
                Unmatched::Keep
            }
        };
        mailboxes.insert(
            key.clone(),
            Mailbox {
                key,
                address: m.address.into_inner().trim().to_string(),
                queue: m.queue.map(Spanned::into_inner),
                handles: m.handles.into_iter().map(Spanned::into_inner).collect(),
                unmatched,
                forwarded_folder: m.forwarded_folder,
                shadow: m.shadow,
            },
        );
    }

    let mut rules = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in f.rules.into_iter().enumerate() {
        let rspan = span(&r);
        let r = r.into_inner();
        let base = format!("rules[{i}]");
        let name = r.name.get_ref().clone();
        if let Some(prev) = names.insert(name.clone(), i) {
            c.at(
                span(&r.name),
                format!("{base}.name"),
                format!("rule name {name:?} is already used by rules[{prev}]"),
            );
        }
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
        rules.push(Rule {
            name,
            category: r.category.into_inner(),
            priority: r.priority,
            patterns,
        });
    }

    let mut languages = Vec::new();
    for (code, l) in f.languages {
        let l = l.into_inner();
        if let Some(detect) = compile_regex(
            c,
            &format!("languages.{code}.detect"),
            &format!("language {code:?}"),
            &l.detect,
        ) {
            let class = crate::classify::matcher::single_class(detect.as_str())
                .map(crate::classify::matcher::CharClass::new);
            languages.push(Language {
                code,
                detect,
                class,
            });
        }
    }

    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Mail text is plain text: no HTML escaping of the customer's words.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let mut template_langs = Vec::new();
    if !f.templates.contains_key(&company.default_language) {
        c.at(
            None,
            "templates",
            format!(
                "no [templates.{}] for company.default_language",
                company.default_language
            ),
        );
    }
    let sample = crate::compose::TemplateContext::sample();
    for (lang, t) in f.templates {
        let t = t.into_inner();
        for (which, src) in [
            ("note", t.note),
            ("ack_subject", t.ack_subject),
            ("ack", t.ack),
            ("added_subject", t.added_subject),
            ("added", t.added),
            ("reminder_subject", t.reminder_subject),
            ("reminder", t.reminder),
            ("status_subject", t.status_subject),
            ("status", t.status),
        ] {
            let s = span(&src);
            let name = format!("{lang}/{which}");
            if let Err(e) = env.add_template_owned(name.clone(), src.into_inner()) {
                c.at(
                    s,
                    format!("templates.{lang}.{which}"),
                    format!("template error: {e}"),
                );
                continue;
            }
            // Rendered once with sample values: an unknown variable or a bad filter is
            // found now, not when the first customer writes.
            if let Err(e) = env.get_template(&name).and_then(|t| t.render(&sample)) {
                c.at(
                    s,
                    format!("templates.{lang}.{which}"),
                    format!("template error: {e}"),
                );
            }
        }
        template_langs.push(lang);
    }

    let escalation = f.escalation.map(|e| {
        let e = e.into_inner();
        if !queues.contains_key(e.queue.get_ref()) {
            c.at(
                span(&e.queue),
                "escalation.queue",
                format!("unknown queue {:?}", e.queue.get_ref()),
            );
        }
        Escalation {
            queue: e.queue.into_inner(),
            max_hops: e.max_hops,
            marker: e.marker,
        }
    });
    let threading = Threading {
        followup_check: duration_key(
            c,
            "threading.followup_check",
            &f.threading.followup_check,
            Duration::from_secs(60),
        ),
        subject_window: duration_key(
            c,
            "threading.subject_window",
            &f.threading.subject_window,
            Duration::from_secs(7 * 86400),
        ),
        added_ack_window: duration_key(
            c,
            "threading.added_ack_window",
            &f.threading.added_ack_window,
            Duration::from_secs(86400),
        ),
        status_window: duration_key(
            c,
            "threading.status_window",
            &f.threading.status_window,
            Duration::from_secs(86400),
        ),
    };

    let mut flags: Vec<Rule> = Vec::new();
    let mut flag_reasons = BTreeMap::new();
    for (i, fl) in f.flags.into_iter().enumerate() {
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
        if flags.iter().any(|r| r.category == name) {
            c.at(
                span(&fl.name),
                format!("{base}.name"),
                format!("flag name {name:?} is used twice"),
            );
        }
        flag_reasons.insert(name.clone(), fl.reason);
        flags.push(Rule {
            name: name.clone(),
            category: name,
            priority: 1,
            patterns,
        });
    }
    if !flags.is_empty() && escalation.is_none() {
        c.at(
            None,
            "escalation",
            "[[flags]] are declared but there is no [escalation] queue to send flagged mail to",
        );
    }

    let mut incidents = Vec::new();
    for (i, inc) in f.incidents.into_iter().enumerate() {
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
        let next_update = inc
            .next_update
            .as_ref()
            .and_then(|v| datetime_key(c, &format!("{base}.next_update"), v));
        let until = inc
            .until
            .as_ref()
            .and_then(|v| datetime_key(c, &format!("{base}.until"), v));
        if inc.text.is_empty() {
            c.at(
                span(&inc.id),
                format!("{base}.text"),
                "needs the notice in at least one language",
            );
        }
        if let Some(since) = since {
            incidents.push(Incident {
                id,
                patterns,
                since,
                next_update,
                until,
                text: inc.text,
            });
        }
    }
    // One scan per field for all three lists: the automaton's cost is per byte of text
    // read, hardly per pattern, so three scans cost three times one.
    let matchers = matchers_of(
        c,
        "rules, flags and incidents",
        rules
            .iter()
            .chain(&flags)
            .map(|r| &r.patterns[..])
            .chain(incidents.iter().map(|i| &i.patterns[..])),
    );
    // "[#T-1042]" as sent, and what people and other systems make of it: "[T-1042]",
    // "#T-1042", "T-1042", "T1042". The bare forms are only trusted for the same customer.
    let ticket_tag = Regex::new(&format!(
        r"(?i)(\[\s*#?\s*|#|\b){}-?(\d{{3,}})\b\s*\]?",
        regex::escape(&company.ticket_prefix)
    ))
    .expect("an escaped prefix makes a valid regex");
    let tests = compile_tests(c, f.tests, &queues, &categories, &mailboxes, &flags);
    design_warnings(
        c,
        &queues,
        &categories,
        &mailboxes,
        &rules,
        escalation.as_ref(),
        tests.is_empty(),
    );
    Rules {
        tests,
        warnings: Vec::new(),
        version: String::new(),
        escalation,
        threading,
        flags,
        flag_reasons,
        incidents,
        ticket_tag,
        company,
        queues,
        categories,
        mailboxes,
        rules,
        languages,
        templates: Templates {
            env,
            languages: template_langs,
        },
        matchers,
    }
}

/// Checks the `[[tests]]` entries against the declared names; they are run once the
/// whole file has compiled.
fn compile_tests(
    c: &mut Collector<'_>,
    raw: Vec<Spanned<raw::RuleTest>>,
    queues: &BTreeMap<String, Queue>,
    categories: &BTreeMap<String, Category>,
    mailboxes: &BTreeMap<String, Mailbox>,
    flags: &[Rule],
) -> Vec<RuleTest> {
    let mut tests = Vec::new();
    let mut names = BTreeMap::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = span(&t);
        let t = t.into_inner();
        let base = format!("tests[{i}]");
        let name = t.name.get_ref().clone();
        if let Some(prev) = names.insert(name.clone(), i) {
            c.at(
                span(&t.name),
                format!("{base}.name"),
                format!("test name {name:?} is already used by tests[{prev}]"),
            );
        }
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
                at.clone(),
                base.clone(),
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
        let espan = span(&t.expect);
        let e = t.expect.into_inner();
        if let Some(a) = &e.action {
            if !["forward", "keep", "leave", "ignore"].contains(&a.get_ref().as_str()) {
                c.at(
                    span(a),
                    format!("{base}.expect.action"),
                    format!(
                        "test {name:?}: action {:?} is not one of forward, keep, leave, ignore",
                        a.get_ref()
                    ),
                );
            }
        }
        if let Some(q) = &e.queue {
            if !queues.contains_key(q.get_ref()) {
                c.at(
                    span(q),
                    format!("{base}.expect.queue"),
                    format!("test {name:?}: unknown queue {:?}", q.get_ref()),
                );
            }
        }
        if let Some(k) = &e.category {
            if !categories.contains_key(k.get_ref()) {
                c.at(
                    span(k),
                    format!("{base}.expect.category"),
                    format!("test {name:?}: unknown category {:?}", k.get_ref()),
                );
            }
        }
        for (j, f) in e.flags.iter().flatten().enumerate() {
            if !flags.iter().any(|r| &r.name == f.get_ref()) {
                c.at(
                    span(f),
                    format!("{base}.expect.flags[{j}]"),
                    format!("test {name:?}: unknown flag {:?}", f.get_ref()),
                );
            }
        }
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
        if expect.action.is_none()
            && expect.queue.is_none()
            && expect.category.is_none()
            && expect.forwarded.is_none()
            && expect.ack.is_none()
            && expect.flags.is_none()
        {
            c.at(
                espan.or(at.clone()),
                format!("{base}.expect"),
                format!("test {name:?} expects nothing: give queue, action, category, forwarded, ack or flags"),
            );
        }
        tests.push(RuleTest {
            name,
            index: i,
            span: at,
            mailbox: t.mailbox.into_inner(),
            subject: t.subject,
            body: t.body,
            sender: t.sender.into_inner(),
            headers: t.headers,
            expect,
        });
    }
    tests
}

/// Warnings for a rule set that loads but cannot do what its author meant: names that
/// nothing uses, mailboxes no team reads, no tests.
fn design_warnings(
    c: &mut Collector<'_>,
    queues: &BTreeMap<String, Queue>,
    categories: &BTreeMap<String, Category>,
    mailboxes: &BTreeMap<String, Mailbox>,
    rules: &[Rule],
    escalation: Option<&Escalation>,
    no_tests: bool,
) {
    for q in queues.keys() {
        let routed = categories.values().any(|k| k.queue.as_ref() == Some(q))
            || mailboxes.values().any(|m| {
                m.queue.as_ref() == Some(q) || m.unmatched == Unmatched::Forward(q.clone())
            })
            || escalation.is_some_and(|e| &e.queue == q);
        if !routed {
            c.warn_key(
                format!("queues.{q}"),
                format!("no category, mailbox or escalation routes to queue {q:?}: it never gets mail; set `queue = {q:?}` on a category or mailbox, or remove it"),
            );
        }
    }
    for (k, cat) in categories {
        if !rules.iter().any(|r| &r.category == k) {
            c.warn_key(
                format!("categories.{k}"),
                format!("no rule has category {k:?}: no message is ever put in it; add a [[rules]] entry with category = {k:?}, or remove it"),
            );
        }
        if cat.queue.is_none() && !mailboxes.values().any(|m| m.handles.contains(k)) {
            for (i, r) in rules.iter().enumerate().filter(|(_, r)| &r.category == k) {
                c.warn_key(
                    format!("rules[{i}].category"),
                    format!("rule {:?}: category {k:?} has no queue and no mailbox handles it, so the rule routes nowhere (the message is left where it arrived); give the category a queue or list it in a mailbox's `handles`", r.name),
                );
            }
        }
    }
    for (k, m) in mailboxes {
        if m.queue.is_none() {
            c.warn_key(
                format!("mailboxes.{k}"),
                format!("mailbox {k:?} has no queue: no team answers from it, every recognised request is forwarded away and flagged mail is not kept there; set `queue` if a team reads {}", m.address),
            );
        }
    }
    if no_tests {
        c.warn_key(
            "tests",
            "no [[tests]]: add a few sample messages with the queue they must reach, so that `check` and every reload prove the rules still route them",
        );
    }
}

struct PatternSource<'a> {
    subject: &'a Option<Spanned<String>>,
    body: &'a Option<Spanned<String>>,
    sender: &'a Option<Spanned<String>>,
    headers: &'a BTreeMap<String, Spanned<String>>,
}

/// Compiles the patterns of a rule, flag or incident; `what` names it in errors.
fn compile_patterns(
    c: &mut Collector<'_>,
    base: &str,
    what: &str,
    at: Option<Range<usize>>,
    src: PatternSource<'_>,
) -> Vec<Pattern> {
    let mut patterns = Vec::new();
    let mut add = |c: &mut Collector<'_>, field: Field, key: String, pat: &Spanned<String>| {
        if compile_regex(c, &key, what, pat).is_some() {
            patterns.push(Pattern {
                field,
                source: pat.get_ref().clone(),
            });
        }
    };
    if let Some(p) = src.subject {
        add(c, Field::Subject, format!("{base}.subject"), p);
    }
    if let Some(p) = src.body {
        add(c, Field::Body, format!("{base}.body"), p);
    }
    if let Some(p) = src.sender {
        add(c, Field::Sender, format!("{base}.sender"), p);
    }
    for (h, p) in src.headers {
        add(
            c,
            Field::Header(h.to_ascii_lowercase()),
            format!("{base}.headers.{h}"),
            p,
        );
    }
    if src.subject.is_none() && src.body.is_none() && src.sender.is_none() && src.headers.is_empty()
    {
        c.at(
            at,
            base.to_string(),
            format!("{what} has no pattern (subject, body, sender or headers)"),
        );
    }
    patterns
}

fn duration_key(
    c: &mut Collector<'_>,
    key: &str,
    v: &Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                c.at(
                    span(s),
                    key,
                    format!("not a duration ({e}); write e.g. \"4h\", \"7d\""),
                );
                default
            }
        },
    }
}

fn datetime_key(
    c: &mut Collector<'_>,
    key: &str,
    v: &Spanned<String>,
) -> Option<time::OffsetDateTime> {
    match time::OffsetDateTime::parse(v.get_ref(), &time::format_description::well_known::Rfc3339) {
        Ok(t) => Some(t),
        Err(e) => {
            c.at(
                span(v),
                key,
                format!("not a date and time ({e}); write e.g. \"2026-11-23T10:40:00+03:00\""),
            );
            None
        }
    }
}

/// The patterns of a list (rules, flags or incidents), entry by entry, compiled for
/// classify; each hit names (entry index, pattern index).
fn matchers_of<'p>(
    c: &mut Collector<'_>,
    what: &str,
    entries: impl Iterator<Item = &'p [Pattern]>,
) -> Matchers {
    let patterns = entries.enumerate().flat_map(|(ei, patterns)| {
        patterns
            .iter()
            .enumerate()
            .map(move |(pi, p)| ((ei, pi), p))
    });
    Matchers::build(patterns, REGEX_SIZE_LIMIT).unwrap_or_else(|e| {
        c.at(None, what, e);
        Matchers::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_hours() {
        let b = BusinessHours::parse("Mon-Fri 09:00-18:00 +03:00").unwrap();
        let t = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert!(b.open_at(t("2026-11-23T06:00:00Z"))); // Monday 09:00 in Moscow
        assert!(!b.open_at(t("2026-11-23T05:59:00Z")));
        assert!(!b.open_at(t("2026-11-23T15:00:00Z"))); // 18:00 local: closed
        assert!(!b.open_at(t("2026-11-22T10:00:00Z"))); // Sunday
        assert!(BusinessHours::parse("Mon-Fry 09:00-18:00").is_err());
        let w = BusinessHours::parse("Sat,Sun 10:00-12:00").unwrap();
        assert!(w.open_at(t("2026-11-22T11:00:00Z")));
    }

    fn shipped() -> String {
        crate::config::testing::shipped_text()
    }

    #[test]
    fn shipped_rules_compile() {
        let r = Rules::parse(Path::new("rules.toml"), &shipped()).unwrap();
        assert_eq!(r.mailboxes.len(), 4);
        assert_eq!(r.queues.len(), 4);
        assert_eq!(r.flags.len(), 5);
        assert_eq!(r.escalation.as_ref().unwrap().queue, "supervisor");
        assert!(r.rules.len() >= 8);
        assert_eq!(
            r.queue_of_category("technical").unwrap().address,
            "support@example.test"
        );
    }

    #[test]
    fn all_semantic_errors_at_once_with_lines() {
        let text = shipped()
            .replace(
                "queue = \"billing\"\n[categories.sales]",
                "queue = \"nobody\"\n[categories.sales]",
            )
            .replacen("subject = '(?i)не", "subject = '(?i)(не", 1)
            .replace("response_time = \"1d\"", "response_time = \"soon\"");
        let err = Rules::parse(Path::new("x/rules.toml"), &text).unwrap_err();
        let msgs: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("categories.billing.queue")
                && m.contains("unknown queue \"nobody\"")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("rules[1].subject")
                    && m.contains("rule \"outage-ru\": bad regex")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("queues.billing.response_time")),
            "{msgs:#?}"
        );
        for e in &err.0 {
            assert!(e.to_string().starts_with("x/rules.toml"));
        }
        let bad_regex = err.0.iter().find(|e| e.key == "rules[1].subject").unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("subject = '(?i)(не"))
            .unwrap()
            + 1;
        assert_eq!(bad_regex.line, Some(line));
    }

    #[test]
    fn every_unknown_key_is_reported_with_the_semantic_errors() {
        let text = shipped()
            .replacen(
                "response_time = \"4h\"",
                "response_time = \"4h\"\nrespons_time = \"1h\"",
                1,
            )
            .replacen("priority = 30", "priority = 30\nprioirty = 5", 1)
            .replacen("[company]", "[company]\nnmae = \"x\"", 1);
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"queues.support.respons_time"), "{err}");
        assert!(keys.contains(&"rules[1].prioirty"), "{err}");
        assert!(keys.contains(&"company.nmae"), "{err}");
        for e in &err.0 {
            let line = e.line.expect("every unknown key has its line");
            let leaf = e.key.rsplit('.').next().unwrap();
            assert!(text.lines().nth(line - 1).unwrap().starts_with(leaf), "{e}");
        }
    }

    #[test]
    fn template_with_unknown_variable_is_a_load_error() {
        let text = shipped().replacen("{{ ticket }}", "{{ tikcet }}", 1);
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.key == "templates.en.note" && e.message.contains("template error")),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = shipped().replace("[queues.billing]\naddress", "[queues.billing]\nadress");
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "queues.billing.adress");
        assert!(e.message.contains("unknown key `adress`"), "{e}");
        let line = text.lines().position(|l| l.starts_with("adress")).unwrap() + 1;
        assert_eq!(e.line, Some(line));
    }
}
