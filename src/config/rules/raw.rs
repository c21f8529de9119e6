//! `rules.toml` as written: plain serde structs, one per table, that mirror the file an
//! admin edits. Nothing here is checked; the section modules beside it check and
//! compile each part into the types the rest of the program reads.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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
    pub calendar: Holidays,
    #[serde(default)]
    pub roles: Roles,
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

/// `[roles]`: who is staff, which domains are free mail.
#[derive(Deserialize, Default)]
pub struct Roles {
    pub staff: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub staff_authenticated: bool,
    #[serde(default)]
    pub freemail: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
pub struct Threading {
    pub followup_check: Option<Spanned<String>>,
    pub subject_window: Option<Spanned<String>>,
    pub added_ack_window: Option<Spanned<String>>,
    pub status_window: Option<Spanned<String>>,
    pub max_status_mails: Option<u32>,
    pub reminder_spread: Option<Spanned<String>>,
    pub resolve_after: Option<Spanned<String>>,
    pub reopen_within: Option<Spanned<String>>,
    pub retention: Option<Spanned<String>>,
    pub shadow_mails_kept: Option<Spanned<String>>,
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
    #[serde(default = "default_domain_cap")]
    pub acks_per_domain_per_hour: u32,
    #[serde(default = "default_hourly_cap")]
    pub acks_per_hour: u32,
    #[serde(default)]
    pub trusted_authserv_ids: Vec<String>,
    pub max_message_size: Option<Spanned<String>>,
    pub max_original_attached: Option<Spanned<String>>,
}

fn default_domain_cap() -> u32 {
    20
}

fn default_hourly_cap() -> u32 {
    300
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
    /// The queue's own days off, on top of `[calendar]`'s.
    #[serde(default)]
    pub holidays: Vec<Spanned<String>>,
    pub holidays_file: Option<Spanned<String>>,
}

/// Days nobody works: `[calendar]` for every queue, and a queue's own.
#[derive(Deserialize, Default)]
pub struct Holidays {
    #[serde(default)]
    pub holidays: Vec<Spanned<String>>,
    /// An iCalendar file of all-day events, beside rules.toml unless absolute.
    pub holidays_file: Option<Spanned<String>>,
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
    /// The From of this mailbox's acknowledgements; `company.ack_from` when not given.
    #[serde(default)]
    pub ack_from: Option<Spanned<String>>,
    /// The company name templates get for mail that reached this mailbox (a brand);
    /// `company.name` when not given.
    #[serde(default)]
    pub company_name: Option<String>,
    /// This mailbox's own texts, by language: any of the keys of `[templates.LANG]`,
    /// for the mail of its tickets. Checked by name when compiled.
    #[serde(default)]
    pub templates: BTreeMap<String, Spanned<BTreeMap<String, Spanned<String>>>>,
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
    /// `"any"` (the default: one pattern that matches fires the rule) or `"all"` (every
    /// pattern must match).
    #[serde(rename = "match")]
    pub match_mode: Option<Spanned<String>>,
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
