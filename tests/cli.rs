//! The command line as an admin uses it: exit codes, error messages, JSON output, and the
//! README's first command (the demo).

mod support;

use std::path::{Path, PathBuf};

use support::cli::cli;
use support::{root, shipped_rules, write_rules};

/// The fixture that explain's tests read.
const AUTO_SUBMITTED: &str = "tests/fixtures/ack-auto-submitted-outage-ru-billing.eml";

#[test]
fn check_accepts_the_shipped_rules() {
    let o = cli(&["check"]).shipped_rules().run();
    assert!(o.status.success(), "{}", o.text());
    assert!(o.text().contains("OK"));
}

#[test]
fn check_reports_every_mistake_with_file_key_and_line() {
    let shipped = shipped_rules();
    let n = shipped.matches("[[rules]]").count();
    let bad = shipped.replacen("unmatched = \"keep\"", "unmatched = \"nowhere\"", 1)
        + "\n[[rules]]\nname = \"typo\"\ncategory = \"techincal\"\nsubject = 'x'\n"
        + "\n[[rules]]\nname = \"unclosed\"\ncategory = \"billing\"\nsubject = '(?i)(refund'\n";
    let o = cli(&["check"]).rules_text(&bad).run();
    assert_eq!(o.code(), Some(1), "{}", o.text());
    let t = o.text();
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(
        t.contains(&format!(
            "rules.toml:{}: rules[{n}].category: rule \"typo\": unknown category \"techincal\"",
            line_of("\"techincal\"")
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "rules.toml:{}: rules[{}].subject: rule \"unclosed\": bad regex",
            line_of("(?i)(refund"),
            n + 1
        )),
        "{t}"
    );
    assert!(t.contains("mailboxes.billing.unmatched"), "{t}");
    assert!(t.contains("3 error(s)"), "{t}");
}

#[test]
fn check_names_an_unknown_key() {
    let bad = shipped_rules().replacen(
        "response_time = \"4h\"",
        "response_time = \"4h\"\nresponse_tme = \"5h\"",
        1,
    );
    let o = cli(&["check"]).rules_text(&bad).run();
    assert_eq!(o.code(), Some(1));
    let line = bad
        .lines()
        .position(|l| l.starts_with("response_tme"))
        .unwrap()
        + 1;
    assert!(
        o.text().contains(&format!(
            "rules.toml:{line}: queues.support.response_tme: unknown key `response_tme` in queues.support"
        )),
        "{}",
        o.text()
    );
}

#[test]
fn misuse_prints_usage_and_fails() {
    let o = cli(&["explain"]).run();
    assert_eq!(o.code(), Some(2));
    assert!(o.text().contains("Usage"), "{}", o.text());
    let o = cli(&["frobnicate"]).run();
    assert_eq!(o.code(), Some(2));
}

/// Whether any element of the JSON array `list` satisfies `pred`.
fn any_of(list: &serde_json::Value, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    list.as_array().unwrap().iter().any(pred)
}

#[test]
fn explain_json_answers_offline() {
    let o = cli(&["explain", "--json"])
        .shipped_rules()
        .arg(root().join(AUTO_SUBMITTED))
        .run();
    assert!(o.status.success(), "{}", o.text());
    let v = o.json();
    assert_eq!(v["mailbox"], "billing");
    assert_eq!(v["category"], "technical");
    assert_eq!(v["queue"], "support");
    assert_eq!(v["misdirected"], true);
    assert_eq!(v["action"], "forward");
    assert_eq!(v["acknowledgement"]["send"], false);
    assert_eq!(v["acknowledgement"]["suppressed"], "auto-submitted");
    assert!(any_of(&v["rules"], |r| r["rule"] == "outage-ru"
        && !r["matched"].as_str().unwrap().is_empty()));
    assert_eq!(v["mails"][0]["kind"], "forward");
}

#[test]
fn explain_refuses_what_is_not_mail() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("not-mail.eml");
    std::fs::write(&f, b"").unwrap();
    let o = cli(&["explain"]).shipped_rules().arg(&f).run();
    assert_eq!(o.code(), Some(1));
    assert!(
        o.text().contains("not a message mailtriage can read"),
        "{}",
        o.text()
    );
    let o = cli(&["explain"])
        .shipped_rules()
        .arg(dir.path().join("missing.eml"))
        .run();
    assert_eq!(o.code(), Some(1));
    assert!(o.text().contains("missing.eml"), "{}", o.text());
}

#[test]
fn explain_with_a_bad_regex_names_the_rule() {
    let bad = shipped_rules()
        + "\n[[rules]]\nname = \"unclosed\"\ncategory = \"billing\"\nbody = '(?i)(refund'\n";
    let o = cli(&["explain"])
        .rules_text(&bad)
        .arg(root().join(AUTO_SUBMITTED))
        .run();
    assert_eq!(o.code(), Some(1));
    assert!(
        o.text().contains("rule \"unclosed\": bad regex"),
        "{}",
        o.text()
    );
}

#[test]
fn triage_is_once_per_message_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let state = dir.path().join("state");
    let f = root().join("samples/01-outage-to-billing-ru.eml");
    let run = || {
        cli(&["triage"])
            .shipped_rules()
            .outbox(&out)
            .state(&state)
            .arg(&f)
            .run()
    };
    let o = run();
    assert!(o.status.success(), "{}", o.text());
    assert!(
        o.text()
            .contains("forwarded to support@example.test as T-1001"),
        "{}",
        o.text()
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "one forward and one acknowledgement"
    );
    let o = run();
    assert!(o.status.success(), "{}", o.text());
    assert!(
        o.text().contains("already triaged as T-1001"),
        "{}",
        o.text()
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "nothing sent twice"
    );
}

#[test]
fn triage_quarantines_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.eml");
    std::fs::write(&f, b"\r\n\r\n").unwrap();
    let o = cli(&["triage", "--mailbox", "billing"])
        .shipped_rules()
        .outbox(&dir.path().join("o"))
        .arg(&f)
        .run();
    assert_eq!(o.code(), Some(1));
    assert!(o.text().contains("QUARANTINED"), "{}", o.text());
}

#[test]
fn demo_triages_the_samples_into_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let o = cli(&["demo"]).current_dir(dir.path()).outbox(&out).run();
    assert!(o.status.success(), "{}", o.text());
    let t = &o.stdout;
    assert!(
        t.contains("01-outage-to-billing-ru.eml: reached billing"),
        "{t}"
    );
    assert!(t.contains("forwarded to support@example.test"), "{t}");
    assert!(t.contains("11-followup-to-billing-ru.eml: reached billing: follow-up of T-1001 -> forwarded to support@example.test"), "{t}");
    assert!(
        t.contains("'added to your request' to ivan.petrov@mail.ru"),
        "{t}"
    );
    assert!(
        t.contains("RED FLAGS: threat, repeated, copy to supervisor@example.test"),
        "{t}"
    );
    let files = std::fs::read_dir(&out).unwrap().count();
    assert!(files >= 10, "{files} files in the outbox");
    // Every file is a mail the daemon sent, recognisable as its own.
    for e in std::fs::read_dir(&out).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert!(m.header_raw("X-Mailtriage").is_some());
    }
}

#[test]
fn added_to_your_request_names_the_request_once_not_the_reply_s_subject() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let o = cli(&["demo"]).current_dir(dir.path()).outbox(&out).run();
    assert!(o.status.success(), "{}", o.text());
    let subjects: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter_map(|raw| {
            let m = mail_parser::MessageParser::default().parse(&raw)?;
            let kind = m.header_raw("X-Mailtriage")?.contains("kind=added");
            kind.then(|| m.subject().unwrap_or("").to_string())
        })
        .collect();
    // Sample 11 is Ivan's reply to the acknowledgement of sample 01, "Re: [#T-1001] Ваше
    // обращение получено: Сайт не работает ...": the mail that tells him it was added names
    // his request, with its tag once.
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    let s = &subjects[0];
    assert_eq!(s.matches("[#T-1001]").count(), 1, "{s}");
    assert!(
        s.contains("Добавлено к вашему обращению: Сайт не работает"),
        "{s}"
    );
    assert!(!s.contains("Re:") && !s.contains("получено"), "{s}");
}

/// A password file with `mode`, in `dir`.
fn password_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, "secret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn check_reads_every_password_as_run_will_and_names_the_login_that_cannot() {
    let dir = tempfile::tempdir().unwrap();
    // The example's credentials, as systemd hands them over (root's, group bits by ACL).
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for name in ["smtp.pass", "billing.pass", "support.pass"] {
        password_file(&creds, name, 0o440);
    }
    let ok = password_file(dir.path(), "ok.pass", 0o600);
    let open = password_file(dir.path(), "open.pass", 0o644);
    let example = std::fs::read_to_string(root().join("systemd/mailtriage.toml")).unwrap();
    let config = dir.path().join("mailtriage.toml");
    // Monitoring logs in with a password file and sales with a variable instead.
    let write = |monitoring: &Path| {
        let text = example
            .replace(
                "password_credential = \"monitoring.pass\"",
                &format!("password_file = \"{}\"", monitoring.display()),
            )
            .replace(
                "password_credential = \"sales.pass\"",
                "password_env = \"MAILTRIAGE_SALES_PASSWORD\"",
            );
        assert_ne!(text, example);
        std::fs::write(&config, text).unwrap();
    };
    let check = |env: &[(&str, &str)]| {
        let mut c = cli(&["check", "--config"]).arg(&config).shipped_rules();
        for (k, v) in env {
            c = c.env(k, v);
        }
        c.run()
    };
    let creds_dir = creds.display().to_string();
    let all = [
        ("MAILTRIAGE_SALES_PASSWORD", "secret"),
        ("CREDENTIALS_DIRECTORY", creds_dir.as_str()),
    ];
    // Check fails, and its errors say all of `words`.
    let refused = |env: &[(&str, &str)], words: &[&str]| {
        let o = check(env);
        assert_eq!(o.code(), Some(1), "{}", o.text());
        let missing: Vec<_> = words.iter().filter(|w| !o.stderr.contains(**w)).collect();
        assert!(missing.is_empty(), "{missing:?} not in:\n{}", o.stderr);
    };
    write(&open);
    refused(
        &all[1..],
        &[
            "mailboxes.monitoring.password_file",
            "mode 644",
            "chmod 600",
            "mailboxes.sales.password_env",
            "MAILTRIAGE_SALES_PASSWORD is not set",
        ],
    );
    // A file someone else owns: that user could change the password the daemon uses.
    let theirs = password_file(dir.path(), "theirs.pass", 0o600);
    std::os::unix::fs::chown(&theirs, Some(65534), None).expect("the tests run as root");
    write(&theirs);
    let words = [
        "mailboxes.monitoring.password_file",
        "owned by uid 65534",
        "chown",
    ];
    refused(&all, &words);
    // Credentials outside systemd: check says how to point it at the files.
    write(&ok);
    let words = [
        "mailboxes.billing.password_credential",
        "smtp.password_credential",
        "CREDENTIALS_DIRECTORY is not set",
    ];
    refused(&all[..1], &words);
    // A credential everyone can read is refused like a password file.
    password_file(&creds, "support.pass", 0o644);
    let words = [
        "mailboxes.support.password_credential",
        "readable by everyone",
    ];
    refused(&all, &words);
    // Mended: every file is the owner's alone and the variable is set.
    password_file(&creds, "support.pass", 0o400);
    let o = check(&all);
    assert!(o.status.success(), "{}", o.text());
    // The example watches every team's sent replies; without them, check says what follows.
    assert!(!o.stderr.contains("sent_folder"), "{}", o.stderr);
    let text = std::fs::read_to_string(&config).unwrap();
    let blind = text.replacen("sent_folder = \"Sent\"", "", 1);
    std::fs::write(&config, blind).unwrap();
    let o = check(&all);
    assert!(o.status.success(), "{}", o.text());
    assert!(
        o.stderr.contains("warning: ")
            && o.stderr.contains("mailboxes.billing.sent_folder: not set")
            && o.stderr.contains("reminders"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_state_held_by_another_process_is_said_so_once_not_as_a_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    // Held here, as a running daemon holds it.
    let _held = mailtriage::record::Store::open(dir.path()).unwrap();
    let sample = root().join("samples/01-outage-to-billing-ru.eml");
    for o in [
        cli(&["tickets", "list"])
            .shipped_rules()
            .state(dir.path())
            .run(),
        cli(&["explain"])
            .arg(&sample)
            .shipped_rules()
            .state(dir.path())
            .run(),
    ] {
        assert_eq!(o.code(), Some(1), "{}", o.text());
        assert_eq!(
            o.stderr
                .matches("is in use by another mailtriage process")
                .count(),
            1,
            "{}",
            o.stderr
        );
        assert!(!o.stderr.contains("WouldBlock"), "{}", o.stderr);
    }
}

/// The shipped rules with INC-9, active for an hour now, on mail about the invoice page.
fn rules_with_an_incident() -> String {
    let now = time::OffsetDateTime::now_utc();
    let since = (now - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    shipped_rules()
        + &format!(
            "\n[[incidents]]\nid = \"INC-9\"\nbody = '(?i)invoice page'\nsince = \"{since}\"\ntext = {{ en = \"Invoices are slow today.\" }}\n"
        )
}

/// A reply by Ivan to the message `id`, to sales@, rude and about the invoice page.
fn rude_reply(id: &str) -> String {
    format!(
        "From: Ivan <ivan.petrov@mail.ru>\r\nTo: sales@example.test\r\nSubject: Re: still broken\r\nMessage-ID: <r1@mail.ru>\r\nIn-Reply-To: <{id}>\r\nReferences: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYou idiots, the invoice page is broken too. Please send a quote.\r\n"
    )
}

#[test]
fn explain_json_shows_thread_match_flags_and_incident() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rules = write_rules(dir.path(), &rules_with_an_incident());
    let first = root().join("samples/01-outage-to-billing-ru.eml");
    let o = cli(&["triage"])
        .rules(&rules)
        .outbox(&dir.path().join("o"))
        .state(&state)
        .arg(&first)
        .run();
    assert!(o.status.success(), "{}", o.text());
    let raw = std::fs::read(&first).unwrap();
    let id = mail_parser::MessageParser::default()
        .parse(&raw)
        .unwrap()
        .message_id()
        .unwrap()
        .to_string();

    let reply = dir.path().join("reply.eml");
    std::fs::write(&reply, rude_reply(&id)).unwrap();
    let o = cli(&["explain", "--json"])
        .rules(&rules)
        .state(&state)
        .arg(&reply)
        .run();
    assert!(o.status.success(), "{}", o.text());
    let v = o.json();
    assert_eq!(v["joined_by"], "references", "{v:#}");
    assert_eq!(v["ticket"], "T-1001");
    assert_eq!(
        v["category"],
        serde_json::Value::Null,
        "a follow-up is not classified again"
    );
    assert_eq!(
        v["queue"], "support",
        "it goes to the queue that owns the ticket"
    );
    assert_eq!(v["action"], "forward");
    assert!(
        any_of(&v["flags"], |f| f["rule"] == "profanity"
            && f["matched"] == "idiots"),
        "{v:#}"
    );
    assert_eq!(v["incident"], "INC-9");
    assert!(any_of(&v["mails"], |m| m["kind"] == "escalation"), "{v:#}");
    // explain wrote nothing: the state still holds one ticket.
    let o = cli(&["tickets", "list"]).rules(&rules).state(&state).run();
    assert!(o.status.success(), "{}", o.text());
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.text());
}

/// Replaces the `n`-th (0-based) occurrence of `from`; panics when there is none, so a
/// change to the shipped rules cannot quietly turn a mistake of the test into no mistake.
fn replace_nth(text: &str, from: &str, to: &str, n: usize) -> String {
    let at = text
        .match_indices(from)
        .nth(n)
        .unwrap_or_else(|| panic!("the shipped rules.toml no longer has {from:?} (#{n})"))
        .0;
    format!("{}{to}{}", &text[..at], &text[at + from.len()..])
}

/// A mistake written into the shipped rules: what is changed, into what, which occurrence,
/// the key path, words of the error.
type Mistake = (
    &'static str,
    &'static str,
    usize,
    &'static str,
    &'static str,
);

/// Twenty different mistakes, one per kind of key.
const MISTAKES: [Mistake; 20] = [
    (
        "domain = \"example.test\"",
        "domain = \"not a domain\"",
        0,
        "company.domain",
        "not a domain name",
    ),
    (
        "ack_from = \"Example Support <support@example.test>\"",
        "ack_from = \"support at example\"",
        0,
        "company.ack_from",
        "not an address",
    ),
    (
        "ticket_prefix = \"T\"",
        "ticket_prefix = \"T-\"",
        0,
        "company.ticket_prefix",
        "ASCII letters or digits",
    ),
    (
        "acks_per_sender_per_day = 5",
        "acks_per_sender_per_day = 5\nacks_per_day = 3",
        0,
        "company.acks_per_day",
        "unknown key `acks_per_day`",
    ),
    (
        "address = \"billing@example.test\"",
        "address = \"billing\"",
        0,
        "queues.billing.address",
        "not an e-mail address",
    ),
    (
        "response_time = \"1d\"",
        "response_time = \"soon\"",
        1,
        "queues.sales.response_time",
        "not a duration",
    ),
    (
        "response_time = \"4h\"",
        "response_time = \"4h\"\nbusiness_hours = \"Mon-Fry 09:00-18:00\"",
        0,
        "queues.support.business_hours",
        "unknown day",
    ),
    (
        "queue = \"billing\"\n[categories.sales]",
        "queue = \"nobody\"\n[categories.sales]",
        0,
        "categories.billing.queue",
        "unknown queue \"nobody\"",
    ),
    (
        "handles = [\"sales\"]",
        "handles = [\"sale\"]",
        0,
        "mailboxes.sales.handles[0]",
        "unknown category \"sale\"",
    ),
    (
        "unmatched = \"keep\"",
        "unmatched = \"nowhere\"",
        0,
        "mailboxes.billing.unmatched",
        "must be \"keep\" or a queue name",
    ),
    (
        "subject = '(?i)не",
        "subject = '(?i)(не",
        0,
        "rules[2].subject",
        "bad regex",
    ),
    (
        "priority = 20",
        "prioirty = 20",
        0,
        "rules[4].prioirty",
        "unknown key `prioirty`",
    ),
    (
        "name = \"sales-en\"",
        "name = \"sales-ru\"",
        0,
        "rules[9].name",
        "already used by rules[8]",
    ),
    (
        "category = \"howto\"",
        "category = \"how-to\"",
        0,
        "rules[5].category",
        "unknown category \"how-to\"",
    ),
    (
        "queue = \"supervisor\"",
        "queue = \"boss\"",
        0,
        "escalation.queue",
        "unknown queue \"boss\"",
    ),
    (
        "subject_window = \"7d\"",
        "subject_window = \"a week\"",
        0,
        "threading.subject_window",
        "not a duration",
    ),
    (
        "{{ ticket }}",
        "{{ tikcet }}",
        0,
        "templates.en.note",
        "template error",
    ),
    (
        "detect = '[A-Za-z]'",
        "detect = '[A-Za-z'",
        0,
        "languages.en.detect",
        "bad regex",
    ),
    (
        "mailbox = \"support\"",
        "mailbox = \"suport\"",
        0,
        "tests[0].mailbox",
        "unknown mailbox \"suport\"",
    ),
    (
        "flags = [\"profanity\", \"repeated\", \"threat\"]",
        "flags = [\"profanity\", \"repeated\", \"threats\"]",
        0,
        "tests[2].expect.flags[2]",
        "unknown flag \"threats\"",
    ),
];

/// The line (1-based) of `bad` a mistake is written on: the last holding the first line
/// the change made new.
fn line_of_mistake(bad: &str, from: &str, to: &str) -> usize {
    let changed = to.lines().find(|l| !from.lines().any(|f| f == *l)).unwrap();
    bad.lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.contains(changed))
        .unwrap()
        + 1
}

#[test]
fn check_lists_twenty_different_mistakes_at_once() {
    let shipped = shipped_rules();
    let mut bad = shipped.clone();
    for (from, to, n, _, _) in &MISTAKES {
        bad = replace_nth(&bad, from, to, *n);
    }
    let o = cli(&["check"]).rules_text(&bad).run();
    assert_eq!(o.code(), Some(1), "{}", o.text());
    let out = o.stderr;
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("error: ") || l.contains("rules.toml:"))
        .collect();
    for (from, to, _, key, words) in &MISTAKES {
        let line = line_of_mistake(&bad, from, to);
        let hit = errors
            .iter()
            .find(|e| e.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no error for {key}; check said:\n{out}"));
        assert!(hit.contains(words), "{key}: {hit:?} should say {words:?}");
        // Table-level keys (a template spans many lines) name the line the value starts on.
        if *key != "templates.en.note" {
            assert!(
                hit.contains(&format!("rules.toml:{line}: ")),
                "{key}: {hit:?} should name line {line}"
            );
        }
    }
    assert!(
        out.contains("20 error(s)"),
        "exactly the twenty mistakes:\n{out}"
    );
}

#[test]
fn a_failing_rule_test_is_an_error_naming_the_test_and_the_difference() {
    let shipped = shipped_rules();
    // The refund rule now routes to sales: the first shipped test must catch it.
    let bad = replace_nth(
        &shipped,
        "queue = \"billing\"\n[categories.sales]",
        "queue = \"sales\"\n[categories.sales]",
        0,
    );
    let o = cli(&["check"]).rules_text(&bad).run();
    assert_eq!(o.code(), Some(1), "{}", o.text());
    let t = o.text();
    assert!(
        t.contains("tests[0]: rule test \"refund written to support goes to billing\" failed: queue: expected \"billing\", got \"sales\""),
        "{t}"
    );
    assert!(t.contains("rules fired: billing-en"), "{t}");
}

#[test]
fn check_warns_about_design_mistakes_and_still_passes() {
    let shipped = shipped_rules();
    let extra = "\n[queues.legal]\naddress = \"legal@example.test\"\nname = { en = \"Legal\" }\nresponse_time = \"1d\"\n\
                 \n[categories.press]\nqueue = \"support\"\n\
                 \n[mailboxes.accounts]\naddress = \"accounts@example.test\"\nhandles = [\"billing\"]\nunmatched = \"billing\"\n\
                 \n[[rules]]\nname = \"anything\"\ncategory = \"sales\"\nsubject = '(?i)quote|'\n\
                 \n[[rules]]\nname = \"impossible\"\ncategory = \"sales\"\nbody = 'price[^\\s\\S]'\n";
    // The two rules added come after the shipped ones.
    let shipped_rules = shipped.matches("\n[[rules]]\n").count();
    let (anything, impossible) = (
        format!("rules[{shipped_rules}].subject"),
        format!("rules[{}].body", shipped_rules + 1),
    );
    let bad = shipped + extra;
    let o = cli(&["check"]).rules_text(&bad).run();
    let t = o.text();
    assert!(o.status.success(), "warnings alone do not fail check:\n{t}");
    let line = |needle: &str| bad.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    for (key, words, at) in [
        (
            "queues.legal",
            "no category, mailbox or escalation routes to queue \"legal\"",
            line("[queues.legal]"),
        ),
        (
            "categories.press",
            "no rule has category \"press\"",
            line("[categories.press]"),
        ),
        (
            "mailboxes.accounts",
            "has no queue but handles [\"billing\"]",
            line("[mailboxes.accounts]"),
        ),
        (
            anything.as_str(),
            "matches the empty string",
            line("subject = '(?i)quote|'"),
        ),
        (
            impossible.as_str(),
            "can never match anything",
            line("body = 'price["),
        ),
    ] {
        assert!(
            t.lines().any(|l| l.starts_with("warning: ")
                && l.contains(&format!("rules.toml:{at}: {key}: "))
                && l.contains(words)),
            "no warning {key} at line {at} saying {words:?}:\n{t}"
        );
    }
}

#[test]
fn a_subject_with_terminal_escapes_is_shown_not_obeyed() {
    // Clear the screen, paint red, set the window title, reorder with a bidi override.
    let evil = "Site down \u{1b}[2J\u{1b}[31mFAKE: ticket closed by admin\u{1b}]0;owned\u{7} \u{202e}txt.exe";
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mail = dir.path().join("evil.eml");
    std::fs::write(
        &mail,
        format!(
            "From: Mallory <mallory@evil.example>\r\nTo: support@example.test\r\nSubject: {evil}\r\nMessage-ID: <esc-1@evil.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe site is down.\r\n"
        ),
    )
    .unwrap();
    let o = cli(&["triage"])
        .shipped_rules()
        .outbox(&dir.path().join("o"))
        .state(&state)
        .arg(&mail)
        .run();
    assert!(o.status.success(), "{}", o.text());
    let shown = [
        cli(&["tickets", "list"]).state(&state).run(),
        cli(&["tickets", "show", "T-1001"]).state(&state).run(),
        cli(&["tickets", "show", "T-1001", "--mails"])
            .state(&state)
            .run(),
        cli(&["explain"]).shipped_rules().arg(&mail).run(),
    ];
    for o in shown {
        assert!(o.status.success(), "{}", o.text());
        assert!(o.stdout.contains("FAKE: ticket closed"), "{}", o.stdout);
        assert!(
            !o.stdout.contains(['\u{1b}', '\u{7}', '\u{202e}']),
            "{:?}",
            o.stdout
        );
        assert!(o.stdout.contains("\\u{1b}[2J"), "{}", o.stdout);
    }
}

#[test]
fn the_state_and_the_outbox_are_the_owner_s_alone_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (state, outbox) = (dir.path().join("state"), dir.path().join("o"));
    // The test runs under the usual umask 022; the binary must not keep it.
    let o = cli(&["triage"])
        .shipped_rules()
        .outbox(&outbox)
        .state(&state)
        .arg(root().join("samples/01-outage-to-billing-ru.eml"))
        .run();
    assert!(o.status.success(), "{}", o.text());
    let mut seen = 0;
    let mut todo = vec![state.clone(), outbox.clone()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::metadata(&p).unwrap();
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(meta.permissions().mode() & 0o777, want, "{}", p.display());
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        seen += 1;
    }
    assert!(seen > 4, "the state and the mails were written");
}

/// A state with ticket T-1001 and its forward and acknowledgement in the outbox, the
/// forward refused for good; returns the outbox keys of the two mails.
fn state_with_a_refused_forward(state: &Path) -> (u64, u64) {
    use mailtriage::ticket::{OutMail, Ticket};
    let store = mailtriage::record::Store::open(state).unwrap();
    let [id, customer, subject, queue, lang, at] = [
        "T-1001",
        "customer1@example.test",
        "Website is down",
        "support",
        "en",
        "2026-11-23T10:00:00Z",
    ]
    .map(String::from);
    let t = Ticket::new(id, customer, subject, queue, lang, at);
    // As the outbox keeps them (the bytes apart).
    let mail = |kind: &str, to: &str| -> OutMail {
        let head = serde_json::json!({
            "message_id": format!("T-1001.{kind}@mailtriage.example.test"),
            "kind": kind, "ticket": "T-1001", "envelope_from": null, "to": [to],
        });
        serde_json::from_value(head).unwrap()
    };
    let mails = [
        mail("forward", "techdesk@example.test"),
        mail("acknowledgement", "customer1@example.test"),
    ];
    store.commit_ticket(&t, &mails).unwrap();
    let keys: Vec<u64> = store.outbox().unwrap().iter().map(|(k, _)| *k).collect();
    store
        .outbox_dead(
            keys[0],
            "permanent error (550): 5.1.1 <techdesk@example.test>: User unknown",
        )
        .unwrap();
    store.flush().unwrap();
    (keys[0], keys[1])
}

#[test]
fn outbox_lists_retries_and_drops_refused_mail_from_the_state_when_no_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (refused, waiting) = state_with_a_refused_forward(&state);
    let outbox = |args: &[&str]| cli(&["outbox"]).args(args).state(&state).run();

    let list = outbox(&["list"]);
    assert!(list.status.success(), "{}", list.text());
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", list.stdout);
    assert!(
        lines[0].starts_with(&waiting.to_string()) && lines[0].contains("waiting"),
        "{}",
        list.stdout
    );
    for part in [
        "refused",
        "T-1001",
        "forward -> techdesk@example.test",
        ": permanent error (550)",
    ] {
        assert!(lines[1].contains(part), "{part:?}: {}", list.stdout);
    }

    // A waiting mail is still the sender's: neither sent again nor dropped.
    for verb in ["retry", "drop"] {
        let o = outbox(&[verb, &waiting.to_string()]);
        assert_eq!(o.code(), Some(1), "{}", o.text());
        assert!(
            o.stderr.contains("is waiting to be sent, not refused"),
            "{}",
            o.stderr
        );
    }
    let retried = outbox(&["retry", &refused.to_string(), "--json"]);
    assert!(retried.status.success(), "{}", retried.text());
    let entry = retried.json();
    assert_eq!(
        (&entry["state"], &entry["kind"]),
        (&"waiting".into(), &"forward".into())
    );
    let new = entry["id"].as_u64().unwrap();
    assert!(new > waiting, "at the end of the outbox: {entry}");
    let again = outbox(&["retry", &refused.to_string()]);
    assert!(
        again.stderr.contains(&format!("no refused mail {refused}")),
        "{}",
        again.text()
    );

    // Refused again, then dropped for good, saying what it was.
    let store = mailtriage::record::Store::open(&state).unwrap();
    store
        .outbox_dead(new, "permanent error (550): still unknown")
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let dropped = outbox(&["drop", &new.to_string()]);
    assert!(dropped.status.success(), "{}", dropped.text());
    assert_eq!(
        dropped.stdout,
        format!("dropped mail {new} for good: forward of T-1001 to techdesk@example.test (T-1001.forward@mailtriage.example.test), refused with: permanent error (550): still unknown\n")
    );
    let show = cli(&["tickets", "show", "T-1001"])
        .state(&state)
        .run()
        .stdout;
    for said in [
        "the refused forward to techdesk@example.test was put back in the outbox",
        "the refused forward to techdesk@example.test was dropped for good",
    ] {
        assert!(show.contains(said), "{said:?} not in:\n{show}");
    }
    assert_eq!(
        outbox(&["list"]).stdout.lines().count(),
        1,
        "the acknowledgement waits"
    );
}

#[test]
fn tickets_list_shows_the_newest_open_tickets_and_says_what_it_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut triage = cli(&["triage"])
        .shipped_rules()
        .outbox(&dir.path().join("o"))
        .state(&state);
    for sample in [
        "01-outage-to-billing-ru.eml",
        "02-refund-to-monitoring-en.eml",
        "03-error500-to-support-en.eml",
        "12-angry-to-monitoring-en.eml",
    ] {
        triage = triage.arg(root().join("samples").join(sample));
    }
    let o = triage.run();
    assert!(o.status.success(), "{}", o.text());
    let list = |args: &[&str]| {
        let mut a = vec!["tickets", "list"];
        a.extend_from_slice(args);
        let o = cli(&a).state(&state).run();
        assert!(o.status.success(), "{}", o.text());
        o
    };
    let every = list(&["--all", "--json"]).json();
    let ids: Vec<String> = every
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 3, "{every:#}");
    let o = cli(&["tickets", "resolve", &ids[0]]).state(&state).run();
    assert!(o.status.success(), "{}", o.text());

    // By default the open ones: the resolved one is not there.
    let open = list(&[]).stdout;
    assert_eq!(open.lines().count(), ids.len() - 1, "{open}");
    assert!(
        !open.contains(&ids[0]) && !open.contains("resolved"),
        "{open}"
    );

    // The newest two of all, oldest of them first, and the rest counted.
    let two = list(&["--all", "--limit", "2"]).stdout;
    let lines: Vec<&str> = two.lines().collect();
    let newest = &ids[ids.len() - 2..];
    assert!(
        lines[0].starts_with(&newest[0]) && lines[1].starts_with(&newest[1]),
        "{two}"
    );
    assert_eq!(
        lines[2],
        format!(
            "... {} older ticket(s) not listed: --limit N lists up to 1000, `tickets show ID` any one",
            ids.len() - 2
        )
    );
    assert_eq!(lines.len(), 3, "{two}");
    // As JSON the array holds the tickets listed; what it left out is said on stderr.
    let one = list(&["--all", "--limit", "1", "--json"]);
    assert_eq!(one.json().as_array().unwrap().len(), 1);
    assert!(
        one.stderr.contains(&format!("... {} older", ids.len() - 1)),
        "{}",
        one.stderr
    );

    // A limit past what one listing holds is misuse: usage, exit 2.
    for bad in ["0", "1001", "many"] {
        let o = cli(&["tickets", "list", "--limit", bad])
            .state(&state)
            .run();
        assert_eq!(o.code(), Some(2), "{bad}: {}", o.text());
        assert!(o.stderr.contains("--limit"), "{}", o.stderr);
    }
}
