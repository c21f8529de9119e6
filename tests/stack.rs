//! Integration tests on a real mail stack: Dovecot (IMAP, LMTP) and Postfix on loopback,
//! started per test under a temp dir by scripts/mailstack. Mail goes in by SMTP, the
//! daemon runs as a separate process with the shipped rules.toml, and the results are
//! read from the real mailboxes over IMAP.

mod support;

use std::time::Duration;

use support::lab::Lab;
use support::mail::Mail;
use support::shipped_rules;

#[test]
fn misdirected_request_reaches_its_queue_with_note_and_customer_gets_ack() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "outage-1@example.test";
    lab.send_mail(
        &Mail::request("customer1@example.test", "billing@example.test", id)
            .subject("Сайт не работает")
            .body("Добрый день! С утра сайт не работает, ошибка 500 на всех страницах."),
    );

    let fwd = lab.wait_forward("support@example.test", id);
    let ticket = fwd.ticket();
    let parsed = mail_parser::MessageParser::default()
        .parse(&fwd.raw)
        .unwrap();
    assert!(
        parsed.subject().unwrap().contains(&format!("[#{ticket}]")),
        "{}",
        parsed.subject().unwrap()
    );
    assert_eq!(
        parsed
            .reply_to()
            .unwrap()
            .first()
            .unwrap()
            .address()
            .unwrap(),
        "customer1@example.test"
    );
    let note = parsed.body_text(0).unwrap();
    assert!(
        note.contains("billing@example.test"),
        "note names the mailbox it reached:\n{note}"
    );
    assert!(
        note.contains("outage-ru") && note.contains("не работает"),
        "note names the rule and the text:\n{note}"
    );
    assert!(note.contains(&ticket), "{note}");
    // The original is attached as message/rfc822, with its own headers and text intact.
    let inner = parsed
        .attachment(0)
        .and_then(|a| a.message())
        .expect("original attached as message/rfc822");
    assert_eq!(inner.message_id(), Some(id));
    assert!(inner.body_text(0).unwrap().contains("ошибка 500"));

    let ack = lab.wait_ack("customer1@example.test", id);
    assert!(
        ack.subject().contains(&format!("[#{ticket}]")),
        "ack carries the same ticket: {}",
        ack.subject()
    );
    let ack_text = ack.text();
    assert!(
        ack_text.contains("Техническая поддержка")
            && ack_text.contains("срок ответа: ")
            && ack_text.contains("(UTC)"),
        "Russian ack with team and when the answer is due:\n{ack_text}"
    );
    assert!(
        !ack_text.contains("ошибка 500"),
        "the ack does not quote the original"
    );

    // The original in billing@ is marked as forwarded, and it stays there.
    let billing = lab.wait_flagged("billing@example.test", id, "$Forwarded");
    assert_eq!(billing.len(), 1);
    // The forward that reached support@ (a watched mailbox) is not triaged again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.forwards_of("support@example.test", id), 1);
    let customer = lab.inbox("customer1@example.test");
    assert_eq!(customer.len(), 1, "exactly one acknowledgement");
    assert!(daemon.stop().success());
}

#[test]
fn request_at_the_right_address_stays_and_is_acknowledged() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let id = "refund-2@example.test";
    lab.send_mail(
        &Mail::request("customer2@example.test", "billing@example.test", id)
            .subject("Refund request")
            .body("Please refund the duplicate charge on invoice 4411."),
    );

    let text = lab.wait_ack("customer2@example.test", id).text();
    assert!(
        text.contains("Billing")
            && text.contains("who will answer you by ")
            && text.contains("(UTC)"),
        "{text}"
    );
    let billing = lab.wait_inbox("billing@example.test", |ms| {
        ms.iter().any(|m| m.flags.iter().any(|f| f == "$Triaged"))
    });
    assert_eq!(billing.len(), 1, "the request stays in billing@");
    assert!(!billing[0].flags.iter().any(|f| f == "$Forwarded"));
    for q in ["support@example.test", "sales@example.test"] {
        assert!(
            lab.inbox(q).iter().all(|m| !m.is_forward_of(id)),
            "nothing forwarded to {q}"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn auto_replies_and_list_mail_open_no_ticket_and_get_no_acknowledgement() {
    let lab = Lab::start();
    let daemon = lab.daemon();

    let monitoring = "monitoring@example.test";
    let auto = Mail::request("customer3@example.test", monitoring, "auto-3@example.test")
        .subject("Automatic reply: Site is down")
        .header("Auto-Submitted", "auto-replied")
        .body("I am out of the office. Our website is down, error 500.");
    let list = Mail::request("customer4@example.test", monitoring, "list-4@example.test")
        .subject("[users] Website is down again")
        .header("List-Id", "<users.lists.example.test>")
        .header("List-Unsubscribe", "<mailto:users-leave@example.test>")
        .header("Precedence", "list")
        .body("The site is down for everyone on the list.");
    // A control message that must be acknowledged, to know the daemon got that far.
    let normal = Mail::request(
        "customer5@example.test",
        monitoring,
        "normal-5@example.test",
    )
    .subject("Website is down")
    .body("Our website is down since 9:00.");
    for mail in [&auto, &list, &normal] {
        lab.send_mail(mail);
    }

    // The request is forwarded to support; the auto-reply and the list mail are robots:
    // they stay in monitoring@, marked, with no ticket.
    lab.wait_forward("support@example.test", "normal-5@example.test");
    lab.wait_ack("customer5@example.test", "normal-5@example.test");
    for id in ["auto-3@example.test", "list-4@example.test"] {
        let inbox = lab.wait_flagged(monitoring, id, "$Triaged");
        let original = inbox.iter().find(|m| m.is(id)).unwrap();
        assert!(!original.has_flag("$Forwarded"), "{id}");
        assert_eq!(lab.forwards_of("support@example.test", id), 0, "{id}");
    }
    lab.drain();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lab.inbox("customer3@example.test").is_empty(),
        "no ack to an auto-reply"
    );
    assert!(
        lab.inbox("customer4@example.test").is_empty(),
        "no ack to list mail"
    );
    let log = daemon.log();
    assert!(
        log.contains("suppressed=auto-submitted"),
        "the log says why:\n{log}"
    );
    assert!(log.contains("suppressed=precedence"), "{log}");
    assert!(daemon.stop().success());
}

/// The `i`-th outage report of customer6@ to billing@.
fn outage(i: usize) -> Mail {
    Mail::request(
        "customer6@example.test",
        "billing@example.test",
        &format!("restart-{i}@example.test"),
    )
    .subject(&format!("Website is down ({i})"))
    .body("Error 500 everywhere.")
}

#[test]
fn restart_forwards_nothing_twice() {
    let lab = Lab::start();
    let ids: Vec<String> = (0..3)
        .map(|i| format!("restart-{i}@example.test"))
        .collect();
    let daemon = lab.daemon();
    lab.send_mail(&outage(0));
    lab.send_mail(&outage(1));
    lab.wait_inbox("support@example.test", |ms| {
        ids[..2]
            .iter()
            .all(|id| ms.iter().any(|m| m.is_forward_of(id)))
    });
    assert!(daemon.stop().success());

    // Same state: the checkpoint and the index say both are done.
    let daemon = lab.daemon();
    lab.send_mail(&outage(2));
    lab.wait_forward("support@example.test", &ids[2]);
    assert!(daemon.stop().success());

    // State lost entirely: the $Triaged marks on the server still say what was done.
    std::fs::remove_dir_all(&lab.state).unwrap();
    let daemon = lab.daemon();
    lab.send_mail(
        &Mail::request(
            "customer7@example.test",
            "billing@example.test",
            "marker-7@example.test",
        )
        .subject("Website is down")
        .body("Error 500."),
    );
    lab.wait_forward("support@example.test", "marker-7@example.test");
    lab.drain();
    assert!(daemon.stop().success());

    let support = lab.inbox("support@example.test");
    for id in &ids {
        assert_eq!(
            support.iter().filter(|m| m.is_forward_of(id)).count(),
            1,
            "{id} forwarded exactly once"
        );
    }
    let acks = lab.inbox("customer6@example.test");
    for id in &ids {
        assert_eq!(
            acks.iter().filter(|m| m.is_ack_of(id)).count(),
            1,
            "{id} acknowledged exactly once"
        );
    }
}

#[test]
fn forwarded_message_is_moved_to_the_configured_folder() {
    let shipped = shipped_rules();
    let rules = shipped.replacen(
        "address = \"billing@example.test\"\nqueue = \"billing\"",
        "address = \"billing@example.test\"\nqueue = \"billing\"\nforwarded_folder = \"Forwarded\"",
        1,
    );
    assert_ne!(
        rules, shipped,
        "the billing mailbox is where the test expects it"
    );
    let lab = Lab::setup().rules(&rules).start();
    let daemon = lab.daemon();

    let id = "move-1@example.test";
    lab.send_mail(
        &Mail::request("customer8@example.test", "billing@example.test", id)
            .subject("Website is down")
            .body("Error 500 since the morning."),
    );
    lab.wait_forward("support@example.test", id);
    let moved = lab.wait_until("billing@example.test", "Forwarded", support::WAIT, |ms| {
        !ms.is_empty()
    });
    assert_eq!(
        moved[0].header("Message-ID").as_deref(),
        Some(format!("<{id}>").as_str())
    );
    assert!(
        moved[0].flags.iter().any(|f| f == "$Forwarded"),
        "{:?}",
        moved[0].flags
    );
    assert!(
        lab.inbox("billing@example.test").is_empty(),
        "the original left the INBOX"
    );
    assert!(daemon.stop().success());
}

#[test]
fn mailboxes_that_forward_to_each_other_do_not_loop_and_secrets_stay_out_of_the_log() {
    // billing@ passes what it does not recognise to sales, sales@ passes it back to billing.
    let rules = shipped_rules()
        .replacen(
            "handles = [\"billing\"]\nunmatched = \"keep\"",
            "handles = [\"billing\"]\nunmatched = \"sales\"",
            1,
        )
        .replacen(
            "handles = [\"sales\"]\nunmatched = \"keep\"",
            "handles = [\"sales\"]\nunmatched = \"billing\"",
            1,
        );
    assert_eq!(rules.matches("unmatched = \"sales\"").count(), 1);
    assert_eq!(rules.matches("unmatched = \"billing\"").count(), 1);
    let lab = Lab::setup().rules(&rules).start();
    let daemon = lab.daemon();

    let id = "loop-1@example.test";
    lab.send_mail(
        &Mail::request("customer9@example.test", "billing@example.test", id)
            .subject("Hello there")
            .body("Just a note about our meeting."),
    );
    let forward = lab.wait_forward("sales@example.test", id);
    lab.wait_ack("customer9@example.test", id);
    // The daemon's own forward, seen in sales@ and left alone, is marked seen all the same.
    lab.wait_flagged("sales@example.test", &forward.message_id(), "$Triaged");
    // Give a loop every chance to show itself, then count.
    std::thread::sleep(Duration::from_secs(3));
    lab.drain();
    assert_eq!(
        lab.forwards_of("sales@example.test", id),
        1,
        "forwarded once to sales"
    );
    assert_eq!(
        lab.forwards_of("billing@example.test", id),
        0,
        "sales@ did not pass the forward back: it is mailtriage's own mail"
    );
    assert_eq!(
        lab.inbox("customer9@example.test").len(),
        1,
        "one acknowledgement"
    );
    let log = daemon.log();
    assert!(log.contains("Mailbox connected."), "{log}");
    assert!(
        !log.contains(&lab.password),
        "the password appears in the log:\n{log}"
    );
    assert!(daemon.stop().success());
}
