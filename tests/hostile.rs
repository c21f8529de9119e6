//! Hostile mail through the whole pipeline (issue 4, point 6): CR/LF, raw and inside
//! RFC 2047 encoded words, in the subject, the display names and the addresses must not
//! put a header into the forward or the acknowledgement, and mail goes only to the
//! queue and the customer. Runs `mailtriage triage`, which composes the mails exactly as
//! the daemon does and writes them out as .eml files.
//!
//! And mail crafted to make classification slow (`support::crafted`: a one-word subject
//! of 128 KB, raw and as encoded words, dense literal hits, a 5 MB line, a 1 MB header)
//! is explained within a bound, as what the part of it that is read says.

mod support;

use std::time::{Duration, Instant};

use support::cli::cli;

/// "Website is down\r\nBcc: victim@evil.test" and "Evil\r\nBcc: victim@evil.test",
/// hidden in encoded words, plus the same raw in a folded line.
const HOSTILE: &[u8] =
    b"From: =?utf-8?B?RXZpbA0KQmNjOiB2aWN0aW1AZXZpbC50ZXN0?= <customer8@example.test>\r\n\
Reply-To: \"Name\r\n Bcc: victim@evil.test\" <customer8@example.test>\r\n\
To: billing@example.test\r\n\
Subject: =?utf-8?Q?Website_is_down=0D=0ABcc:_victim@evil.test=0D=0A=0D=0Abody?=\r\n\
 =?utf-8?B?DQpYLUluamVjdGVkOiB5ZXM=?=\r\n\
Message-ID: <hostile-1@client.test>\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Error 500 on every page.\r\n";

/// Header names of an .eml file's top-level header section.
fn header_names(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn crlf_and_encoded_words_cannot_inject_headers_into_forward_or_ack() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.eml");
    std::fs::write(&file, HOSTILE).unwrap();
    let out = cli(&["triage"])
        .arg(&file)
        .shipped_rules()
        .args(["--mailbox", "billing", "--json"])
        .outbox(&dir.path().join("out"))
        .run();
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["action"], "forward", "{report}");

    let mut mails = Vec::new();
    for e in std::fs::read_dir(dir.path().join("out")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "eml") {
            mails.push(std::fs::read(&p).unwrap());
        }
    }
    assert_eq!(mails.len(), 2, "a forward and an acknowledgement");
    for raw in &mails {
        let names = header_names(raw);
        assert!(
            !names.iter().any(|n| n == "bcc" || n == "x-injected"),
            "an injected header: {names:?}\n{}",
            String::from_utf8_lossy(raw)
        );
        let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
        let to: Vec<String> = parsed
            .to()
            .into_iter()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address().map(str::to_string))
            .collect();
        assert!(
            to == ["support@example.test"] || to == ["customer8@example.test"],
            "mail only to the queue or the customer: {to:?}"
        );
        assert!(parsed.bcc().is_none() && parsed.cc().is_none());
        // The hostile text survives as text on one line, visible to the reader.
        let subject = parsed.subject().unwrap_or_default();
        assert!(
            !subject.contains('\r') && !subject.contains('\n'),
            "{subject:?}"
        );
    }
}

/// Time allowed to `explain` one crafted message. The tests run an unoptimised build,
/// several times slower than the daemon's; a matcher quadratic in a field's length took
/// 44 s on the long-word subject in the optimised one.
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn crafted_mail_is_explained_in_bounded_time_from_the_part_that_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for c in support::crafted::all() {
        let file = dir.path().join(c.name);
        std::fs::write(&file, &c.raw).unwrap();
        let started = Instant::now();
        let out = cli(&["explain", "--json"]).arg(&file).shipped_rules().run();
        let took = started.elapsed();
        assert!(out.status.success(), "{}: {}", c.name, out.stderr);
        assert!(took < LIMIT, "{}: explained in {took:?}", c.name);
        let report = out.json();
        // A request at the start of a long body or beside a long header is still read.
        let want = match c.name {
            "single-line-5mb-body.eml" => Some("technical"),
            "one-header-1mb.eml" => Some("billing"),
            "long-word-subject.eml" | "long-word-subject-encoded.eml" => None,
            _ => continue,
        };
        assert_eq!(report["category"].as_str(), want, "{}: {report}", c.name);
    }
}
