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
    },
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
}

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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    #[serde(skip)]
    pub raw: Vec<u8>,
}
