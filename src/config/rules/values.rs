//! Single values as admins write them in `rules.toml`: addresses, sizes, durations,
//! dates and business hours. Each is read into its typed form, or reported at its key
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
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, hours, rest @ ..] = parts.as_slice() else {
            return Err("write e.g. \"Mon-Fri 09:00-18:00 +03:00\"".into());
        };
        let days = days_of(days)?;
        let (from, to) = hours
            .split_once('-')
            .ok_or("hours are written 09:00-18:00")?;
        let offset = match rest.first() {
            None => time::UtcOffset::UTC,
            Some(o) => offset_of(o)?,
        };
        Ok(BusinessHours {
            days,
            from_minute: minute_of(from)?,
            to_minute: minute_of(to)?,
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

/// "Mon-Fri", "Sat,Sun", "Fri-Mon": ranges wrap round the end of the week.
fn days_of(days: &str) -> Result<[bool; 7], String> {
    let mut set = [false; 7];
    for range in days.split(',') {
        match range.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut i = a;
                loop {
                    set[i] = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => set[day_index(range)?] = true,
        }
    }
    Ok(set)
}

/// Monday is 0.
fn day_index(d: &str) -> Result<usize, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(d))
        .ok_or_else(|| format!("unknown day {d:?} (Mon..Sun)"))
}

/// "09:30" as minutes after midnight; "24:00" is the end of the day.
fn minute_of(t: &str) -> Result<u16, String> {
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
}

/// "+03:00", "-5": hours, then minutes after a colon.
fn offset_of(o: &str) -> Result<time::UtcOffset, String> {
    let sign = if o.starts_with('-') { -1 } else { 1 };
    let o = o.trim_start_matches(['+', '-']);
    let (h, m) = o.split_once(':').unwrap_or((o, "0"));
    let h: i8 = h.parse().map_err(|_| format!("offset {o:?}"))?;
    let m: i8 = m.parse().map_err(|_| format!("offset {o:?}"))?;
    time::UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|e| e.to_string())
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
}
