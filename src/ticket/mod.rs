//! Ticket: the domain of one customer request, with no I/O. A [`Ticket`] is what the
//! pipeline opens or joins for a message, its [`Event`]s are the history every note
//! shows, and an [`OutMail`] is a mail the daemon has decided to send. Compose reads
//! these, record keeps them, send delivers the mails; none of them need sled to do it.
//! The IMAP keywords a message gets on the server are named here too: decide chooses
//! them, record keeps them until the source sets them.

use serde::{Deserialize, Serialize};

/// Keyword on every message the daemon has triaged; with the ticket's own keyword it
/// lets state be rebuilt from the server.
pub const KEYWORD_TRIAGED: &str = "$Triaged";
/// Registered IMAP keyword (RFC 5788); mail clients show it as "forwarded".
pub const KEYWORD_FORWARDED: &str = "$Forwarded";
/// Keyword on a message that could not be triaged and was left for an operator.
pub const KEYWORD_QUARANTINED: &str = "$Quarantined";

/// A writer's role toward a ticket: decide gives it (`decide::roles`), the history keeps
/// it with each message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Role {
    /// The ticket's customer, or the writer of a new request (who becomes its customer).
    Customer,
    /// The customer's colleague (same organisation, not a free mail domain), or someone
    /// the customer wrote to in the thread.
    CustomerSide,
    /// A queue, a watched mailbox, or an address or domain `[roles] staff` lists.
    Staff,
    /// Anyone else: a stranger to the ticket.
    ThirdParty,
    /// Automatic mail (see `robot`).
    Robot,
}

/// Who wrote a message of the ticket, as its history shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub address: String,
    pub role: Role,
    /// Why they have that role, in words ("the same organisation as the customer").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// The keyword that marks a message with its ticket (`$Ticket_T-1001`), for the copies
/// of a message sent to several watched mailboxes; `None` for an id with a character an
/// IMAP keyword cannot hold. One keyword per such ticket: a mailbox's list of keywords
/// grows with the tickets whose messages went to several mailboxes, not with all mail.
pub fn ticket_keyword(id: &str) -> Option<String> {
    let atom = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    (!id.is_empty() && id.len() <= 40 && id.chars().all(atom))
        .then(|| format!("{TICKET_KEYWORD}{id}"))
}

/// How every ticket keyword begins.
pub const TICKET_KEYWORD: &str = "$Ticket_";

/// One line of a ticket's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(flatten)]
    pub what: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    /// A customer message reached a watched mailbox.
    Arrived {
        mailbox: String,
        message_id: Option<String>,
        subject: String,
        /// Who wrote it (absent in histories written before roles were kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Writer>,
    },
    /// Forwarded to a queue with a note; `why` in words.
    Forwarded { queue: String, why: String },
    /// Left in the mailbox it reached, owned by `queue`.
    Kept { queue: String, why: String },
    /// Acknowledgement sent, promising an answer within `response_time`.
    Acknowledged {
        to: String,
        queue: String,
        response_time: String,
    },
    /// No acknowledgement, and why.
    NotAcknowledged { reason: String },
    /// A later message of the customer joined the ticket.
    FollowUp {
        number: u32,
        mailbox: String,
        subject: String,
        /// Who wrote it, with their role and why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<Writer>,
        /// Who wrote it and why, in words, as histories kept it before roles were kept
        /// (only for the customer's colleagues); read, never written.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// This ticket was opened by someone who named another ticket (its tag, or a reply
    /// to one of its mails) but is not on its customer's side.
    Names { ticket: String, by: String },
    /// Staff handed the ticket to another queue.
    HandedOver { from: String, to: String },
    /// The ticket bounced between queues and went to the escalation queue.
    Bounced { between: Vec<String>, to: String },
    /// Red flags fired; a copy went to the escalation queue.
    Flagged { reasons: Vec<String>, to: String },
    /// Linked to an active incident.
    Incident { id: String },
    /// Something was promised to the customer.
    Promised { by: String, text: String },
    /// The queue answered the customer.
    Answered { by: String },
    /// Staff wait for the customer (a question to them, or a `Waiting:` line): the
    /// response clock stands still until the customer writes. `says`: the line.
    Waiting { by: String, says: String },
    /// The queue was reminded that the customer waits.
    Reminded { queue: String },
    /// The overdue ticket went to the escalation queue.
    Escalated { to: String },
    /// The customer was told the ticket is still being handled.
    StatusSent { to: String },
    /// "Added to your request" sent to the customer.
    AddedAck { to: String },
    /// The ticket was named by a customer's reply after the state it lived in was lost:
    /// it goes on under its number, its earlier history unknown here.
    Reopened,
    /// An automatic reply in the thread (out of office): noted, no clock changes.
    AutoReply {
        from: String,
        subject: String,
        /// Its first line, where an out-of-office says until when.
        says: String,
    },
    /// A mail of the ticket did not reach `to`: the SMTP server refused it for good (it
    /// waits among the dead letters for `mailtriage outbox`), or a delivery report came
    /// back later (`report`). `reason`: the server's answer or the report's status;
    /// `told`: the queue that got a note about it, if any. Both ways are one event, told
    /// by one rule (`decide::told_of_undelivered`) and one note.
    #[serde(alias = "refused")]
    Undelivered {
        /// What the mail was; `None` when a report did not say which mail it returns.
        #[serde(deserialize_with = "mail_kind_or_word")]
        mail: Option<MailKind>,
        to: String,
        #[serde(alias = "status")]
        reason: String,
        #[serde(default)]
        told: Option<String>,
        #[serde(default)]
        report: bool,
    },
    /// An operator put a refused mail back in the outbox (`mailtriage outbox retry`).
    Retried { mail: MailKind, to: String },
    /// An operator dropped a refused mail for good (`mailtriage outbox drop`).
    Dropped { mail: MailKind, to: String },
    /// The ticket was resolved: by staff (`by` their address, `how` a `Resolved:` line,
    /// `note` what it said), by an operator's command, or by the daemon when the
    /// customer stayed silent after an answer.
    Resolved {
        by: String,
        how: ResolvedHow,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
    /// The customer wrote again within the reopen window of a resolved ticket: it is
    /// open again, with a fresh clock. `resolved_at`: when it had been resolved.
    ReopenedByReply { by: String, resolved_at: String },
    /// This ticket was opened by the customer's reply to a ticket resolved longer ago
    /// than the reopen window.
    Follows { ticket: String, resolved_at: String },
    /// This ticket was opened by the customer's reply to a ticket of this state that is no
    /// longer in it: resolved, and removed once the retention had passed.
    FollowsRemoved { ticket: String },
}

/// What resolved a ticket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ResolvedHow {
    /// A `Resolved:` (`Решено:`) line in staff mail in the thread.
    Mail,
    /// `mailtriage tickets resolve`.
    Command,
    /// No customer reply for `threading.resolve_after` once staff answered.
    Quiet,
}

/// A resolved ticket's resolution: it leaves the follow-up scan until the customer
/// writes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub at: String,
    pub by: String,
    pub how: ResolvedHow,
}

/// A promise made to the customer, shown in every later note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub at: String,
    pub by: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub customer: String,
    pub customer_name: Option<String>,
    /// The watched mailbox (its name in rules.toml) the message that opened the ticket
    /// reached: the address the customer wrote to, which every later mail to them comes
    /// from. Empty in tickets stored before it was kept: compose then takes the mailbox
    /// of the `Arrived` line (`compose::home_mailbox`).
    #[serde(default)]
    pub mailbox: String,
    pub subject: String,
    /// The queue that owns the ticket now.
    pub queue: String,
    pub language: String,
    pub created: String,
    pub acknowledged: bool,
    /// Queues the ticket has been at, in order.
    pub hops: Vec<String>,
    pub history: Vec<Event>,
    /// Message-IDs of customer messages in this ticket.
    pub messages: Vec<String>,
    /// Mails sent for this ticket so far; numbers the deterministic Message-IDs.
    pub sent: u32,
    /// Follow-ups of the customer so far.
    #[serde(default)]
    pub followups: u32,
    /// When the owning queue got the ticket (creation or last handover).
    #[serde(default)]
    pub owner_since: String,
    #[serde(default)]
    pub promises: Vec<Promise>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub incident: Option<String>,
    /// When a queue last answered the customer.
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub reminded_at: Option<String>,
    #[serde(default)]
    pub escalated_at: Option<String>,
    #[serde(default)]
    pub status_sent_at: Option<String>,
    #[serde(default)]
    pub added_ack_at: Option<String>,
    /// People the customer wrote to in the thread (To, Cc), lower case: on the
    /// customer's side, like the customer's colleagues.
    #[serde(default)]
    pub customer_side: Vec<String>,
    /// Keys the ticket's Message-IDs (random, made when the ticket is opened).
    #[serde(default)]
    pub id_secret: String,
    /// Set while the ticket is resolved; `None` while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
}

/// At most this many people are kept on a ticket's customer side.
pub const MAX_CUSTOMER_SIDE: usize = 20;

impl Ticket {
    /// A new ticket of `customer`, owned by `queue` from `created` on, with nothing
    /// sent, promised or flagged yet.
    pub fn new(
        id: String,
        customer: String,
        subject: String,
        queue: String,
        language: String,
        created: String,
    ) -> Ticket {
        Ticket {
            id,
            customer,
            customer_name: None,
            mailbox: String::new(),
            customer_side: Vec::new(),
            id_secret: String::new(),
            subject,
            queue,
            language,
            owner_since: created.clone(),
            created,
            acknowledged: false,
            hops: Vec::new(),
            history: Vec::new(),
            messages: Vec::new(),
            sent: 0,
            followups: 0,
            promises: Vec::new(),
            flags: Vec::new(),
            incident: None,
            answered_at: None,
            reminded_at: None,
            escalated_at: None,
            status_sent_at: None,
            added_ack_at: None,
            resolved: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }

    /// Resolves the ticket; `false` (and nothing changes) when it is resolved already.
    pub fn resolve(&mut self, at: &str, by: &str, how: ResolvedHow, note: &str) -> bool {
        if self.resolved.is_some() {
            return false;
        }
        self.resolved = Some(Resolution {
            at: at.to_string(),
            by: by.to_string(),
            how,
        });
        let (by, note) = (by.to_string(), note.to_string());
        self.record(at, EventKind::Resolved { by, how, note });
        true
    }

    /// The customer's reply reopens the resolved ticket: its owner's clock starts again
    /// from `at`, with no reminder, escalation or status mail behind it.
    pub fn reopen(&mut self, at: &str, by: &str) {
        let Some(r) = self.resolved.take() else {
            return;
        };
        self.owner_since = at.to_string();
        self.reminded_at = None;
        self.escalated_at = None;
        self.status_sent_at = None;
        let by = by.to_string();
        self.record(
            at,
            EventKind::ReopenedByReply {
                by,
                resolved_at: r.at,
            },
        );
    }

    /// When the customer's side last wrote (the request or a follow-up).
    pub fn last_customer_message(&self) -> Option<&str> {
        self.history
            .iter()
            .rev()
            .find(|e| {
                matches!(
                    e.what,
                    EventKind::Arrived { .. } | EventKind::FollowUp { .. }
                )
            })
            .map(|e| e.at.as_str())
    }

    /// Adds a line to the history.
    pub fn record(&mut self, at: &str, what: EventKind) {
        self.history.push(Event {
            at: at.to_string(),
            what,
        });
    }

    /// A later message of the customer's side: counted, and a line naming its number
    /// and its writer.
    pub fn follow_up(&mut self, at: &str, mailbox: &str, subject: &str, writer: Option<Writer>) {
        self.followups += 1;
        let number = self.followups;
        self.record(
            at,
            EventKind::FollowUp {
                number,
                mailbox: mailbox.to_string(),
                subject: subject.to_string(),
                writer,
                by: None,
            },
        );
    }

    /// Adds people the customer wrote to, up to [`MAX_CUSTOMER_SIDE`].
    pub fn add_customer_side(&mut self, people: impl IntoIterator<Item = String>) {
        for p in people {
            if self.customer_side.len() >= MAX_CUSTOMER_SIDE {
                break;
            }
            if p != self.customer && !self.customer_side.contains(&p) {
                self.customer_side.push(p);
            }
        }
    }

    /// `queue` owns the ticket from `at` on; a new owner gets its own clock for
    /// reminders and escalation.
    pub fn owned_by(&mut self, queue: &str, at: &str) {
        if self.queue != queue {
            self.queue = queue.to_string();
            self.owner_since = at.to_string();
            self.reminded_at = None;
            self.escalated_at = None;
        }
    }

    /// A promise made to the customer, shown in every later note.
    pub fn promise(&mut self, at: &str, by: &str, text: &str) {
        self.promises.push(Promise {
            at: at.to_string(),
            by: by.to_string(),
            text: text.to_string(),
        });
        self.record(
            at,
            EventKind::Promised {
                by: by.to_string(),
                text: text.to_string(),
            },
        );
    }

    /// A queue answered the customer.
    pub fn answered(&mut self, at: &str, by: &str) {
        self.answered_at = Some(at.to_string());
        self.record(at, EventKind::Answered { by: by.to_string() });
    }

    /// Staff wait for the customer's answer to `says` (a question, a `Waiting:` line).
    pub fn waiting(&mut self, at: &str, by: &str, says: &str) {
        self.record(
            at,
            EventKind::Waiting {
                by: by.to_string(),
                says: says.to_string(),
            },
        );
    }

    /// Red flags fired (each kept once on the ticket); `reasons` in words, `to` the
    /// escalation queue ("" when there is none).
    pub fn flag(&mut self, at: &str, flags: &[String], reasons: Vec<String>, to: String) {
        for f in flags {
            if !self.flags.contains(f) {
                self.flags.push(f.clone());
            }
        }
        self.record(at, EventKind::Flagged { reasons, to });
    }

    /// Linked to an active incident; a line only when the link is new.
    pub fn link_incident(&mut self, at: &str, id: &str) {
        if self.incident.as_deref() != Some(id) {
            self.incident = Some(id.to_string());
            self.record(at, EventKind::Incident { id: id.to_string() });
        }
    }

    /// The acknowledgement went to `to`: the owning queue answers within `response_time`.
    pub fn acknowledged(&mut self, at: &str, to: &str, response_time: String) {
        self.acknowledged = true;
        let queue = self.queue.clone();
        self.record(
            at,
            EventKind::Acknowledged {
                to: to.to_string(),
                queue,
                response_time,
            },
        );
    }

    /// "Added to your request" went to `to`; the next is due a window later.
    pub fn added_ack(&mut self, at: &str, to: &str) {
        self.added_ack_at = Some(at.to_string());
        self.record(at, EventKind::AddedAck { to: to.to_string() });
    }

    /// The owning queue was reminded that the customer waits.
    pub fn reminded(&mut self, at: &str) {
        self.reminded_at = Some(at.to_string());
        let queue = self.queue.clone();
        self.record(at, EventKind::Reminded { queue });
    }

    /// The overdue ticket went to the escalation queue `to`.
    pub fn escalated(&mut self, at: &str, to: String) {
        self.escalated_at = Some(at.to_string());
        self.record(at, EventKind::Escalated { to });
    }

    /// The customer was told the ticket is still being handled.
    pub fn status_sent(&mut self, at: &str) {
        self.status_sent_at = Some(at.to_string());
        let to = self.customer.clone();
        self.record(at, EventKind::StatusSent { to });
    }

    /// A mail of the ticket did not reach its recipient; `told` is the queue that hears of it.
    pub fn undelivered(&mut self, at: &str, u: &Undelivered, told: Option<String>) {
        self.record(
            at,
            EventKind::Undelivered {
                mail: u.mail,
                to: u.to.clone(),
                reason: u.reason.clone(),
                told,
                report: u.retry.is_none(),
            },
        );
    }

    /// Counts the next mail of the ticket and gives its Message-ID, deterministic so a
    /// resend after a crash is the same mail, and keyed by the ticket's secret so nobody
    /// can guess it (a reply to a guessed id would join the ticket):
    /// `T-1001.3.ack.<12 hex>@<id_domain>`. A ticket from before secrets has none.
    pub fn next_mail_id(&mut self, what: &str, id_domain: &str) -> String {
        use sha2::{Digest, Sha256};
        self.sent += 1;
        let plain = format!("{}.{}.{what}", self.id, self.sent);
        if self.id_secret.is_empty() {
            return format!("{plain}@{id_domain}");
        }
        let digest = Sha256::digest(format!("{}\0{plain}", self.id_secret));
        let token: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{plain}.{token}@{id_domain}")
    }
}

/// For tests across the crate: Ivan's refund request at billing, opened 2026-01-01 10:00.
#[cfg(test)]
pub(crate) fn ivans_refund() -> Ticket {
    Ticket::new(
        "T-1001".into(),
        "ivan@mail.example".into(),
        "Refund".into(),
        "billing".into(),
        "en".into(),
        "2026-01-01T10:00:00Z".into(),
    )
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum MailKind {
    Forward,
    Acknowledgement,
    /// "Added to your request": the short mail for a follow-up.
    Added,
    /// A copy of a flagged or bounced message to the escalation queue.
    Escalation,
    /// Reminder to a queue that has not answered in time.
    Reminder,
    /// Status mail to a customer whose ticket is overdue.
    Status,
    /// A note to a queue that a mail of the ticket did not reach its recipient (refused
    /// by the SMTP server, or returned by a delivery report).
    #[serde(alias = "refusal")]
    Undelivered,
}

impl MailKind {
    pub const ALL: [MailKind; 7] = [
        MailKind::Forward,
        MailKind::Acknowledgement,
        MailKind::Added,
        MailKind::Escalation,
        MailKind::Reminder,
        MailKind::Status,
        MailKind::Undelivered,
    ];

    /// Its name, as serde writes it (one derive gives both, so they cannot drift apart).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The word its Message-IDs carry (`T-1001.2.ack.<token>@...`), which is also the
    /// name of its templates.
    pub fn id_word(self) -> &'static str {
        match self {
            MailKind::Acknowledgement => "ack",
            k => k.as_str(),
        }
    }

    /// The kind of a mail from its id's word or its name (earlier versions wrote
    /// `refusal` for the note about a refused mail).
    pub fn from_word(word: &str) -> Option<MailKind> {
        match word {
            "ack" => Some(MailKind::Acknowledgement),
            "refusal" => Some(MailKind::Undelivered),
            w => MailKind::ALL.into_iter().find(|k| k.as_str() == w),
        }
    }

    /// The kind of one of the daemon's own mails from its Message-ID
    /// (`T-1001.2.ack.<token>@mailtriage.DOMAIN`).
    pub fn of_message_id(id: &str) -> Option<MailKind> {
        let local = id
            .trim_matches(|c| c == '<' || c == '>')
            .split('@')
            .next()?;
        MailKind::from_word(local.split('.').nth(2)?)
    }

    /// Whether it goes to the customer rather than to a queue.
    pub fn to_customer(self) -> bool {
        matches!(
            self,
            MailKind::Acknowledgement | MailKind::Added | MailKind::Status
        )
    }
}

/// A mail's kind in a stored event: its name, or the word its id carries (events written
/// before the two were one).
fn mail_kind_or_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MailKind>, D::Error> {
    let word: Option<String> = Option::deserialize(d)?;
    Ok(word.as_deref().and_then(MailKind::from_word))
}

/// A mail of a ticket that did not reach its recipient, however that became known: the
/// SMTP server refused it for good (`retry`: its id among the dead letters, for
/// `mailtriage outbox retry`), or a delivery report returned it (`retry` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// `None` when a report does not say which of the ticket's mails it returns.
    pub mail: Option<MailKind>,
    pub to: String,
    /// The server's answer, or the report's status.
    pub reason: String,
    /// The mail's Message-ID, when known.
    pub message_id: Option<String>,
    pub retry: Option<u64>,
}

/// A mail waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutMail {
    pub message_id: String,
    pub kind: MailKind,
    pub ticket: String,
    /// `None` is the null sender `<>` (acknowledgements, so nothing answers them).
    pub envelope_from: Option<String>,
    pub to: Vec<String>,
    /// The watched mailbox this mail is sent on behalf of (its acknowledgements, the
    /// forwards of mail that reached it): its own SMTP login (`[mailboxes.NAME.smtp]`)
    /// sends it. `None`, or a mailbox without one, goes through `[smtp]`. Entries
    /// written before this field existed read as `None`.
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket::new(
            "T-1001".into(),
            "ivan@mail.example".into(),
            "Site down".into(),
            "billing".into(),
            "en".into(),
            "2026-01-01T10:00:00Z".into(),
        )
    }

    #[test]
    fn a_ticket_stored_before_its_mailbox_was_kept_still_reads() {
        let mut t = ticket();
        t.mailbox = "billing".into();
        let mut json: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(json["mailbox"], "billing");
        json.as_object_mut().unwrap().remove("mailbox");
        let old: Ticket = serde_json::from_value(json).unwrap();
        assert_eq!(old.mailbox, "");
        assert_eq!(
            Ticket {
                mailbox: t.mailbox.clone(),
                ..old
            },
            t
        );
    }

    #[test]
    fn a_new_owner_gets_its_own_clock_and_the_same_owner_keeps_it() {
        let mut t = ticket();
        t.reminded("2026-01-01T15:00:00Z");
        t.owned_by("billing", "2026-01-01T16:00:00Z");
        assert_eq!(t.owner_since, "2026-01-01T10:00:00Z");
        assert!(t.reminded_at.is_some());
        t.owned_by("support", "2026-01-01T16:00:00Z");
        assert_eq!(
            (t.queue.as_str(), t.owner_since.as_str(), &t.reminded_at),
            ("support", "2026-01-01T16:00:00Z", &None)
        );
    }

    #[test]
    fn a_promise_is_kept_and_told_in_the_history() {
        let mut t = ticket();
        t.promise(
            "2026-01-02T09:00:00Z",
            "anna@example.test",
            "refund by Friday",
        );
        assert_eq!(t.promises.len(), 1);
        assert_eq!(
            t.history.last().map(|e| &e.what),
            Some(&EventKind::Promised {
                by: "anna@example.test".into(),
                text: "refund by Friday".into()
            })
        );
    }

    #[test]
    fn mail_kinds_are_written_as_their_names() {
        for word in [
            "forward",
            "acknowledgement",
            "added",
            "escalation",
            "reminder",
            "status",
            "undelivered",
        ] {
            let k: MailKind = serde_json::from_str(&format!("\"{word}\"")).unwrap();
            assert_eq!((k.as_str(), k.to_string()), (word, word.to_string()));
        }
    }

    #[test]
    fn a_kind_is_read_back_from_the_word_its_ids_carry() {
        for k in MailKind::ALL {
            assert_eq!(MailKind::from_word(k.id_word()), Some(k), "{k}");
            assert_eq!(MailKind::from_word(k.as_str()), Some(k), "{k}");
        }
        assert_eq!(
            MailKind::of_message_id("<T-1001.2.ack.0123456789ab@mailtriage.example.test>"),
            Some(MailKind::Acknowledgement)
        );
        assert_eq!(
            MailKind::of_message_id("T-1001.5.refusal@mailtriage.example.test"),
            Some(MailKind::Undelivered)
        );
        assert_eq!(MailKind::of_message_id("abc@example.test"), None);
    }

    #[test]
    fn undelivered_events_of_earlier_versions_still_read() {
        let refused = r#"{"event":"refused","mail":"forward","to":"a@example.test","reason":"550 no","told":"supervisor"}"#;
        let report =
            r#"{"event":"undelivered","mail":"ack","to":"c@example.com","status":"5.2.2: full"}"#;
        let note = r#""refusal""#;
        assert_eq!(
            serde_json::from_str::<EventKind>(refused).unwrap(),
            EventKind::Undelivered {
                mail: Some(MailKind::Forward),
                to: "a@example.test".into(),
                reason: "550 no".into(),
                told: Some("supervisor".into()),
                report: false,
            }
        );
        assert!(matches!(
            serde_json::from_str::<EventKind>(report).unwrap(),
            EventKind::Undelivered { mail: Some(MailKind::Acknowledgement), reason, told: None, .. }
                if reason == "5.2.2: full"
        ));
        assert_eq!(
            serde_json::from_str::<MailKind>(note).unwrap(),
            MailKind::Undelivered
        );
    }

    #[test]
    fn mail_ids_count_the_ticket_s_mails() {
        let mut t = ticket();
        assert_eq!(t.next_mail_id("forward", "d"), "T-1001.1.forward@d");
        assert_eq!(t.next_mail_id("ack", "d"), "T-1001.2.ack@d");
        assert_eq!(t.sent, 2);
    }

    #[test]
    fn with_a_secret_mail_ids_cannot_be_guessed_and_stay_the_same_on_a_resend() {
        let keyed = |secret: &str| {
            let mut t = ticket();
            t.id_secret = secret.into();
            t.next_mail_id("ack", "d")
        };
        let a = keyed("0123456789abcdef");
        assert!(a.starts_with("T-1001.1.ack.") && a.ends_with("@d"), "{a}");
        assert_eq!(a.len(), "T-1001.1.ack.".len() + 12 + 2, "{a}");
        assert_eq!(a, keyed("0123456789abcdef"), "deterministic");
        assert_ne!(a, keyed("fedcba9876543210"), "keyed");
    }
}
