//! Where mail goes: `[queues]` (the teams), `[categories]` (which team owns a kind of
//! request), `[mailboxes]` (what is watched, and who reads it) and `[escalation]` (where
//! bounced tickets and red flags go). Each name used is checked against the declared ones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::civil::Date;
use toml::Spanned;

use super::calendar::compile_holidays;
use super::raw;
use super::values::{check_sender, looks_like_address, span};
use crate::clock::{BusinessHours, Calendar};
use crate::config::error::Collector;

#[derive(Debug, Clone)]
pub struct Queue {
    pub key: String,
    pub address: String,
    /// Display name per language code.
    pub names: BTreeMap<String, String>,
    pub response_time: Duration,
    /// The queue's working time: its business hours less its holidays and the
    /// company's. The response time is counted on it, and reminders and status mails go
    /// out only in it.
    pub calendar: Calendar,
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
    /// The From of acknowledgements to mail that reached this mailbox, as written;
    /// `None`: `company.ack_from`.
    pub ack_from: Option<String>,
    /// The company name of this mailbox's brand; `None`: `company.name`.
    pub company_name: Option<String>,
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

/// A queue name used at `key` must be declared.
fn check_queue_name(
    c: &mut Collector<'_>,
    queues: &BTreeMap<String, Queue>,
    key: String,
    q: &Spanned<String>,
) {
    if !queues.contains_key(q.get_ref()) {
        c.at(span(q), key, format!("unknown queue {:?}", q.get_ref()));
    }
}

/// A queue's or mailbox's `address` must be one.
fn check_address(c: &mut Collector<'_>, base: &str, address: &Spanned<String>) {
    if !looks_like_address(address.get_ref()) {
        c.at(
            span(address),
            format!("{base}.address"),
            "not an e-mail address",
        );
    }
}

/// The daemon needs at least one entry of `table` (one `what`) to do anything.
fn check_some_declared(c: &mut Collector<'_>, empty: bool, table: &str, what: &str) {
    if empty {
        c.at(
            None,
            table,
            format!("no {what} is declared; at least one [{table}.NAME] is needed"),
        );
    }
}

/// `holidays` are the company's (`[calendar]`): every queue has them off.
pub(super) fn compile_queues(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Queue>>,
    holidays: &BTreeSet<Date>,
) -> BTreeMap<String, Queue> {
    check_some_declared(c, raw.is_empty(), "queues", "queue");
    raw.into_iter()
        .map(|(key, q)| (key.clone(), compile_queue(c, key, q, holidays)))
        .collect()
}

fn compile_queue(
    c: &mut Collector<'_>,
    key: String,
    q: Spanned<raw::Queue>,
    holidays: &BTreeSet<Date>,
) -> Queue {
    let qspan = span(&q);
    let q = q.into_inner();
    let base = format!("queues.{key}");
    check_address(c, &base, &q.address);
    if q.name.is_empty() {
        c.at(
            qspan,
            format!("{base}.name"),
            "needs at least one display name, e.g. { en = \"Billing\" }",
        );
    }
    let response_time = response_time(c, &base, &q.response_time);
    let business_hours = q.business_hours.as_ref().and_then(|b| {
        BusinessHours::parse(b.get_ref())
            .map_err(|e| c.at(span(b), format!("{base}.business_hours"), e))
            .ok()
    });
    let mut days = holidays.clone();
    let own = compile_holidays(c, &base, &q.holidays, q.holidays_file.as_ref());
    days.extend(own);
    Queue {
        key,
        address: q.address.into_inner().trim().to_string(),
        names: q.name,
        response_time,
        calendar: Calendar::new(business_hours, days),
    }
}

/// A queue's promised time to answer; one second stands in for a wrong one, so the
/// rest of the file is still checked.
fn response_time(c: &mut Collector<'_>, base: &str, v: &Spanned<String>) -> Duration {
    let key = format!("{base}.response_time");
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if d.as_secs() > 0 => d,
        Ok(_) => {
            c.at(span(v), key, "must be longer than zero");
            Duration::from_secs(1)
        }
        Err(e) => {
            c.at(
                span(v),
                key,
                format!("not a duration ({e}); write e.g. \"4h\", \"1d\", \"30m\""),
            );
            Duration::from_secs(1)
        }
    }
}

pub(super) fn compile_categories(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Category>>,
    queues: &BTreeMap<String, Queue>,
) -> BTreeMap<String, Category> {
    let mut categories = BTreeMap::new();
    for (key, cat) in raw {
        let cat = cat.into_inner();
        if let Some(q) = &cat.queue {
            check_queue_name(c, queues, format!("categories.{key}.queue"), q);
        }
        categories.insert(
            key.clone(),
            Category {
                key,
                queue: cat.queue.map(Spanned::into_inner),
            },
        );
    }
    categories
}

pub(super) fn compile_mailboxes(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Mailbox>>,
    queues: &BTreeMap<String, Queue>,
    categories: &BTreeMap<String, Category>,
) -> BTreeMap<String, Mailbox> {
    check_some_declared(c, raw.is_empty(), "mailboxes", "mailbox");
    raw.into_iter()
        .map(|(key, m)| {
            let m = compile_mailbox(c, key.clone(), m.into_inner(), queues, categories);
            (key, m)
        })
        .collect()
}

fn compile_mailbox(
    c: &mut Collector<'_>,
    key: String,
    m: raw::Mailbox,
    queues: &BTreeMap<String, Queue>,
    categories: &BTreeMap<String, Category>,
) -> Mailbox {
    let base = format!("mailboxes.{key}");
    check_address(c, &base, &m.address);
    if let Some(q) = &m.queue {
        check_queue_name(c, queues, format!("{base}.queue"), q);
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
    let unmatched = unmatched(c, &base, &m, queues);
    if let Some(from) = &m.ack_from {
        check_sender(c, &format!("{base}.ack_from"), from);
    }
    Mailbox {
        key,
        address: m.address.into_inner().trim().to_string(),
        queue: m.queue.map(Spanned::into_inner),
        handles: m.handles.into_iter().map(Spanned::into_inner).collect(),
        unmatched,
        forwarded_folder: m.forwarded_folder,
        shadow: m.shadow,
        ack_from: m.ack_from.map(Spanned::into_inner),
        company_name: m.company_name,
    }
}

/// What a mailbox does with mail no rule recognises: "keep" needs a team that reads
/// the mailbox, anything else names the queue it goes to.
fn unmatched(
    c: &mut Collector<'_>,
    base: &str,
    m: &raw::Mailbox,
    queues: &BTreeMap<String, Queue>,
) -> Unmatched {
    match m.unmatched.get_ref().as_str() {
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
    }
}

pub(super) fn compile_escalation(
    c: &mut Collector<'_>,
    raw: Option<Spanned<raw::Escalation>>,
    queues: &BTreeMap<String, Queue>,
) -> Option<Escalation> {
    let e = raw?.into_inner();
    check_queue_name(c, queues, "escalation.queue".to_string(), &e.queue);
    Some(Escalation {
        queue: e.queue.into_inner(),
        max_hops: e.max_hops,
        marker: e.marker,
    })
}
