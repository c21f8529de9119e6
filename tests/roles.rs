//! Who is who, on the real mail stack: a ticket's customer and their side (colleagues,
//! people they wrote to) add follow-ups; staff answer and hand over; a stranger who names
//! a ticket, by its tag or by a reply to one of its mails, opens a ticket of their own and
//! never sees or changes the one they named; the forward's Reply-To is always the
//! ticket's customer.
//!
//! The customers here are at `client.example` (not the company's domain, whose people are
//! staff by default); mail to such domains reaches `sink@example.test` on the stack, so
//! acknowledgements are read there.

mod support;

use support::lab::Lab;
use support::mail::Mail;
use support::FetchedMail;

const IVAN: &str = "ivan@client.example";
const SINK: &str = "sink@example.test";

/// Ivan writes "Website is down" to support@ (Cc `cc`, if any); returns his ticket and
/// the acknowledgement's Message-ID.
fn ivans_ticket(lab: &Lab, id: &str, cc: Option<&str>) -> (String, String) {
    let mut mail = Mail::request(IVAN, "support@example.test", id)
        .name("Ivan Petrov")
        .subject("Website is down")
        .body("Nothing loads since 9:00.");
    if let Some(cc) = cc {
        mail = mail.cc(cc);
    }
    lab.send_mail(&mail);
    let ack = lab.wait_ack(SINK, id);
    (ack.ticket(), ack.message_id())
}

/// `tickets show ID --json`: the ticket as stored.
fn ticket(lab: &Lab, id: &str) -> serde_json::Value {
    let o = lab.cli(&["tickets", "show", id, "--json"]).run();
    assert!(o.status.success(), "{}", o.stderr);
    o.json()[0].clone()
}

fn history(t: &serde_json::Value) -> String {
    serde_json::to_string(&t["history"]).unwrap()
}

/// The forward of `id` in `queue`'s INBOX, once there.
fn forward(lab: &Lab, queue: &str, id: &str) -> FetchedMail {
    lab.wait_forward(queue, id)
}

#[test]
fn a_stranger_naming_a_ticket_by_tag_or_reply_opens_their_own_and_changes_nothing() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let (t1, ack_id) = ivans_ticket(&lab, "ivan-1@client.example", None);

    // By the tag, to monitoring@, with two "promises" and the customer in Cc.
    let by_tag = Mail::request("mallory@evil.example", "monitoring@example.test", "mal-1@evil.example")
        .name("Mallory")
        .cc(IVAN)
        .subject(&format!("Re: [#{t1}] update"))
        .body("Promise: full refund of 5000 EUR approved by management\nPromise: account upgraded to premium free of charge\nPlease refund my invoice.");
    lab.send_mail(&by_tag);
    let fwd = forward(&lab, "billing@example.test", "mal-1@evil.example");
    let t2 = fwd.ticket();
    assert_ne!(t2, t1, "a ticket of its own");
    let note = fwd.text();
    assert!(note.contains(&format!("named {t1}")), "{note}");
    assert!(
        !note.contains("promised"),
        "a stranger's promise is none: {note}"
    );
    assert!(
        !note.contains("Website is down"),
        "nothing of the other ticket: {note}"
    );
    let reply_to = fwd.header("Reply-To").unwrap_or_default();
    assert!(
        reply_to.contains("mallory@evil.example"),
        "their own ticket's customer: {reply_to}"
    );

    // By a reply to the acknowledgement (its Message-ID guessed), to sales@.
    let by_reply = Mail::request(
        "mallory@evil.example",
        "sales@example.test",
        "mal-2@evil.example",
    )
    .in_reply_to(&ack_id)
    .subject("Re: We have received your request")
    .body("Please quote 50 seats for us.");
    lab.send_mail(&by_reply);
    lab.wait_flagged("sales@example.test", "mal-2@evil.example", "$Triaged");
    // Ivan's ticket: no promise, not answered, still support's, nothing joined.
    daemon.wait_log("mal-2@evil.example");
    let t = ticket(&lab, &t1);
    assert_eq!(t["queue"], "support", "{t:#}");
    assert_eq!(t["promises"].as_array().map(Vec::len), Some(0), "{t:#}");
    assert!(t["answered_at"].is_null(), "{t:#}");
    let h = history(&t);
    assert!(!h.contains("mallory"), "{h}");
    assert!(daemon.stop().success());
}

#[test]
fn the_customers_colleague_follows_up_and_the_forward_answers_the_customer() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let (t1, ack_id) = ivans_ticket(&lab, "ivan-2@client.example", Some("bob@partner.example"));

    // A colleague at Ivan's company, to billing@, replying to the acknowledgement.
    let petr = Mail::request(
        "petr@client.example",
        "billing@example.test",
        "petr-1@client.example",
    )
    .name("Petr")
    .in_reply_to(&ack_id)
    .subject("Re: We have received your request")
    .body("Same here, and the invoice page too. Please refund if this takes long.");
    lab.send_mail(&petr);
    // A follow-up of Ivan's ticket, to the queue that owns it, not a handover.
    let fwd = forward(&lab, "support@example.test", "petr-1@client.example");
    assert_eq!(fwd.ticket(), t1);
    let note = fwd.text();
    assert!(note.contains("written by petr@client.example"), "{note}");
    assert!(
        note.contains("Written by: petr@client.example (customer-side: the same organisation"),
        "the writer's role in the note: {note}"
    );
    let reply_to = fwd.header("Reply-To").unwrap_or_default();
    assert!(
        reply_to.contains(IVAN),
        "staff answer the customer: {reply_to}"
    );

    // Bob, whom Ivan wrote to, names the ticket at sales@: a follow-up as well.
    let bob = Mail::request(
        "bob@partner.example",
        "sales@example.test",
        "bob-1@partner.example",
    )
    .subject(&format!("Re: [#{t1}] Website is down"))
    .body("We see it too.");
    lab.send_mail(&bob);
    let fwd = forward(&lab, "support@example.test", "bob-1@partner.example");
    assert_eq!(fwd.ticket(), t1);

    let t = ticket(&lab, &t1);
    assert_eq!(t["queue"], "support", "{t:#}");
    assert!(
        t["answered_at"].is_null(),
        "a colleague is no answer: {t:#}"
    );
    assert!(!history(&t).contains("bounced"), "{t:#}");
    // `tickets show` names every message's writer with their role.
    let shown = lab.cli(&["tickets", "show", &t1]).run().stdout;
    assert!(
        shown.contains("(from ivan@client.example, customer)"),
        "{shown}"
    );
    assert!(
        shown.contains("(written by petr@client.example, customer-side: the same organisation"),
        "{shown}"
    );
    assert!(
        shown.contains("(written by bob@partner.example, customer-side: "),
        "{shown}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_forged_envelope_or_reply_to_makes_no_one_the_customer() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let (t1, _) = ivans_ticket(&lab, "ivan-3@client.example", None);

    // The envelope says Ivan, the From says Mallory: Mallory, a stranger.
    let forged = Mail::request(
        "mallory@evil.example",
        "support@example.test",
        "mal-3@evil.example",
    )
    .subject(&format!("Re: [#{t1}] update"))
    .body("Please send the account details to me.");
    lab.stack
        .send(IVAN, &["support@example.test"], &forged.raw());
    // The From says Ivan, the Reply-To says Mallory: a follow-up of Ivan's, and staff's
    // Reply still goes to Ivan.
    let reply_to = Mail::request(IVAN, "billing@example.test", "ivan-4@client.example")
        .header("Reply-To", "mallory@evil.example")
        .subject(&format!("Re: [#{t1}] update"))
        .body("Any news?");
    lab.send_mail(&reply_to);
    let fwd = forward(&lab, "support@example.test", "ivan-4@client.example");
    assert_eq!(fwd.ticket(), t1);
    let header = fwd.header("Reply-To").unwrap_or_default();
    assert!(
        header.contains(IVAN) && !header.contains("mallory"),
        "{header}"
    );

    daemon.wait_log("mal-3@evil.example");
    let t = ticket(&lab, &t1);
    assert!(!history(&t).contains("mallory"), "{t:#}");
    let list = lab.cli(&["tickets", "list", "--all"]).run().stdout;
    assert!(
        list.contains("mallory@evil.example"),
        "a ticket of its own: {list}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn one_message_to_two_mailboxes_is_one_ticket_and_never_forwarded_to_a_mailbox_that_has_it() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let id = "both-1@client.example";
    // Technical, written to billing@ with support@ in Cc: support@ has its own copy.
    let mail = Mail::request(IVAN, "billing@example.test", id)
        .cc("support@example.test")
        .cc("sales@example.test")
        .subject("Website is down")
        .body("Nothing loads since 9:00, error 500.");
    lab.send_mail(&mail);
    let ack = lab.wait_ack(SINK, id);
    let ticket_id = ack.ticket();
    // Every copy is marked as triaged and with its ticket, so whoever reads any of the
    // mailboxes can find (IMAP SEARCH KEYWORD) that it is handled, and where.
    let ticket_mark = format!("$Ticket_{ticket_id}");
    for mailbox in [
        "billing@example.test",
        "support@example.test",
        "sales@example.test",
    ] {
        lab.wait_flagged(mailbox, id, "$Triaged");
        lab.wait_flagged(mailbox, id, &ticket_mark);
    }
    lab.drain();
    // Support reads the customer's own copy; nobody forwarded it another.
    for queue in [
        "support@example.test",
        "billing@example.test",
        "sales@example.test",
    ] {
        assert_eq!(lab.forwards_of(queue, id), 0, "{queue}");
    }
    let acks = lab.inbox(SINK).iter().filter(|m| m.is_ack_of(id)).count();
    assert_eq!(acks, 1, "one acknowledgement");
    let t = ticket(&lab, &ticket_id);
    assert_eq!(t["queue"], "support", "{t:#}");
    // Whichever copy was triaged first says where else the message went: support's own
    // (kept, "also sent to billing@ and sales@"), or another's ("sent to support@ as well").
    let h = history(&t);
    assert!(
        h.contains("support@example.test as well")
            || h.contains("also sent to billing@example.test and sales@example.test"),
        "{h}"
    );
    let list = lab.cli(&["tickets", "list", "--all"]).run().stdout;
    assert_eq!(list.lines().count(), 1, "one ticket: {list}");
    assert!(daemon.stop().success());
}

/// The acknowledgement of `id`, if one reached the sink.
fn acks_of(lab: &Lab, ids: &[String]) -> usize {
    let sink = lab.inbox(SINK);
    ids.iter()
        .filter(|id| sink.iter().any(|m| m.is_ack_of(id)))
        .count()
}

#[test]
fn backscatter_is_capped_and_a_strangers_words_are_not_echoed() {
    let rules = support::shipped_rules().replacen(
        "acks_per_sender_per_day = 5",
        "acks_per_sender_per_day = 5\nacks_per_domain_per_hour = 6",
        1,
    );
    let lab = Lab::setup().rules(&rules).start();
    let daemon = lab.daemon();
    let request = |from: &str, id: &str| {
        Mail::request(from, "support@example.test", id)
            .subject("Website is down")
            .body("Nothing loads.")
    };
    // Eight plus-tags of one victim: one address, five acknowledgements a day.
    let plus: Vec<String> = (0..8).map(|n| format!("plus-{n}@third.example")).collect();
    for (n, id) in plus.iter().enumerate() {
        lab.send_mail(&request(&format!("victim+{n}@third.example"), id));
    }
    // Eight people at one domain: six acknowledgements an hour.
    let domain: Vec<String> = (0..8).map(|n| format!("dom-{n}@fourth.example")).collect();
    for (n, id) in domain.iter().enumerate() {
        lab.send_mail(&request(&format!("user{n}@fourth.example"), id));
    }
    // Two From headers, and a 3,000-character spam subject with a display name.
    let two_from = request("anna@fifth.example", "two-from@fifth.example")
        .header("From", "CEO <ceo@fifth.example>");
    lab.send_mail(&two_from);
    let spam = "BUY CHEAP PILLS NOW ".repeat(150);
    let long = Mail::request(
        "spammer@sixth.example",
        "support@example.test",
        "long-1@sixth.example",
    )
    .name("Visit pills.example today")
    .subject(&spam)
    .body("The site is down.");
    lab.send_mail(&long);

    // A Return-Path written into the message: the delivering server's, on top, counts.
    let crafted = request("eve@seventh.example", "rp-1@seventh.example")
        .header("Return-Path", "<victim@third.example>");
    lab.send_mail(&crafted);
    let to_eve = lab.wait_ack(SINK, "rp-1@seventh.example");
    let to = to_eve.header("To").unwrap_or_default();
    assert!(to.contains("eve@seventh.example"), "not the victim: {to}");

    let ack = lab.wait_ack(SINK, "long-1@sixth.example");
    let subject = ack.subject();
    assert!(
        subject.chars().count() < 160 && subject.contains('…'),
        "{subject}"
    );
    let to = ack.header("To").unwrap_or_default();
    assert!(!to.contains("pills"), "no display name echoed: {to}");
    for id in plus
        .iter()
        .chain(&domain)
        .chain(["two-from@fifth.example".to_string()].iter())
    {
        lab.wait_flagged("support@example.test", id, "$Triaged");
    }
    lab.drain();
    assert_eq!(acks_of(&lab, &plus), 5, "plus-tags fold into one address");
    assert_eq!(acks_of(&lab, &domain), 6, "the domain's hourly cap");
    assert_eq!(acks_of(&lab, &["two-from@fifth.example".to_string()]), 0);
    let log = daemon.log();
    assert!(
        log.contains("suppressed=daily-cap") && log.contains("suppressed=domain-cap"),
        "{log}"
    );
    assert!(log.contains("suppressed=many-senders"), "{log}");
    assert!(daemon.stop().success());
}
