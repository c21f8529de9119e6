//! The working-time clock on the real mail stack: a request that arrives on Friday
//! evening is promised, and its queue reminded, in Monday's working time. The daemon's
//! time for tickets is made controllable by `MAILTRIAGE_NOW_FILE`, which the test
//! rewrites to move the daemon from Friday to Monday.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use support::lab::Lab;
use support::mail::Mail;
use support::{shipped_rules, FetchedMail};

/// Puts the daemon's ticket time at `at` (RFC 3339).
fn set_now(file: &Path, at: &str) {
    std::fs::write(file, at).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
}

/// The reminders about `ticket` in `ms`.
fn reminders<'a>(ms: &'a [FetchedMail], ticket: &str) -> Vec<&'a FetchedMail> {
    ms.iter()
        .filter(|m| {
            m.kind().as_deref() == Some("reminder")
                && m.header("X-Mailtriage")
                    .is_some_and(|h| h.contains(&format!("ticket={ticket};")))
        })
        .collect()
}

#[test]
fn a_friday_evening_ticket_is_promised_and_reminded_in_mondays_working_time() {
    // Support answers within 4 working hours, Monday to Friday 09:00-18:00 Moscow time;
    // open tickets are checked every second; reminders spread over the shipped 30 min.
    let rules = shipped_rules()
        .replacen(
            "response_time = \"4h\"",
            "response_time = \"4h\"\nbusiness_hours = \"Mon-Fri 09:00-18:00 Europe/Moscow\"",
            1,
        )
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1);
    let lab = Lab::setup().rules(&rules).start();
    let now = lab.dir().join("now");
    // Friday 27 November 2026, 17:30 in Moscow.
    set_now(&now, "2026-11-27T14:30:00Z");
    let daemon = lab.daemon_with_env(&[("MAILTRIAGE_NOW_FILE", OsStr::new(&now))]);

    let (customer, id) = ("customer11@example.test", "friday-1@example.test");
    lab.send_mail(
        &Mail::request(customer, "support@example.test", id)
            .subject("Website is down")
            .body("Nothing loads."),
    );
    let ack = lab.wait_ack(customer, id);
    let ticket = ack.ticket();
    // Half an hour on Friday, three and a half on Monday from 09:00.
    let text = ack.text();
    assert!(
        text.contains("who will answer you by Monday 30 November, 12:30 (MSK)"),
        "{text}"
    );

    // Four wall-clock hours later (Friday night), when Monday opens (where every
    // weekend ticket used to be reminded at once), and a minute before the promise:
    // the follow-up check runs several times at each, and reminds nobody.
    for at in [
        "2026-11-27T18:31:00Z",
        "2026-11-30T06:00:00Z",
        "2026-11-30T09:29:00Z",
    ] {
        set_now(&now, at);
        std::thread::sleep(Duration::from_secs(3));
    }
    // Monday 13:00 in Moscow: past the promise and the ticket's place in the spread.
    set_now(&now, "2026-11-30T10:00:00Z");
    let inbox = lab.wait_inbox("support@example.test", |ms| {
        !reminders(ms, &ticket).is_empty()
    });
    let sent = reminders(&inbox, &ticket);
    assert_eq!(sent.len(), 1, "one reminder");
    // Composed at the check that found it due: the last time set, not an earlier one.
    let date = sent[0].header("Date").unwrap_or_default();
    assert!(date.contains("30 Nov 2026 10:00:00"), "{date}");
    let log = daemon.log();
    assert!(
        log.contains("MAILTRIAGE_NOW_FILE"),
        "the daemon says its time is not the system's:\n{log}"
    );
    assert!(daemon.stop().success());
}
