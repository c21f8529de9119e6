//! Times as the state keeps them (RFC 3339, UTC) and as people read them in notes and on
//! the command line. One place, so a ticket's `created`, a history line and a status
//! report are written and read the same way.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 in UTC: how every time is stored.
pub fn stamp(t: SystemTime) -> String {
    stamp_at(OffsetDateTime::from(t))
}

pub fn stamp_at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A stored time back; `None` when it does not parse.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The UTC day, "2026-11-23": the unit of the daily acknowledgement cap.
pub fn day(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// "2026-11-23 15:20 UTC": the form people read. A string that does not parse is shown
/// as it is.
pub fn human(stored: &str) -> String {
    match parse(stored) {
        Some(t) => human_at(t),
        None => stored.to_string(),
    }
}

pub fn human_at(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_read_back() {
        let t = parse("2026-11-23T18:20:30+03:00").unwrap();
        assert_eq!(
            stamp_at(t.to_offset(time::UtcOffset::UTC)),
            "2026-11-23T15:20:30Z"
        );
        assert_eq!(human("2026-11-23T18:20:30+03:00"), "2026-11-23 15:20 UTC");
        assert_eq!(human("not a time"), "not a time");
        assert_eq!(day(t.into()), "2026-11-23");
    }
}
