//! Servers that do not offer everything, on the real stack: a Dovecot that hides IDLE
//! and MOVE (and UIDPLUS) from CAPABILITY, one whose folders keep no new keywords, and
//! `mailtriage login-test`. Dovecot still accepts IDLE and MOVE when it hides them, so
//! the tests read its rawlog (every command the clients sent after login) to show the
//! daemon never sent them.

mod support;

use support::cli::cli;
use support::lab::Lab;
use support::mail::Mail;
use support::ops;
use support::{shipped_rules, WAIT};

/// The shipped rules with billing moving what it forwards to "Forwarded".
fn rules_moving_billing_forwards() -> String {
    let shipped = shipped_rules();
    let from = "address = \"billing@example.test\"\nqueue = \"billing\"";
    assert!(
        shipped.contains(from),
        "billing is where the test expects it"
    );
    shipped.replacen(
        from,
        &format!("{from}\nforwarded_folder = \"Forwarded\""),
        1,
    )
}

/// A lab whose Dovecot hides `hide` from CAPABILITY and logs every session raw; billing
/// moves its forwards and polls every second.
fn lab_hiding(hide: &'static str) -> Lab {
    let lab = Lab::setup()
        .rules(&rules_moving_billing_forwards())
        .stack("MAILSTACK_IMAP_HIDE", hide)
        .stack("MAILSTACK_RAWLOG", "1")
        .start();
    lab.edit_config(
        "[mailboxes.billing]\n",
        "[mailboxes.billing]\npoll_interval = \"1s\"\n",
    );
    lab
}

/// The commands in `sent` whose name (after the tag, and `UID`) is `name`.
fn commands<'a>(sent: &'a [String], name: &str) -> Vec<&'a str> {
    sent.iter()
        .map(String::as_str)
        .filter(|line| {
            // rawlog lines: "TIMESTAMP TAG COMMAND ..." (a continuation has no tag).
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            let cmd = match words.as_slice() {
                [_, uid, cmd, ..] if uid.eq_ignore_ascii_case("UID") => *cmd,
                [_, cmd, ..] => *cmd,
                _ => "",
            };
            cmd.eq_ignore_ascii_case(name)
        })
        .collect()
}

/// Sends a request to billing that belongs to technical support and waits until it is
/// forwarded and lies in billing's "Forwarded" folder, gone from its INBOX.
fn forwarded_and_moved(lab: &Lab, id: &str) {
    forwarded_and_copied(lab, id);
    lab.wait_inbox("billing@example.test", |ms| !ms.iter().any(|m| m.is(id)));
}

/// Sends a request to billing that belongs to technical support and waits until it is
/// forwarded and lies in billing's "Forwarded" folder.
fn forwarded_and_copied(lab: &Lab, id: &str) {
    lab.send_mail(
        &Mail::request("customer5@example.test", "billing@example.test", id)
            .subject("Website is down")
            .body("Error 500 on every page since the morning."),
    );
    lab.wait_forward("support@example.test", id);
    let moved = lab.wait_until("billing@example.test", "Forwarded", WAIT, |ms| {
        ms.iter().any(|m| m.is(id))
    });
    let m = moved.iter().find(|m| m.is(id)).unwrap();
    assert!(m.has_flag("$Forwarded"), "{:?}", m.flags);
}

#[test]
fn without_idle_and_move_mail_is_polled_and_moved_by_copy_and_uid_expunge() {
    let lab = lab_hiding("IDLE MOVE");
    let daemon = lab.daemon();
    daemon.wait_log_until("billing's mode said", |log| {
        log.lines()
            .any(|l| l.contains("Mailbox mode set") && l.contains("mailbox=billing"))
    });
    let billing = daemon
        .log()
        .lines()
        .find(|l| l.contains("Mailbox mode set") && l.contains("mailbox=billing"))
        .unwrap()
        .to_string();
    assert!(billing.contains(" INFO "), "{billing}");
    assert!(
        billing.contains("poll every 1s") && billing.contains("COPY + UID EXPUNGE"),
        "{billing}"
    );

    // The first after the daemon is idle in its poll: only polling finds it.
    ops::wait_status(&daemon, &lab.state, |st| {
        st["mailboxes"]["billing"]["state"] == "idle"
    });
    forwarded_and_moved(&lab, "caps-poll-1@client.test");
    forwarded_and_moved(&lab, "caps-poll-2@client.test");

    let st = ops::status(&lab.state);
    let mode = &st["mailboxes"]["billing"]["mode"];
    assert_eq!(mode["wait"]["poll"], "1s", "{st:#}");
    assert_eq!(mode["moves"], "copy-expunge", "{st:#}");
    assert_eq!(mode["marks"], "server", "{st:#}");
    let text = lab.cli(&["status"]).run().text();
    assert!(
        text.contains("poll every 1s, copy (COPY + UID EXPUNGE), marks on server"),
        "{text}"
    );
    assert!(daemon.stop().success());

    let sent = lab.imap_commands_sent();
    assert!(
        !commands(&sent, "COPY").is_empty() && !commands(&sent, "EXPUNGE").is_empty(),
        "the rawlog holds the daemon's session:\n{}",
        sent.join("\n")
    );
    assert_eq!(commands(&sent, "IDLE"), Vec::<&str>::new());
    assert_eq!(commands(&sent, "MOVE"), Vec::<&str>::new());
    // UID EXPUNGE only: a plain EXPUNGE would remove other clients' \Deleted messages.
    assert!(
        sent.iter()
            .all(|l| !l.contains(" EXPUNGE") || l.contains("UID EXPUNGE")),
        "{}",
        sent.join("\n")
    );
}

#[test]
fn without_uidplus_a_move_is_a_copy_and_the_original_is_struck_out_never_expunged() {
    let lab = lab_hiding("IDLE MOVE UIDPLUS");
    let daemon = lab.daemon();
    let id = "caps-nouidplus-1@client.test";
    forwarded_and_copied(&lab, id);
    // The original stays, \Deleted, for a client that expunges: a plain EXPUNGE would
    // also remove what other clients struck out.
    let inbox = lab.wait_inbox("billing@example.test", |ms| {
        ms.iter().any(|m| m.is(id) && m.has_flag("\\Deleted"))
    });
    assert_eq!(inbox.iter().filter(|m| m.is(id)).count(), 1);
    // A restart does not copy it again.
    assert!(daemon.stop().success());
    let daemon = lab.daemon();
    let later = "caps-nouidplus-2@client.test";
    forwarded_and_copied(&lab, later);
    assert!(daemon.stop().success());
    let copies = lab.stack.fetch_all("billing@example.test", "Forwarded");
    assert_eq!(copies.iter().filter(|m| m.is(id)).count(), 1, "copied once");
    assert_eq!(
        lab.forwards_of("support@example.test", id),
        1,
        "triaged once"
    );
    let st = daemon_log(&lab);
    assert!(st.contains("COPY + \\Deleted, no expunge"), "{st}");
    let sent = lab.imap_commands_sent();
    assert!(!commands(&sent, "COPY").is_empty(), "{}", sent.join("\n"));
    assert_eq!(commands(&sent, "EXPUNGE"), Vec::<&str>::new());
    assert_eq!(commands(&sent, "MOVE"), Vec::<&str>::new());
    assert_eq!(commands(&sent, "IDLE"), Vec::<&str>::new());
}

/// `mailtriage login-test ARGS --config` on the lab's config.
fn login_test(lab: &Lab, args: &[&str]) -> support::cli::Run {
    cli(&["login-test"])
        .args(args)
        .arg("--config")
        .arg(&lab.config)
        .run()
}

#[test]
fn login_test_says_what_worked_and_what_the_server_offers() {
    let lab = Lab::setup()
        .stack("MAILSTACK_IMAP_HIDE", "IDLE MOVE")
        .start();
    // Billing sends through its own login on the submission port.
    let own_smtp = format!(
        "\n[mailboxes.billing.smtp]\nport = {port}\nuser = \"billing@example.test\"\npassword_file = \"{pw}\"\n",
        port = lab.submission_port,
        pw = lab.password_file(lab.dir()).display(),
    );
    lab.write_config(&(lab.config_text() + &own_smtp));
    lab.send_mail(&Mail::request(
        "customer6@example.test",
        "billing@example.test",
        "caps-login-1@client.test",
    ));
    lab.wait_inbox("billing@example.test", |ms| ms.len() == 1);

    let o = login_test(&lab, &["billing", "--smtp"]);
    assert!(o.status.success(), "{}", o.text());
    for step in [
        "TCP connect",
        "TLS handshake",
        "greeting",
        "LOGIN",
        "CAPABILITY",
        "EXAMINE",
    ] {
        let line = format!("mailboxes.billing: {step} OK");
        assert!(o.stdout.contains(&line), "{line}\n{}", o.stdout);
    }
    for said in [
        "mailboxes.billing: logged in as billing@example.test",
        "folder INBOX (1 messages)",
        "server offers: IDLE no, MOVE no, UIDPLUS yes",
        "would run as: poll every 1m, copy (COPY + UID EXPUNGE)",
        "mailboxes.billing.smtp: SMTP OK",
        "logged in as billing@example.test",
    ] {
        assert!(o.stdout.contains(said), "{said}\n{}", o.stdout);
    }
    assert!(
        !o.stdout.contains("mailboxes.sales"),
        "only the mailbox named:\n{}",
        o.stdout
    );
    // Every mailbox without a name; the read-only look changed nothing.
    let o = login_test(&lab, &[]);
    assert!(o.status.success(), "{}", o.text());
    for mailbox in ["monitoring", "billing", "sales", "support"] {
        let line = format!("mailboxes.{mailbox}: EXAMINE OK");
        assert!(o.stdout.contains(&line), "{line}\n{}", o.stdout);
    }
    let inbox = lab.inbox("billing@example.test");
    assert!(!inbox[0].has_flag("\\Seen"), "{:?}", inbox[0].flags);

    // A wrong password: the step that failed, in the server's words, and a failure.
    let wrong = lab.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pw = lab.password_file(lab.dir());
    let text = lab.config_text();
    let at = text.find("[mailboxes.billing]").unwrap();
    let (head, tail) = text.split_at(at);
    let from = format!("password_file = \"{}\"", pw.display());
    let to = format!("password_file = \"{}\"", wrong.display());
    lab.write_config(&(head.to_string() + &tail.replace(&from, &to)));
    let o = login_test(&lab, &["billing", "--smtp"]);
    assert!(!o.status.success(), "{}", o.text());
    assert!(
        o.stdout.contains("mailboxes.billing: greeting OK"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("mailboxes.billing: LOGIN FAILED")
            && o.stdout.contains("AUTHENTICATIONFAILED"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("mailboxes.billing.smtp: SMTP FAILED") && o.stdout.contains("535"),
        "{}",
        o.stdout
    );
    assert!(o.stderr.contains("login-test: 2 failed"), "{}", o.stderr);

    // Misuse: usage and a failure.
    let o = login_test(&lab, &["billing", "--no-such-flag"]);
    assert_eq!(o.code(), Some(2), "{}", o.text());
    assert!(o.stderr.contains("Usage"), "{}", o.stderr);
}

#[test]
fn a_folder_that_keeps_no_keywords_has_its_marks_in_the_state_and_triages_each_message_once() {
    let lab = Lab::setup()
        .stack("MAILSTACK_NO_KEYWORDS", "1")
        .stack("MAILSTACK_RAWLOG", "1")
        .start();
    let daemon = lab.daemon();
    let (misdirected, billing) = ("caps-kw-1@client.test", "caps-kw-2@client.test");
    lab.send_mail(
        &Mail::request(
            "customer7@example.test",
            "billing@example.test",
            misdirected,
        )
        .subject("Website is down")
        .body("Error 500 on every page since the morning."),
    );
    lab.send_mail(
        &Mail::request("customer8@example.test", "billing@example.test", billing)
            .subject("A question about my invoice")
            .body("Hello, my last invoice is twice the usual amount."),
    );
    lab.wait_forward("support@example.test", misdirected);
    lab.wait_ack("customer8@example.test", billing);
    let warned = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains(" WARN ")
                    && l.contains("mailbox=billing")
                    && l.contains("keeps no new keywords")
            })
            .count()
    };
    daemon.wait_log_until("billing's warning", |log| warned(log) == 1);
    let st = ops::status(&lab.state);
    assert_eq!(
        st["mailboxes"]["billing"]["mode"]["marks"], "state",
        "{st:#}"
    );
    assert!(daemon.stop().success());

    // A restart goes on from the checkpoint: what was triaged is not triaged again.
    let daemon = lab.daemon();
    let later = "caps-kw-3@client.test";
    lab.send_mail(
        &Mail::request("customer9@example.test", "billing@example.test", later)
            .subject("A question about my invoice")
            .body("Hello, is the invoice of May paid?"),
    );
    lab.wait_ack("customer9@example.test", later);
    assert!(daemon.stop().success());
    assert_eq!(lab.forwards_of("support@example.test", misdirected), 1);
    let acks = lab
        .inbox("customer8@example.test")
        .iter()
        .filter(|m| m.is_ack_of(billing))
        .count();
    assert_eq!(acks, 1);
    assert_eq!(warned(&daemon_log(&lab)), 2, "once per start");
    for m in lab.inbox("billing@example.test") {
        assert!(!m.has_flag("$Triaged"), "{:?}", m.flags);
    }
    let sent = lab.imap_commands_sent();
    assert!(
        !commands(&sent, "FETCH").is_empty(),
        "the rawlog holds the daemon's session"
    );
    let stores: Vec<&str> = commands(&sent, "STORE");
    assert!(
        stores.iter().all(|l| !l.contains('$')),
        "no keyword was sent: {stores:?}"
    );
}

fn daemon_log(lab: &Lab) -> String {
    std::fs::read_to_string(&lab.log).unwrap_or_default()
}

/// The shipped rules with billing answering as itself and an `orders@shop.test`
/// mailbox, another brand's, answering as itself.
fn rules_with_two_brands() -> String {
    let rules = shipped_rules();
    let billing = "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\n";
    let orders = "[mailboxes.orders]\naddress = \"orders@shop.test\"\nqueue = \"sales\"\nack_from = \"Shop Orders <orders@shop.test>\"\ncompany_name = \"Shop\"\nhandles = [\"sales\"]\nunmatched = \"keep\"\n\n[mailboxes.sales]\n";
    assert!(rules.contains("[mailboxes.billing]\n") && rules.contains("[mailboxes.sales]\n"));
    rules
        .replacen("[mailboxes.billing]\n", billing, 1)
        .replacen("[mailboxes.sales]\n", orders, 1)
}

#[test]
fn two_mailboxes_on_two_servers_with_their_own_logins_acknowledge_each_through_its_own_identity() {
    let lab = Lab::setup().rules(&rules_with_two_brands()).start();
    // The shop's server: its own Dovecot and Postfix, domain, users, password and port;
    // its mail for example.test goes to the first stack, as between two providers.
    let relay = format!("{}:{}", lab.host, lab.smtp_port);
    let shop = support::Stack::start_with(&[
        ("MAILSTACK_DOMAIN", "shop.test"),
        ("MAILSTACK_PASSWORD", "shop-secret"),
        ("MAILSTACK_EXTRA_USERS", "orders"),
        ("MAILSTACK_RELAY_HOST", &relay),
    ]);
    let shop_dir = lab.dir().join("shop");
    std::fs::create_dir(&shop_dir).unwrap();
    let (pw, shop_pw) = (lab.password_file(lab.dir()), shop.password_file(&shop_dir));
    let own = format!(
        r#"
[mailboxes.billing.smtp]
port = {submission}
user = "billing@example.test"
password_file = "{pw}"

[mailboxes.orders]
user = "orders@shop.test"
password_file = "{shop_pw}"
start = "all"

[mailboxes.orders.imap]
host = "{host}"
port = {shop_imaps}
tls = "implicit"
ca_file = "{shop_ca}"
tls_server_name = "localhost"

[mailboxes.orders.smtp]
host = "{host}"
port = {shop_submission}
tls = "starttls"
ca_file = "{shop_ca}"
tls_server_name = "localhost"
user = "orders@shop.test"
password_file = "{shop_pw}"
"#,
        submission = lab.submission_port,
        pw = pw.display(),
        shop_pw = shop_pw.display(),
        host = shop.host,
        shop_imaps = shop.imaps_port,
        shop_ca = shop.ca_cert.display(),
        shop_submission = shop.submission_port,
    );
    lab.write_config(&(lab.config_text() + &own));
    let daemon = lab.daemon();

    lab.send_mail(
        &Mail::from("customer1@example.test")
            .to("billing@example.test")
            .id("caps-two-1@client.test")
            .subject("A question about my contract")
            .body("Hello, could you tell me when my contract ends?"),
    );
    let to_shop = Mail::from("customer2@example.test")
        .to("orders@shop.test")
        .id("caps-two-2@client.test")
        .subject("A question about prices")
        .body("Hello, how much is the yearly plan?");
    shop.send(to_shop.sender(), &to_shop.recipients(), &to_shop.raw());

    let ack = lab.wait_ack("customer1@example.test", "caps-two-1@client.test");
    let from = ack.header("From").unwrap();
    assert!(from.contains("<billing@example.test>"), "From: {from}");
    assert!(
        ack.sent_with_login("billing@example.test"),
        "{}",
        String::from_utf8_lossy(&ack.raw)
    );
    let ack = lab.wait_ack("customer2@example.test", "caps-two-2@client.test");
    let from = ack.header("From").unwrap();
    assert!(
        from.contains("Shop Orders") && from.contains("<orders@shop.test>"),
        "From: {from}"
    );
    assert!(
        ack.sent_with_login("orders@shop.test"),
        "the shop's acknowledgement went through its own login on its own server:\n{}",
        String::from_utf8_lossy(&ack.raw)
    );
    assert!(ack.text().contains("Shop"), "{}", ack.text());
    let marked = shop.wait_until("orders@shop.test", "INBOX", WAIT, |ms| {
        ms.iter()
            .any(|m| m.is("caps-two-2@client.test") && m.has_flag("$Triaged"))
    });
    assert_eq!(marked.len(), 1);
    assert!(daemon.stop().success());
}
