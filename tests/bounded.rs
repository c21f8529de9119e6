//! Bounded, on the real stack: mail crafted to cost the daemon time lies in a backlog
//! between two ordinary requests. The ordinary ones are forwarded; the crafted one is
//! triaged within the time budget per message (`[limits] triage_budget`) or, past it,
//! quarantined where it lies with the reason, in `status`, and the mailbox goes on.

mod support;

use support::crafted::{self, Crafted};
use support::lab::Lab;
use support::mail::Mail;
use support::ops::wait_status;

const BILLING: &str = "billing@example.test";
const SUPPORT: &str = "support@example.test";

fn outage(customer: &str, id: &str) -> Vec<u8> {
    Mail::request(customer, BILLING, id)
        .subject("Website is down")
        .body("Error 500 on every page since 9:00.")
        .raw()
}

fn crafted(name: &str) -> Crafted {
    crafted::all()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no crafted mail {name}"))
}

/// The backlog: an ordinary request, `middle`, another ordinary request, in that order
/// (UIDs 1, 2, 3), in billing@'s INBOX before the daemon starts.
fn backlog(lab: &Lab, middle: &[u8]) {
    let before = outage("customer1@example.test", "before@client.test");
    let after = outage("customer2@example.test", "after@client.test");
    for raw in [before, middle.to_vec(), after] {
        lab.append(BILLING, "INBOX", &raw);
    }
}

#[test]
fn a_long_word_between_two_ordinary_requests_is_triaged_within_the_budget() {
    let lab = Lab::start();
    let long_word = crafted("long-word-subject.eml");
    backlog(&lab, &long_word.raw);
    let daemon = lab.daemon();
    lab.wait_forward(SUPPORT, "before@client.test");
    lab.wait_forward(SUPPORT, "after@client.test");
    // Triaged, not quarantined: the default budget of 2 s is far above what the bounded
    // stages take for it.
    lab.wait_flagged(BILLING, "long-word@crafted.test", "$Triaged");
    let st = wait_status(&daemon, &lab.state, |st| {
        st["mailboxes"]["billing"]["state"] == "idle"
    });
    assert_eq!(st["quarantined"], 0, "{st:#}");
    assert!(daemon.stop().success());
}

#[test]
fn a_message_past_the_budget_is_quarantined_where_it_lies_and_the_mailbox_goes_on() {
    // 10 ms of CPU: the 5 MB line is past it by the end of its parse, an ordinary
    // request is not.
    let lab = Lab::setup()
        .config("\n[limits]\ntriage_budget = \"10ms\"\n")
        .start();
    let long_line = crafted("single-line-5mb-body.eml");
    backlog(&lab, &long_line.raw);
    let daemon = lab.daemon();
    lab.wait_forward(SUPPORT, "before@client.test");
    lab.wait_forward(SUPPORT, "after@client.test");
    lab.wait_flagged(BILLING, "long-line@crafted.test", "$Quarantined");
    let st = wait_status(&daemon, &lab.state, |st| st["quarantined"] == 1);
    let q = &st["last_quarantined"][0];
    assert_eq!(
        (&q["mailbox"], &q["uid"]),
        (&"billing".into(), &2.into()),
        "{st:#}"
    );
    let reason = q["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("time budget of 10ms CPU (limits.triage_budget)"),
        "{reason}"
    );
    assert_eq!(lab.forwards_of(SUPPORT, "long-line@crafted.test"), 0);
    let text = lab.cli(&["status"]).run().text();
    assert!(text.contains("quarantined: 1 message(s)"), "{text}");
    assert!(text.contains("billing UID 2"), "{text}");
    assert!(daemon.stop().success());
}
