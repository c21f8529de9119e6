//! Raw bytes as they would arrive in a watched mailbox, through the whole offline
//! pipeline: `explain` (parse -> classify -> decide, no state) and `triage` (the same
//! plus the ticket, the composed forward / escalation copy / acknowledgement, and the
//! record in sled). Besides "no panic", every composed mail is checked for what a
//! hostile sender must never achieve: a recipient other than a configured queue or the
//! sender's own reply address, or an extra recipient header.
//!
//! And classify with the shipped rules on the input as text, whatever its MIME: its
//! first line as the subject, the rest as the body, in a plain message. What fires must
//! be what each rule's subject and body patterns, run alone as regexes, say; the
//! fuzzer's timeout catches a text that makes the matcher slow.

#![no_main]

use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mailtriage::config::Rules;
use mailtriage::parse::ParseError;
use mailtriage::pipeline::{self, Incoming};
use mailtriage::record::Store;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A fresh state after this many inputs: the fuzzer sends thousands of messages from
/// the same few senders and subjects, and a ticket that collects all of them would make
/// every later input slower (its history is rewritten on each follow-up).
const INPUTS_PER_STORE: u32 = 2000;

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        Rules::parse(std::path::Path::new("rules.toml"), mailtriage::cli::demo::RULES)
            .expect("the shipped rules.toml is valid")
    })
}

struct State {
    // Dropped after `store`, so sled's files go away only once it is closed.
    store: Store,
    _dir: tempfile::TempDir,
    inputs: u32,
}

fn fresh() -> State {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("a fresh store opens");
    State {
        store,
        _dir: dir,
        inputs: 0,
    }
}

fn state() -> &'static Mutex<Option<State>> {
    static STATE: OnceLock<Mutex<Option<State>>> = OnceLock::new();
    STATE.get_or_init(|| Mutex::new(None))
}

/// A fixed clock (Wednesday 2026-03-04 10:00 UTC, inside business hours) keeps a
/// crashing input reproducible.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_772_618_400)
}

/// libfuzzer-sys aborts on every panic, caught or not. mail-parser has a
/// `debug_assert!` that fails on some malformed MIME ("Invalid part ID, could not find
/// multipart"; cargo-fuzz builds with debug assertions, the daemon's release build has
/// none), and
/// `message::parse` catches that on purpose: the message is quarantined, not a crash.
/// Those panics are let through to the catch; any other panic, and any that nothing
/// catches (libfuzzer-sys's own catch around the target), still ends the run.
fn let_mail_parser_panics_be_caught() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("/mail-parser-"));
            if !in_parser {
                fuzzer_hook(info);
            }
        }));
    });
}

/// Every subject and body pattern of the rules that fire on any one pattern (not
/// `match = "all"`), compiled alone: (rule, field, regex).
fn alone() -> &'static Vec<(String, String, regex::Regex)> {
    static ALONE: OnceLock<Vec<(String, String, regex::Regex)>> = OnceLock::new();
    ALONE.get_or_init(|| {
        let mut all = Vec::new();
        for r in rules().rules.iter().filter(|r| !r.all) {
            for p in &r.patterns {
                let field = p.field.to_string();
                if field == "subject" || field == "body" {
                    let re = regex::Regex::new(&p.source).expect("checked at load");
                    all.push((r.name.clone(), field, re));
                }
            }
        }
        all
    })
}

/// The input as the subject (its first line) and body (the rest) of a plain message to
/// `to`, both base64, so any text reaches classify as it is.
fn as_text_message(raw: &[u8], to: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let (subject, body) = text.split_once('\n').unwrap_or((&text, ""));
    let subject = subject.trim_end_matches('\r');
    let body = STANDARD.encode(body.as_bytes());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "From: Customer <customer@example.com>\r\nTo: {to}\r\nSubject: =?utf-8?B?{}?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        STANDARD.encode(subject.as_bytes()),
        lines.join("\r\n")
    )
    .into_bytes()
}

/// classify of the input as text gives, for the subject and body patterns, what each
/// regex alone gives.
fn classify_as_text(raw: &[u8], to: &str) {
    let Ok(mail) = mailtriage::parse::parse(&as_text_message(raw, to)) else {
        return;
    };
    let class = mailtriage::classify::classify(rules(), &mail);
    for (rule, field, re) in alone() {
        let text = if field == "subject" { &mail.subject } else { &mail.text };
        let fired = class
            .fired
            .iter()
            .any(|f| &f.rule == rule && &f.field == field);
        let matches = alone()
            .iter()
            .filter(|(r, f, _)| r == rule && f == field)
            .any(|(_, _, re)| re.is_match(text));
        assert_eq!(fired, matches, "rule {rule} on the {field} ({re}): {text:?}");
    }
}

fuzz_target!(|raw: &[u8]| {
    // Here rather than at start-up: libfuzzer-sys installs its hook before the first input.
    let_mail_parser_panics_be_caught();
    let rules = rules();
    // The mailbox follows the input's length, so every mailbox's routing (forward,
    // keep, unmatched) is reached without a byte of the input spent on choosing it.
    let mailboxes: Vec<_> = rules.mailboxes.values().collect();
    let mailbox = mailboxes[raw.len() % mailboxes.len()];

    pipeline::explain(rules, None, mailbox, raw, now()).expect("explain without a store");
    classify_as_text(raw, &mailbox.address);

    let mut guard = state().lock().unwrap_or_else(|p| p.into_inner());
    if guard.as_ref().is_none_or(|s| s.inputs >= INPUTS_PER_STORE) {
        *guard = None;
        *guard = Some(fresh());
    }
    let st = guard.as_mut().expect("just opened");
    st.inputs += 1;
    let report = pipeline::triage(
        rules,
        &st.store,
        Incoming {
            mailbox,
            raw,
            source: None,
            folder: None,
        },
        now(),
    )
    .expect("triage into a healthy store");

    let reply_to = mailtriage::parse::parse(raw)
        .ok()
        .and_then(|m| m.reply_address().map(str::to_ascii_lowercase));
    let allowed = |to: &str| {
        let to = to.to_ascii_lowercase();
        rules
            .queues
            .values()
            .any(|q| q.address.eq_ignore_ascii_case(&to))
            || reply_to.as_deref() == Some(to.as_str())
    };
    for (key, mail) in st.store.outbox().expect("outbox readable") {
        for to in &mail.to {
            assert!(allowed(to), "mail to {to:?}: {report:?}");
        }
        // What a watched queue mailbox would do with this mail when it arrives there. A
        // forward carries the original inside, so a parser panic on the original can come
        // back here: it is quarantined there, like any mail that cannot be parsed.
        let out = match mailtriage::parse::parse(&mail.raw) {
            Ok(out) => out,
            Err(ParseError::Panicked(_)) => {
                st.store.outbox_done(key).expect("outbox entry removed");
                continue;
            }
            Err(e) => panic!("a composed mail does not parse: {e}"),
        };
        let count = |name: &str| out.headers.iter().filter(|(n, _)| n == name).count();
        assert_eq!(count("to"), 1, "{:?}", out.headers);
        assert_eq!(count("from"), 1, "{:?}", out.headers);
        assert_eq!(count("subject"), 1, "{:?}", out.headers);
        assert_eq!(count("cc") + count("bcc"), 0, "{:?}", out.headers);
        // Emptied as the sender would, so the outbox holds one input's mails at a time.
        st.store.outbox_done(key).expect("outbox entry removed");
    }
});
