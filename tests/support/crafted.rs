//! Crafted mail that aims at the cost of classification rather than at the parser: a
//! subject that is one long word a rule's `\w*` runs over, dense literal hits, a 5 MB
//! line, a 1 MB header. The long words are kept as files in tests/broken (and checked
//! against their description here); the others are megabytes each, so they are built
//! here from a short description instead (see its README).
//!
//! It uses dev-dependencies only, so that the benches (`#[path]`) and the library's unit
//! tests can use it as well as the integration tests (`support::crafted`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One crafted message.
pub struct Crafted {
    /// A file name for it, as if it were in tests/broken.
    pub name: &'static str,
    pub raw: Vec<u8>,
}

/// "счёт": the shipped billing-ru subject pattern has `сч[её]т\w*-фактур`, which runs to
/// the end of a word made of it from each of its hits.
pub const LONG_WORD_UNIT: &str = "счёт";

/// Literal starts of the shipped patterns glued into one word: each is a hit of some
/// rule, flag or incident, and no `\b` holds inside the word.
pub const LITERAL_HITS_UNIT: &str =
    "ошибкаerrorапиapiсчётактупалзависhttpstatusоплатрефундrefundinvoiceсудюристdownfailсбой";

const HEAD: &str =
    "To: billing@example.test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n";

fn message(id: &str, from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\n{HEAD}Message-ID: <{id}@crafted.test>\r\nSubject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// `unit` repeated to `bytes` bytes (a whole number of units, at least one).
pub fn repeat_to(unit: &str, bytes: usize) -> String {
    unit.repeat((bytes / unit.len()).max(1))
}

/// `text` as RFC 2047 encoded words of `chunk` bytes each (B encoding, UTF-8), one per
/// folded line: a decoder joins adjacent encoded words with nothing between them, so a
/// word stays one word however it is folded.
pub fn encoded_words(text: &str, chunk: usize) -> String {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = chunk.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        lines.push(format!(
            "=?utf-8?B?{}?=",
            STANDARD.encode(&rest.as_bytes()[..end])
        ));
        rest = &rest[end..];
    }
    lines.join("\r\n ")
}

/// `text` folded into lines of about `width` bytes at its spaces.
fn folded(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / width * 3);
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + word.len() > width {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(word);
        line += word.len() + 1;
    }
    out
}

/// The crafted mail kept as files in tests/broken (each a few hundred KB), then the
/// mail built here (megabytes each).
pub fn all() -> Vec<Crafted> {
    let mut all = vec![
        kept("long-word-subject.eml"),
        // 1,024 encoded words of 128 bytes, every line under 200 bytes.
        kept("long-word-subject-encoded.eml"),
    ];
    all.extend(built());
    all
}

/// A crafted message kept in tests/broken, checked against its description here, so
/// the file stays what the README says it is.
fn kept(name: &'static str) -> Crafted {
    let path = format!("{}/tests/broken/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let customer = "Customer <customer3@example.test>";
    let word = repeat_to(LONG_WORD_UNIT, 128 * 1024);
    let described = match name {
        "long-word-subject.eml" => message("long-word", customer, &word, "Hello."),
        _ => message(
            "long-word-encoded",
            customer,
            &encoded_words(&word, 128),
            "Hello.",
        ),
    };
    assert!(
        raw == described,
        "{path} is not the crafted mail it stands for"
    );
    Crafted { name, raw }
}

/// The crafted mail too big to keep in git, each of its full size.
pub fn built() -> Vec<Crafted> {
    let customer = "Customer <customer3@example.test>";
    let hits = repeat_to(LITERAL_HITS_UNIT, 1024 * 1024);
    let name = repeat_to("счёт ", 1024 * 1024);
    vec![
        Crafted {
            name: "many-literal-hits.eml",
            raw: message(
                "literal-hits",
                customer,
                &repeat_to(LITERAL_HITS_UNIT, 64 * 1024),
                &hits,
            ),
        },
        Crafted {
            // One line of 5 MB after a request the rules know.
            name: "single-line-5mb-body.eml",
            raw: message(
                "long-line",
                customer,
                "Help",
                &format!(
                    "Сайт не работает: {}",
                    repeat_to(LONG_WORD_UNIT, 5 * 1024 * 1024)
                ),
            ),
        },
        Crafted {
            // The From header: its display name is what sender patterns see.
            name: "one-header-1mb.eml",
            raw: message(
                "big-header",
                &format!(
                    "{}\r\n <customer3@example.test>",
                    folded(name.trim_end(), 76).trim_start()
                ),
                "Invoice",
                "Please send the invoice.",
            ),
        },
    ]
}
