//! Parse: raw RFC 5322 bytes -> [`Mail`], an owned, decoded view of what the later
//! stages need (ids for threading, addresses, subject, the customer's own text, and the
//! headers that decide whether an automatic reply is allowed). The raw bytes are kept
//! beside it, untouched, because the forward attaches the original as it arrived.
//!
//! Every text the rules read is bounded here, whatever the message: the body at
//! [`MAX_TEXT`], the subject and display names at [`MAX_SUBJECT`], other header values at
//! [`MAX_HEADER_VALUE`], each cut at a character boundary with its start kept.

use std::borrow::Cow;

use mail_parser::{Address, HeaderValue, MessageParser};
use serde::Serialize;

mod report;

pub use report::Reported;

/// Text longer than this is not looked at by the rules: it keeps classification time and
/// memory per message bounded whatever a sender puts in a body.
pub const MAX_TEXT: usize = 64 * 1024;
/// The subject and display names are cut to this many bytes, for the same reason: rules
/// read them, and they travel on into notes, acknowledgements and the state. Real
/// subjects are a line; 2 KB is ten times the longest a mail client lets one write.
pub const MAX_SUBJECT: usize = 2 * 1024;
/// Every other header value is cut to this many bytes. The longest that real mail
/// carries (anti-spam reports, ARC and DKIM signatures) stay under it; above it a value
/// is crafted or broken.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// A message with more MIME boundary lines than this is read on its header alone: the
/// parser builds a structure per part (about 190 bytes), so 2 million empty parts in
/// 20 MB took 380 MB. Real mail, digests included, has a few hundred parts at most.
pub const MAX_PARTS: usize = 10_000;

/// Whether `raw` has more than [`MAX_PARTS`] lines that begin with `--` (the boundary
/// lines of its parts, and any other such line: only crafted mail has that many).
pub fn too_many_parts(raw: &[u8]) -> bool {
    let starts =
        raw.windows(3).filter(|w| w == b"\n--").count() + usize::from(raw.starts_with(b"--"));
    starts > MAX_PARTS
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addr {
    /// The display name, at most [`MAX_SUBJECT`] bytes.
    pub name: Option<String>,
    pub address: String,
}

impl Addr {
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => format!("{n} <{}>", self.address),
            _ => self.address.clone(),
        }
    }
}

/// Why a message could not be parsed at all.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("not an e-mail message: no header could be read")]
    NotMail,
    #[error("the parser failed on this message: {0}")]
    Panicked(String),
}

impl ParseError {
    /// Never: the same bytes fail the same way again, so the message is quarantined.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// One message, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Mail {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub from: Option<Addr>,
    pub reply_to: Option<Addr>,
    /// The envelope sender from Return-Path: `Some("")` is the null sender `<>`.
    pub return_path: Option<String>,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub delivered_to: Vec<String>,
    /// Decoded, on one line, at most [`MAX_SUBJECT`] bytes.
    pub subject: String,
    /// Date header as RFC 3339, when it parses.
    pub date: Option<String>,
    /// The customer's own text: text parts (HTML turned into text), quoted earlier
    /// messages left out, at most [`MAX_TEXT`] bytes.
    pub text: String,
    /// Every header as (lower-case name, decoded or unfolded value), in order; a value is
    /// at most [`MAX_HEADER_VALUE`] bytes ([`MAX_SUBJECT`] for the subject).
    pub headers: Vec<(String, String)>,
    pub size: usize,
    /// Only the header was read: the message is over the size limit, or has more than
    /// [`MAX_PARTS`] parts (`too_many_parts`).
    pub oversized: bool,
    pub too_many_parts: bool,
    /// A delivery or read report: which mail it is about and what the server said.
    pub reported: Option<Reported>,
    /// How many From and Sender headers it has: more than one is a sign of forgery.
    pub senders: usize,
}

impl Mail {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Where an automatic reply goes (RFC 3834 3.1.5): the envelope sender, else From.
    pub fn reply_address(&self) -> Option<&str> {
        match &self.return_path {
            Some(rp) if rp.is_empty() => None,
            Some(rp) => Some(rp.as_str()),
            None => self.from.as_ref().map(|a| a.address.as_str()),
        }
    }

    /// The sender as threading and the daily cap see it: the envelope sender, else From,
    /// in lower case; "" when there is neither.
    pub fn sender(&self) -> String {
        self.reply_address()
            .or(self.from.as_ref().map(|a| a.address.as_str()))
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// Every id this message points at, nearest first: a report's returned message,
    /// then In-Reply-To, then References from the last.
    pub fn thread_ids(&self) -> impl Iterator<Item = &str> {
        let reported = self.reported.as_ref().and_then(|r| r.message_id.as_deref());
        reported.into_iter().chain(
            self.in_reply_to
                .iter()
                .chain(self.references.iter().rev())
                .map(String::as_str),
        )
    }
}

/// Parses raw bytes. Never panics: mail-parser runs under `catch_unwind`, and a panic
/// there becomes an error that quarantines the message instead of stopping the service.
pub fn parse(raw: &[u8]) -> Result<Mail, ParseError> {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    match std::panic::catch_unwind(|| parse_inner(raw)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(ParseError::Panicked(msg))
        }
    }
}

fn parse_inner(raw: &[u8]) -> Result<Mail, ParseError> {
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(ParseError::NotMail)?;
    if msg.headers().is_empty() {
        return Err(ParseError::NotMail);
    }

    let mut headers = Vec::with_capacity(msg.headers().len());
    for h in msg.headers() {
        let name = h.name().to_ascii_lowercase();
        let value = match h.value() {
            HeaderValue::Text(t) => t.to_string(),
            HeaderValue::TextList(l) => l.join(", "),
            _ => raw_value(raw, h.offset_start() as usize, h.offset_end() as usize),
        };
        let max = if name == "subject" {
            MAX_SUBJECT
        } else {
            MAX_HEADER_VALUE
        };
        headers.push((name, truncated(value, max)));
    }

    // The topmost Return-Path is the one the delivering server wrote; mail-parser's
    // accessor gives the last.
    let return_path = headers
        .iter()
        .find(|(n, _)| n == "return-path")
        .map(|(_, v)| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
                .to_string()
        });

    let mut text = String::new();
    let n_text = msg.text_body_count();
    for i in 0..n_text.max(1) {
        if text.len() >= MAX_TEXT {
            break;
        }
        if let Some(t) = msg.body_text(i) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&without_quotes(&t));
        }
    }
    truncate(&mut text, MAX_TEXT);

    let subject = truncated(
        msg.subject().unwrap_or("").replace(['\r', '\n'], " "),
        MAX_SUBJECT,
    );

    Ok(Mail {
        message_id: msg.message_id().map(clean_id).filter(|s| !s.is_empty()),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        // The first From is the one mail clients show (mail-parser's accessor gives the
        // last); every To and Cc header counts, even where a sender wrote two.
        from: addresses(&msg, "from").into_iter().next(),
        reply_to: msg.reply_to().and_then(first_addr),
        return_path,
        to: addresses(&msg, "to"),
        cc: addresses(&msg, "cc"),
        senders: headers
            .iter()
            .filter(|(n, _)| n == "from" || n == "sender")
            .count(),
        delivered_to: headers
            .iter()
            .filter(|(n, _)| n == "delivered-to" || n == "x-original-to")
            .map(|(_, v)| v.trim().to_string())
            .collect(),
        subject,
        date: msg.date().map(|d| d.to_rfc3339()),
        text,
        headers,
        size: raw.len(),
        oversized: false,
        too_many_parts: false,
        reported: report::reported(&msg),
    })
}

/// Parses a message over the size limit: only its header is read (ids, addresses,
/// subject, the loop-safety headers), so its body costs neither parse time nor memory
/// beyond the bytes themselves. The text is left empty.
pub fn parse_header_only(raw: &[u8]) -> Result<Mail, ParseError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len().min(256 * 1024));
    let mut head = raw[..end].to_vec();
    head.extend_from_slice(b"\r\n");
    let mut m = parse(&head)?;
    m.text.clear();
    m.size = raw.len();
    m.oversized = true;
    Ok(m)
}

fn raw_value(raw: &[u8], start: usize, end: usize) -> String {
    let end = end.min(raw.len());
    let start = start.min(end);
    let v = String::from_utf8_lossy(&raw[start..end]);
    // Unfold: a header value continues on lines that start with white space.
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn clean_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

fn id_list(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![clean_id(t)],
        HeaderValue::TextList(l) => l.iter().map(|t| clean_id(t)).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

fn to_addr(a: &mail_parser::Addr<'_>) -> Option<Addr> {
    let address = a.address()?.trim().to_string();
    if address.is_empty() {
        return None;
    }
    Some(Addr {
        name: a
            .name()
            .map(|n| truncated(n.replace(['\r', '\n'], " ").trim().to_string(), MAX_SUBJECT))
            .filter(|n| !n.is_empty()),
        address,
    })
}

/// The addresses of every header `name` (lower case), in order.
fn addresses(msg: &mail_parser::Message<'_>, name: &str) -> Vec<Addr> {
    msg.headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .filter_map(|h| h.value().as_address())
        .flat_map(all_addrs)
        .collect()
}

fn first_addr(a: &Address<'_>) -> Option<Addr> {
    a.iter().find_map(to_addr)
}

fn all_addrs(a: &Address<'_>) -> Vec<Addr> {
    a.iter().filter_map(to_addr).collect()
}

/// `s` cut to at most `max` bytes on a character boundary, with "…" when it was cut:
/// for text from mail quoted in a history line or a note.
pub fn shortened(s: &str, max: usize) -> String {
    let mut out = s.to_string();
    if out.len() > max {
        truncate(&mut out, max);
        out.push('…');
    }
    out
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn truncated(mut s: String, max: usize) -> String {
    truncate(&mut s, max);
    s
}

/// The customer's own words: quoted lines (`>`) and the attribution line above them are
/// left out, and everything below a forwarded/original-message separator, so an old
/// quoted request does not decide the category of a new reply.
pub fn without_quotes(text: &str) -> Cow<'_, str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if is_separator(t) {
            changed = true;
            break;
        }
        if t.starts_with('>') {
            changed = true;
            continue;
        }
        if is_attribution(t, lines.get(i + 1).map(|l| l.trim_start())) {
            changed = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

fn is_separator(t: &str) -> bool {
    // The dashes first: lower-casing every line, one of megabytes included, cost more than
    // the rest of the parse.
    if !(t.starts_with("---") || t.starts_with("___")) {
        return false;
    }
    let l = t.to_lowercase();
    let core = l.trim_matches(|c: char| c == '-' || c == '_' || c.is_whitespace());
    core == "original message"
        || core == "forwarded message"
        || core == "исходное сообщение"
        || core == "пересылаемое сообщение"
        || core == "пересланное сообщение"
}

/// "On Mon, 3 Mar 2024, Ivan wrote:" / "3 марта 2024 г., Иван пишет:" directly above a
/// quote (the line may wrap once, so a quote on the next line is enough).
fn is_attribution(t: &str, next: Option<&str>) -> bool {
    // Only the end of the line is compared, so only the end is lower-cased (a line can be
    // megabytes long).
    let t = t.trim_end();
    let mut tail = t.len().saturating_sub(32);
    while !t.is_char_boundary(tail) {
        tail += 1;
    }
    let l = t[tail..].to_lowercase();
    let ends = l.ends_with("wrote:")
        || l.ends_with("пишет:")
        || l.ends_with("написал:")
        || l.ends_with("написала:")
        || l.ends_with("писал(а):");
    ends && next
        .map(|n| n.starts_with('>') || n.is_empty())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_from_and_return_path_count_and_every_cc() {
        let raw = b"Return-Path: <victim@third.example>\r\nReturn-Path: <x@evil.example>\r\nFrom: Real <real@client.example>\r\nFrom: Fake <fake@evil.example>\r\nTo: billing@example.test\r\nCc: a@one.example\r\nCc: b@two.example\r\nSubject: x\r\n\r\nhi\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.return_path.as_deref(), Some("victim@third.example"));
        assert_eq!(m.from.unwrap().address, "real@client.example");
        let cc: Vec<_> = m.cc.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(cc, ["a@one.example", "b@two.example"]);
        assert_eq!(m.senders, 2);
    }

    #[test]
    fn koi8r_body_and_encoded_subject() {
        let mut raw = b"From: =?koi8-r?B?6dfBzg==?= <ivan@mail.example>\r\nTo: billing@example.test\r\nSubject: =?koi8-r?B?88HK1CDOxSDSwcLP1MHF1A==?=\r\nMessage-ID: <a1@mail.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
        // "Сайт не работает" in KOI8-R
        raw.extend_from_slice(&[
            0xf3, 0xc1, 0xca, 0xd4, 0x20, 0xce, 0xc5, 0x20, 0xd2, 0xc1, 0xc2, 0xcf, 0xd4, 0xc1,
            0xc5, 0xd4, b'\r', b'\n',
        ]);
        let m = parse(&raw).unwrap();
        assert_eq!(m.subject, "Сайт не работает");
        assert_eq!(m.text.trim(), "Сайт не работает");
        assert_eq!(m.message_id.as_deref(), Some("a1@mail.example"));
        assert_eq!(m.from.unwrap().name.as_deref(), Some("Иван"));
    }

    #[test]
    fn quoted_reply_is_left_out() {
        let t = "Thanks, but now I need an invoice.\n\nOn Mon, 4 Mar 2024, Support wrote:\n> the site is down\n> error 500\n";
        let w = without_quotes(t);
        assert!(w.contains("invoice"));
        assert!(!w.contains("down"));
        assert!(!w.contains("wrote"));
        let t =
            "Новый вопрос про счёт.\n\n-------- Исходное сообщение --------\nсайт не работает\n";
        assert!(!without_quotes(t).contains("не работает"));
        // only the end of a line is read for "wrote:", however long the line
        let t = format!(
            "Счёт.\n{} Иван написал:\n> сайт не работает\n",
            "ДА".repeat(5000)
        );
        let w = without_quotes(&t);
        assert!(
            !w.contains("написал") && !w.contains("не работает"),
            "{w:.40}"
        );
    }

    #[test]
    fn parts_are_counted_up_to_the_cap() {
        let mut raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n".to_vec();
        for _ in 0..MAX_PARTS {
            raw.extend_from_slice(b"--B\r\n\r\nx\r\n");
        }
        assert!(!too_many_parts(&raw), "the cap itself is allowed");
        raw.extend_from_slice(b"--B--\r\n");
        assert!(too_many_parts(&raw));
        assert!(!too_many_parts(b"Subject: x\r\n\r\n-- \r\nsignature\r\n"));
    }

    #[test]
    fn null_sender_and_headers() {
        let raw = b"Return-Path: <>\r\nFrom: MAILER-DAEMON@example.test\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n\r\nbody\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.return_path.as_deref(), Some(""));
        assert_eq!(m.reply_address(), None);
        assert_eq!(m.header("AUTO-SUBMITTED"), Some("auto-replied"));
    }

    #[test]
    fn subject_header_values_and_names_are_cut_at_a_character_boundary() {
        // After "Счёт x" (10 bytes) two-byte letters: each cap falls inside a letter.
        let long = format!("x{}", "я".repeat(MAX_HEADER_VALUE));
        let raw = format!(
            "From: {long} <c@example.test>\r\nSubject: Счёт {long}\r\nX-Long: Счёт {long}\r\n\r\nbody\r\n"
        );
        let m = parse(raw.as_bytes()).unwrap();
        let cut = |s: &str, max: usize| {
            assert!(s.starts_with("Счёт x") || s.starts_with("xяя"), "{s:.20}");
            assert!(s.len() <= max && s.len() > max - 2, "{} bytes", s.len());
        };
        cut(&m.subject, MAX_SUBJECT);
        cut(m.header("subject").unwrap(), MAX_SUBJECT);
        cut(m.header("x-long").unwrap(), MAX_HEADER_VALUE);
        cut(
            m.from.as_ref().unwrap().name.as_deref().unwrap(),
            MAX_SUBJECT,
        );
        assert_eq!(m.from.unwrap().address, "c@example.test");
    }

    #[test]
    fn not_mail_is_an_error() {
        assert!(parse(b"").is_err());
        assert!(parse(b"   \n").is_err());
    }
}
