//! What admins and operators do with a running daemon, on the real mail stack: edit
//! rules.toml (a broken edit keeps the old rules, a good one takes effect without a
//! restart), SIGHUP, `mailtriage status`, shadow mode and the metrics endpoint.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cli::cli;
use support::daemon::Daemon;
use support::lab::Lab;
use support::mail::Mail;
use support::ops::{free_port, metrics_section, sample, scrape, status, wait_status, write_secret};
use support::{shipped_rules, WAIT};

/// Writes the rules as an editor does: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn all_connected(st: &serde_json::Value) -> bool {
    let m = st["mailboxes"].as_object().unwrap();
    m.len() == 4 && m.values().all(|m| m["last_sync"].is_string())
}

const PRESS_RULE: &str = "\n[[rules]]\nname = \"press\"\ncategory = \"sales\"\npriority = 50\nsubject = '(?i)\\bpress\\s+release\\b'\n";

/// A press release for review, written to support@: what PRESS_RULE routes to sales.
fn press_release(customer: &str, id: &str) -> Mail {
    Mail::request(customer, "support@example.test", id)
        .subject("Press release for our launch")
        .body("Could you review our press release?")
}

/// How many times `line` is in the daemon's log, after the watcher has had time to
/// fire (its debounce is half a second) and any reload it started to finish.
fn settled_count(daemon: &Daemon, line: &str) -> usize {
    std::thread::sleep(Duration::from_secs(3));
    daemon.log().matches(line).count()
}

#[test]
fn reading_the_files_reloads_nothing_and_an_edit_is_applied_or_refused_once() {
    let lab = Lab::setup().rules(&shipped_rules()).start();
    let daemon = lab.daemon();
    wait_status(&daemon, &lab.state, all_connected);
    // The lab's logins watch no sent folder: the start says what that costs, for the
    // mailboxes a team answers from only.
    let warn = daemon.log_line("Staff answers cannot be seen.");
    assert!(
        warn.contains("WARN") && warn.contains("sent_folder"),
        "{warn}"
    );
    let log = daemon.log();
    assert!(log.contains("mailboxes.billing.sent_folder"), "{log}");
    assert!(!log.contains("mailboxes.monitoring.sent_folder"), "{log}");

    // What an admin does all day: cat, less, `mailtriage check`, an editor opened and
    // closed without saving. None of it is a change.
    for _ in 0..10 {
        std::fs::read(&lab.rules).unwrap();
        std::fs::read(&lab.config).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cli(&["check"]).rules(&lab.rules).run().status.success());
    assert_eq!(
        settled_count(&daemon, "Rules reloaded"),
        0,
        "{}",
        daemon.log()
    );
    assert_eq!(
        settled_count(&daemon, "Settings file changed"),
        0,
        "{}",
        daemon.log()
    );

    // A real edit is applied once: the reload's own reading of the file is no change.
    save(&lab.rules, &(shipped_rules() + "\n# edited\n"));
    daemon.wait_log("Rules reloaded");
    assert_eq!(
        settled_count(&daemon, "Rules reloaded"),
        1,
        "{}",
        daemon.log()
    );

    // A broken edit is refused once, however often the file is read afterwards.
    save(&lab.rules, "[company\n");
    daemon.wait_log("Rules not reloaded");
    for _ in 0..5 {
        std::fs::read(&lab.rules).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        settled_count(&daemon, "Rules not reloaded"),
        1,
        "{}",
        daemon.log()
    );
    // One line (journald splits lines into entries), with the mistake in it.
    let refused = daemon.log_line("Rules not reloaded");
    assert!(refused.contains("rules.toml:1"), "{refused}");
    let st = status(&lab.state);
    assert!(st["rules_refused"].is_string(), "{st}");
    let text = cli(&["status"]).state(&lab.state).run().text();
    assert!(text.contains("REFUSED"), "{text}");

    // Fixed: status no longer says refused.
    save(&lab.rules, &shipped_rules());
    let st = wait_status(&daemon, &lab.state, |s| s["rules_refused"].is_null());
    assert_eq!(st["reloads_failed"], 1, "{st}");
    assert!(daemon.stop().success());
}

/// An iCalendar file with one day off.
fn holidays(day: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1@example.test\r\nDTSTART;VALUE=DATE:{day}\r\nSUMMARY:Day off\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
}

#[test]
fn an_edited_holidays_file_is_reloaded_like_the_rules() {
    let rules = shipped_rules().replacen(
        "# holidays_file = \"holidays.ics\"",
        "holidays_file = \"holidays.ics\"",
        1,
    );
    assert!(rules.contains("\nholidays_file = \"holidays.ics\""));
    let lab = Lab::setup().rules(&rules).start();
    let ics = lab.rules.with_file_name("holidays.ics");
    std::fs::write(&ics, holidays("20261231")).unwrap();
    let daemon = lab.daemon();
    wait_status(&daemon, &lab.state, all_connected);
    let before = status(&lab.state)["rules_version"].clone();

    // The admin adds a day off: the calendar application exports the file again.
    save(&ics, &holidays("20270101"));
    daemon.wait_log("Rules reloaded.");
    let after = status(&lab.state)["rules_version"].clone();
    assert_ne!(before, after, "the holidays are part of the rules in force");

    // A broken export is refused, naming the file; the rules in force stay.
    save(&ics, "not a calendar");
    daemon.wait_log("Rules not reloaded");
    let refused = daemon.log_line("Rules not reloaded");
    assert!(refused.contains("holidays.ics"), "{refused}");
    assert_eq!(status(&lab.state)["rules_version"], after);
    assert!(daemon.stop().success());
}

#[test]
fn a_broken_rules_file_keeps_the_old_rules_and_a_good_edit_applies_without_restart() {
    let lab = Lab::setup().rules(&shipped_rules()).start();
    let daemon = lab.daemon();
    let first = wait_status(&daemon, &lab.state, all_connected);
    let v1 = first["rules_version"].as_str().unwrap().to_string();

    // Broken: the new rule is fine, but billing's queue does not exist.
    let broken = shipped_rules().replacen(
        "queue = \"billing\"\n[categories.sales]",
        "queue = \"acounting\"\n[categories.sales]",
        1,
    ) + PRESS_RULE;
    save(&lab.rules, &broken);
    let st = wait_status(&daemon, &lab.state, |s| s["reloads_failed"] == 1);
    assert_eq!(
        st["rules_version"],
        v1.as_str(),
        "the old rules stay in force"
    );
    let errors = st["last_errors"].to_string();
    assert!(
        errors.contains("unknown queue \\\"acounting\\\""),
        "{errors}"
    );
    let log = daemon.log();
    assert!(
        log.contains("ERROR")
            && log.contains("Rules not reloaded")
            && log.contains("categories.billing.queue"),
        "the log says why:\n{log}"
    );

    // Still routed by the old rules: a refund written to support goes to billing, and a
    // press release (the new rule) stays in support.
    let support = "support@example.test";
    let refund = "reload-refund@example.test";
    lab.send_mail(
        &Mail::request("customer2@example.test", support, refund)
            .subject("Refund for invoice 77")
            .body("Please refund the double charge."),
    );
    let press1 = "reload-press-1@example.test";
    lab.send_mail(&press_release("customer3@example.test", press1));
    lab.wait_forward("billing@example.test", refund);
    // Kept in support: marked as triaged there, and its acknowledgement sent.
    lab.wait_flagged(support, press1, "$Triaged");
    lab.wait_ack("customer3@example.test", press1);

    // A good edit: the press rule alone. It takes effect without a restart.
    save(&lab.rules, &(shipped_rules() + PRESS_RULE));
    let st = wait_status(&daemon, &lab.state, |s| s["reloads_ok"].as_u64() >= Some(1));
    assert_ne!(st["rules_version"], v1.as_str());
    assert!(
        daemon.log().contains("added=rule press"),
        "the log names what changed:\n{}",
        daemon.log()
    );
    let press2 = "reload-press-2@example.test";
    lab.send_mail(&press_release("customer4@example.test", press2));
    lab.wait_forward("sales@example.test", press2);

    // SIGHUP reloads too (here: the same file), and the daemon goes on.
    let before = st["reloads_ok"].as_u64().unwrap();
    daemon.signal("HUP");
    wait_status(&daemon, &lab.state, |s| {
        s["reloads_ok"].as_u64() > Some(before)
    });
    assert!(daemon.stop().success());
}

#[test]
fn shadow_mode_records_decisions_sends_nothing_and_marks_nothing() {
    // support@ in shadow mode by the rules; the others live.
    let text = shipped_rules().replacen(
        "handles = [\"technical\", \"howto\"]",
        "handles = [\"technical\", \"howto\"]\nshadow = true",
        1,
    );
    assert_ne!(text, shipped_rules());
    let lab = Lab::setup().rules(&text).start();
    let daemon = lab.daemon();
    wait_status(&daemon, &lab.state, all_connected);

    let id = "shadow-refund@example.test";
    lab.send_mail(
        &Mail::request("customer5@example.test", "support@example.test", id)
            .subject("Refund for invoice 78")
            .body("Please refund the double charge, you idiots."),
    );
    // Decided and recorded: two forwards (billing, and the flagged copy to the
    // supervisor) and the acknowledgement, all as shadow mails.
    let st = wait_status(&daemon, &lab.state, |s| {
        s["shadow_mails"].as_u64() >= Some(3)
    });
    assert_eq!(st["outbox"], 0, "nothing waits to be sent: {st:#}");
    assert_eq!(st["mailboxes"]["support"]["shadow"], true);

    let list = lab.cli(&["tickets", "list"]).run().stdout;
    assert!(
        list.contains("billing") && list.contains("[shadow]"),
        "{list}"
    );
    let id_of = list.split_whitespace().next().unwrap().to_string();
    let show = lab.cli(&["tickets", "show", &id_of]).run().stdout;
    assert!(show.contains("mode:      shadow"), "{show}");
    assert!(
        show.contains("not sent:  forward -> billing@example.test"),
        "{show}"
    );
    assert!(
        show.contains("not sent:  acknowledgement -> customer5@example.test"),
        "{show}"
    );
    // The timeline says what would have been done, not what was done.
    assert!(
        show.contains("would forward to Billing")
            && show.contains("would acknowledge to customer5@example.test"),
        "{show}"
    );
    assert!(
        !show.contains("forwarded to") && !show.contains("acknowledgement sent"),
        "{show}"
    );
    let json = lab.cli(&["tickets", "show", &id_of, "--json"]).run().json();
    assert_eq!(json[0]["shadow"], true, "{json:#}");
    assert_eq!(json[0]["id"], id_of.as_str(), "{json:#}");
    // The mails it would have sent can be read whole, note and all.
    let mails = lab.cli(&["tickets", "show", &id_of, "--mails"]).run();
    assert!(mails.status.success(), "{}", mails.stderr);
    let mails = mails.stdout;
    assert!(
        mails.contains("Message-ID:")
            && mails.contains("message arrived at support@example.test")
            && mails.contains("you idiots"),
        "{mails}"
    );
    // Only the state is needed to show a ticket: not the rules.
    let bare = cli(&["tickets", "show", &id_of])
        .state(&lab.state)
        .rules(&lab.dir().join("no-such-rules.toml"))
        .run();
    assert!(bare.status.success(), "{}", bare.stderr);
    assert!(
        bare.stdout.contains("would forward to billing"),
        "{}",
        bare.stdout
    );

    // A live message afterwards goes through the same sender: once it has arrived,
    // anything the shadow message had queued would have arrived before it.
    let live = "shadow-live@example.test";
    lab.send_mail(
        &Mail::request("customer6@example.test", "sales@example.test", live)
            .subject("Refund for invoice 79")
            .body("Please refund it."),
    );
    lab.wait_forward("billing@example.test", live);
    lab.wait_ack("customer6@example.test", live);
    lab.drain();
    assert!(!lab
        .inbox("billing@example.test")
        .iter()
        .any(|m| m.is_forward_of(id)));
    assert!(!lab
        .inbox("supervisor@example.test")
        .iter()
        .any(|m| m.is_forward_of(id)));
    assert!(
        lab.inbox("customer5@example.test").is_empty(),
        "no acknowledgement"
    );
    let original: Vec<_> = lab
        .inbox("support@example.test")
        .into_iter()
        .filter(|m| m.header("Message-ID").is_some_and(|h| h.contains(id)))
        .collect();
    assert_eq!(original.len(), 1);
    assert!(
        !original[0].flags.iter().any(|f| f.starts_with('$')),
        "no keyword on the server: {:?}",
        original[0].flags
    );
    assert!(daemon.stop().success());
}

/// The billing mailbox's forwards counted in the metrics `text` (0 before the first).
fn forwarded_from_billing(text: &str) -> f64 {
    sample(
        text,
        "mailtriage_messages_forwarded_total",
        &["mailbox=\"billing\""],
    )
    .unwrap_or(0.0)
}

#[test]
fn metrics_endpoint_answers_with_the_counters_moving() {
    let port = free_port();
    let lab = Lab::setup().config(&metrics_section(port)).start();
    let daemon = lab.daemon();
    wait_status(&daemon, &lab.state, all_connected);

    let before = scrape(port);
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert_eq!(
        sample(
            &before,
            "mailtriage_mailbox_connected",
            &["mailbox=\"billing\""]
        ),
        Some(1.0),
        "{before}"
    );
    assert_eq!(forwarded_from_billing(&before), 0.0);

    let id = "metrics-1@example.test";
    lab.send_mail(
        &Mail::request("customer7@example.test", "billing@example.test", id)
            .subject("Site is down")
            .body("Our site is down, error 502."),
    );
    lab.wait_forward("support@example.test", id);
    let after = scrape(port);
    assert_eq!(forwarded_from_billing(&after), 1.0, "{after}");
    assert!(
        after.contains("# HELP mailtriage_messages_forwarded_total Messages forwarded"),
        "every metric says what it counts:\n{after}"
    );
    let sent = sample(&after, "mailtriage_mails_total", &["result=\"sent\""]);
    assert!(sent >= Some(1.0), "{after}");
    // The log line says which message it was and whose.
    let line = daemon.log_line("Message triaged.");
    assert!(
        line.contains("message_id=metrics-1@example.test")
            && line.contains("customer7@example.test"),
        "{line}"
    );
    assert_eq!(
        sample(
            &after,
            "mailtriage_messages_seen_total",
            &["mailbox=\"billing\"", "action=\"forward\""]
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "mailtriage_messages_acknowledged_total",
            &["mailbox=\"billing\""]
        ),
        Some(1.0),
        "{after}"
    );
    assert!(
        sample(
            &after,
            "mailtriage_mailbox_last_sync_seconds",
            &["mailbox=\"billing\""]
        )
        .is_some_and(|t| t > 1.7e9),
        "{after}"
    );
    assert!(after.contains("mailtriage_outbox_depth"), "{after}");
    assert!(daemon.stop().success());
}

/// Gives billing's login a password file with a wrong password in it.
fn wrong_billing_password(lab: &Lab) {
    let wrong = lab.dir().join("billing.pass");
    write_secret(&wrong, "not-the-password\n");
    let right = lab.dir().join("mailstack-password");
    let login = |pass: &Path| {
        format!(
            "user = \"billing@example.test\"\npassword_file = \"{}\"",
            pass.display()
        )
    };
    lab.edit_config(&login(&right), &login(&wrong));
}

#[test]
fn a_refused_imap_login_is_an_error_naming_the_section_and_shows_in_status() {
    let lab = Lab::start();
    wrong_billing_password(&lab);
    let daemon = lab.daemon();
    let line = daemon.log_line("Mailbox cannot log in");
    assert!(
        line.contains("ERROR")
            && line.contains("section=mailboxes.billing")
            && line.contains("AUTHENTICATIONFAILED"),
        "{line}"
    );
    // The others work; billing shows as failing, with what the server said.
    let st = wait_status(&daemon, &lab.state, |s| {
        s["mailboxes"]["billing"]["state"] == "failing"
            && s["mailboxes"]["support"]["last_sync"].is_string()
    });
    let why = st["mailboxes"]["billing"]["last_error"].as_str().unwrap();
    assert!(why.contains("AUTHENTICATIONFAILED"), "{st:#}");
    assert!(daemon.stop().success());
}

#[test]
fn check_connect_logs_in_everywhere_and_names_the_login_that_fails() {
    let lab = Lab::start();
    let check = || {
        cli(&["check", "--connect", "--config"])
            .arg(&lab.config)
            .rules(&lab.rules)
            .run()
    };
    let o = check();
    assert!(o.status.success(), "{}", o.text());
    for mailbox in ["monitoring", "billing", "sales", "support"] {
        let line = format!("mailboxes.{mailbox}: IMAP OK: {mailbox}@example.test");
        assert!(o.stdout.contains(&line), "{line}\n{}", o.stdout);
    }
    assert!(o.stdout.contains("smtp: SMTP OK"), "{}", o.stdout);

    // A wrong password for billing: check says which login and what the server said.
    wrong_billing_password(&lab);
    let o = check();
    assert_eq!(o.code(), Some(1), "{}", o.text());
    assert!(
        o.stderr.contains("mailboxes.billing:") && o.stderr.contains("AUTHENTICATIONFAILED"),
        "{}",
        o.stderr
    );
    assert!(
        o.stdout.contains("mailboxes.support: IMAP OK"),
        "{}",
        o.stdout
    );
}

#[test]
fn status_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = cli(&["status"]).state(dir.path()).run();
    assert_eq!(o.code(), Some(1));
    assert!(
        o.stderr.contains("no mailtriage daemon answers"),
        "{}",
        o.stderr
    );
}

/// Reads sd_notify datagrams from `sock` until `pred` holds for one; returns every
/// message seen so far.
fn notifications_until(
    sock: &std::os::unix::net::UnixDatagram,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "never got it; seen: {seen:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = pred(&m);
            seen.push(m);
            if hit {
                return;
            }
        }
    }
}

#[test]
fn systemd_hears_ready_after_the_mailboxes_connect_reloading_watchdog_and_stopping() {
    let lab = Lab::start();
    let sock_path = lab.dir().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = lab.daemon_with_env(&[
        ("NOTIFY_SOCKET", sock_path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new("2000000")),
    ]);
    let mut seen = Vec::new();
    notifications_until(&sock, &mut seen, |m| m.lines().any(|l| l == "READY=1"));
    // READY only once every mailbox has connected.
    let st = status(&lab.state);
    let m = st["mailboxes"].as_object().unwrap();
    assert_eq!(m.len(), 4, "{st:#}");
    assert!(
        m.values()
            .all(|m| m["state"] == "idle" || m["state"] == "syncing"),
        "{st:#}"
    );
    notifications_until(&sock, &mut seen, |m| m.trim() == "WATCHDOG=1");

    daemon.signal("HUP");
    seen.clear();
    notifications_until(&sock, &mut seen, |m| m.lines().any(|l| l == "READY=1"));
    let reloading = seen
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(
        seen[reloading].contains("MONOTONIC_USEC="),
        "RELOADING=1 comes with MONOTONIC_USEC: {seen:?}"
    );
    daemon.signal("TERM");
    notifications_until(&sock, &mut seen, |m| m.lines().any(|l| l == "STOPPING=1"));
    assert!(daemon.wait_exit(WAIT).success());
}
