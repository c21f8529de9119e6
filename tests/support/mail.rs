//! Mail on both sides of the daemon: [`Mail`] writes a customer's message with each address
//! once (the SMTP envelope is taken from its From, To and Cc), and methods on [`FetchedMail`]
//! read what the daemon put into the mails it sent (kind, ticket, the note's text).

use super::FetchedMail;

/// The Date of every test message unless [`Mail::date`] says otherwise.
const DATE: &str = "Mon, 23 Nov 2026 10:00:00 +0000";

/// A plain-text, UTF-8 message as a mail client writes it:
///
/// ```ignore
/// let mail = Mail::from("customer1@example.test")
///     .to("billing@example.test")
///     .id("refund-1@client.test")
///     .subject("Refund request")
///     .body("Please refund invoice 4411.");
/// ```
#[derive(Debug, Clone)]
pub struct Mail {
    name: String,
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    id: Option<String>,
    subject: String,
    date: String,
    /// Further header lines, each with its CRLF, in the order given.
    headers: String,
    body: String,
}

impl Mail {
    /// A message from `address`, shown as `Customer <address>`.
    pub fn from(address: &str) -> Mail {
        Mail {
            name: "Customer".into(),
            from: address.into(),
            to: Vec::new(),
            cc: Vec::new(),
            id: None,
            subject: String::new(),
            date: DATE.into(),
            headers: String::new(),
            body: String::new(),
        }
    }

    /// A customer's request to a mailbox: from `customer`, to `mailbox`, Message-ID `id`.
    pub fn request(customer: &str, mailbox: &str, id: &str) -> Mail {
        Mail::from(customer).to(mailbox).id(id)
    }

    /// The sender's display name (`Customer` unless given).
    pub fn name(mut self, name: &str) -> Mail {
        self.name = name.into();
        self
    }

    /// A recipient in To, and in the envelope.
    pub fn to(mut self, address: &str) -> Mail {
        self.to.push(address.into());
        self
    }

    /// A recipient in Cc, and in the envelope.
    pub fn cc(mut self, address: &str) -> Mail {
        self.cc.push(address.into());
        self.header("Cc", address)
    }

    /// The Message-ID, without brackets. Every test message needs its own: Sieve's
    /// `redirect` ignores an ID it has redirected before.
    pub fn id(mut self, id: &str) -> Mail {
        self.id = Some(id.into());
        self
    }

    pub fn subject(mut self, subject: &str) -> Mail {
        self.subject = subject.into();
        self
    }

    pub fn body(mut self, body: &str) -> Mail {
        self.body = body.into();
        self
    }

    /// The Date field, as written (RFC 5322).
    pub fn date(mut self, date: &str) -> Mail {
        self.date = date.into();
        self
    }

    /// Any further header field (`Auto-Submitted`, `List-Id`, ...).
    pub fn header(mut self, name: &str, value: &str) -> Mail {
        self.headers += &format!("{name}: {value}\r\n");
        self
    }

    /// A reply to the message `id`: In-Reply-To and References name it.
    pub fn in_reply_to(self, id: &str) -> Mail {
        let id = format!("<{id}>");
        self.header("In-Reply-To", &id).header("References", &id)
    }

    /// The envelope sender: the From address.
    pub fn sender(&self) -> &str {
        &self.from
    }

    /// The envelope recipients: To, then Cc.
    pub fn recipients(&self) -> Vec<&str> {
        self.to.iter().chain(&self.cc).map(String::as_str).collect()
    }

    /// The message as sent (CRLF line ends, 8-bit text as is).
    pub fn raw(&self) -> Vec<u8> {
        let id = self
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("a test message from {} without .id(...)", self.from));
        format!(
            "From: {name} <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: {date}\r\nMIME-Version: 1.0\r\n{headers}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n",
            name = self.name,
            from = self.from,
            to = self.to.join(", "),
            subject = self.subject,
            date = self.date,
            headers = self.headers,
            body = self.body,
        )
        .into_bytes()
    }
}

impl FetchedMail {
    /// The Message-ID without its brackets ("" if there is none).
    pub fn message_id(&self) -> String {
        self.header("Message-ID")
            .unwrap_or_default()
            .trim_matches(|c| c == '<' || c == '>')
            .to_string()
    }

    /// Whether this is the message whose Message-ID is `<id>`.
    pub fn is(&self, id: &str) -> bool {
        self.header("Message-ID").as_deref() == Some(format!("<{id}>").as_str())
    }

    /// A `key=value` of the daemon's own `X-Mailtriage` field (`kind`, `ticket`).
    pub fn mailtriage(&self, key: &str) -> Option<String> {
        let field = self.header("X-Mailtriage")?;
        let prefix = format!("{key}=");
        field
            .split(';')
            .find_map(|p| p.trim().strip_prefix(prefix.as_str()).map(str::to_string))
    }

    /// What kind of mail the daemon sent (`forward`, `acknowledgement`, `reminder`, ...);
    /// `None` for mail it did not write.
    pub fn kind(&self) -> Option<String> {
        self.mailtriage("kind")
    }

    /// The ticket of a mail the daemon sent; panics on any other mail.
    pub fn ticket(&self) -> String {
        self.mailtriage("ticket")
            .unwrap_or_else(|| panic!("no ticket in X-Mailtriage of uid {}", self.uid))
    }

    /// Whether this is the daemon's forward of the original `id`.
    pub fn is_forward_of(&self, id: &str) -> bool {
        self.header("X-Mailtriage")
            .is_some_and(|h| h.contains("kind=forward"))
            && self.header("References").is_some_and(|r| r.contains(id))
    }

    /// Whether this is the daemon's acknowledgement of the original `id`.
    pub fn is_ack_of(&self, id: &str) -> bool {
        self.header("Auto-Submitted").as_deref() == Some("auto-replied")
            && self.header("In-Reply-To").is_some_and(|r| r.contains(id))
    }

    /// The Subject, decoded.
    pub fn subject(&self) -> String {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default()
    }

    /// The first text part, decoded ("" if there is none): the note of a forward, the words
    /// of an acknowledgement.
    pub fn text(&self) -> String {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .and_then(|p| p.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default()
    }
}
