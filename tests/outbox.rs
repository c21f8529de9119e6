//! The outbox sender on the real stack: the archive copy of every sent mail, several
//! SMTP connections at once with each ticket's mails in order, and a refusal for good
//! that holds up nothing else.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mailtriage::record::Store;
use support::lab::Lab;
use support::mail::Mail;
use support::ops::{free_port, metrics_section, sample, scrape, wait_status, write_secret};
use support::FetchedMail;

fn request(id: &str, customer: &str, n: usize) -> Mail {
    Mail::request(customer, "billing@example.test", id)
        .subject(&format!("Website is down ({n})"))
        .body("Error 500 on every page since 9:00.")
}

/// The mail without the trace fields the servers put on top at delivery (Return-Path,
/// Delivered-To, Received): what is left is what the daemon sent.
fn as_sent(raw: &[u8]) -> &[u8] {
    let mut rest = raw;
    let mut in_trace = false;
    loop {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        let continued = line.starts_with(b" ") || line.starts_with(b"\t");
        let trace = ["Return-Path:", "Delivered-To:", "Received:"]
            .iter()
            .any(|f| line.len() >= f.len() && line[..f.len()].eq_ignore_ascii_case(f.as_bytes()));
        if trace || (continued && in_trace) {
            in_trace = true;
            rest = &rest[end..];
        } else {
            return rest;
        }
    }
}

/// The header section of a mail, lower-cased.
fn head(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let end = text.find("\r\n\r\n").unwrap_or(text.len());
    text[..end].to_ascii_lowercase()
}

#[test]
fn archive_gets_every_sent_mail_and_no_header_of_a_sent_mail_shows_it() {
    let lab = Lab::setup().archive().start();
    let daemon = lab.daemon();
    let customers = ["customer1@example.test", "customer2@example.test"];
    for (n, c) in customers.iter().enumerate() {
        lab.send_mail(&request(&format!("arch-{n}@client.test"), c, n));
    }
    lab.wait_inbox("support@example.test", |ms| ms.len() == 2);
    for c in customers {
        lab.wait_inbox(c, |ms| ms.len() == 1);
    }
    lab.wait_inbox("archive@example.test", |ms| ms.len() == 4);
    lab.drain();
    assert!(daemon.stop().success());

    let mut sent: Vec<FetchedMail> = lab.inbox("support@example.test");
    for c in customers {
        sent.extend(lab.inbox(c));
    }
    let archive = lab.inbox("archive@example.test");
    let by_id: BTreeMap<String, &FetchedMail> =
        archive.iter().map(|m| (m.message_id(), m)).collect();
    assert_eq!(by_id.len(), 4, "four different mails in the archive");
    assert_eq!(
        by_id.keys().cloned().collect::<BTreeSet<_>>(),
        sent.iter()
            .map(FetchedMail::message_id)
            .collect::<BTreeSet<_>>(),
        "the archive holds exactly the mails that went out"
    );
    for m in &sent {
        let h = head(&m.raw);
        assert!(
            !h.contains("archive") && !h.contains("\nbcc:"),
            "a receiver's copy names the archive:\n{h}"
        );
        // Byte for byte what the archive got: the archive is an envelope recipient only.
        let copy = by_id[&m.message_id()];
        assert_eq!(
            String::from_utf8_lossy(as_sent(&m.raw)),
            String::from_utf8_lossy(as_sent(&copy.raw))
        );
    }
}

/// The customer of the `n`-th ticket.
fn customer(n: usize) -> String {
    format!("customer{}@example.test", n + 1)
}

/// Whether `m` is about the original `id`: its References name it.
fn about(m: &FetchedMail, id: &str) -> bool {
    m.header("References")
        .is_some_and(|r| r.contains(&format!("<{id}>")))
}

/// A backlog of `tickets` requests, each followed by a reply of its customer: the reply
/// joins the request's ticket, whose mails then wait for one another. And a request of
/// `stranger`, a customer the server does not know: its acknowledgement is refused for good.
fn send_backlog(lab: &Lab, tickets: usize, stranger: &str) {
    for n in 0..tickets {
        lab.send_mail(&request(&format!("ord-{n}@client.test"), &customer(n), n));
    }
    lab.send_mail(&request("ord-x@client.test", stranger, 99));
    lab.drain();
    for n in 0..tickets {
        lab.send_mail(
            &Mail::request(
                &customer(n),
                "billing@example.test",
                &format!("ord-{n}-re@client.test"),
            )
            .in_reply_to(&format!("ord-{n}@client.test"))
            .subject(&format!("Re: Website is down ({n})"))
            .body("Still down, and now the login page too."),
        );
    }
    lab.drain();
    lab.wait_inbox("billing@example.test", |ms| ms.len() == 2 * tickets + 1);
}

/// The word `name=VALUE` of a log line, as VALUE.
fn log_field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name))
        .unwrap_or_default()
        .to_string()
}

/// Per ticket, the per-ticket numbers (in their Message-IDs) of the mails the server
/// accepted, in the order the log says it accepted them.
fn accepted_by_ticket(log: &str) -> BTreeMap<String, Vec<u32>> {
    let mut accepted: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("Mail accepted.")) {
        let id = log_field(line, "message_id=");
        let number: u32 = id.split('.').nth(1).and_then(|n| n.parse().ok()).unwrap();
        accepted
            .entry(log_field(line, "ticket="))
            .or_default()
            .push(number);
    }
    accepted
}

#[test]
fn several_connections_keep_each_tickets_order_and_a_refusal_blocks_nothing() {
    let lab = Lab::start();
    let tickets = 8;
    let stranger = "nosuch@example.test";
    send_backlog(&lab, tickets, stranger);

    let daemon = lab.daemon();
    lab.wait_inbox("support@example.test", |ms| {
        (0..tickets).all(|n| {
            ms.iter().any(|m| about(m, &format!("ord-{n}@client.test")))
                && ms
                    .iter()
                    .any(|m| about(m, &format!("ord-{n}-re@client.test")))
        }) && ms.iter().any(|m| about(m, "ord-x@client.test"))
    });
    for n in 0..tickets {
        lab.wait_inbox(&customer(n), |ms| !ms.is_empty());
    }
    lab.drain();
    let log = daemon.log();
    assert!(daemon.stop().success());

    // More than one connection was used at once, and no more than configured (3), plus
    // one to replace the connection lettre closes after the refusal.
    let opened = log.matches("SMTP connection opened.").count();
    assert!(
        (2..=4).contains(&opened),
        "{opened} connections opened:\n{log}"
    );

    // Each ticket's mails were accepted in the order they were decided (the per-ticket
    // number in their Message-IDs), although mails of different tickets overlapped.
    let accepted = accepted_by_ticket(&log);
    assert_eq!(accepted.len(), tickets + 1, "{accepted:?}");
    for (ticket, numbers) in &accepted {
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{ticket}: mails accepted in the order {numbers:?}"
        );
    }
    assert_eq!(
        accepted.values().filter(|v| v.len() >= 3).count(),
        tickets,
        "each ticket: the forward, the ack and the reply's forward: {accepted:?}"
    );

    // The stranger's acknowledgement is a dead letter; everything else went out.
    let store = Store::open(&lab.state).unwrap();
    let dead = store.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1.to, vec![stranger.to_string()]);
    assert!(
        dead[0].0.contains("550"),
        "the server's words are kept: {}",
        dead[0].0
    );
    assert_eq!(store.outbox_len(), 0);
}

/// An SMTP relay between the daemon and Postfix (plain SMTP) that passes everything on
/// but, once a connection has sent the end of a mail (`CRLF.CRLF`) for `recipient`,
/// keeps the server's answers from the daemon: Postfix has the mail, the daemon never
/// hears its `250`. This is the window SMTP leaves open, held open for the test.
fn answer_swallowing_relay(to_port: u16, recipient: &'static str) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", to_port)).unwrap();
            let swallow = Arc::new(AtomicBool::new(false));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let seen = swallow.clone();
            std::thread::spawn(move || {
                // What the client said since the last end of a mail.
                let mut txn: Vec<u8> = Vec::new();
                let rcpt = format!("RCPT TO:<{recipient}>");
                let mut buf = [0u8; 8192];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    txn.extend_from_slice(&buf[..n]);
                    if txn.windows(5).any(|w| w == b"\r\n.\r\n") {
                        if String::from_utf8_lossy(&txn).contains(&rcpt) {
                            seen.store(true, Ordering::SeqCst);
                        }
                        txn.clear();
                    }
                }
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !swallow.load(Ordering::SeqCst) && c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Kills the daemon while the server has accepted a request's acknowledgement but the
/// daemon has not heard so, then starts it again on the real server. Returns the log
/// and what reached support@ and the customer.
fn kill_with_answers_lost(archive: bool) -> (String, Vec<FetchedMail>, Vec<FetchedMail>) {
    let setup = if archive {
        Lab::setup().archive()
    } else {
        Lab::setup()
    };
    let lab = setup.start();
    let text = lab.config_text();
    let customer = "customer3@example.test";
    let relay = answer_swallowing_relay(lab.smtp_port, customer);
    let via_relay = text
        .replacen("tls = \"starttls\"", "tls = \"plaintext\"", 1)
        .replacen(
            &format!("port = {}", lab.smtp_port),
            &format!("port = {relay}"),
            1,
        );
    assert_ne!(via_relay, text);
    lab.write_config(&via_relay);
    let daemon = lab.daemon();
    lab.send_mail(&request("window-1@client.test", customer, 1));
    // Both mails are in their mailboxes: Postfix took them; the daemon still waits for
    // the answer to the acknowledgement.
    lab.wait_inbox("support@example.test", |ms| ms.len() == 1);
    lab.wait_inbox(customer, |ms| ms.len() == 1);
    let first = daemon.log();
    assert!(
        !first
            .lines()
            .any(|l| l.contains("Mail accepted.") && l.contains("kind=Acknowledgement")),
        "{first}"
    );
    daemon.kill();

    lab.write_config(&text);
    let daemon = lab.daemon();
    daemon.wait_log_until("the new run's log saying \"the last stop\"", |log| {
        log[first.len()..].contains("the last stop")
    });
    // Anything sent again would be sent now.
    std::thread::sleep(Duration::from_secs(2));
    lab.drain();
    let text = daemon.log();
    assert!(daemon.stop().success());
    (text, lab.inbox("support@example.test"), lab.inbox(customer))
}

#[test]
fn with_an_archive_mails_accepted_just_before_a_kill_are_not_sent_again() {
    let (log, support, customer) = kill_with_answers_lost(true);
    assert_eq!(support.len(), 1, "one forward");
    assert_eq!(customer.len(), 1, "one acknowledgement");
    assert_eq!(
        log.matches("was accepted; not sent again.").count(),
        1,
        "{log}"
    );
    assert!(log.contains("found_in=archive"), "{log}");
    assert!(!log.contains("uncertain="), "{log}");
}

#[test]
fn without_an_archive_only_the_ack_to_a_customer_outside_is_sent_again_with_a_warning() {
    let (log, support, customer) = kill_with_answers_lost(false);
    assert_eq!(support.len(), 1, "one forward");
    // The ack cannot be looked up: it is sent again, and the warning says what helps.
    assert_eq!(customer.len(), 2, "the acknowledgement, twice");
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("uncertain="))
        .unwrap_or_else(|| panic!("no warning naming the resent mail:\n{log}"));
    assert!(warning.contains("[archive]"), "{warning}");
    assert!(warning.contains("may see it twice"), "{warning}");
}

/// `text` in a file of mode 0600, as a password file must be.
/// `mailtriage status` as an admin reads it.
fn status_text(lab: &Lab) -> String {
    let o = lab.cli(&["status"]).run();
    assert!(o.status.success(), "{}", o.stderr);
    o.stdout
}

#[test]
fn a_corrected_smtp_password_is_used_without_a_restart() {
    let port = free_port();
    let lab = Lab::setup().config(&metrics_section(port)).start();
    // Submission with AUTH as support@, and a wrong password in the file at first.
    let pass = lab.dir().join("smtp.pass");
    write_secret(&pass, "not-the-password\n");
    lab.edit_config(
        &format!("port = {}\ntls = \"starttls\"", lab.stack.smtp_port),
        &format!(
            "port = {}\ntls = \"starttls\"\nuser = \"support@{}\"\npassword_file = \"{}\"",
            lab.stack.submission_port,
            lab.stack.domain,
            pass.display()
        ),
    );
    let daemon = lab.daemon();
    let id = "smtp-pass-1@example.test";
    lab.send_mail(&request(id, &customer(1), 1));
    // An ERROR for the operator, with the section and what the server said.
    let line = daemon.log_line("SMTP login failed");
    assert!(
        line.contains("ERROR") && line.contains("section=smtp ") && line.contains("535"),
        "{line}"
    );

    // `status` shows the SMTP side failing with the server's answer, and the metrics count
    // the deferred mails.
    let st = wait_status(&daemon, &lab.state, |s| s["smtp"]["state"] == "failing");
    let answer = st["smtp"]["last_answer"].as_str().unwrap_or_default();
    assert!(answer.contains("535"), "{st:#}");
    assert!(st["smtp"]["since"].is_string(), "{st:#}");
    assert!(st["smtp"]["deferred"].as_u64() >= Some(1), "{st:#}");
    let text = status_text(&lab);
    assert!(text.contains("smtp:") && text.contains("failing"), "{text}");
    let metrics = scrape(port);
    let deferred = sample(&metrics, "mailtriage_mails_total", &["result=\"deferred\""]);
    assert!(deferred >= Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "mailtriage_smtp_failing", &[]),
        Some(1.0),
        "{metrics}"
    );

    // The admin mends the file; the next connection reads it, no restart.
    write_secret(&pass, &format!("{}\n", lab.stack.password));
    lab.wait_forward("support@example.test", id);
    // The forward and the acknowledgement: the forward can arrive before the ack is sent.
    let st = wait_status(&daemon, &lab.state, |s| {
        s["smtp"]["state"] == "ok" && s["smtp"]["sent"].as_u64() >= Some(2)
    });
    let answer = st["smtp"]["last_answer"].as_str().unwrap_or_default();
    assert!(answer.starts_with("250"), "{st:#}");
    let metrics = scrape(port);
    assert_eq!(
        sample(&metrics, "mailtriage_smtp_failing", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert!(daemon.stop().success());
}

/// The shipped rules with support's queue at `techdesk@`, an address the stack does not
/// know (yet): every forward to support is refused for good.
fn rules_with_a_queue_nobody_receives() -> String {
    let rules = support::shipped_rules();
    let changed = rules.replacen(
        "address = \"support@example.test\"",
        "address = \"techdesk@example.test\"",
        1,
    );
    assert_ne!(changed, rules);
    changed
}

#[test]
fn a_forward_refused_for_good_is_in_status_metrics_history_and_told_and_sent_again_on_retry() {
    let port = free_port();
    let lab = Lab::setup()
        .rules(&rules_with_a_queue_nobody_receives())
        .config(&metrics_section(port))
        .start();
    let daemon = lab.daemon();
    let (first, second) = ("refused-fwd-1@client.test", "refused-fwd-2@client.test");
    lab.send_mail(&request(first, &customer(2), 2));
    lab.send_mail(&request(second, &customer(3), 3));
    // The customers still get their acknowledgements; the forwards are dead letters.
    let ticket = lab.wait_ack(&customer(2), first).ticket();

    wait_status(&daemon, &lab.state, |s| {
        s["dead_letters"] == 2 && s["outbox"] == 0
    });
    let text = status_text(&lab);
    assert!(
        text.contains("refused:   2 mail(s) refused for good by the SMTP server"),
        "{text}"
    );
    support::poll(
        "the dead-letter gauge",
        support::WAIT,
        Duration::from_millis(200),
        || {
            let metrics = scrape(port);
            match sample(&metrics, "mailtriage_dead_letters", &[]) {
                Some(2.0) => Ok(()),
                other => Err(format!("{other:?}:\n{metrics}")),
            }
        },
    );
    let metrics = scrape(port);
    assert!(
        metrics.contains("# HELP mailtriage_dead_letters "),
        "{metrics}"
    );

    // The escalation queue is told, since the queue that owns the ticket never got it.
    let is_note = |m: &FetchedMail| m.kind().as_deref() == Some("undelivered");
    let notes = lab.wait_inbox("supervisor@example.test", |ms| {
        ms.iter().filter(|m| is_note(m)).count() == 2
    });
    let note = notes
        .into_iter()
        .find(|m| is_note(m) && m.ticket() == ticket)
        .unwrap();
    assert!(
        note.subject().contains(&format!("[#{ticket}]")),
        "{}",
        note.subject()
    );
    let words = note.text();
    for part in [
        "techdesk@example.test",
        "550",
        "forward",
        "mailtriage outbox retry",
    ] {
        assert!(words.contains(part), "{part:?} not in the note:\n{words}");
    }
    // The ticket's history says so; `tickets show` no longer just says "forwarded".
    let show = lab.cli(&["tickets", "show", &ticket]).run().stdout;
    let line = show
        .lines()
        .find(|l| l.contains("refused the forward to techdesk@example.test for good"))
        .unwrap_or_else(|| panic!("no refusal in the timeline:\n{show}"));
    assert!(
        line.contains("550") && line.contains("Support supervisor was told"),
        "{line}"
    );

    retry_one_and_drop_the_other(&lab, &daemon, (first, &ticket), &customer(3));
    assert!(daemon.stop().success());
    // With no daemon, the state itself answers.
    let list = lab.cli(&["outbox", "list"]).run();
    assert!(list.status.success(), "{}", list.text());
    assert_eq!(list.stdout, "nothing waiting, nothing refused\n");
}

/// What an operator does with the two refused forwards: lists them, makes the missing
/// address and sends the first (of `ticket`) again, and drops the second (of
/// `other_customer`) for good.
fn retry_one_and_drop_the_other(
    lab: &Lab,
    daemon: &support::daemon::Daemon,
    (first, ticket): (&str, &str),
    other_customer: &str,
) {
    let list = lab.cli(&["outbox", "list", "--json"]).run().json();
    let refused: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "refused" && e["kind"] == "forward")
        .collect();
    assert_eq!(refused.len(), 2, "{list:#}");
    let id_of = |t: &str| -> String {
        let e = refused.iter().find(|e| e["ticket"] == t).unwrap();
        assert!(e["reason"].as_str().unwrap_or("").contains("550"), "{e}");
        assert_eq!(e["to"][0], "techdesk@example.test", "{e}");
        e["id"].to_string()
    };
    let mine = id_of(ticket);
    let other = refused
        .iter()
        .find(|e| e["ticket"] != ticket)
        .map(|e| e["id"].to_string())
        .unwrap();
    let text = lab.cli(&["outbox", "list"]).run().stdout;
    let row = text.lines().find(|l| l.starts_with(&mine)).unwrap_or("");
    assert!(
        row.contains("refused") && row.contains(ticket) && row.contains("forward"),
        "{text}"
    );

    lab.add_user("techdesk@example.test");
    let retried = lab.cli(&["outbox", "retry", &mine]).run();
    assert!(retried.status.success(), "{}", retried.text());
    assert!(
        retried.stdout.contains("back in the outbox"),
        "{}",
        retried.stdout
    );
    lab.wait_forward("techdesk@example.test", first);
    let show = lab.cli(&["tickets", "show", ticket]).run().stdout;
    assert!(show.contains("was put back in the outbox"), "{show}");

    let dropped = lab.cli(&["outbox", "drop", &other]).run();
    assert!(dropped.status.success(), "{}", dropped.text());
    assert!(
        dropped
            .stdout
            .contains(&format!("dropped mail {other} for good"))
            && dropped.stdout.contains("techdesk@example.test"),
        "{}",
        dropped.stdout
    );
    let again = lab.cli(&["outbox", "drop", &other]).run();
    assert!(!again.status.success(), "a mail dropped is gone");
    wait_status(daemon, &lab.state, |s| s["dead_letters"] == 0);
    lab.drain();
    let techdesk = lab.inbox("techdesk@example.test");
    assert_eq!(techdesk.len(), 1, "only the retried forward");
    assert!(
        lab.inbox(other_customer).len() == 1,
        "its ack, nothing more"
    );
}
