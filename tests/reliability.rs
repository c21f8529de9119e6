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
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use support::daemon::{add_archive, write_config, Daemon};
use support::{header, FetchedMail, Stack};

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
fn rules_without_daily_cap(dir: &Path) -> PathBuf {
    let shipped = support::daemon::shipped_rules();
    assert!(shipped.contains("acks_per_sender_per_day = 5"));
    let rules = shipped.replace(
        "acks_per_sender_per_day = 5",
        "acks_per_sender_per_day = 100000",
    );
    let path = dir.join("rules.toml");
    std::fs::write(&path, rules).unwrap();
    path
}

fn request(i: usize, customer: &str) -> Vec<u8> {
    format!(
        "From: Customer {i} <{customer}>\r\nTo: billing@example.test\r\nSubject: Website is down ({i})\r\nMessage-ID: <crash-{i}@client.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nError 500 on every page since 9:00 (report {i}).\r\n"
    )
    .into_bytes()
}

/// The Message-ID of a received mail, without brackets.
fn message_id(m: &FetchedMail) -> String {
    header(&m.raw, "Message-ID")
        .unwrap_or_default()
        .trim_matches(|c| c == '<' || c == '>')
        .to_string()
}

/// Which original (crash-N) a forward or an acknowledgement is about.
fn about(m: &FetchedMail, field: &str) -> Option<String> {
    let v = header(&m.raw, field)?;
    let start = v.find("crash-")?;
    let rest = &v[start..];
    let end = rest.find('>').unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// How many log lines say `text`.
fn count_lines(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_doubles_nothing() {
    let messages = env_number("MAILTRIAGE_CRASH_MESSAGES", 100) as usize;
    let cycles = env_number("MAILTRIAGE_CRASH_CYCLES", 5);
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

    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    // The archive gets a copy of every mail the server accepts: each start looks there
    // for the mails whose answer a kill cut off, and sends only those not there.
    add_archive(&stack, &cfg, "");
    let rules = rules_without_daily_cap(dir.path());
    let log = dir.path().join("daemon.log");

    // The backlog is on the server before the daemon first starts.
    let customers: Vec<String> = (1..=20)
        .map(|c| format!("customer{c}@example.test"))
        .collect();
    for i in 0..messages {
        let customer = &customers[i % customers.len()];
        stack.send(customer, &["billing@example.test"], &request(i, customer));
    }
    stack.drain();
    stack.wait_until(
        "billing@example.test",
        "INBOX",
        Duration::from_secs(60),
        |ms| ms.len() == messages,
    );

    // Kill it at random moments while it works through the backlog. The first moments
    // are spread over the start (login, catch-up, first sends), later ones over the run.
    for cycle in 0..cycles {
        let daemon = Daemon::start_with(&cfg, &log, &rules);
        let after = random.between(150, 3000);
        std::thread::sleep(Duration::from_millis(after));
        daemon.kill();
        eprintln!("crash test: kill {} after {after} ms", cycle + 1);
    }

    // One last run to the end.
    let daemon = Daemon::start_with(&cfg, &log, &rules);
    let limit = Duration::from_secs(120 + messages as u64);
    let originals: BTreeSet<String> = (0..messages)
        .map(|i| format!("crash-{i}@client.test"))
        .collect();
    stack.wait_until("support@example.test", "INBOX", limit, |ms| {
        let seen: BTreeSet<String> = ms.iter().filter_map(|m| about(m, "References")).collect();
        originals.iter().all(|id| seen.contains(id))
    });
    for c in &customers {
        let expected = (0..messages)
            .filter(|i| &customers[i % customers.len()] == c)
            .count();
        stack.wait_until(c, "INBOX", limit, |ms| {
            ms.iter()
                .filter_map(|m| about(m, "In-Reply-To"))
                .collect::<BTreeSet<_>>()
                .len()
                == expected
        });
    }
    stack.drain();
    let status = daemon.stop();
    let text = std::fs::read_to_string(&log).unwrap();
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
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    let mut decided: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let forwards = stack.fetch_all("support@example.test", "INBOX");
    for m in &forwards {
        if let Some(orig) = about(m, "References") {
            *copies.entry(message_id(m)).or_default() += 1;
            decided
                .entry(format!("forward {orig}"))
                .or_default()
                .insert(message_id(m));
        }
    }
    for c in &customers {
        for m in stack.fetch_all(c, "INBOX") {
            if let Some(orig) = about(&m, "In-Reply-To") {
                *copies.entry(message_id(&m)).or_default() += 1;
                decided
                    .entry(format!("ack {orig}"))
                    .or_default()
                    .insert(message_id(&m));
            }
        }
    }
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
    let mut archived: BTreeMap<String, usize> = BTreeMap::new();
    for m in stack.fetch_all("archive@example.test", "INBOX") {
        *archived.entry(message_id(&m)).or_default() += 1;
    }
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
}

const WAIT: Duration = Duration::from_secs(60);

/// Each request has its own subject: the same sender with the same subject would be one
/// ticket (threading by sender and subject), and these tests count separate requests.
fn outage_request(id: &str, customer: &str) -> Vec<u8> {
    format!(
        "From: Customer <{customer}>\r\nTo: billing@example.test\r\nSubject: Website is down ({id})\r\nMessage-ID: <{id}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nError 500 on every page.\r\n"
    )
    .into_bytes()
}

/// Forwards of the original `id` that reached support@.
fn forwards_of(stack: &Stack, id: &str) -> usize {
    stack
        .fetch_all("support@example.test", "INBOX")
        .iter()
        .filter(|m| {
            header(&m.raw, "X-Mailtriage").is_some_and(|h| h.contains("kind=forward"))
                && header(&m.raw, "References").is_some_and(|r| r.contains(id))
        })
        .count()
}

fn wait_forwarded(stack: &Stack, id: &str) {
    stack.wait_until("support@example.test", "INBOX", WAIT, |ms| {
        ms.iter()
            .any(|m| header(&m.raw, "References").is_some_and(|r| r.contains(id)))
    });
}

/// Polls the daemon's log until it holds `text`; panics with the log after `WAIT`.
fn wait_log(daemon: &Daemon, text: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !daemon.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said {text:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rewrites `key = old` to `key = new` on the first line holding it.
fn edit_config(cfg: &Path, old: &str, new: &str) {
    let s = std::fs::read_to_string(cfg).unwrap();
    assert!(s.contains(old), "{old:?} not in the config");
    std::fs::write(cfg, s.replacen(old, new, 1)).unwrap();
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

#[test]
fn state_that_will_not_open_is_moved_aside_and_nothing_is_forwarded_twice() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(&stack, dir.path(), &state);
    let log = dir.path().join("daemon.log");

    let daemon = Daemon::start(&cfg, &log);
    stack.send(
        "customer1@example.test",
        &["billing@example.test"],
        &outage_request("before-corrupt@client.test", "customer1@example.test"),
    );
    wait_forwarded(&stack, "before-corrupt@client.test");
    stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter().all(|m| m.has_flag("$Triaged"))
    });
    assert!(daemon.stop().success());

    // sled refuses a config file it cannot read; the log is cut short too.
    std::fs::write(state.join("db/conf"), b"\x9c\xff garbage \x00\x01").unwrap();
    let db = state.join("db/db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 3)
        .unwrap();

    let daemon = Daemon::start(&cfg, &log);
    stack.send(
        "customer2@example.test",
        &["billing@example.test"],
        &outage_request("after-corrupt@client.test", "customer2@example.test"),
    );
    wait_forwarded(&stack, "after-corrupt@client.test");
    // The first customer answers with the ticket's tag in the subject: the ticket lived
    // in the lost state, and goes on under the number the customer knows.
    let before = stack
        .fetch_all("support@example.test", "INBOX")
        .iter()
        .find(|m| support::daemon::is_forward_of(m, "before-corrupt@client.test"))
        .map(support::daemon::ticket_of)
        .unwrap();
    stack.send(
        "customer1@example.test",
        &["billing@example.test"],
        format!(
            "From: Customer <customer1@example.test>\r\nTo: billing@example.test\r\nSubject: Re: [#{before}] Website is down\r\nMessage-ID: <old-ticket-reply@client.test>\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nStill down, error 500.\r\n"
        )
        .as_bytes(),
    );
    wait_forwarded(&stack, "old-ticket-reply@client.test");
    stack.drain();
    let text = daemon.log();
    assert!(daemon.stop().success());

    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("moved aside") && l.contains("db.broken-")),
        "an ERROR says the state was moved aside and where:\n{text}"
    );
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "the broken state is kept for the operator");
    assert_eq!(
        forwards_of(&stack, "before-corrupt@client.test"),
        1,
        "not forwarded twice"
    );
    assert_eq!(forwards_of(&stack, "after-corrupt@client.test"), 1);
    // The fresh state does not hand out the lost state's ticket numbers again.
    let support = stack.fetch_all("support@example.test", "INBOX");
    let ticket = |id: &str| {
        support
            .iter()
            .find(|m| support::daemon::is_forward_of(m, id))
            .map(support::daemon::ticket_of)
            .unwrap()
    };
    assert_ne!(
        ticket("before-corrupt@client.test"),
        ticket("after-corrupt@client.test")
    );
    assert_eq!(
        ticket("old-ticket-reply@client.test"),
        ticket("before-corrupt@client.test"),
        "a reply with the tag of a lost ticket keeps its number"
    );
    let note = support
        .iter()
        .find(|m| support::daemon::is_forward_of(m, "old-ticket-reply@client.test"))
        .and_then(|m| {
            let parsed = mail_parser::MessageParser::default().parse(&m.raw)?;
            parsed.body_text(0).map(|t| t.into_owned())
        })
        .unwrap();
    assert!(
        note.contains("earlier history is not known"),
        "the note says the history was lost:\n{note}"
    );
}

#[test]
fn sigterm_stops_cleanly_with_state_on_disk() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(&stack, dir.path(), &state);
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    let raw = outage_request("sigterm-1@client.test", "customer3@example.test");
    stack.send("customer3@example.test", &["billing@example.test"], &raw);
    wait_forwarded(&stack, "sigterm-1@client.test");
    let st = daemon.stop();
    assert!(st.success(), "{st}");

    // What the daemon did is in the state it left: `explain` on that state knows the
    // message.
    let file = dir.path().join("m.eml");
    std::fs::write(&file, &raw).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailtriage"))
        .arg("explain")
        .arg(&file)
        .arg("--rules")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml"))
        .args(["--mailbox", "billing", "--json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["acknowledgement"]["suppressed"], "already-triaged", "{v}");
    assert!(
        v["ticket"].as_str().is_some_and(|t| t.starts_with("T-")),
        "{v}"
    );
}

#[test]
fn second_signal_exits_at_once_while_the_first_waits_for_a_stalled_smtp_server() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let (port, _held) = stalled_listener();
    edit_config(
        &cfg,
        &format!("port = {}", stack.smtp_port),
        &format!("port = {port}"),
    );
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    stack.send(
        "customer4@example.test",
        &["billing@example.test"],
        &outage_request("second-signal@client.test", "customer4@example.test"),
    );
    // The mail is decided and waits in the outbox: the sender is stuck on the server
    // that never answers, so a first SIGTERM waits for its bounded last drain.
    wait_log(&daemon, "Message triaged.");
    daemon.signal("TERM");
    wait_log(&daemon, "Stopping");
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
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let ids: Vec<String> = (0..3).map(|i| format!("outage-{i}@client.test")).collect();
    for id in &ids {
        stack.send(
            "customer5@example.test",
            &["billing@example.test"],
            &outage_request(id, "customer5@example.test"),
        );
    }
    stack.drain();
    let postfix = stack.dir.join("postfix/etc");
    let st = std::process::Command::new("postfix")
        .arg("-c")
        .arg(&postfix)
        .arg("stop")
        .status()
        .unwrap();
    assert!(st.success(), "postfix stop");

    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    // Triaged, and the sends fail while Postfix is away.
    wait_log(&daemon, "Delivery failed; will retry.");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(forwards_of(&stack, &ids[0]), 0);

    stack.mailstack(&["up"]);
    for id in &ids {
        wait_forwarded(&stack, id);
    }
    stack.wait_until("customer5@example.test", "INBOX", WAIT, |ms| {
        ms.len() == ids.len()
    });
    stack.drain();
    assert!(daemon.stop().success());
    for id in &ids {
        assert_eq!(forwards_of(&stack, id), 1, "{id}");
    }
    assert_eq!(
        stack.fetch_all("customer5@example.test", "INBOX").len(),
        ids.len()
    );
}

#[test]
fn dovecot_restart_with_a_new_uidvalidity_reconnects_resyncs_and_forwards_nothing_twice() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    stack.send(
        "customer6@example.test",
        &["billing@example.test"],
        &outage_request("before-restart@client.test", "customer6@example.test"),
    );
    wait_forwarded(&stack, "before-restart@client.test");
    stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| {
        ms.iter().all(|m| m.has_flag("$Triaged"))
    });
    // The acknowledgement too must be delivered before the servers go: a mail cut off
    // in the middle of its SMTP exchange is the window SMTP leaves open (a resend may
    // duplicate it), which is not what this test is about.
    stack.wait_until("customer6@example.test", "INBOX", WAIT, |ms| ms.len() == 1);
    stack.drain();

    // While the daemon idles: the servers go down, billing@'s UID list and indexes are
    // lost (Dovecot then gives the folder a new UIDVALIDITY; the keywords stay in the
    // maildir file names), and the servers come back.
    stack.mailstack(&["down"]);
    let maildir = stack.dir.join("mail/example.test/billing/Maildir");
    for e in std::fs::read_dir(&maildir).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n == "dovecot-uidlist" || n.starts_with("dovecot.index") {
            std::fs::remove_file(&p).unwrap();
        }
    }
    stack.mailstack(&["up"]);
    stack.send(
        "customer6@example.test",
        &["billing@example.test"],
        &outage_request("after-restart@client.test", "customer6@example.test"),
    );
    wait_forwarded(&stack, "after-restart@client.test");
    stack.drain();
    let text = daemon.log();
    assert!(daemon.stop().success());
    assert!(text.contains("reconnecting"), "{text}");
    assert!(text.contains("UIDVALIDITY changed"), "{text}");
    assert_eq!(forwards_of(&stack, "before-restart@client.test"), 1);
    assert_eq!(forwards_of(&stack, "after-restart@client.test"), 1);
    assert_eq!(stack.fetch_all("customer6@example.test", "INBOX").len(), 2);
}

#[test]
fn stalled_imap_server_is_detected_by_timeouts() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    let (port, _held) = stalled_listener();
    edit_config(
        &cfg,
        &format!("port = {}", stack.imaps_port),
        &format!("port = {port}"),
    );
    edit_config(&cfg, "timeout = \"10s\"", "timeout = \"1s\"");
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    wait_log(&daemon, "no answer within 1s");
    // It goes on trying (and says so) rather than hanging on the first connection.
    let deadline = std::time::Instant::now() + WAIT;
    while daemon
        .log()
        .matches("Mailbox connection failed; reconnecting.")
        .count()
        < 8
    {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(daemon.stop().success());
}

#[test]
fn vacation_responder_and_a_redirecting_customer_do_not_start_a_loop() {
    let stack = Stack::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&stack, dir.path(), &dir.path().join("state"));
    // customer9 answers everything with a vacation notice and also sends a copy of
    // everything it receives back to billing@: a robot that would feed a loop.
    let script = dir.path().join("vacation.sieve");
    std::fs::write(
        &script,
        "require [\"vacation\", \"copy\"];\nredirect :copy \"billing@example.test\";\nvacation :days 1 :subject \"Out of office\" \"I am away until Monday.\";\n",
    )
    .unwrap();
    stack.mailstack(&["sieve", "customer9@example.test", script.to_str().unwrap()]);
    let daemon = Daemon::start(&cfg, &dir.path().join("daemon.log"));
    stack.send(
        "customer9@example.test",
        &["billing@example.test"],
        &outage_request("loop-1@client.test", "customer9@example.test"),
    );
    wait_forwarded(&stack, "loop-1@client.test");
    stack.wait_until("customer9@example.test", "INBOX", WAIT, |ms| !ms.is_empty());
    // The ack's copy comes back to billing@ and is recognised as the daemon's own mail.
    stack.wait_until("billing@example.test", "INBOX", WAIT, |ms| ms.len() == 2);
    wait_log(&daemon, "action=ignore");
    // Settled: another round of every robot involved changes nothing.
    stack.drain();
    std::thread::sleep(Duration::from_secs(3));
    stack.drain();
    let customer = stack.fetch_all("customer9@example.test", "INBOX");
    let billing = stack.fetch_all("billing@example.test", "INBOX");
    let support = stack.fetch_all("support@example.test", "INBOX");
    assert!(daemon.stop().success());
    assert_eq!(
        customer.len(),
        1,
        "one acknowledgement for the ticket, nothing more"
    );
    assert_eq!(billing.len(), 2, "the request and the ack's copy, no more");
    assert_eq!(support.len(), 1, "one forward");
    let sink = stack.fetch_all("sink@example.test", "INBOX");
    assert!(
        sink.iter()
            .all(|m| !String::from_utf8_lossy(&m.raw).contains("Out of office")),
        "no vacation notice went out"
    );
}
