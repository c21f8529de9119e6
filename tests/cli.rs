//! The command line as an admin uses it: exit codes, error messages, JSON output, and the
//! README's first command (the demo).

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mailtriage"));
    c.env_remove("MAILTRIAGE_RULES")
        .env_remove("MAILTRIAGE_CONFIG")
        .env_remove("RUST_LOG");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_the_shipped_rules() {
    let o = bin()
        .args(["check", "--rules"])
        .arg(root().join("rules.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK"));
}

#[test]
fn check_reports_every_mistake_with_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(root().join("rules.toml")).unwrap();
    let n = shipped.matches("[[rules]]").count();
    let bad = shipped.replacen("unmatched = \"keep\"", "unmatched = \"nowhere\"", 1)
        + "\n[[rules]]\nname = \"typo\"\ncategory = \"techincal\"\nsubject = 'x'\n"
        + "\n[[rules]]\nname = \"unclosed\"\ncategory = \"billing\"\nsubject = '(?i)(refund'\n";
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, &bad).unwrap();
    let o = bin()
        .arg("check")
        .arg("--rules")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
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
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(root().join("rules.toml"))
        .unwrap()
        .replacen(
            "response_time = \"4h\"",
            "response_time = \"4h\"\nresponse_tme = \"5h\"",
            1,
        );
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, &bad).unwrap();
    let o = bin()
        .arg("check")
        .arg("--rules")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let line = bad
        .lines()
        .position(|l| l.starts_with("response_tme"))
        .unwrap()
        + 1;
    assert!(
        text(&o).contains(&format!(
            "rules.toml:{line}: queues.support.response_tme: unknown key `response_tme` in queues.support"
        )),
        "{}",
        text(&o)
    );
}

#[test]
fn misuse_prints_usage_and_fails() {
    let o = bin().arg("explain").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Usage"), "{}", text(&o));
    let o = bin().arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn explain_json_answers_offline() {
    let f = root().join("tests/fixtures/ack-auto-submitted-outage-ru-billing.eml");
    let o = bin()
        .args(["explain", "--json", "--rules"])
        .arg(root().join("rules.toml"))
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mailbox"], "billing");
    assert_eq!(v["category"], "technical");
    assert_eq!(v["queue"], "support");
    assert_eq!(v["misdirected"], true);
    assert_eq!(v["action"], "forward");
    assert_eq!(v["acknowledgement"]["send"], false);
    assert_eq!(v["acknowledgement"]["suppressed"], "auto-submitted");
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "outage-ru" && !r["matched"].as_str().unwrap().is_empty()));
    assert_eq!(v["mails"][0]["kind"], "forward");
}

#[test]
fn explain_refuses_what_is_not_mail() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("not-mail.eml");
    std::fs::write(&f, b"").unwrap();
    let o = bin()
        .args(["explain", "--rules"])
        .arg(root().join("rules.toml"))
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a message mailtriage can read"),
        "{}",
        text(&o)
    );
    let o = bin()
        .args(["explain", "--rules"])
        .arg(root().join("rules.toml"))
        .arg(dir.path().join("missing.eml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.eml"), "{}", text(&o));
}

#[test]
fn explain_with_a_bad_regex_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let bad = std::fs::read_to_string(root().join("rules.toml")).unwrap()
        + "\n[[rules]]\nname = \"unclosed\"\ncategory = \"billing\"\nbody = '(?i)(refund'\n";
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, &bad).unwrap();
    let f = root().join("tests/fixtures/ack-auto-submitted-outage-ru-billing.eml");
    let o = bin()
        .arg("explain")
        .arg("--rules")
        .arg(&path)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("rule \"unclosed\": bad regex"),
        "{}",
        text(&o)
    );
}

#[test]
fn triage_is_once_per_message_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let state = dir.path().join("state");
    let f = root().join("samples/01-outage-to-billing-ru.eml");
    let run = || {
        bin()
            .args(["triage", "--rules"])
            .arg(root().join("rules.toml"))
            .arg("--outbox")
            .arg(&out)
            .arg("--state")
            .arg(&state)
            .arg(&f)
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("forwarded to support@example.test as T-1001"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "one forward and one acknowledgement"
    );
    let o = run();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already triaged as T-1001"),
        "{}",
        text(&o)
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
    let o = bin()
        .args(["triage", "--mailbox", "billing", "--rules"])
        .arg(root().join("rules.toml"))
        .arg("--outbox")
        .arg(dir.path().join("o"))
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("QUARANTINED"), "{}", text(&o));
}

#[test]
fn demo_triages_the_samples_into_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("outbox");
    let o = bin()
        .current_dir(dir.path())
        .args(["demo", "--outbox"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
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
fn explain_json_shows_thread_match_flags_and_incident() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let rules_text = std::fs::read_to_string(root().join("rules.toml")).unwrap()
        + &format!(
            "\n[[incidents]]\nid = \"INC-9\"\nbody = '(?i)invoice page'\nsince = \"{}\"\ntext = {{ en = \"Invoices are slow today.\" }}\n",
            fmt(now - time::Duration::hours(1))
        );
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, rules_text).unwrap();
    let first = root().join("samples/01-outage-to-billing-ru.eml");
    let o = bin()
        .args(["triage", "--rules"])
        .arg(&rules)
        .arg("--outbox")
        .arg(dir.path().join("o"))
        .arg("--state")
        .arg(&state)
        .arg(&first)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let raw = std::fs::read(&first).unwrap();
    let id = mail_parser::MessageParser::default()
        .parse(&raw)
        .unwrap()
        .message_id()
        .unwrap()
        .to_string();

    let reply = dir.path().join("reply.eml");
    std::fs::write(
        &reply,
        format!(
            "From: Ivan <ivan.petrov@mail.ru>\r\nTo: sales@example.test\r\nSubject: Re: still broken\r\nMessage-ID: <r1@mail.ru>\r\nIn-Reply-To: <{id}>\r\nReferences: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYou idiots, the invoice page is broken too. Please send a quote.\r\n"
        ),
    )
    .unwrap();
    let o = bin()
        .args(["explain", "--json", "--rules"])
        .arg(&rules)
        .arg("--state")
        .arg(&state)
        .arg(&reply)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
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
        v["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "profanity" && f["matched"] == "idiots"),
        "{v:#}"
    );
    assert_eq!(v["incident"], "INC-9");
    assert!(
        v["mails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["kind"] == "escalation"),
        "{v:#}"
    );
    // explain wrote nothing: the state still holds one ticket.
    let o = bin()
        .args(["tickets", "list", "--rules"])
        .arg(&rules)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "{}",
        text(&o)
    );
}
