//! The working-time clock: a queue's business hours in a time zone and the days it does
//! not work, and the time arithmetic on them. A response time is counted in working
//! time ([`Calendar::add`]): a request that arrives on Friday evening is due on Monday,
//! a holiday is skipped, and a change to or from daylight saving time moves the hours
//! with the local clock. Pure: every function takes the time it works on, and nothing
//! here reads the system clock, so `explain` and the daemon count alike.
//! `decide::wait` says, on this clock, when a ticket's wait began and when its answer is due.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use time::OffsetDateTime;

/// How many days ahead a working window is looked for: a year of holidays and then
/// some. Past that there is no working time, and nothing falls due.
const SEARCH_DAYS: i32 = 800;

/// A time zone as the admin named it: an IANA name ("Europe/Moscow"), a fixed offset
/// ("+03:00") or UTC.
#[derive(Clone)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// "Europe/Berlin", "UTC", or an offset "+03:00", "-5", "+0530".
    pub fn parse(s: &str) -> Result<Zone, String> {
        if s.starts_with(['+', '-']) {
            let secs = offset_seconds(s)?;
            let offset = Offset::from_seconds(secs).map_err(|e| format!("offset {s:?}: {e}"))?;
            let (sign, abs) = (if secs < 0 { '-' } else { '+' }, secs.abs());
            return Ok(Zone {
                tz: TimeZone::fixed(offset),
                name: format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60),
            });
        }
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("z") {
            return Ok(Zone::utc());
        }
        let tz = TimeZone::get(s).map_err(|_| {
            format!("unknown time zone {s:?}; write an IANA name such as \"Europe/Moscow\", or an offset such as \"+03:00\"")
        })?;
        Ok(Zone {
            tz,
            name: s.to_string(),
        })
    }

    /// The name as written in rules.toml.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What people read after a time: the zone's abbreviation at `t` where it has a
    /// word one ("CET", "CEST", "MSK"), else its name ("+03:00", "Asia/Almaty").
    pub fn label_at(&self, t: OffsetDateTime) -> String {
        let abbr = self
            .tz
            .to_offset_info(timestamp(t))
            .abbreviation()
            .to_string();
        if abbr.chars().all(|c| c.is_ascii_alphabetic()) && !abbr.is_empty() {
            abbr
        } else {
            self.name.clone()
        }
    }

    /// `t` as the zone's local clock shows it.
    pub fn local(&self, t: OffsetDateTime) -> DateTime {
        self.tz.to_datetime(timestamp(t))
    }
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

/// "+03:00", "-5", "+0530": hours, then minutes (after a colon or as two more digits).
fn offset_seconds(o: &str) -> Result<i32, String> {
    let sign = if o.starts_with('-') { -1 } else { 1 };
    let digits = o.trim_start_matches(['+', '-']);
    let (h, m) = match digits.split_once(':') {
        Some(hm) => hm,
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    let h: i32 = h.parse().map_err(|_| format!("offset {o:?}"))?;
    let m: i32 = m.parse().map_err(|_| format!("offset {o:?}"))?;
    if h > 18 || m > 59 {
        return Err(format!("offset {o:?} out of range"));
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// "Mon-Fri 09:00-18:00 Europe/Moscow" (or "+03:00", the form of earlier versions; no
/// zone is UTC): the days, the time of day and the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    pub from_minute: u16,
    pub to_minute: u16,
    pub zone: Zone,
}

impl BusinessHours {
    pub fn parse(s: &str) -> Result<BusinessHours, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [days, hours, rest @ ..] = parts.as_slice() else {
            return Err("write e.g. \"Mon-Fri 09:00-18:00 Europe/Moscow\"".into());
        };
        let days = days_of(days)?;
        let (from, to) = hours
            .split_once('-')
            .ok_or("hours are written 09:00-18:00")?;
        let zone = match rest {
            [] => Zone::utc(),
            [z] => Zone::parse(z)?,
            _ => return Err("one time zone after the hours, e.g. \"Europe/Moscow\"".into()),
        };
        let (from_minute, to_minute) = (minute_of(from)?, minute_of(to)?);
        if to_minute <= from_minute {
            return Err(format!(
                "the hours {hours:?} end before they begin; hours past midnight are not supported"
            ));
        }
        Ok(BusinessHours {
            days,
            from_minute,
            to_minute,
            zone,
        })
    }

    /// Every day, all day, in UTC: the hours of a queue that names none.
    fn always() -> BusinessHours {
        BusinessHours {
            days: [true; 7],
            from_minute: 0,
            to_minute: 24 * 60,
            zone: Zone::utc(),
        }
    }
}

impl std::fmt::Display for BusinessHours {
    /// As written in rules.toml: "Mon-Fri 09:00-18:00 Europe/Moscow" (runs of days from
    /// Monday on; a week that wraps round shows as two runs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let mut runs = Vec::new();
        let mut i = 0;
        while i < 7 {
            if !self.days[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < 7 && self.days[i + 1] {
                i += 1;
            }
            runs.push(match i - start {
                0 => NAMES[start].to_string(),
                _ => format!("{}-{}", NAMES[start], NAMES[i]),
            });
            i += 1;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(
            f,
            "{} {}-{} {}",
            runs.join(","),
            hm(self.from_minute),
            hm(self.to_minute),
            self.zone.name()
        )
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
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("time {t:?} out of range"));
    }
    Ok(h * 60 + m)
}

/// A day that nobody works, "2026-12-31".
pub fn parse_date(s: &str) -> Result<Date, String> {
    s.trim()
        .parse::<Date>()
        .map_err(|_| format!("not a date: {s:?}; write e.g. \"2026-12-31\""))
}

/// A queue's working time: its business hours (always, when it names none) less its
/// holidays, which are dates on the hours' local calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    hours: BusinessHours,
    /// Whether the queue named business hours; without them it works every day, all day.
    named_hours: bool,
    holidays: BTreeSet<Date>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar::new(None, BTreeSet::new())
    }
}

impl Calendar {
    pub fn new(hours: Option<BusinessHours>, holidays: BTreeSet<Date>) -> Calendar {
        Calendar {
            named_hours: hours.is_some(),
            hours: hours.unwrap_or_else(BusinessHours::always),
            holidays,
        }
    }

    /// The zone the hours are kept in (UTC when the queue names none).
    pub fn zone(&self) -> &Zone {
        &self.hours.zone
    }

    /// Whether the queue named business hours.
    pub fn has_hours(&self) -> bool {
        self.named_hours
    }

    /// The business hours the queue named, as written; `None` when it works all day.
    pub fn hours(&self) -> Option<&BusinessHours> {
        self.named_hours.then_some(&self.hours)
    }

    pub fn holidays(&self) -> &BTreeSet<Date> {
        &self.holidays
    }

    /// Whether `t` is working time.
    pub fn open_at(&self, t: OffsetDateTime) -> bool {
        let t = timestamp(t);
        self.window_at_or_after(t)
            .is_some_and(|(open, _)| open <= t)
    }

    /// The moment `work` of working time after `start` has passed: the same moment on
    /// the wall clock when all of it is working time, later when nights, weekends or
    /// holidays come in between. `None` when no working time is found within
    /// [`SEARCH_DAYS`].
    pub fn add(&self, start: OffsetDateTime, work: Duration) -> Option<OffsetDateTime> {
        let mut left = jiff::SignedDuration::try_from(work).ok()?;
        let mut t = timestamp(start);
        loop {
            let (open, close) = self.window_at_or_after(t)?;
            let from = t.max(open);
            let room = close.duration_since(from);
            if left <= room {
                return Some(offset_date_time(from.checked_add(left).ok()?));
            }
            left -= room;
            t = close;
        }
    }

    /// Working time between `a` and `b` (zero when `b` is not after `a`).
    pub fn between(&self, a: OffsetDateTime, b: OffsetDateTime) -> Duration {
        let (mut t, end) = (timestamp(a), timestamp(b));
        let mut sum = jiff::SignedDuration::ZERO;
        while t < end {
            let Some((open, close)) = self.window_at_or_after(t) else {
                break;
            };
            if open >= end {
                break;
            }
            sum += close.min(end).duration_since(t.max(open));
            t = close;
        }
        Duration::try_from(sum).unwrap_or_default()
    }

    /// The working window `t` is in, or else the next one: its opening and closing.
    fn window_at_or_after(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let h = &self.hours;
        // Windows never pass midnight, so none before the local day of `t` can hold it.
        let mut day = h.zone.tz.to_datetime(t).date();
        for _ in 0..SEARCH_DAYS {
            if self.works_on(day) {
                let open = self.at(day, h.from_minute)?;
                let close = self.at(day, h.to_minute)?;
                if close > t && close > open {
                    return Some((open, close));
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    fn works_on(&self, day: Date) -> bool {
        let weekday = day.weekday().to_monday_zero_offset() as usize;
        self.hours.days[weekday] && !self.holidays.contains(&day)
    }

    /// The moment the local clock shows `minute` on `day` (24:00 is the next midnight);
    /// a time that a change to summer time skips is taken as the clock shows it after.
    fn at(&self, day: Date, minute: u16) -> Option<Timestamp> {
        let dt = if minute >= 24 * 60 {
            day.tomorrow().ok()?.at(0, 0, 0, 0)
        } else {
            day.at((minute / 60) as i8, (minute % 60) as i8, 0, 0)
        };
        self.hours.zone.tz.to_timestamp(dt).ok()
    }
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn offset_date_time(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        crate::when::parse(s).unwrap()
    }

    fn hours(s: &str) -> BusinessHours {
        BusinessHours::parse(s).unwrap()
    }

    fn calendar(h: &str, holidays: &[&str]) -> Calendar {
        let days = holidays.iter().map(|d| parse_date(d).unwrap()).collect();
        Calendar::new(Some(hours(h)), days)
    }

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn a_friday_evening_request_is_due_on_monday() {
        let c = calendar("Mon-Fri 09:00-18:00 Europe/Moscow", &[]);
        // Friday 27 November 2026, 17:00 in Moscow (UTC+3): one working hour left that
        // day, three more on Monday from 09:00.
        let due = c.add(t("2026-11-27T14:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-11-30T09:00:00Z"), "Monday 12:00 in Moscow");
        // Arriving on Saturday: the clock starts on Monday at 09:00.
        let due = c.add(t("2026-11-28T10:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-11-30T10:00:00Z"), "Monday 13:00 in Moscow");
        // A whole working day is nine hours.
        let due = c.add(t("2026-11-27T14:00:00Z"), 24 * H).unwrap();
        assert_eq!(due, t("2026-12-02T11:00:00Z"), "Wednesday 14:00 in Moscow");
    }

    #[test]
    fn the_old_fixed_offset_form_still_counts() {
        let c = calendar("Mon-Fri 09:00-18:00 +03:00", &[]);
        let due = c.add(t("2026-11-27T14:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-11-30T09:00:00Z"));
        assert_eq!(hours("Mon-Fri 09:00-18:00").zone, Zone::utc());
    }

    #[test]
    fn holidays_are_skipped() {
        let c = calendar(
            "Mon-Fri 09:00-18:00 Europe/Moscow",
            &["2026-12-31", "2027-01-01"],
        );
        // Wednesday 30 December, 17:00: one hour, then Thursday and Friday are holidays
        // and the weekend follows; the rest is on Monday 4 January.
        let due = c.add(t("2026-12-30T14:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2027-01-04T09:00:00Z"), "Monday 12:00 in Moscow");
        assert!(!c.open_at(t("2026-12-31T10:00:00Z")), "a holiday is closed");
        assert!(c.open_at(t("2026-12-30T10:00:00Z")));
    }

    #[test]
    fn holidays_count_without_business_hours_too() {
        let days = [parse_date("2026-12-31").unwrap()].into_iter().collect();
        let c = Calendar::new(None, days);
        let due = c.add(t("2026-12-30T22:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2027-01-01T02:00:00Z"));
        let always = Calendar::default();
        let due = always.add(t("2026-12-30T22:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-12-31T02:00:00Z"), "the wall clock");
    }

    #[test]
    fn a_change_to_summer_time_is_crossed_in_local_hours() {
        // Berlin goes from CET (+01:00) to CEST (+02:00) on Sunday 29 March 2026.
        let c = calendar("Mon-Fri 09:00-18:00 Europe/Berlin", &[]);
        // Friday 27 March, 17:00 CET = 16:00 UTC: Monday's 12:00 is CEST, 10:00 UTC.
        let due = c.add(t("2026-03-27T16:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-03-30T10:00:00Z"));
        // The fixed offset of the old form would be an hour off.
        let fixed = calendar("Mon-Fri 09:00-18:00 +01:00", &[]);
        assert_eq!(
            fixed.add(t("2026-03-27T16:00:00Z"), 4 * H).unwrap(),
            t("2026-03-30T11:00:00Z")
        );
    }

    #[test]
    fn a_change_back_to_winter_time_is_crossed_in_local_hours() {
        // Berlin goes back to CET on Sunday 25 October 2026.
        let c = calendar("Mon-Fri 09:00-18:00 Europe/Berlin", &[]);
        // Friday 23 October, 17:00 CEST = 15:00 UTC: Monday's 12:00 CET is 11:00 UTC.
        let due = c.add(t("2026-10-23T15:00:00Z"), 4 * H).unwrap();
        assert_eq!(due, t("2026-10-26T11:00:00Z"));
        // A round-the-clock calendar in Berlin has a 25-hour Sunday.
        let all = calendar("Mon-Sun 00:00-24:00 Europe/Berlin", &[]);
        assert_eq!(
            all.between(t("2026-10-24T22:00:00Z"), t("2026-10-25T23:00:00Z")),
            25 * H
        );
    }

    #[test]
    fn working_time_between_two_moments() {
        let c = calendar("Mon-Fri 09:00-18:00 Europe/Moscow", &[]);
        // Friday 17:00 to Monday 12:00, Moscow: one hour and three.
        assert_eq!(
            c.between(t("2026-11-27T14:00:00Z"), t("2026-11-30T09:00:00Z")),
            4 * H
        );
        assert_eq!(
            c.between(t("2026-11-30T09:00:00Z"), t("2026-11-27T14:00:00Z")),
            Duration::ZERO
        );
    }

    #[test]
    fn business_hours_as_admins_write_them() {
        let b = hours("Mon-Fri 09:00-18:00 +03:00");
        let c = Calendar::new(Some(b), BTreeSet::new());
        assert!(c.open_at(t("2026-11-23T06:00:00Z"))); // Monday 09:00 in Moscow
        assert!(!c.open_at(t("2026-11-23T05:59:00Z")));
        assert!(!c.open_at(t("2026-11-23T15:00:00Z"))); // 18:00 local: closed
        assert!(!c.open_at(t("2026-11-22T10:00:00Z"))); // Sunday
        let w = Calendar::new(Some(hours("Sat,Sun 10:00-12:00")), BTreeSet::new());
        assert!(w.open_at(t("2026-11-22T11:00:00Z")));
        for bad in [
            "Mon-Fry 09:00-18:00",
            "Mon-Fri 18:00-09:00",
            "Mon-Fri 09:00-18:00 Europe/Mosow",
            "Mon-Fri 09:00-18:00 +03:00 Europe/Moscow",
            "Mon-Fri 09:00-25:00",
        ] {
            assert!(BusinessHours::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(hours("Mon-Fri 09:00-18:00 +0530").zone.name(), "+05:30");
    }

    #[test]
    fn the_zone_is_named_as_people_read_it() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(berlin.label_at(t("2026-03-27T16:00:00Z")), "CET");
        assert_eq!(berlin.label_at(t("2026-03-30T10:00:00Z")), "CEST");
        assert_eq!(
            Zone::parse("+03:00")
                .unwrap()
                .label_at(t("2026-03-30T10:00:00Z")),
            "+03:00"
        );
    }
}
