//! `[calendar]` and a queue's own `holidays`: the days nobody works, as dates in
//! rules.toml or as the all-day events of an iCalendar file (what a calendar
//! application exports), read when the rules are loaded and so again at every reload.
//! Each queue's working-time clock ([`crate::clock::Calendar`]) is its business hours
//! less the company's holidays and its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use toml::Spanned;

use super::values::span;
use crate::clock::parse_date;
use crate::config::error::{Collector, ConfigError};

/// An iCalendar file bigger than this is refused: a year's public holidays take a few
/// kilobytes.
const MAX_ICS_BYTES: u64 = 1 << 20;
/// An event longer than this many days is refused (a typo in DTEND, say).
const MAX_EVENT_DAYS: i32 = 366;
/// At most this many days off in all.
const MAX_HOLIDAYS: usize = 10_000;

/// The days of `holidays` and of `holidays_file`, each mistake reported at `base`'s key
/// (`calendar`, `queues.support`).
pub(super) fn compile_holidays(
    c: &mut Collector<'_>,
    base: &str,
    dates: &[Spanned<String>],
    file: Option<&Spanned<String>>,
) -> BTreeSet<Date> {
    let mut days = BTreeSet::new();
    for (i, d) in dates.iter().enumerate() {
        match parse_date(d.get_ref()) {
            Ok(day) => {
                days.insert(day);
            }
            Err(e) => c.at(span(d), format!("{base}.holidays[{i}]"), e),
        }
    }
    if let Some(f) = file {
        let key = format!("{base}.holidays_file");
        let path = beside(c.file(), f.get_ref());
        if !c.read.contains(&path) {
            c.read.push(path.clone());
        }
        match read_ics(&path) {
            Ok(ics) => {
                for (line, message) in ics.skipped {
                    c.in_file(at(&path, &key, Some(line), message), true);
                }
                days.extend(ics.days);
            }
            Err((line, message)) => c.in_file(at(&path, &key, line, message), false),
        }
    }
    if days.len() > MAX_HOLIDAYS {
        c.at_key(
            base,
            format!("more than {MAX_HOLIDAYS} holidays; keep a few years' days off"),
        );
    }
    days
}

fn at(file: &Path, key: &str, line: Option<usize>, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        line,
        message,
    }
}

/// A file named in rules.toml: relative to the folder of rules.toml.
fn beside(rules: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    rules.parent().unwrap_or(Path::new(".")).join(p)
}

/// What an iCalendar file gives: its days off, and the events left out with why.
#[derive(Debug, Default)]
pub(super) struct Ics {
    pub days: BTreeSet<Date>,
    /// (line, why) of events that are not all-day ones or repeat.
    pub skipped: Vec<(usize, String)>,
}

/// Reads the all-day events (`DTSTART;VALUE=DATE:20261231`, with an optional `DTEND`,
/// the day after the last) of an iCalendar file. An error is (line, message).
pub(super) fn read_ics(path: &Path) -> Result<Ics, (Option<usize>, String)> {
    let meta = std::fs::metadata(path).map_err(|e| (None, format!("cannot read: {e}")))?;
    if meta.len() > MAX_ICS_BYTES {
        return Err((
            None,
            format!("{} bytes; at most {MAX_ICS_BYTES}", meta.len()),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| (None, format!("cannot read: {e}")))?;
    parse_ics(&text)
}

/// One VEVENT being read: where it began and its start and end.
#[derive(Default)]
struct Event {
    line: usize,
    start: Option<Value>,
    end: Option<Value>,
    repeats: bool,
}

/// A DTSTART or DTEND: a date, or a date and time (not a day off).
enum Value {
    Day(Date),
    Moment,
}

pub(super) fn parse_ics(text: &str) -> Result<Ics, (Option<usize>, String)> {
    let mut ics = Ics::default();
    let mut event: Option<Event> = None;
    let mut saw_calendar = false;
    for (line, content) in unfolded(text) {
        let (name_params, value) = content
            .split_once(':')
            .ok_or((Some(line), format!("not an iCalendar line: {content:?}")))?;
        let mut parts = name_params.split(';');
        let name = parts.next().unwrap_or_default().to_ascii_uppercase();
        let params: Vec<String> = parts.map(|p| p.to_ascii_uppercase()).collect();
        match (name.as_str(), value.trim().to_ascii_uppercase().as_str()) {
            ("BEGIN", "VCALENDAR") => saw_calendar = true,
            ("BEGIN", "VEVENT") => {
                event = Some(Event {
                    line,
                    ..Event::default()
                })
            }
            ("END", "VEVENT") => {
                let e = event
                    .take()
                    .ok_or((Some(line), "END:VEVENT without BEGIN:VEVENT".to_string()))?;
                add_event(&mut ics, e)?;
            }
            ("DTSTART" | "DTEND", _) => {
                let Some(e) = event.as_mut() else { continue };
                let v = date_value(&params, value.trim())
                    .map_err(|m| (Some(line), format!("{name}: {m}")))?;
                if name == "DTSTART" {
                    e.start = Some(v);
                } else {
                    e.end = Some(v);
                }
            }
            ("RRULE" | "RDATE", _) => {
                if let Some(e) = event.as_mut() {
                    e.repeats = true;
                }
            }
            _ => {}
        }
    }
    if !saw_calendar {
        return Err((None, "not an iCalendar file: no BEGIN:VCALENDAR".into()));
    }
    if let Some(e) = event {
        return Err((Some(e.line), "BEGIN:VEVENT without END:VEVENT".into()));
    }
    Ok(ics)
}

/// The days an event takes, or why it was left out.
fn add_event(ics: &mut Ics, e: Event) -> Result<(), (Option<usize>, String)> {
    let start = match e.start {
        Some(Value::Day(d)) => d,
        Some(Value::Moment) => {
            let why = "an event at a time of day, not a whole day: left out".to_string();
            ics.skipped.push((e.line, why));
            return Ok(());
        }
        None => return Err((Some(e.line), "an event without DTSTART".into())),
    };
    if e.repeats {
        let why = "a repeating event (RRULE): only its first day is taken; list each year's date"
            .to_string();
        ics.skipped.push((e.line, why));
    }
    // DTEND is the day after the last; without it the event is its start day.
    let end = match e.end {
        Some(Value::Day(d)) if d > start => d,
        _ => start.tomorrow().map_err(|e| (None, e.to_string()))?,
    };
    let days = start.until(end).map(|s| s.get_days()).unwrap_or(1);
    if days > MAX_EVENT_DAYS {
        return Err((
            Some(e.line),
            format!("an event of {days} days; at most {MAX_EVENT_DAYS}"),
        ));
    }
    let mut d = start;
    while d < end {
        ics.days.insert(d);
        d = d.tomorrow().map_err(|e| (None, e.to_string()))?;
    }
    Ok(())
}

/// "20261231" with `VALUE=DATE` (or eight digits alone) is a day; "20261231T090000Z"
/// is a moment.
fn date_value(params: &[String], v: &str) -> Result<Value, String> {
    let is_date = params.iter().any(|p| p == "VALUE=DATE");
    if !is_date && v.len() != 8 {
        return Ok(Value::Moment);
    }
    let bad = || format!("not a date: {v:?}; write e.g. 20261231");
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (y, m, d) = (&v[..4], &v[4..6], &v[6..]);
    let day = Date::new(
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(Value::Day(day))
}

/// Content lines with the folding of RFC 5545 undone (a line that begins with a space
/// or a tab goes on the one before), each with the number of its first line.
fn unfolded(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim_end_matches('\r');
        if let Some(rest) = l.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(rest);
                continue;
            }
        }
        if !l.trim().is_empty() {
            out.push((i + 1, l.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    const NEW_YEAR: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example//Holidays//EN\r\n\
BEGIN:VEVENT\r\nUID:1@example.test\r\nDTSTART;VALUE=DATE:20261231\r\nSUMMARY:New Year's Eve\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:2@example.test\r\nDTSTART;VALUE=DATE:20270101\r\nDTEND;VALUE=DATE:20270109\r\n\
SUMMARY:New Year holidays, a long\r\n  summary folded\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:3@example.test\r\nDTSTART:20270115T100000Z\r\nSUMMARY:Team meeting\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    #[test]
    fn all_day_events_are_days_off() {
        let ics = parse_ics(NEW_YEAR).unwrap();
        let days: Vec<_> = ics.days.iter().copied().collect();
        let mut want = vec![day("2026-12-31")];
        want.extend((1..=8).map(|d| day(&format!("2027-01-0{d}"))));
        assert_eq!(days, want, "DTEND is the day after the last");
        assert_eq!(ics.skipped.len(), 1, "the meeting is not a day off");
        assert_eq!(ics.skipped[0].0, 16, "named by its BEGIN:VEVENT line");
    }

    #[test]
    fn a_broken_file_names_its_line() {
        let bad = NEW_YEAR.replace("20261231", "20261331");
        assert_eq!(parse_ics(&bad).unwrap_err().0, Some(6));
        let unclosed = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261231\n";
        assert_eq!(parse_ics(unclosed).unwrap_err().0, Some(2));
        assert!(parse_ics("hello").is_err());
        let long = NEW_YEAR.replace("DTEND;VALUE=DATE:20270109", "DTEND;VALUE=DATE:20370109");
        assert!(parse_ics(&long).unwrap_err().1.contains("days"));
    }

    #[test]
    fn mistakes_name_the_file_the_key_and_the_line() {
        use crate::config::Rules;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            dir.path().join("holidays.ics"),
            NEW_YEAR.replace("20270101", "2027-01-01"),
        )
        .unwrap();
        let text = crate::config::testing::shipped_text()
            .replacen(
                "holidays = []",
                "holidays = [\"2026-12-31\", \"31.12.2026\"]\nholidays_file = \"holidays.ics\"",
                1,
            )
            .replacen(
                "response_time = \"4h\"",
                "response_time = \"4h\"\nbusiness_hours = \"Mon-Fri 09:00-18:00 Europe/Moskow\"",
                1,
            );
        let errors = Rules::parse(&rules, &text).unwrap_err().0;
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        let find = |key: &str| {
            errors
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| panic!("{key}: {errors:?}"))
        };
        let date = find("calendar.holidays[1]");
        assert_eq!(
            (date.file.as_path(), date.line),
            (rules.as_path(), Some(line_of("31.12.2026")))
        );
        let zone = find("queues.support.business_hours");
        assert!(zone.message.contains("Europe/Moskow"), "{}", zone.message);
        assert_eq!(zone.line, Some(line_of("Moskow")));
        let ics = find("calendar.holidays_file");
        assert_eq!(ics.file, dir.path().join("holidays.ics"));
        assert_eq!(ics.line, Some(11), "{}", ics.message);
    }

    #[test]
    fn a_repeating_event_is_taken_once_and_said_so() {
        let yearly = NEW_YEAR.replace(
            "SUMMARY:New Year's Eve",
            "RRULE:FREQ=YEARLY\r\nSUMMARY:New Year's Eve",
        );
        let ics = parse_ics(&yearly).unwrap();
        assert!(ics.days.contains(&day("2026-12-31")));
        assert!(ics.skipped.iter().any(|(_, why)| why.contains("RRULE")));
    }
}
