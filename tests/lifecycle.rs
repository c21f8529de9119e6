//! Tickets that end, on the real mail stack: a resolved ticket gets no reminder, the
//! customer's reply reopens it (routed to the queue that owns it, with a fresh clock),
//! and staff resolve it again with a `Resolved:` line.

mod support;

use std::time::{Duration, Instant};

use support::lab::Lab;
use support::mail::Mail;
use support::{shipped_rules, FetchedMail};

/// The daemon's mails of `kind` about `ticket` in `user`'s INBOX.
fn of_ticket(lab: &Lab, user: &str, ticket: &str, kind: &str) -> usize {
    count(&lab.inbox(user), ticket, kind)
}

fn count(ms: &[FetchedMail], ticket: &str, kind: &str) -> usize {
    ms.iter()
        .filter(|m| {
            m.kind().as_deref() == Some(kind)
                && m.header("X-Mailtriage")
                    .is_some_and(|h| h.contains(&format!("ticket={ticket};")))
        })
        .count()
}

/// `tickets show TICKET`, once its output holds `what` (the daemon answers over its
/// control socket).
fn wait_show(lab: &Lab, ticket: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = lab.cli(&["tickets", "show", ticket]).run();
        if out.status.success() && out.stdout.contains(what) {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "`tickets show {ticket}` never said {what:?}: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_resolved_ticket_gets_no_reminder_and_the_customer_s_reply_reopens_it() {
    // Time made controllable: support promises an answer within 3 seconds, and open
    // tickets are checked every second.
    let rules = shipped_rules()
        .replacen("response_time = \"4h\"", "response_time = \"3s\"", 1)
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1);
    let lab = Lab::setup().rules(&rules).start();
    let daemon = lab.daemon();

    let customer = "customer11@example.test";
    let id = "ends-1@example.test";
    lab.send_mail(
        &Mail::request(customer, "support@example.test", id)
            .subject("Website is down")
            .body("Nothing loads."),
    );
    let ack = lab.wait_ack(customer, id);
    let ticket = ack.ticket();

    // An operator resolves it at once, through the running daemon.
    let out = lab
        .cli(&[
            "tickets",
            "resolve",
            &ticket,
            "--by",
            "supervisor",
            "--note",
            "fixed by phone",
        ])
        .run();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("state:     resolved"), "{}", out.stdout);
    let list = lab.cli(&["tickets", "list", "--all"]).run().stdout;
    assert!(list.contains("resolved"), "{list}");

    // Past the response time and twice it, nothing goes to support, the supervisor or
    // the customer.
    std::thread::sleep(Duration::from_secs(8));
    lab.drain();
    for user in ["support@example.test", "supervisor@example.test", customer] {
        for kind in ["reminder", "status"] {
            assert_eq!(of_ticket(&lab, user, &ticket, kind), 0, "{kind} to {user}");
        }
    }

    // The customer answers the acknowledgement, to billing@ by mistake: the ticket is
    // open again and the reply goes to support, which owns it, saying so.
    lab.send_mail(
        &Mail::request(customer, "billing@example.test", "ends-2@example.test")
            .in_reply_to(&ack.message_id())
            .subject(&format!("Re: [#{ticket}] Website is down"))
            .body("It is down again."),
    );
    let note = lab
        .wait_forward("support@example.test", "ends-2@example.test")
        .text();
    assert!(
        note.contains("reopened: customer11@example.test wrote again"),
        "{note}"
    );
    assert!(note.contains("resolved by supervisor"), "{note}");
    // Its clock starts again: support is reminded 3 seconds on.
    lab.wait_inbox("support@example.test", |ms| {
        count(ms, &ticket, "reminder") == 1
    });

    // Support answers with a copy to its own mailbox and resolves it in the same mail.
    lab.send_mail(
        &Mail::from("support@example.test")
            .to(customer)
            .cc("support@example.test")
            .id("ends-3@example.test")
            .subject(&format!("Re: [#{ticket}] Website is down"))
            .body("The web server was restarted.\r\nResolved: web server restarted\r\n"),
    );
    let show = wait_show(
        &lab,
        &ticket,
        "resolved by support@example.test: web server restarted",
    );
    assert!(show.contains("state:     resolved"), "{show}");
    assert!(daemon.stop().success());
}
