//! Reliability tests on the real stack (issue 4): the daemon is killed, its servers go
//! away, its state breaks; what reaches the receiving mailboxes is counted by Message-ID.
//!
//! The crash test is sized for CI by default. The full run of the README's figures:
//!
//! ```sh
//! MAILTRIAGE_CRASH_MESSAGES=500 MAILTRIAGE_CRASH_CYCLES=20 \
//!     cargo test --test reliability sigkill -- --nocapture
//! ```
//!
//! `MAILTRIAGE_CRASH_SEED=N` replays the kill moments of an earlier run (it prints its seed).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use support::cli::cli;
use support::lab::Lab;
use support::mail::Mail;
use support::{shipped_rules, FetchedMail};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// xorshift64*: enough to spread kill moments, and replayable from the printed seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The shipped rules with the daily acknowledgement cap raised: the backlog comes from
/// 20 customers, and every message must be acknowledged for the count to mean anything.
fn rules_without_daily_cap() -> String {
    let shipped = shipped_rules();
    assert!(shipped.contains("acks_per_sender_per_day = 5"));
    // The test's customers share one domain: the per-domain and hourly caps go too.
    shipped.replace(
        "acks_per_sender_per_day = 5",
        "acks_per_sender_per_day = 100000\nacks_per_domain_per_hour = 100000\nacks_per_hour = 100000",
    )
}

/// Request `i`, its body padded with `padding` bytes of log lines (a forward of more than
/// 16 KB keeps its bytes in the state's spool).
fn request(i: usize, customer: &str, padding: usize) -> Mail {
    let log = "GET /index.html 500 Internal Server Error\n".repeat(padding / 42);
    Mail::from(customer)
        .name(&format!("Customer {i}"))
        .to("billing@example.test")
        .id(&format!("crash-{i}@client.test"))
        .subject(&format!("Website is down ({i})"))
        .body(&format!(
            "Error 500 on every page since 9:00 (report {i}).\n{log}"
        ))
}

/// Which original (crash-N) a forward or an acknowledgement is about.
fn about(m: &FetchedMail, field: &str) -> Option<String> {
    let v = m.header(field)?;
    let start = v.find("crash-")?;
    let rest = &v[start..];
    let end = rest.find('>').unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// How many log lines say `text`.
fn count_lines(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

/// The customer who wrote the `i`-th request.
fn customer_of(customers: &[String], i: usize) -> &str {
    &customers[i % customers.len()]
}

/// The backlog is on the server before the daemon first starts.
fn send_backlog(lab: &Lab, customers: &[String], messages: usize, padding: usize) {
    for i in 0..messages {
        lab.send_mail(&request(i, customer_of(customers, i), padding));
    }
    lab.drain();
    lab.wait_until(
        "billing@example.test",
        "INBOX",
        Duration::from_secs(60),
        |ms| ms.len() == messages,
    );
}

/// Kills the daemon at random moments while it works through the backlog. The first moments
/// are spread over the start (login, catch-up, first sends), later ones over the run.
fn kill_at_random_moments(lab: &Lab, random: &mut Random, cycles: u64) {
    for cycle in 0..cycles {
        let daemon = lab.daemon();
        let after = random.between(150, 3000);
        std::thread::sleep(Duration::from_millis(after));
        daemon.kill();
        eprintln!("crash test: kill {} after {after} ms", cycle + 1);
    }
}

/// Waits until every original has a forward in support@ and every customer an
/// acknowledgement of each of their requests.
fn wait_all_answered(lab: &Lab, customers: &[String], originals: &BTreeSet<String>) {
    let messages = originals.len();
    let limit = Duration::from_secs(120 + messages as u64);
    lab.wait_until("support@example.test", "INBOX", limit, |ms| {
        let seen: BTreeSet<String> = ms.iter().filter_map(|m| about(m, "References")).collect();
        originals.iter().all(|id| seen.contains(id))
    });
    for c in customers {
        let expected = (0..messages)
            .filter(|i| customer_of(customers, *i) == c)
            .count();
        lab.wait_until(c, "INBOX", limit, |ms| {
            ms.iter()
                .filter_map(|m| about(m, "In-Reply-To"))
                .collect::<BTreeSet<_>>()
                .len()
                == expected
        });
    }
}

/// What reached the mailboxes, counted by Message-ID.
#[derive(Default)]
struct Delivered {
    /// Copies of each mail the daemon sent.
    copies: BTreeMap<String, usize>,
    /// For `forward ORIGINAL` and `ack ORIGINAL`: the Message-IDs of the mails sent for it.
    decided: BTreeMap<String, BTreeSet<String>>,
    /// Copies of each mail in the archive.
    archived: BTreeMap<String, usize>,
}

impl Delivered {
    /// Counts `m`, the daemon's `what` (forward, ack) of an original named in its `field`.
    fn count(&mut self, m: &FetchedMail, what: &str, field: &str) {
        if let Some(orig) = about(m, field) {
            *self.copies.entry(m.message_id()).or_default() += 1;
            self.decided
                .entry(format!("{what} {orig}"))
                .or_default()
                .insert(m.message_id());
        }
    }
}

fn delivered(lab: &Lab, customers: &[String]) -> Delivered {
    let mut found = Delivered::default();
    for m in lab.inbox("support@example.test") {
        found.count(&m, "forward", "References");
    }
    for c in customers {
        for m in lab.inbox(c) {
            found.count(&m, "ack", "In-Reply-To");
        }
    }
    for m in lab.inbox("archive@example.test") {
        *found.archived.entry(m.message_id()).or_default() += 1;
    }
    found
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_doubles_nothing() {
    let messages = env_number("MAILTRIAGE_CRASH_MESSAGES", 100) as usize;
    let cycles = env_number("MAILTRIAGE_CRASH_CYCLES", 5);
    kill_over_a_backlog(messages, cycles, 0);
}

/// The same with forwards whose bytes lie in the spool (requests of about 40 KB): a kill
/// between a spool file and its record, or between a record's removal and its file's,
/// loses nothing, sends nothing twice, and sends no file no record names.
#[test]
fn sigkill_at_random_moments_with_big_forwards_loses_nothing_and_doubles_nothing() {
    let cycles = env_number("MAILTRIAGE_CRASH_CYCLES", 5);
    kill_over_a_backlog(30, cycles, 40_000);
}

/// `messages` requests of `padding` more bytes each in billing@, the daemon killed
/// `cycles` times over them, then run to the end: every request forwarded and
/// acknowledged once.
fn kill_over_a_backlog(messages: usize, cycles: u64, padding: usize) {
    let seed = env_number(
        "MAILTRIAGE_CRASH_SEED",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("crash test: {messages} messages, {cycles} kills, MAILTRIAGE_CRASH_SEED={seed}");
    let mut random = Random(seed);

    // The archive gets a copy of every mail the server accepts: each start looks there
    // for the mails whose answer a kill cut off, and sends only those not there.
    let lab = Lab::setup()
        .archive()
        .rules(&rules_without_daily_cap())
        .start();
    let customers: Vec<String> = (1..=20)
        .map(|c| format!("customer{c}@example.test"))
        .collect();
    send_backlog(&lab, &customers, messages, padding);
    kill_at_random_moments(&lab, &mut random, cycles);

    // One last run to the end.
    let daemon = lab.daemon();
    let originals: BTreeSet<String> = (0..messages)
        .map(|i| format!("crash-{i}@client.test"))
        .collect();
    wait_all_answered(&lab, &customers, &originals);
    lab.drain();
    let status = daemon.stop();
    let text = std::fs::read_to_string(&lab.log).unwrap();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    assert!(
        status.success(),
        "the daemon did not stop cleanly ({status:?}); end of its log:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let found_at_restart = count_lines(&text, "was accepted; not sent again.");
    let resent_at_restart = count_lines(&text, "was not accepted; it is sent now.");
    let unlooked = count_lines(&text, "uncertain=");

    // Count what arrived, by Message-ID.
    let Delivered {
        copies,
        decided,
        archived,
    } = delivered(&lab, &customers);
    let lost: Vec<&String> = originals
        .iter()
        .filter(|id| {
            !decided.contains_key(&format!("forward {id}"))
                || !decided.contains_key(&format!("ack {id}"))
        })
        .collect();
    let decided_twice: Vec<(&String, &BTreeSet<String>)> =
        decided.iter().filter(|(_, ids)| ids.len() > 1).collect();
    let duplicated: Vec<(&String, &usize)> = copies.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "crash test figures: messages={messages} kills={cycles} mails={} lost={} decided_twice={} duplicated={} found_at_restart={found_at_restart} resent_at_restart={resent_at_restart} not_looked_up={unlooked} archived={} seed={seed}",
        copies.len(),
        lost.len(),
        decided_twice.len(),
        duplicated.len(),
        archived.len(),
    );
    assert!(lost.is_empty(), "lost (no forward or no ack): {lost:?}");
    assert!(
        decided_twice.is_empty(),
        "mails decided twice (two different Message-IDs for one original): {decided_twice:?}"
    );
    assert_eq!(
        copies.len(),
        2 * messages,
        "one forward and one ack per message"
    );
    // No copies at all: a mail whose answer a kill cut off was looked up in the archive
    // at the next start and sent again only when the server had not taken it.
    assert!(
        duplicated.is_empty(),
        "delivered twice: {duplicated:?}; log lines naming them:\n{}",
        text.lines()
            .filter(|l| duplicated.iter().any(|(id, _)| l.contains(id.as_str())))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(unlooked, 0, "every mail in flight could be looked up");
    // The archive holds every mail that went out, once.
    assert_eq!(
        archived.keys().collect::<BTreeSet<_>>(),
        copies.keys().collect::<BTreeSet<_>>()
    );
    assert!(archived.values().all(|n| *n == 1), "{archived:?}");
    // Every mail sent, and the daemon stopped: no spool file is left behind.
    let spool: Vec<_> = std::fs::read_dir(lab.state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(spool.is_empty(), "left in the spool: {spool:?}");
}

/// Each request has its own subject: the same sender with the same subject would be one
/// ticket (threading by sender and subject), and these tests count separate requests.
fn outage_request(id: &str, customer: &str) -> Mail {
    Mail::request(customer, "billing@example.test", id)
        .subject(&format!("Website is down ({id})"))
        .body("Error 500 on every page.")
}

/// Forwards of the original `id` that reached support@.
fn forwards_of(lab: &Lab, id: &str) -> usize {
    lab.forwards_of("support@example.test", id)
}

/// Waits until a mail about `id` (one whose References name it) reached support@.
fn wait_forwarded(lab: &Lab, id: &str) {
    lab.wait_inbox("support@example.test", |ms| {
        ms.iter()
            .any(|m| m.header("References").is_some_and(|r| r.contains(id)))
    });
}

/// The ticket of the forward of `id` among `mails`.
fn ticket_of_forward(mails: &[FetchedMail], id: &str) -> String {
    mails
        .iter()
        .find(|m| m.is_forward_of(id))
        .map(FetchedMail::ticket)
        .unwrap()
}

/// A server that accepts connections and never says a word: a stalled IMAP or SMTP
/// server. The sockets are kept open while it lives.
fn stalled_listener() -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    (port, h)
}

/// Points the daemon's config at a stalled server instead of the stack's `port`.
fn stall(lab: &Lab, port: u16) -> std::thread::JoinHandle<()> {
    let (stalled, held) = stalled_listener();
    lab.edit_config(&format!("port = {port}"), &format!("port = {stalled}"));
    held
}

#[test]
fn state_that_will_not_open_is_moved_aside_and_nothing_is_forwarded_twice() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    lab.send_mail(&outage_request(
        "before-corrupt@client.test",
        "customer1@example.test",
    ));
    wait_forwarded(&lab, "before-corrupt@client.test");
    lab.wait_inbox("billing@example.test", |ms| {
        ms.iter().all(|m| m.has_flag("$Triaged"))
    });
    assert!(daemon.stop().success());

    // sled refuses a config file it cannot read; the log is cut short too.
    std::fs::write(lab.state.join("db/conf"), b"\x9c\xff garbage \x00\x01").unwrap();
    let db = lab.state.join("db/db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 3)
        .unwrap();

    let daemon = lab.daemon();
    lab.send_mail(&outage_request(
        "after-corrupt@client.test",
        "customer2@example.test",
    ));
    wait_forwarded(&lab, "after-corrupt@client.test");
    // The first customer answers with the ticket's tag in the subject: the ticket lived
    // in the lost state, and goes on under the number the customer knows.
    let before = ticket_of_forward(
        &lab.inbox("support@example.test"),
        "before-corrupt@client.test",
    );
    lab.send_mail(
        &Mail::request(
            "customer1@example.test",
            "billing@example.test",
            "old-ticket-reply@client.test",
        )
        .date("Mon, 23 Nov 2026 11:00:00 +0000")
        .subject(&format!("Re: [#{before}] Website is down"))
        .body("Still down, error 500."),
    );
    wait_forwarded(&lab, "old-ticket-reply@client.test");
    lab.drain();
    let text = daemon.log();
    assert!(daemon.stop().success());

    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("moved aside") && l.contains("db.broken-")),
        "an ERROR says the state was moved aside and where:\n{text}"
    );
    let aside: Vec<_> = std::fs::read_dir(&lab.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "the broken state is kept for the operator");
    assert_eq!(
        forwards_of(&lab, "before-corrupt@client.test"),
        1,
        "not forwarded twice"
    );
    assert_eq!(forwards_of(&lab, "after-corrupt@client.test"), 1);
    // The fresh state does not hand out the lost state's ticket numbers again.
    let support = lab.inbox("support@example.test");
    assert_ne!(
        ticket_of_forward(&support, "before-corrupt@client.test"),
        ticket_of_forward(&support, "after-corrupt@client.test")
    );
    assert_eq!(
        ticket_of_forward(&support, "old-ticket-reply@client.test"),
        ticket_of_forward(&support, "before-corrupt@client.test"),
        "a reply with the tag of a lost ticket keeps its number"
    );
    let note = support
        .iter()
        .find(|m| m.is_forward_of("old-ticket-reply@client.test"))
        .map(FetchedMail::text)
        .unwrap();
    assert!(
        note.contains("earlier history is not known"),
        "the note says the history was lost:\n{note}"
    );
}

#[test]
fn sigterm_stops_cleanly_with_state_on_disk() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let mail = outage_request("sigterm-1@client.test", "customer3@example.test");
    lab.send_mail(&mail);
    wait_forwarded(&lab, "sigterm-1@client.test");
    let st = daemon.stop();
    assert!(st.success(), "{st}");

    // What the daemon did is in the state it left: `explain` on that state knows the
    // message.
    let file = lab.dir().join("m.eml");
    std::fs::write(&file, mail.raw()).unwrap();
    let v = cli(&["explain"])
        .arg(&file)
        .rules(&lab.rules)
        .args(["--mailbox", "billing", "--json"])
        .state(&lab.state)
        .run()
        .json();
    assert_eq!(v["acknowledgement"]["suppressed"], "already-triaged", "{v}");
    assert!(
        v["ticket"].as_str().is_some_and(|t| t.starts_with("T-")),
        "{v}"
    );
}

#[test]
fn second_signal_exits_at_once_while_the_first_waits_for_a_stalled_smtp_server() {
    let lab = Lab::start();
    let _held = stall(&lab, lab.smtp_port);
    let daemon = lab.daemon();
    lab.send_mail(&outage_request(
        "second-signal@client.test",
        "customer4@example.test",
    ));
    // The mail is decided and waits in the outbox: the sender is stuck on the server
    // that never answers, so a first SIGTERM waits for its bounded last drain.
    daemon.wait_log("Message triaged.");
    daemon.signal("TERM");
    daemon.wait_log("Stopping");
    daemon.signal("TERM");
    let st = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(
        st.code(),
        Some(130),
        "a second signal exits at once, with 130"
    );
}

#[test]
fn postfix_outage_keeps_the_outbox_and_it_drains_when_postfix_returns() {
    let lab = Lab::start();
    let customer = "customer5@example.test";
    let ids: Vec<String> = (0..3).map(|i| format!("outage-{i}@client.test")).collect();
    for id in &ids {
        lab.send_mail(&outage_request(id, customer));
    }
    lab.drain();
    let postfix = lab.stack.dir.join("postfix/etc");
    let st = std::process::Command::new("postfix")
        .arg("-c")
        .arg(&postfix)
        .arg("stop")
        .status()
        .unwrap();
    assert!(st.success(), "postfix stop");

    let daemon = lab.daemon();
    // Triaged, and the sends fail while Postfix is away.
    daemon.wait_log("Delivery failed; will retry.");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(forwards_of(&lab, &ids[0]), 0);

    lab.mailstack(&["up"]);
    for id in &ids {
        wait_forwarded(&lab, id);
    }
    lab.wait_inbox(customer, |ms| ms.len() == ids.len());
    lab.drain();
    assert!(daemon.stop().success());
    for id in &ids {
        assert_eq!(forwards_of(&lab, id), 1, "{id}");
    }
    assert_eq!(lab.inbox(customer).len(), ids.len());
}

#[test]
fn dovecot_restart_with_a_new_uidvalidity_reconnects_resyncs_and_forwards_nothing_twice() {
    let lab = Lab::start();
    let daemon = lab.daemon();
    let customer = "customer6@example.test";
    lab.send_mail(&outage_request("before-restart@client.test", customer));
    wait_forwarded(&lab, "before-restart@client.test");
    lab.wait_inbox("billing@example.test", |ms| {
        ms.iter().all(|m| m.has_flag("$Triaged"))
    });
    // The acknowledgement too must be delivered before the servers go: a mail cut off
    // in the middle of its SMTP exchange is the window SMTP leaves open (a resend may
    // duplicate it), which is not what this test is about.
    lab.wait_inbox(customer, |ms| ms.len() == 1);
    lab.drain();

    // While the daemon idles.
    lab.renew_uidvalidity("billing@example.test");
    lab.send_mail(&outage_request("after-restart@client.test", customer));
    wait_forwarded(&lab, "after-restart@client.test");
    lab.drain();
    let text = daemon.log();
    assert!(daemon.stop().success());
    assert!(text.contains("reconnecting"), "{text}");
    assert!(text.contains("UIDVALIDITY changed"), "{text}");
    assert_eq!(forwards_of(&lab, "before-restart@client.test"), 1);
    assert_eq!(forwards_of(&lab, "after-restart@client.test"), 1);
    assert_eq!(lab.inbox(customer).len(), 2);
}

#[test]
fn stalled_imap_server_is_detected_by_timeouts() {
    let lab = Lab::start();
    let _held = stall(&lab, lab.imaps_port);
    lab.edit_config("timeout = \"10s\"", "timeout = \"1s\"");
    let daemon = lab.daemon();
    daemon.wait_log("no answer within 1s");
    // It goes on trying (and says so) rather than hanging on the first connection.
    daemon.wait_log_until("eight reconnections in the log", |log| {
        log.matches("Mailbox connection failed; reconnecting.")
            .count()
            >= 8
    });
    assert!(daemon.stop().success());
}

#[test]
fn vacation_responder_and_a_redirecting_customer_do_not_start_a_loop() {
    let lab = Lab::start();
    // customer9 answers everything with a vacation notice and also sends a copy of
    // everything it receives back to billing@: a robot that would feed a loop.
    let script = lab.dir().join("vacation.sieve");
    std::fs::write(
        &script,
        "require [\"vacation\", \"copy\"];\nredirect :copy \"billing@example.test\";\nvacation :days 1 :subject \"Out of office\" \"I am away until Monday.\";\n",
    )
    .unwrap();
    let customer = "customer9@example.test";
    lab.mailstack(&["sieve", customer, script.to_str().unwrap()]);
    let daemon = lab.daemon();
    lab.send_mail(&outage_request("loop-1@client.test", customer));
    wait_forwarded(&lab, "loop-1@client.test");
    lab.wait_inbox(customer, |ms| !ms.is_empty());
    // The ack's copy comes back to billing@ and is recognised as the daemon's own mail.
    lab.wait_inbox("billing@example.test", |ms| ms.len() == 2);
    daemon.wait_log("action=ignore");
    // Settled: another round of every robot involved changes nothing.
    lab.drain();
    std::thread::sleep(Duration::from_secs(3));
    lab.drain();
    let customer = lab.inbox(customer);
    let billing = lab.inbox("billing@example.test");
    let support = lab.inbox("support@example.test");
    assert!(daemon.stop().success());
    assert_eq!(
        customer.len(),
        1,
        "one acknowledgement for the ticket, nothing more"
    );
    assert_eq!(billing.len(), 2, "the request and the ack's copy, no more");
    assert_eq!(support.len(), 1, "one forward");
    let sink = lab.inbox("sink@example.test");
    assert!(
        sink.iter()
            .all(|m| !String::from_utf8_lossy(&m.raw).contains("Out of office")),
        "no vacation notice went out"
    );
}
