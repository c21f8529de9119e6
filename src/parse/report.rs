//! Parse, delivery and read reports (RFC 6522 multipart/report): which of our mails a
//! report is about (the Message-ID of the returned message or its headers, or a read
//! receipt's Original-Message-ID) and what the reporting server said. This is what lets
//! a bounce of an acknowledgement find its ticket.

use mail_parser::{Message, MimeHeaders};

use super::clean_id;
use serde::Serialize;

/// Longest diagnostic kept: the first lines of what the server said are the useful ones.
const MAX_DIAGNOSTIC: usize = 300;

/// What a delivery or read report says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reported {
    /// The Message-ID (without brackets) of the mail the report is about.
    pub message_id: Option<String>,
    /// The recipient it could not reach (Final-Recipient).
    pub recipient: Option<String>,
    /// `Status: 5.1.1` and the server's words (Diagnostic-Code), as one line.
    pub status: Option<String>,
}

/// The report in `msg`, when it is a multipart/report.
pub fn reported(msg: &Message<'_>) -> Option<Reported> {
    let ct = msg.content_type()?;
    let is_report = ct.ctype().eq_ignore_ascii_case("multipart")
        && ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"));
    if !is_report {
        return None;
    }
    let mut r = Reported::default();
    for part in msg.parts.iter().skip(1) {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let kind = format!(
            "{}/{}",
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase()
        );
        let text = String::from_utf8_lossy(part.contents());
        match kind.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                r.recipient = r
                    .recipient
                    .or_else(|| address_field(&text, "final-recipient"));
                r.status = r.status.or_else(|| status_of(&text));
            }
            "message/disposition-notification" => {
                r.message_id = r
                    .message_id
                    .or_else(|| id_field(&text, "original-message-id"));
            }
            "message/rfc822" | "message/global" => {
                let nested = part.message().and_then(|m| m.message_id()).map(clean_id);
                r.message_id = r
                    .message_id
                    .or(nested)
                    .or_else(|| id_field(&text, "message-id"));
            }
            "text/rfc822-headers" | "message/rfc822-headers" | "message/global-headers" => {
                r.message_id = r.message_id.or_else(|| id_field(&text, "message-id"));
            }
            _ => {}
        }
    }
    Some(r)
}

/// The unfolded value of the first `name:` field in a block of header-like lines.
fn field(text: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in text.lines() {
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => {
                v.push(' ');
                v.push_str(line.trim());
            }
            Some(_) => break,
            None => {
                let Some((n, v)) = line.split_once(':') else {
                    continue;
                };
                if !line.starts_with([' ', '\t']) && n.trim().eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
    }
    value.filter(|v| !v.is_empty())
}

fn id_field(text: &str, name: &str) -> Option<String> {
    field_anywhere(text, name)
        .map(|v| clean_id(&v))
        .filter(|v| !v.is_empty())
}

/// `rfc822; user@example.com` -> `user@example.com`.
fn address_field(text: &str, name: &str) -> Option<String> {
    let v = field_anywhere(text, name)?;
    let addr = v.rsplit(';').next().unwrap_or(&v).trim();
    (!addr.is_empty()).then(|| addr.to_string())
}

/// "5.1.1: 550 5.1.1 <x@y>: Recipient address rejected: User unknown"
fn status_of(text: &str) -> Option<String> {
    let status = field_anywhere(text, "status");
    let diagnostic = field_anywhere(text, "diagnostic-code").map(|d| {
        d.split_once(';')
            .map_or(d.clone(), |(_, rest)| rest.trim().to_string())
    });
    let s = match (status, diagnostic) {
        (Some(s), Some(d)) => format!("{s}: {d}"),
        (Some(s), None) => s,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    Some(super::shortened(&s, MAX_DIAGNOSTIC))
}

/// `field` in any of the blank-line separated blocks (a delivery-status part has one
/// block for the message and one per recipient).
fn field_anywhere(text: &str, name: &str) -> Option<String> {
    let mut rest = text;
    loop {
        let (block, after) = match rest.find("\n\n").or_else(|| rest.find("\r\n\r\n")) {
            Some(i) => (&rest[..i], rest[i..].trim_start_matches(['\r', '\n'])),
            None => (rest, ""),
        };
        let normalised = block.replace("\r\n", "\n");
        if let Some(v) = field(&normalised, name) {
            return Some(v);
        }
        if after.is_empty() {
            return None;
        }
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    const DSN: &[u8] =
        include_bytes!("../../tests/fixtures/dsn-bounce-several-reasons-en-support.eml");

    #[test]
    fn a_bounce_names_the_returned_message_the_recipient_and_why() {
        let msg = MessageParser::default().parse(DSN).unwrap();
        let r = reported(&msg).expect("a multipart/report");
        assert_eq!(
            r.message_id.as_deref(),
            Some("20240314142001.7731.support@example.test")
        );
        assert_eq!(r.recipient.as_deref(), Some("p.clark@globex.example"));
        let status = r.status.unwrap();
        assert!(
            status.starts_with("5.1.1: 550 5.1.1") && status.contains("User unknown"),
            "{status}"
        );
    }

    #[test]
    fn an_ordinary_message_is_no_report() {
        let raw = b"From: a@b.example\r\nSubject: x\r\n\r\nhello\r\n";
        let msg = MessageParser::default().parse(&raw[..]).unwrap();
        assert_eq!(reported(&msg), None);
    }
}
