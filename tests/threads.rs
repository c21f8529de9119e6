//! Threads on the real mail stack: follow-ups go to the owning queue with the history,
//! tickets never ping-pong, red flags escalate, incidents reach acknowledgements while
//! active, promises reach later notes, and unanswered tickets get reminders and one
//! status mail.

mod support;

use std::path::Path;
use std::time::Duration;

use support::daemon::{
    header, is_ack_of, is_forward_of, message, shipped_rules, ticket_of, write_config,
    write_config_with, write_rules, Daemon, WAIT,
};
use support::{FetchedMail, Stack};

fn text_of(m: &FetchedMail) -> String {
    mail_parser::MessageParser::default()
        .parse(&m.raw)
        .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

fn kind_of(m: &FetchedMail) -> Option<String> {
    let h = header(&m.raw, "X-Mailtriage")?;
    h.split(';')
        .find_map(|p| p.trim().strip_prefix("kind=").map(str::to_string))
}

fn of_ticket<'a>(ms: &'a [FetchedMail], ticket: &str, kind: &str) -> Vec<&'a FetchedMail> {
    ms.iter()
        .filter(|m| {
            kind_of(m).as_deref() == Some(kind)
                && header(&m.raw, "X-Mailtriage")
                    .is_some_and(|h| h.contains(&format!("ticket={ticket};")))
        })
        .collect()
}

fn reply(
    from: &str,
    to: &str,
    id: &str,
    in_reply_to: &str,
    subject: &str,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let extra = format!("In-Reply-To: <{in_reply_to}>\r\nReferences: <{in_reply_to}>\r\n{extra}");
    message(from, to, id, subject, &extra, body)
}

#[test]
fn reply_to_the_ack_reaches_the_owner_without_classification_and_with_history() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "first-1@example.test";
    stack.send(
        "customer1@example.test",
        &["billing@example.test"],
        &message(
            "customer1@example.test",
            "billing@example.test",
            id,
            "Website is down",
            "",
            "Error 500 on every page.",
        ),
    );
    let inbox = stack.wait_until("customer1@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ack = inbox.iter().find(|m| is_ack_of(m, id)).unwrap();
    let ticket = ticket_of(ack);
    let ack_id = header(&ack.raw, "Message-ID").unwrap();
    let ack_id = ack_id.trim_matches(['<', '>']);

    // The customer answers the acknowledgement, again to billing@, with billing words:
    // it is a follow-up of a support ticket, not a new billing request.
    let follow = reply(
        "customer1@example.test",
        "billing@example.test",
        "second-1@example.test",
        ack_id,
        &format!("Re: [#{ticket}] We have received your request"),
        "",
        "Also, the invoice page shows the same error. Please refund if this takes long.",
    );
    stack.send("customer1@example.test", &["billing@example.test"], &follow);
    let support = stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, "second-1@example.test"))
    });
    let fwd = support
        .iter()
        .find(|m| is_forward_of(m, "second-1@example.test"))
        .unwrap();
    assert_eq!(ticket_of(fwd), ticket);
    let note = text_of(fwd);
    assert!(note.contains(&format!("follow-up 1 of {ticket}")), "{note}");
    assert!(
        !note.contains("rule \""),
        "a follow-up is not classified again:\n{note}"
    );
    assert!(
        note.contains("message arrived at billing@example.test"),
        "history in the note:\n{note}"
    );
    assert!(note.contains("forwarded to Technical support"), "{note}");
    assert!(
        note.contains("acknowledgement sent to customer1@example.test"),
        "{note}"
    );
    // Nothing went to billing's queue as a new request.
    assert!(stack
        .fetch_all("billing@example.test", "INBOX")
        .iter()
        .all(|m| kind_of(m).is_none() || ticket_of(m) == ticket));

    // One acknowledgement and one "added to your request", never a second acknowledgement.
    let third = reply(
        "customer1@example.test",
        "support@example.test",
        "third-1@example.test",
        ack_id,
        &format!("Re: [#{ticket}] more"),
        "",
        "One more detail.",
    );
    stack.send("customer1@example.test", &["support@example.test"], &third);
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| {
            header(&m.raw, "Message-ID").as_deref() == Some("<third-1@example.test>")
                && m.flags.iter().any(|f| f == "$Triaged")
        })
    });
    stack.drain();
    let inbox = stack.fetch_all("customer1@example.test", "INBOX");
    assert_eq!(
        of_ticket(&inbox, &ticket, "acknowledgement").len(),
        1,
        "one acknowledgement"
    );
    assert_eq!(
        of_ticket(&inbox, &ticket, "added").len(),
        1,
        "one 'added' mail per window"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_ticket_sent_back_by_its_queue_lands_with_the_supervisor() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "pingpong-1@example.test";
    stack.send(
        "customer2@example.test",
        &["billing@example.test"],
        &message(
            "customer2@example.test",
            "billing@example.test",
            id,
            "Сайт не работает",
            "",
            "Ошибка 500 с утра.",
        ),
    );
    let support = stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, id))
    });
    let fwd = support.iter().find(|m| is_forward_of(m, id)).unwrap();
    let ticket = ticket_of(fwd);

    // Support thinks it is billing's and forwards it back to billing@.
    let back = message(
        "support@example.test",
        "billing@example.test",
        "back-1@example.test",
        &format!("Fwd: [#{ticket}] Сайт не работает"),
        "",
        "Это к вам, по оплате.",
    );
    stack.send("support@example.test", &["billing@example.test"], &back);
    let sup = stack.wait_until("supervisor@example.test", "INBOX", WAIT, |ms| {
        !of_ticket(ms, &ticket, "forward").is_empty()
    });
    let note = text_of(of_ticket(&sup, &ticket, "forward")[0]);
    assert!(
        note.contains("ЭСКАЛАЦИЯ")
            && note.contains("Бухгалтерия")
            && note.contains("Техническая поддержка"),
        "{note}"
    );
    assert!(
        note.contains("История"),
        "the whole history goes with it:\n{note}"
    );
    stack.drain();
    std::thread::sleep(Duration::from_secs(1));
    // Not back and forth: support got the ticket once, billing never as a forward.
    assert_eq!(
        of_ticket(
            &stack.fetch_all("support@example.test", "INBOX"),
            &ticket,
            "forward"
        )
        .len(),
        1
    );
    assert!(of_ticket(
        &stack.fetch_all("billing@example.test", "INBOX"),
        &ticket,
        "forward"
    )
    .is_empty());
    assert!(daemon.stop().success());
}

#[test]
fn a_profane_message_reaches_queue_and_supervisor_and_the_customer_gets_a_polite_ack() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "angry-1@example.test";
    stack.send(
        "customer3@example.test",
        &["billing@example.test"],
        &message(
            "customer3@example.test",
            "billing@example.test",
            id,
            "Website is down",
            "",
            "You idiots broke the site again. Error 500 everywhere.",
        ),
    );
    let support = stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_forward_of(m, id))
    });
    let fwd = support.iter().find(|m| is_forward_of(m, id)).unwrap();
    let ticket = ticket_of(fwd);
    let subject = mail_parser::MessageParser::default()
        .parse(&fwd.raw)
        .unwrap()
        .subject()
        .unwrap()
        .to_string();
    assert!(subject.starts_with("[ESCALATED]"), "{subject}");
    assert_eq!(
        header(&fwd.raw, "X-Priority").as_deref(),
        Some("1 (Highest)")
    );

    let sup = stack.wait_until("supervisor@example.test", "INBOX", WAIT, |ms| {
        !of_ticket(ms, &ticket, "forward").is_empty()
    });
    let note = text_of(of_ticket(&sup, &ticket, "forward")[0]);
    assert!(
        note.contains("RED FLAG: profanity") && note.contains("idiots"),
        "reason and matched text:\n{note}"
    );

    let inbox = stack.wait_until("customer3@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ack = text_of(inbox.iter().find(|m| is_ack_of(m, id)).unwrap());
    assert!(
        ack.contains("Technical support") && ack.contains(&ticket),
        "{ack}"
    );
    assert!(
        !ack.to_lowercase().contains("idiot") && !ack.contains("RED FLAG"),
        "a normal, polite ack:\n{ack}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn an_incident_notice_is_in_acks_while_active_and_not_after() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let incidents = format!(
        r#"
[[incidents]]
id = "INC-LIVE"
subject = '(?i)checkout'
since = "{since}"
next_update = "{next}"
until = "{future}"
text = {{ en = "Checkout is failing since this morning; engineers are on it.", ru = "Оплата не проходит с утра." }}

[[incidents]]
id = "INC-OVER"
subject = '(?i)login'
since = "{since}"
until = "{past}"
text = {{ en = "Login problems are being fixed.", ru = "Проблемы со входом устраняются." }}
"#,
        since = fmt(now - time::Duration::hours(2)),
        next = fmt(now + time::Duration::hours(1)),
        future = fmt(now + time::Duration::hours(3)),
        past = fmt(now - time::Duration::minutes(5)),
    );
    let rules = write_rules(dir.path(), &(shipped_rules() + &incidents));
    let daemon = Daemon::start_with(&cfg, &dir.path().join("daemon.log"), &rules);

    stack.send(
        "customer4@example.test",
        &["support@example.test"],
        &message(
            "customer4@example.test",
            "support@example.test",
            "inc-1@example.test",
            "Checkout error 500",
            "",
            "The checkout is broken.",
        ),
    );
    stack.send(
        "customer5@example.test",
        &["support@example.test"],
        &message(
            "customer5@example.test",
            "support@example.test",
            "inc-2@example.test",
            "Login error",
            "",
            "I cannot log in, error.",
        ),
    );
    let a = stack.wait_until("customer4@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, "inc-1@example.test"))
    });
    let b = stack.wait_until("customer5@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, "inc-2@example.test"))
    });
    let a = text_of(&a[0]);
    let b = text_of(&b[0]);
    assert!(
        a.contains("Checkout is failing since this morning") && a.contains("Next update by"),
        "active incident in the ack:\n{a}"
    );
    assert!(
        !b.contains("Login problems"),
        "an ended incident no longer matches:\n{b}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_recorded_promise_appears_in_the_next_note_and_tickets_show_it() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(&stack, dir.path(), &state);
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));

    let id = "promise-1@example.test";
    stack.send(
        "customer6@example.test",
        &["billing@example.test"],
        &message(
            "customer6@example.test",
            "billing@example.test",
            id,
            "Refund request",
            "",
            "Please refund invoice 7781.",
        ),
    );
    let inbox = stack.wait_until("customer6@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ticket = ticket_of(&inbox[0]);

    // Billing answers the customer with a copy to its own mailbox, and promises something.
    let answer = message(
        "billing@example.test",
        "customer6@example.test",
        "answer-1@example.test",
        &format!("Re: [#{ticket}] Refund request"),
        "Cc: billing@example.test\r\n",
        "Dear customer,\r\n\r\nPromise: refund of invoice 7781 by 2026-12-01\r\n\r\nBilling",
    );
    stack.send(
        "billing@example.test",
        &["customer6@example.test", "billing@example.test"],
        &answer,
    );
    stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| {
            header(&m.raw, "Message-ID").as_deref() == Some("<answer-1@example.test>")
                && m.flags.iter().any(|f| f == "$Triaged")
        })
    });
    // And an operator records another one from the command line, through the daemon.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args([
            "tickets",
            "promise",
            &ticket,
            "call back on Monday",
            "--by",
            "supervisor",
            "--state",
        ])
        .arg(&state)
        .arg("--rules")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The customer writes again, to support@ by mistake: the note carries both promises.
    let again = message(
        "customer6@example.test",
        "support@example.test",
        "promise-2@example.test",
        &format!("[#{ticket}] refund"),
        "",
        "Any news?",
    );
    stack.send("customer6@example.test", &["support@example.test"], &again);
    let billing = stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter()
            .any(|m| is_forward_of(m, "promise-2@example.test"))
    });
    let note = text_of(
        billing
            .iter()
            .find(|m| is_forward_of(m, "promise-2@example.test"))
            .unwrap(),
    );
    assert!(
        note.contains("refund of invoice 7781 by 2026-12-01"),
        "{note}"
    );
    assert!(note.contains("call back on Monday"), "{note}");

    let show = std::process::Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .args(["tickets", "show", &ticket, "--state"])
        .arg(&state)
        .arg("--rules")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(
        text.contains("billing@example.test answered the customer"),
        "{text}"
    );
    assert!(
        text.contains("follow-up 1 arrived at support@example.test"),
        "{text}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn an_unanswered_ticket_gets_a_reminder_then_escalation_and_one_status_mail() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config_with(&stack, dir.path(), &dir.path().join("state"), "");
    // Time made controllable: support promises an answer within 2 seconds, and open
    // tickets are checked every second.
    let rules = shipped_rules()
        .replacen("response_time = \"4h\"", "response_time = \"2s\"", 1)
        .replacen("[threading]\n", "[threading]\nfollowup_check = \"1s\"\n", 1);
    let rules = write_rules(dir.path(), &rules);
    let daemon = Daemon::start_with(&cfg, &dir.path().join("daemon.log"), &rules);

    let id = "slow-1@example.test";
    stack.send(
        "customer7@example.test",
        &["support@example.test"],
        &message(
            "customer7@example.test",
            "support@example.test",
            id,
            "Website is down",
            "",
            "Nothing loads.",
        ),
    );
    let inbox = stack.wait_until("customer7@example.test", "INBOX", WAIT, |ms| {
        ms.iter().any(|m| is_ack_of(m, id))
    });
    let ticket = ticket_of(&inbox[0]);
    let support = stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        !of_ticket(ms, &ticket, "reminder").is_empty()
    });
    assert!(text_of(of_ticket(&support, &ticket, "reminder")[0]).contains(&ticket));
    stack.wait_until("supervisor@example.test", "INBOX", WAIT, |ms| {
        !of_ticket(ms, &ticket, "reminder").is_empty()
    });
    let inbox = stack.wait_until("customer7@example.test", "INBOX", WAIT, |ms| {
        !of_ticket(ms, &ticket, "status").is_empty()
    });
    let status = text_of(of_ticket(&inbox, &ticket, "status")[0]);
    assert!(
        status.contains("still with our Technical support team")
            && status.contains("Support supervisor"),
        "{status}"
    );
    // Several more checks pass; the customer still has one status mail, support one reminder.
    std::thread::sleep(Duration::from_secs(4));
    stack.drain();
    assert_eq!(
        of_ticket(
            &stack.fetch_all("customer7@example.test", "INBOX"),
            &ticket,
            "status"
        )
        .len(),
        1
    );
    assert_eq!(
        of_ticket(
            &stack.fetch_all("support@example.test", "INBOX"),
            &ticket,
            "reminder"
        )
        .len(),
        1
    );
    assert!(daemon.stop().success());
}
