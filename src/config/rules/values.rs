//! Single values as admins write them in `rules.toml`: addresses, sizes, durations,
//! and dates (business hours and holidays are the clock's, `crate::clock`). Each is read into its typed form, or reported at its key
//! and line while the rest of the file is still checked.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use crate::config::error::Collector;

/// Where a value is written; `None` for a default serde filled in (an empty span).
pub(in crate::config) fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    let r = s.span();
    (r.end > 0).then_some(r)
}

pub(super) fn looks_like_address(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') && !s.contains(char::is_whitespace),
        None => false,
    }
}

/// "25MB", "512 KiB", "1000000": sizes as admins write them.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
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

/// An optional duration key; `default` when it is left out or wrong.
pub(super) fn duration_key(
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

pub(super) fn datetime_key(
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

pub(super) fn optional_datetime_key(
    c: &mut Collector<'_>,
    key: &str,
    v: &Option<Spanned<String>>,
) -> Option<time::OffsetDateTime> {
    v.as_ref().and_then(|v| datetime_key(c, key, v))
}

/// The names of a list's entries seen so far (`[[rules]]`, `[[tests]]`): each name is
/// used once, so an error or a diff can name the entry.
pub(super) struct UniqueNames {
    list: &'static str,
    what: &'static str,
    seen: BTreeMap<String, usize>,
}

impl UniqueNames {
    /// `list` is the key of the list (`rules`), `what` one entry in words (`rule`).
    pub fn new(list: &'static str, what: &'static str) -> Self {
        Self {
            list,
            what,
            seen: BTreeMap::new(),
        }
    }

    /// Records the name of entry `i`; a name used before is an error at its key.
    pub fn check(&mut self, c: &mut Collector<'_>, i: usize, name: &Spanned<String>) {
        let (list, what, n) = (self.list, self.what, name.get_ref());
        if let Some(prev) = self.seen.insert(n.clone(), i) {
            c.at(
                span(name),
                format!("{list}[{i}].name"),
                format!("{what} name {n:?} is already used by {list}[{prev}]"),
            );
        }
    }
}

/// A sender setting (`ack_from`) must be an address, with or without a display name.
pub(super) fn check_sender(c: &mut Collector<'_>, key: &str, from: &Spanned<String>) {
    if from.get_ref().parse::<lettre::message::Mailbox>().is_err() {
        c.at(
            span(from),
            key,
            "not an address (write \"Name <user@example.com>\" or \"user@example.com\")",
        );
    }
}
