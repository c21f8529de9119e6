//! Act, part one: turn a decision into the bytes of the mails it implies. The forward
//! carries the context note as its first part and the original, unchanged, as
//! message/rfc822; the acknowledgement tells the customer the ticket, the team, the
//! expected time and how to reply, and never quotes the original (a quoted body would
//! turn a forged sender into a spam relay); notices tell a queue or the customer about
//! the ticket (reminders, status mails, the note that a mail was refused). Pure: the
//! clock and the ids come in as arguments.

use std::time::SystemTime;

use lettre::message::header::{
    ContentDisposition, ContentTransferEncoding, ContentType, HeaderName, HeaderValue,
};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::Address;

use crate::config::Rules;
use crate::config::TemplateContext;
use crate::decide::LOOP_HEADER;
use crate::parse::Mail;
use crate::ticket::{MailKind, OutMail};

mod context;

pub use context::{flag_reason, home_mailbox, set_mailbox, ticket_context};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("template {name}: {err}")]
    Template { name: String, err: String },
    #[error("address {0:?} cannot be used: {1}")]
    Address(String, String),
    #[error("building the mail: {0}")]
    Build(String),
}

impl ComposeError {
    /// Always permanent: the same template, address and message fail the same way
    /// again. The message is quarantined for an operator.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// Renders one of a language's templates (the mailbox's own when it has one, see
/// [`crate::config::Templates::get`]); falls back to the default language's.
pub fn render(
    rules: &Rules,
    lang: &str,
    which: &str,
    ctx: &TemplateContext,
) -> Result<String, ComposeError> {
    let lang = if rules.templates.languages.iter().any(|l| l == lang) {
        lang
    } else {
        &rules.company.default_language
    };
    let name = format!("{lang}/{which}");
    let t = rules
        .templates
        .get(&ctx.mailbox, &name)
        .map_err(|e| ComposeError::Template {
            name: name.clone(),
            err: e.to_string(),
        })?;
    t.render(ctx).map_err(|e| ComposeError::Template {
        name,
        err: e.to_string(),
    })
}

/// Header values built from what strangers wrote (subjects, names) lose every control
/// character, CR and LF included, so nothing they write can start a new header.
pub fn clean_header(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A Message-ID for `<...>`: only the characters RFC 5322 allows in an id.
fn clean_id(id: &str) -> Option<String> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    let ok = !id.is_empty()
        && id.contains('@')
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b));
    ok.then(|| format!("<{id}>"))
}

fn address(s: &str) -> Result<Address, ComposeError> {
    s.trim()
        .parse::<Address>()
        .map_err(|e| ComposeError::Address(s.to_string(), e.to_string()))
}

fn loop_header(ticket: &str, kind: &str, mailbox: &str) -> HeaderValue {
    HeaderValue::new(
        HeaderName::new_from_ascii_str(LOOP_HEADER),
        clean_header(&format!("ticket={ticket}; kind={kind}; mailbox={mailbox}")),
    )
}

fn subject_with_tag(tag: &str, subject: &str) -> String {
    if subject.contains(tag) {
        clean_header(subject)
    } else {
        clean_header(&format!("{tag} {subject}"))
    }
}

/// A text/plain part sent as it is (8bit), not base64: a third smaller for Cyrillic text
/// and readable in the raw mail. The attached originals already need an 8BITMIME path,
/// so this asks nothing more of the server. lettre's own chooser would take 8bit only
/// for lines under 76 bytes (38 Cyrillic letters); SMTP's limit is 998, checked here.
fn plain_text(text: String) -> SinglePart {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let sendable = crlf
        .split("\r\n")
        .all(|l| l.len() <= 998 && !l.contains(['\0', '\r']));
    let body = if sendable {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit)
    } else {
        Body::new(text)
    };
    SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(body)
}

/// The original in canonical form (CRLF line ends), and whether it can travel as
/// message/rfc822: RFC 2046 allows only 7bit/8bit there, so lines must fit in 998 bytes
/// and hold no NUL and no CR but the one before LF (RFC 2045). A bare CR is left as it
/// is, and such an original goes base64 as a file: a relay that took a bare CR for a
/// line end could otherwise read a crafted ".\r" as the end of the mail and what follows
/// as a second one (SMTP smuggling), sent through the daemon's own login.
fn canonical(raw: &[u8]) -> (Vec<u8>, bool, bool) {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    let bare_cr = out
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && out.get(i + 1) != Some(&b'\n'));
    let fits = !bare_cr && !out.contains(&0) && out.split(|b| *b == b'\n').all(|l| l.len() <= 999);
    let eight_bit = out.iter().any(|b| *b >= 0x80);
    (out, fits, eight_bit)
}

pub struct ForwardInput<'a> {
    /// Where it goes when not to `ctx.queue_address` (the escalation copy).
    pub to: Option<(&'a str, &'a str)>,
    /// Flagged: high-priority headers and this marker in front of the subject.
    pub escalated: Option<&'a str>,
    pub mail: &'a Mail,
    pub raw: &'a [u8],
    /// The original goes whole; otherwise only its header (text/rfc822-headers), and
    /// the note says why and where the message lies.
    pub whole: bool,
    pub lang: &'a str,
    pub ctx: &'a TemplateContext,
    pub message_id: &'a str,
    pub now: SystemTime,
}

/// The most of an original's header a mail carries when the original is not attached.
const MAX_HEADER_ATTACHED: usize = 64 << 10;

/// The header block of `raw` (up to the empty line), at most [`MAX_HEADER_ATTACHED`].
fn header_block(raw: &[u8]) -> &[u8] {
    let raw = &raw[..raw.len().min(MAX_HEADER_ATTACHED + 3)];
    let end = (0..raw.len())
        .find(|&i| raw[i..].starts_with(b"\n\r\n") || raw[i..].starts_with(b"\n\n"))
        .map_or(raw.len(), |i| i + 1);
    &raw[..end.min(MAX_HEADER_ATTACHED)]
}

pub fn forward(rules: &Rules, f: ForwardInput<'_>) -> Result<OutMail, ComposeError> {
    let ctx = f.ctx;
    let note = render(rules, f.lang, "note", ctx)?;
    let via = match f.mail.from.as_ref().and_then(|a| a.name.clone()) {
        Some(n) => format!("{n} via {}", ctx.mailbox_address),
        None => match f.mail.from.as_ref() {
            Some(a) => format!("{} via {}", a.address, ctx.mailbox_address),
            None => format!("mailtriage for {}", ctx.mailbox_address),
        },
    };
    let from = Mailbox::new(Some(clean_header(&via)), address(&ctx.mailbox_address)?);
    let (to_name, to_addr) = f.to.unwrap_or((&ctx.queue_name, &ctx.queue_address));
    let to = Mailbox::new(Some(clean_header(to_name)), address(to_addr)?);
    let mut subject = subject_with_tag(&ctx.tag, &f.mail.subject);
    if let Some(marker) = f.escalated {
        subject = clean_header(&format!("{marker} {subject}"));
    }
    let mut b = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(f.now)
        .message_id(Some(format!("<{}>", f.message_id)))
        .raw_header(loop_header(&ctx.ticket, "forward", &ctx.mailbox))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-forwarded".into(),
        ));
    // Staff who press Reply answer the ticket's customer, whoever wrote this message
    // and whatever Reply-To it carries (a stranger's Reply-To would take the case away).
    if let Ok(a) = ctx.customer.parse::<Address>() {
        let name = Some(&ctx.customer_name).filter(|n| !n.is_empty());
        b = b.reply_to(Mailbox::new(name.map(|n| clean_header(n)), a));
    }
    if let Some(id) = f.mail.message_id.as_deref().and_then(clean_id) {
        // Staff replies then thread with the customer's own message.
        b = b.references(id);
    }
    if f.escalated.is_some() {
        for (name, value) in [
            ("X-Priority", "1 (Highest)"),
            ("Importance", "high"),
            ("Priority", "urgent"),
        ] {
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.into(),
            ));
        }
    }
    let original = original_part(f.raw, f.whole);
    let msg = b
        .multipart(
            MultiPart::mixed()
                .singlepart(plain_text(note))
                .singlepart(original),
        )
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(OutMail {
        message_id: f.message_id.to_string(),
        kind: MailKind::Forward,
        ticket: ctx.ticket.clone(),
        envelope_from: Some(ctx.mailbox_address.clone()),
        to: vec![to_addr.to_string()],
        identity: identity(&ctx.mailbox),
        raw: msg.formatted(),
    })
}

/// The part that carries the original: the whole message as message/rfc822 (as a file
/// when SMTP cannot carry its lines), or only its header as text/rfc822-headers.
fn original_part(raw: &[u8], whole: bool) -> SinglePart {
    if !whole {
        let (head, _, _) = canonical(header_block(raw));
        return SinglePart::builder()
            .header(ContentType::parse("text/rfc822-headers").expect("valid content type"))
            .header(ContentDisposition::inline())
            .body(head);
    }
    let (orig, fits, eight_bit) = canonical(raw);
    if fits {
        let cte = if eight_bit {
            ContentTransferEncoding::EightBit
        } else {
            ContentTransferEncoding::SevenBit
        };
        SinglePart::builder()
            .header(ContentType::parse("message/rfc822").expect("valid content type"))
            .header(ContentDisposition::inline())
            .header(cte)
            .body(Body::dangerous_pre_encoded(orig, cte))
    } else {
        // Lines longer than SMTP allows cannot go as message/rfc822; the original still
        // travels whole, as a file.
        SinglePart::builder()
            .header(ContentType::parse("application/octet-stream").expect("valid content type"))
            .header(ContentDisposition::attachment("original.eml"))
            .body(orig)
    }
}

pub struct AckInput<'a> {
    /// Template pair: "ack" (ack_subject + ack) or "added" (added_subject + added).
    pub which: &'a str,
    pub mail: &'a Mail,
    pub to: &'a str,
    pub lang: &'a str,
    pub ctx: &'a TemplateContext,
    pub message_id: &'a str,
    pub now: SystemTime,
}

/// Whose SMTP login sends a mail written on behalf of `mailbox` (none for the daemon's
/// own notices, which go through `[smtp]`).
fn identity(mailbox: &str) -> Option<String> {
    (!mailbox.is_empty()).then(|| mailbox.to_string())
}

/// The bare address of a `Name <address>` setting.
pub fn from_address(setting: &str) -> String {
    setting
        .parse::<Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| setting.to_string())
}

/// The longest subject an acknowledgement quotes: a stranger's subject is not echoed
/// whole (spam would ride on the daemon's mail).
pub const ACK_SUBJECT: usize = 80;

pub fn acknowledgement(rules: &Rules, a: AckInput<'_>) -> Result<OutMail, ComposeError> {
    let ctx = &TemplateContext {
        subject: crate::parse::shortened(&a.ctx.subject, ACK_SUBJECT),
        ..a.ctx.clone()
    };
    let subject_template = if a.which == "ack" {
        "ack_subject".to_string()
    } else {
        format!("{}_subject", a.which)
    };
    let subject = render(rules, a.lang, &subject_template, ctx)?;
    let text = render(rules, a.lang, a.which, ctx)?;
    // From the address the customer wrote to, when its mailbox names one.
    let ack_from = rules.ack_from(&ctx.mailbox);
    let from: Mailbox = ack_from
        .parse()
        .map_err(|e: lettre::address::AddressError| {
            ComposeError::Address(ack_from.to_string(), e.to_string())
        })?;
    // The address alone: a display name is the sender's text, and echoing it would let
    // a stranger write into the daemon's mail.
    let to_addr = address(a.to)?;
    let mut b = lettre::Message::builder()
        .from(from)
        .to(Mailbox::new(None, to_addr))
        .subject(subject_with_tag(&ctx.tag, &subject))
        .date(a.now)
        .message_id(Some(format!("<{}>", a.message_id)))
        .raw_header(loop_header(
            &ctx.ticket,
            if a.which == "ack" {
                "acknowledgement"
            } else {
                a.which
            },
            &ctx.mailbox,
        ))
        // RFC 3834: marks this as an automatic reply, so other robots do not answer it.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-replied".into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".into(),
        ));
    if let Some(id) = a.mail.message_id.as_deref().and_then(clean_id) {
        let mut refs: Vec<String> = a
            .mail
            .references
            .iter()
            .filter_map(|r| clean_id(r))
            .collect();
        refs.push(id.clone());
        // Long reference chains are cut from the front, as RFC 5322 suggests.
        let keep = refs.len().saturating_sub(10);
        b = b.in_reply_to(id).references(refs[keep..].join(" "));
    }
    let msg = b
        .singlepart(plain_text(text))
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(OutMail {
        message_id: a.message_id.to_string(),
        kind: if a.which == "added" {
            MailKind::Added
        } else {
            MailKind::Acknowledgement
        },
        ticket: ctx.ticket.clone(),
        // Not the null sender: a bounce of the acknowledgement comes back to this
        // address (a watched mailbox, as shipped) and finds its ticket. It is never
        // answered: a delivery report is a robot's mail.
        envelope_from: Some(from_address(ack_from)),
        to: vec![a.to.to_string()],
        identity: identity(&ctx.mailbox),
        raw: msg.formatted(),
    })
}

/// A mail the daemon writes on its own about a ticket (a reminder to a queue, a status
/// mail to the customer): the `which` and `which_subject` templates, threaded on the
/// ticket's first message.
pub struct NoticeInput<'a> {
    pub which: &'a str,
    pub kind: MailKind,
    pub from: &'a str,
    pub to: &'a str,
    pub envelope_from: Option<&'a str>,
    /// The mailbox whose SMTP login sends it (see [`OutMail::identity`]); `None`: `[smtp]`.
    pub identity: Option<&'a str>,
    pub lang: &'a str,
    pub ctx: &'a TemplateContext,
    pub thread: Option<&'a str>,
    pub message_id: &'a str,
    pub now: SystemTime,
}

pub fn notice(rules: &Rules, n: NoticeInput<'_>) -> Result<OutMail, ComposeError> {
    let subject = render(rules, n.lang, &format!("{}_subject", n.which), n.ctx)?;
    let text = render(rules, n.lang, n.which, n.ctx)?;
    notice_mail(n, &subject, text)
}

/// The note to a queue that a mail of the ticket did not reach its recipient, whether
/// the SMTP server refused it or a delivery report returned it. Its words are the
/// daemon's own ([`crate::words`]), so it needs no template and works with any
/// rules.toml. From the acknowledgements' sender with the null envelope sender, so that
/// nothing bounces back from it; threaded on the ticket's first message.
pub fn undelivered(
    rules: &Rules,
    n: NoticeInput<'_>,
    u: &crate::ticket::Undelivered,
) -> Result<OutMail, ComposeError> {
    let subject = crate::words::undelivered_subject(u, n.lang);
    let text = crate::words::undelivered_text(u, n.ctx, n.lang);
    let n = NoticeInput {
        kind: MailKind::Undelivered,
        from: &rules.company.ack_from,
        envelope_from: None,
        identity: None,
        ..n
    };
    notice_mail(n, &subject, text)
}

/// A notice with its subject and text written.
fn notice_mail(n: NoticeInput<'_>, subject: &str, text: String) -> Result<OutMail, ComposeError> {
    let from: Mailbox = n.from.parse().map_err(|e: lettre::address::AddressError| {
        ComposeError::Address(n.from.to_string(), e.to_string())
    })?;
    let mut b = lettre::Message::builder()
        .from(from)
        .to(Mailbox::new(None, address(n.to)?))
        .subject(subject_with_tag(&n.ctx.tag, subject))
        .date(n.now)
        .message_id(Some(format!("<{}>", n.message_id)))
        .raw_header(loop_header(&n.ctx.ticket, n.which, &n.ctx.mailbox))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ));
    if let Some(id) = n.thread.and_then(clean_id) {
        b = b.in_reply_to(id.clone()).references(id);
    }
    let msg = b
        .singlepart(plain_text(text))
        .map_err(|e| ComposeError::Build(e.to_string()))?;
    Ok(OutMail {
        message_id: n.message_id.to_string(),
        kind: n.kind,
        ticket: n.ctx.ticket.clone(),
        envelope_from: n.envelope_from.map(str::to_string),
        to: vec![n.to.to_string()],
        identity: n.identity.map(str::to_string),
        raw: msg.formatted(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    const ORIGINAL: &[u8] = b"Return-Path: <ivan@mail.example>\r\nFrom: =?utf-8?B?0JjQstCw0L0=?= <ivan@mail.example>\r\nTo: billing@example.test\r\nSubject: =?utf-8?B?0KHQsNC50YIg0L3QtSDRgNCw0LHQvtGC0LDQtdGC?=\r\nMessage-ID: <orig-1@mail.example>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xd0\xa1\xd0\xb0\xd0\xb9\xd1\x82 \xd0\xbd\xd0\xb5 \xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd0\xb5\xd1\x82\r\n";

    #[test]
    fn a_bare_cr_or_nul_in_the_original_never_travels_as_8bit_text() {
        // A bare CR before ".\r\n" is how SMTP smuggling starts: a relay that takes CR as
        // a line end would read a second message after the dot.
        let smuggle =
            b"From: a@b.example\r\nSubject: x\r\n\r\nhello\r.\r\nMAIL FROM:<ceo@example.test>\r\n";
        assert!(!canonical(smuggle).1, "bare CR: not as message/rfc822");
        assert!(!canonical(b"Subject: x\r\n\r\na\0b\r\n").1, "NUL");
        let (fixed, fits, _) = canonical(b"Subject: x\n\nbare LF is mended\n");
        assert!(fits);
        assert_eq!(fixed, b"Subject: x\r\n\r\nbare LF is mended\r\n");
        assert!(canonical(ORIGINAL).1);

        // The forward of such an original has no bare CR, and the original is whole in it.
        let original = [ORIGINAL, b"hello\r.\r\nMAIL FROM:<ceo@example.test>\r\n"].concat();
        let mail = parse(&original).unwrap();
        let ctx = TemplateContext::sample();
        let input = ForwardInput {
            to: None,
            escalated: None,
            mail: &mail,
            raw: &original,
            whole: true,
            lang: "en",
            ctx: &ctx,
            message_id: "T-1042.1@mailtriage.example.test",
            now: SystemTime::UNIX_EPOCH,
        };
        let out = forward(&rules(), input).unwrap();
        let bare = out.raw.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
        assert!(!bare, "{}", String::from_utf8_lossy(&out.raw));
        let parsed = mail_parser::MessageParser::default()
            .parse(&out.raw)
            .unwrap();
        assert_eq!(parsed.attachment(0).unwrap().contents(), &original[..]);
    }

    #[test]
    fn forward_attaches_original_unchanged_with_note_first() {
        let r = rules();
        let mail = parse(ORIGINAL).unwrap();
        // The ticket's customer, whom staff's Reply goes to.
        let ctx = TemplateContext {
            customer: "ivan@mail.example".into(),
            ..TemplateContext::sample()
        };
        let out = forward(
            &r,
            ForwardInput {
                to: None,
                escalated: None,
                mail: &mail,
                raw: ORIGINAL,
                whole: true,
                lang: "ru",
                ctx: &ctx,
                message_id: "T-1042.1@mailtriage.example.test",
                now: SystemTime::UNIX_EPOCH,
            },
        )
        .unwrap();
        let parsed = mail_parser::MessageParser::default()
            .parse(&out.raw)
            .unwrap();
        assert!(parsed
            .header_raw("X-Mailtriage")
            .unwrap()
            .contains("ticket=T-1042"));
        assert_eq!(parsed.subject().unwrap(), "[#T-1042] Сайт не работает");
        assert_eq!(
            parsed
                .reply_to()
                .unwrap()
                .first()
                .unwrap()
                .address()
                .unwrap(),
            "ivan@mail.example"
        );
        let note = parsed.body_text(0).unwrap();
        assert!(note.contains("T-1042"), "{note}");
        let att = parsed.attachment(0).unwrap();
        let inner = att.message().expect("message/rfc822 part");
        assert_eq!(inner.raw_message(), ORIGINAL);
        assert_eq!(out.to, vec!["support@example.com".to_string()]);
    }

    #[test]
    fn ack_threads_and_is_marked_automatic_and_does_not_quote() {
        let r = rules();
        let mail = parse(ORIGINAL).unwrap();
        let ctx = TemplateContext::sample();
        let out = acknowledgement(
            &r,
            AckInput {
                which: "ack",
                mail: &mail,
                to: "ivan@mail.example",
                lang: "ru",
                ctx: &ctx,
                message_id: "T-1042.2@mailtriage.example.test",
                now: SystemTime::UNIX_EPOCH,
            },
        )
        .unwrap();
        let p = mail_parser::MessageParser::default()
            .parse(&out.raw)
            .unwrap();
        assert_eq!(
            p.header_raw("Auto-Submitted").unwrap().trim(),
            "auto-replied"
        );
        assert_eq!(p.in_reply_to().as_text(), Some("orig-1@mail.example"));
        let body = p.body_text(0).unwrap();
        assert!(
            body.contains("T-1042") && body.contains(&ctx.answer_by),
            "the ticket and when the answer is due: {body}"
        );
        assert!(
            !body.contains("Сайт не работает"),
            "the original must not be quoted"
        );
        assert!(p.subject().unwrap().starts_with("[#T-1042]"));
        assert_eq!(out.envelope_from.as_deref(), Some("support@example.test"));
    }

    /// The English acknowledgement of the sample ticket to Ivan, for mail of `mailbox`.
    fn ack_of(r: &Rules, mailbox: &str) -> OutMail {
        let mail = parse(ORIGINAL).unwrap();
        let ctx = TemplateContext {
            mailbox: mailbox.into(),
            ..TemplateContext::sample()
        };
        let input = AckInput {
            which: "ack",
            mail: &mail,
            to: "ivan@mail.example",
            lang: "en",
            ctx: &ctx,
            message_id: "T-1042.2@mailtriage.example.test",
            now: SystemTime::UNIX_EPOCH,
        };
        acknowledgement(r, input).unwrap()
    }

    #[test]
    fn ack_comes_from_the_mailbox_the_customer_wrote_to() {
        let r = crate::config::testing::shipped_with(
            "[mailboxes.billing]\n",
            "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\n",
        );
        let ack = |mailbox: &str| {
            let out = ack_of(&r, mailbox);
            let p = mail_parser::MessageParser::default()
                .parse(&out.raw)
                .unwrap();
            let from = p.from().unwrap().first().unwrap();
            let from = (
                from.name().map(str::to_string),
                from.address().unwrap().to_string(),
            );
            (from, out.envelope_from, out.identity)
        };
        let (from, envelope, identity) = ack("billing");
        assert_eq!(
            from,
            (Some("Acme Billing".into()), "billing@example.test".into())
        );
        assert_eq!(envelope.as_deref(), Some("billing@example.test"));
        assert_eq!(
            identity.as_deref(),
            Some("billing"),
            "sent with billing's login"
        );
        let (from, envelope, identity) = ack("sales");
        assert_eq!(from.1, "support@example.test", "the company's ack_from");
        assert_eq!(envelope.as_deref(), Some("support@example.test"));
        assert_eq!(identity.as_deref(), Some("sales"));
    }

    #[test]
    fn a_mailbox_s_own_templates_write_its_mail_and_no_other_s() {
        let own = "\n[mailboxes.billing.templates.en]\nack_subject = \"Acme Billing: {{ subject }}\"\nack = \"Acme Billing has your request {{ ticket }}.\"\n";
        let text = crate::config::testing::shipped_text() + own;
        let r = Rules::parse(std::path::Path::new("rules.toml"), &text).unwrap();
        let ack = |mailbox: &str| {
            let out = ack_of(&r, mailbox);
            let p = mail_parser::MessageParser::default()
                .parse(&out.raw)
                .unwrap();
            let subject = p.subject().unwrap().to_string();
            (subject, p.body_text(0).unwrap().trim().to_string())
        };
        assert_eq!(
            ack("billing"),
            (
                "[#T-1042] Acme Billing: Site is down".to_string(),
                "Acme Billing has your request T-1042.".to_string()
            )
        );
        let (subject, text) = ack("sales");
        assert!(
            subject.contains("We have received your request"),
            "{subject}"
        );
        assert!(!text.contains("Acme"), "{text}");
    }

    #[test]
    fn text_goes_as_it_is_unless_smtp_cannot_carry_its_lines() {
        let text = "Обращение T-1042 передано в «Техническая поддержка», ответ в течение 4 часов; \
                    строка длиннее 76 байт\nвторая строка\n"
            .to_string();
        let part = plain_text(text.clone()).formatted();
        let raw = String::from_utf8(part).unwrap();
        assert!(raw.contains("Content-Transfer-Encoding: 8bit"), "{raw}");
        assert!(
            raw.contains("\r\nвторая строка\r\n"),
            "CRLF line ends: {raw:?}"
        );
        assert!(
            raw.contains(&text.lines().next().unwrap().to_string()),
            "{raw}"
        );

        let long = "ж".repeat(600); // 1200 bytes on one line
        let raw = String::from_utf8(plain_text(long.clone()).formatted()).unwrap();
        assert!(!raw.contains("8bit"), "{raw}");
        let m = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        assert_eq!(m.body_text(0).unwrap().trim_end(), long);
    }

    #[test]
    fn header_injection_is_neutralised() {
        assert_eq!(
            clean_header("Hi\r\nBcc: victim@example.com"),
            "Hi Bcc: victim@example.com"
        );
        assert_eq!(clean_id("<a@b>\r\nBcc: x"), None);
        assert_eq!(clean_id("<a@b>").as_deref(), Some("<a@b>"));
    }
}
