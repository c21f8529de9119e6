//! Adopting a live mailbox on the real stack: the mail already in a folder the state does
//! not know is left alone unless `start` says otherwise (the first start, a state lost
//! together with a new UIDVALIDITY, a new UIDVALIDITY the state knows of), and `preview`
//! shows what triage would do with the last messages while changing nothing.

mod support;

use std::time::{Duration, SystemTime};

use mailtriage::record::{Listing, Store};
use support::cli::cli;
use support::lab::Lab;
use support::mail::Mail;
use support::ops::wait_status;
use support::FetchedMail;

const BILLING: &str = "billing@example.test";
const SUPPORT: &str = "support@example.test";

/// A customer's "website is down" mail to billing@, which triage forwards to support@.
fn outage(id: &str, n: usize) -> Mail {
    Mail::request(&format!("customer{}@example.test", n % 20 + 1), BILLING, id)
        .subject(&format!("Website is down ({n})"))
        .body("Error 500 on every page since 9:00.")
}

/// `t` as IMAP writes an INTERNALDATE: "23-Nov-2026 10:00:00 +0000".
fn imap_date(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(t.month())) - 1];
    format!(
        "{:02}-{month}-{} {:02}:{:02}:{:02} +0000",
        t.day(),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn days_ago(days: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(days * 86400)
}

/// Puts `count` outage mails that arrived `age` ago into billing@'s INBOX, ids
/// `{prefix}-N@client.test`; returns the ids.
fn old_mail(lab: &Lab, prefix: &str, count: usize, age: SystemTime) -> Vec<String> {
    let ids: Vec<String> = (0..count)
        .map(|n| format!("{prefix}-{n}@client.test"))
        .collect();
    let mails: Vec<(Vec<u8>, String)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| (outage(id, n).raw(), imap_date(age)))
        .collect();
    lab.append_dated(BILLING, "INBOX", &mails);
    ids
}

/// Waits until billing@ is taken on and idle; returns the status.
fn taken_on(lab: &Lab, daemon: &support::daemon::Daemon) -> serde_json::Value {
    wait_status(daemon, &lab.state, |s| {
        let b = &s["mailboxes"]["billing"];
        b["adoption"]["done"] == true && b["state"] == "idle"
    })
}

/// Every forward in support@ of an original in `ids`.
fn forwards_of_any(support: &[FetchedMail], ids: &[String]) -> usize {
    support
        .iter()
        .filter(|m| ids.iter().any(|id| m.is_forward_of(id)))
        .count()
}

#[test]
fn the_first_start_leaves_200_old_messages_alone_and_triages_the_next_one() {
    let lab = Lab::setup().first_start(None).start();
    let old = old_mail(&lab, "old", 200, days_ago(30));
    let daemon = lab.daemon();
    let st = taken_on(&lab, &daemon);
    let adoption = &st["mailboxes"]["billing"]["adoption"];
    assert_eq!(adoption["start"], "new", "{st:#}");
    assert_eq!(adoption["skipped"], 200, "{st:#}");
    assert_eq!(adoption["taken"], 0, "{st:#}");
    let text = lab.cli(&["status"]).run().stdout;
    assert!(
        text.contains("with start \"new\": 200 older message(s) left alone, 0 taken"),
        "{text}"
    );
    // One line per folder, in whatever order the mailboxes connect: billing's.
    let billing_line = |log: &str| {
        log.lines()
            .find(|l| l.contains("Folder taken on") && l.contains("mailbox=billing "))
            .map(str::to_string)
    };
    daemon.wait_log_until("billing taken on", |log| billing_line(log).is_some());
    let line = billing_line(&daemon.log()).unwrap();
    assert!(
        line.contains("INFO")
            && line.contains("mailbox=billing")
            && line.contains("skipped=200")
            && line.contains("start=new"),
        "{line}"
    );

    let next = "next-1@client.test";
    lab.send_mail(&outage(next, 7));
    lab.wait_forward(SUPPORT, next);
    lab.wait_ack("customer8@example.test", next);
    lab.drain();
    assert!(daemon.stop().success());

    let support = lab.inbox(SUPPORT);
    assert_eq!(support.len(), 1, "only the new message is forwarded");
    assert_eq!(forwards_of_any(&support, &old), 0);
    let acks: usize = (1..=20)
        .map(|c| lab.inbox(&format!("customer{c}@example.test")).len())
        .sum();
    assert_eq!(acks, 1, "one acknowledgement, for the new message");
    let billing = lab.inbox(BILLING);
    let untouched = billing.iter().filter(|m| old.iter().any(|id| m.is(id)));
    assert!(
        untouched.clone().count() == 200 && untouched.clone().all(|m| m.flags.is_empty()),
        "the old messages are left as they were"
    );
}

#[test]
fn start_since_2d_takes_only_what_arrived_in_the_last_two_days() {
    let lab = Lab::setup().first_start(Some("since 2d")).start();
    let old = old_mail(&lab, "older", 4, days_ago(10));
    let recent = old_mail(
        &lab,
        "recent",
        3,
        SystemTime::now() - Duration::from_secs(3600),
    );
    let daemon = lab.daemon();
    for id in &recent {
        lab.wait_forward(SUPPORT, id);
    }
    let st = taken_on(&lab, &daemon);
    let adoption = &st["mailboxes"]["billing"]["adoption"];
    assert_eq!(adoption["start"], "since 2days", "{st:#}");
    assert_eq!(
        (adoption["taken"].as_u64(), adoption["skipped"].as_u64()),
        (Some(3), Some(4)),
        "{st:#}"
    );
    let next = "since-next@client.test";
    lab.send_mail(&outage(next, 3));
    lab.wait_forward(SUPPORT, next);
    lab.drain();
    assert!(daemon.stop().success());

    let support = lab.inbox(SUPPORT);
    assert_eq!(
        forwards_of_any(&support, &old),
        0,
        "nothing older than 2 days"
    );
    assert_eq!(forwards_of_any(&support, &recent), 3);
    assert_eq!(
        support.len(),
        4,
        "the recent ones and the new one, once each"
    );
}

#[test]
fn a_new_uidvalidity_triages_nothing_old_whether_the_state_knows_the_folder_or_was_lost() {
    let lab = Lab::setup().first_start(None).start();
    let old = old_mail(&lab, "ancient", 3, days_ago(20));
    let (a, b, c) = ("uv-a@client.test", "uv-b@client.test", "uv-c@client.test");

    // The first start: the old messages stay, A is triaged.
    let daemon = lab.daemon();
    taken_on(&lab, &daemon);
    lab.send_mail(&outage(a, 1));
    lab.wait_forward(SUPPORT, a);
    lab.wait_flagged(BILLING, a, "$Triaged");
    lab.drain();
    assert!(daemon.stop().success());

    // The server renumbers the folder; the state knows it at the old UIDVALIDITY.
    lab.renew_uidvalidity(BILLING);
    let daemon = lab.daemon();
    daemon.wait_log("UIDVALIDITY changed");
    taken_on(&lab, &daemon);
    lab.send_mail(&outage(b, 2));
    lab.wait_forward(SUPPORT, b);
    lab.drain();
    assert!(daemon.stop().success());

    // The state is lost and the folder renumbered again: a folder never seen.
    std::fs::remove_dir_all(&lab.state).unwrap();
    lab.renew_uidvalidity(BILLING);
    let daemon = lab.daemon();
    let st = taken_on(&lab, &daemon);
    assert_eq!(
        st["mailboxes"]["billing"]["adoption"]["skipped"], 5,
        "the old ones, A and B: {st:#}"
    );
    lab.send_mail(&outage(c, 3));
    lab.wait_forward(SUPPORT, c);
    lab.drain();
    let log = daemon.log();
    assert!(daemon.stop().success());

    let support = lab.inbox(SUPPORT);
    assert_eq!(forwards_of_any(&support, &old), 0, "{log}");
    for id in [a, b, c] {
        assert_eq!(lab.forwards_of(SUPPORT, id), 1, "{id}");
    }
    let store = Store::open(&lab.state).unwrap();
    assert_eq!(
        store
            .listing(Listing::All, usize::MAX)
            .unwrap()
            .tickets
            .len(),
        1,
        "the lost state's new one: C"
    );
}

/// What the state says of billing@: checkpoint, how it was taken on, tickets, outbox.
fn state_of_billing(lab: &Lab) -> String {
    let store = Store::open(&lab.state).unwrap();
    format!(
        "{:?} {:?} tickets={} outbox={}",
        store.checkpoint("billing").unwrap(),
        store.adoption("billing").unwrap(),
        store
            .listing(Listing::All, usize::MAX)
            .unwrap()
            .tickets
            .len(),
        store.outbox_len()
    )
}

#[test]
fn preview_prints_decisions_and_leaves_the_mailbox_and_the_state_as_they_were() {
    let lab = Lab::setup().first_start(None).start();
    let ids = old_mail(&lab, "preview", 5, days_ago(3));
    // A state exists: the daemon took the mailbox on once, leaving these alone.
    let daemon = lab.daemon();
    taken_on(&lab, &daemon);
    assert!(daemon.stop().success());
    let (mailbox, state) = (lab.inbox(BILLING), state_of_billing(&lab));

    let preview = |args: &[&str]| {
        let o = cli(&["preview", "billing"])
            .args(args)
            .rules(&lab.rules)
            .arg("--config")
            .arg(&lab.config)
            .run();
        assert!(o.status.success(), "{}", o.text());
        o
    };
    let text = preview(&["--last", "3"]).stdout;
    assert_eq!(text.matches("----- uid ").count(), 3, "{text}");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(text.contains(&format!("<{id}>")), n >= 2, "{id}:\n{text}");
    }
    let forward = "action:    forward to support (support@example.test)";
    assert_eq!(text.matches(forward).count(), 3, "{text}");
    assert!(
        text.contains("3 message(s) of billing previewed; nothing was marked, sent or recorded"),
        "{text}"
    );
    let all = preview(&["--json"]).json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 5, "the last 20 by default: {all:?}");
    for (p, m) in all.iter().zip(&mailbox) {
        assert_eq!(p["uid"], m.uid, "{p:#}");
        assert_eq!(
            (&p["action"], &p["marked"]),
            (&"forward".into(), &false.into())
        );
        assert_eq!(p["message_id"], m.message_id(), "{p:#}");
    }

    assert_eq!(lab.inbox(BILLING), mailbox, "flags and UIDs as they were");
    assert!(
        mailbox.iter().all(|m| m.flags.is_empty()),
        "not even \\Seen"
    );
    assert_eq!(state_of_billing(&lab), state, "the state as it was");
    lab.drain();
    assert!(lab.inbox(SUPPORT).is_empty(), "nothing sent");
}
