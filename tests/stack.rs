//! Integration tests on a real mail stack: Dovecot (IMAP, LMTP) and Postfix on loopback,
//! started per test under a temp dir by scripts/mailstack. Mail goes in by SMTP, the
//! daemon runs as a separate process with the shipped rules.toml, and the results are
//! read from the real mailboxes over IMAP.

mod support;

use std::time::Duration;

use support::daemon::{
    header, is_ack_of, is_forward_of, message, subject, ticket_of, write_config, Daemon, WAIT,
};
use support::Stack;

#[test]
fn misdirected_request_reaches_its_queue_with_note_and_customer_gets_ack() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "outage-1@example.test";
    let raw = message(
        "customer1@example.test",
        "billing@example.test",
        id,
        "Сайт не работает",
        "",
        "Добрый день! С утра сайт не работает, ошибка 500 на всех страницах.",
    );
    stack.send("customer1@example.test", &["billing@example.test"], &raw);

    let support = stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, id))
    });
    let fwd = support.iter().find(|m| is_forward_of(m, id)).unwrap();
    let ticket = ticket_of(fwd);
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

    let inbox = stack.wait_until("customer1@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ack = inbox.iter().find(|m| is_ack_of(m, id)).unwrap();
    assert!(
        subject(&ack.raw).contains(&format!("[#{ticket}]")),
        "ack carries the same ticket: {}",
        subject(&ack.raw)
    );
    let ack_text = mail_parser::MessageParser::default()
        .parse(&ack.raw)
        .unwrap()
        .body_text(0)
        .unwrap()
        .to_string();
    assert!(
        ack_text.contains("Техническая поддержка") && ack_text.contains("4 часов"),
        "Russian ack with team and time:\n{ack_text}"
    );
    assert!(
        !ack_text.contains("ошибка 500"),
        "the ack does not quote the original"
    );

    // The original in billing@ is marked as forwarded, and it stays there.
    let billing = stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| {
            header(&m.raw, "Message-ID").is_some_and(|h| h.contains(id))
                && m.flags.iter().any(|f| f == "$Forwarded")
        })
    });
    assert_eq!(billing.len(), 1);
    // The forward that reached support@ (a watched mailbox) is not triaged again.
    std::thread::sleep(Duration::from_secs(2));
    let all_support = stack.fetch_all("support@example.test", "INBOX");
    assert_eq!(
        all_support.iter().filter(|m| is_forward_of(m, id)).count(),
        1
    );
    let customer = stack.fetch_all("customer1@example.test", "INBOX");
    assert_eq!(customer.len(), 1, "exactly one acknowledgement");
    assert!(daemon.stop().success());
}

#[test]
fn request_at_the_right_address_stays_and_is_acknowledged() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "refund-2@example.test";
    let raw = message(
        "customer2@example.test",
        "billing@example.test",
        id,
        "Refund request",
        "",
        "Please refund the duplicate charge on invoice 4411.",
    );
    stack.send("customer2@example.test", &["billing@example.test"], &raw);

    let inbox = stack.wait_until("customer2@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ack = inbox.iter().find(|m| is_ack_of(m, id)).unwrap();
    let text = mail_parser::MessageParser::default()
        .parse(&ack.raw)
        .unwrap()
        .body_text(0)
        .unwrap()
        .to_string();
    assert!(text.contains("Billing") && text.contains("1 day"), "{text}");
    let billing = stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| m.flags.iter().any(|f| f == "$Triaged"))
    });
    assert_eq!(billing.len(), 1, "the request stays in billing@");
    assert!(!billing[0].flags.iter().any(|f| f == "$Forwarded"));
    for q in ["support@example.test", "sales@example.test"] {
        assert!(
            stack
                .fetch_all(q, "INBOX")
                .iter()
                .all(|m| !is_forward_of(m, id)),
            "nothing forwarded to {q}"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn auto_replies_and_list_mail_get_no_acknowledgement() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let auto = message(
        "customer3@example.test",
        "monitoring@example.test",
        "auto-3@example.test",
        "Automatic reply: Site is down",
        "Auto-Submitted: auto-replied\r\n",
        "I am out of the office. Our website is down, error 500.",
    );
    let list = message(
        "customer4@example.test",
        "monitoring@example.test",
        "list-4@example.test",
        "[users] Website is down again",
        "List-Id: <users.lists.example.test>\r\nList-Unsubscribe: <mailto:users-leave@example.test>\r\nPrecedence: list\r\n",
        "The site is down for everyone on the list.",
    );
    // A control message that must be acknowledged, to know the daemon got that far.
    let normal = message(
        "customer5@example.test",
        "monitoring@example.test",
        "normal-5@example.test",
        "Website is down",
        "",
        "Our website is down since 9:00.",
    );
    stack.send(
        "customer3@example.test",
        &["monitoring@example.test"],
        &auto,
    );
    stack.send(
        "customer4@example.test",
        &["monitoring@example.test"],
        &list,
    );
    stack.send(
        "customer5@example.test",
        &["monitoring@example.test"],
        &normal,
    );

    // All three are still forwarded to support (the routing does not depend on the ack).
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        [
            "auto-3@example.test",
            "list-4@example.test",
            "normal-5@example.test",
        ]
        .iter()
        .all(|id| ms.iter().any(|m| is_forward_of(m, id)))
    });
    stack.wait_until("customer5@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, "normal-5@example.test"))
    });
    stack.drain();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        stack
            .fetch_all("customer3@example.test", "INBOX")
            .is_empty(),
        "no ack to an auto-reply"
    );
    assert!(
        stack
            .fetch_all("customer4@example.test", "INBOX")
            .is_empty(),
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

#[test]
fn restart_forwards_nothing_twice() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(&stack, dir.path(), &state);
    let log = dir.path().join("daemon.log");

    let ids: Vec<String> = (0..3)
        .map(|i| format!("restart-{i}@example.test"))
        .collect();
    let send = |i: usize| {
        let raw = message(
            "customer6@example.test",
            "billing@example.test",
            &ids[i],
            &format!("Website is down ({i})"),
            "",
            "Error 500 everywhere.",
        );
        stack.send("customer6@example.test", &["billing@example.test"], &raw);
    };
    let daemon = Daemon::start(&cfg, &log);
    send(0);
    send(1);
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ids[..2]
            .iter()
            .all(|id| ms.iter().any(|m| is_forward_of(m, id)))
    });
    assert!(daemon.stop().success());

    // Same state: the checkpoint and the index say both are done.
    let daemon = Daemon::start(&cfg, &log);
    send(2);
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, &ids[2]))
    });
    assert!(daemon.stop().success());

    // State lost entirely: the $Triaged marks on the server still say what was done.
    std::fs::remove_dir_all(&state).unwrap();
    let daemon = Daemon::start(&cfg, &log);
    let marker = message(
        "customer7@example.test",
        "billing@example.test",
        "marker-7@example.test",
        "Website is down",
        "",
        "Error 500.",
    );
    stack.send("customer7@example.test", &["billing@example.test"], &marker);
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, "marker-7@example.test"))
    });
    stack.drain();
    assert!(daemon.stop().success());

    let support = stack.fetch_all("support@example.test", "INBOX");
    for id in &ids {
        assert_eq!(
            support.iter().filter(|m| is_forward_of(m, id)).count(),
            1,
            "{id} forwarded exactly once"
        );
    }
    let acks = stack.fetch_all("customer6@example.test", "INBOX");
    for id in &ids {
        assert_eq!(
            acks.iter().filter(|m| is_ack_of(m, id)).count(),
            1,
            "{id} acknowledged exactly once"
        );
    }
}

#[test]
fn forwarded_message_is_moved_to_the_configured_folder() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let shipped = support::daemon::shipped_rules();
    let rules = shipped.replacen(
        "address = \"billing@example.test\"\nqueue = \"billing\"",
        "address = \"billing@example.test\"\nqueue = \"billing\"\nforwarded_folder = \"Forwarded\"",
        1,
    );
    assert_ne!(
        rules, shipped,
        "the billing mailbox is where the test expects it"
    );
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules).unwrap();
    let daemon = Daemon::start_with(&cfg, &dir.path().join("daemon.log"), &rules_path);

    let id = "move-1@example.test";
    let raw = message(
        "customer8@example.test",
        "billing@example.test",
        id,
        "Website is down",
        "",
        "Error 500 since the morning.",
    );
    stack.send("customer8@example.test", &["billing@example.test"], &raw);
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, id))
    });
    let moved = stack.wait_until("billing@example.test", "Forwarded", WAIT, |ms| {
        !ms.is_empty()
    });
    assert_eq!(
        header(&moved[0].raw, "Message-ID").as_deref(),
        Some(format!("<{id}>").as_str())
    );
    assert!(
        moved[0].flags.iter().any(|f| f == "$Forwarded"),
        "{:?}",
        moved[0].flags
    );
    assert!(
        stack.fetch_all("billing@example.test", "INBOX").is_empty(),
        "the original left the INBOX"
    );
    assert!(daemon.stop().success());
}

#[test]
fn mailboxes_that_forward_to_each_other_do_not_loop_and_secrets_stay_out_of_the_log() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    // billing@ passes what it does not recognise to sales, sales@ passes it back to billing.
    let shipped = support::daemon::shipped_rules();
    let rules = shipped
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
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules).unwrap();
    let daemon = Daemon::start_with(&cfg, &dir.path().join("daemon.log"), &rules_path);

    let id = "loop-1@example.test";
    let raw = message(
        "customer9@example.test",
        "billing@example.test",
        id,
        "Hello there",
        "",
        "Just a note about our meeting.",
    );
    stack.send("customer9@example.test", &["billing@example.test"], &raw);
    stack.wait_until("sales@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, id))
    });
    stack.wait_until("customer9@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    // Give a loop every chance to show itself, then count.
    std::thread::sleep(Duration::from_secs(3));
    stack.drain();
    let forwards = |user: &str| {
        stack
            .fetch_all(user, "INBOX")
            .iter()
            .filter(|m| is_forward_of(m, id))
            .count()
    };
    assert_eq!(forwards("sales@example.test"), 1, "forwarded once to sales");
    assert_eq!(
        forwards("billing@example.test"),
        0,
        "sales@ did not pass the forward back: it is mailtriage's own mail"
    );
    assert_eq!(
        stack.fetch_all("customer9@example.test", "INBOX").len(),
        1,
        "one acknowledgement"
    );
    let log = daemon.log();
    assert!(log.contains("Mailbox connected."), "{log}");
    assert!(
        !log.contains(&stack.password),
        "the password appears in the log:\n{log}"
    );
    assert!(daemon.stop().success());
}
