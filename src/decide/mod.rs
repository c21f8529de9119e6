//! Decide (pure): the mailbox a message reached, its classification and what the store
//! knows of its thread -> a [`Plan`]: keep it or forward it to a queue, and acknowledge
//! the customer or say why not, who gets a copy, the ticket's hops and the marks on the
//! server. Effects are data here; `pipeline` turns the plan into mails and records, and
//! nothing in this module touches the network, the disk or the clock.

use serde::{Deserialize, Serialize};

mod caps;
mod lifecycle;
mod roles;
pub mod wait;

pub use caps::{cap_keys, counts, fold, over_cap, MailCounts};
pub use lifecycle::{quiet_resolution_at, quiet_resolution_due, resolution_in, Follows, Lifecycle};
pub use roles::{copied_people, who, writer, Role, Who};

use crate::classify::Classification;
use crate::config::{Mailbox, Rules, Unmatched};
use crate::parse::Mail;
use crate::ticket::{MailKind, Ticket, Undelivered, KEYWORD_FORWARDED, KEYWORD_TRIAGED};

/// Header the daemon puts on every mail it sends. Mail that carries it is its own and is
/// never triaged again.
pub const LOOP_HEADER: &str = "X-Mailtriage";

/// What the store knows about the thread a message belongs to.
#[derive(Debug, Clone, Default)]
pub struct ThreadView {
    /// The ticket this message joins (by In-Reply-To/References or the subject tag), with
    /// how it was found.
    pub ticket: Option<(TicketRef, JoinedBy)>,
    /// Set when this very message (same Message-ID) was already triaged.
    pub already_triaged: Option<String>,
    /// Mails lately sent to the address an acknowledgement would go to, its domain and
    /// everyone (the caps).
    pub mails_sent: MailCounts,
    /// No ticket joined, but the subject's tag names a ticket of a state that was lost:
    /// the new ticket takes that id.
    pub reopens: Option<String>,
    /// No ticket joined, but the subject's tag names a ticket this state resolved and
    /// has since removed at retention: the new ticket follows it.
    pub follows_removed: Option<String>,
}

/// The part of a ticket that decide needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TicketRef {
    pub id: String,
    pub queue: String,
    pub acknowledged: bool,
    /// The customer's address (lower case).
    pub customer: String,
    /// Queues the ticket has been at, in order.
    pub hops: Vec<String>,
    /// People the customer wrote to in the thread (lower case).
    pub customer_side: Vec<String>,
    /// When "added to your request" was last sent.
    #[serde(skip)]
    pub added_ack_at: Option<time::OffsetDateTime>,
    /// When the ticket was resolved; `None` while it is open.
    #[serde(skip)]
    pub resolved_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinedBy {
    References,
    SubjectTag,
    /// Same sender and same subject within the subject window.
    SenderSubject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Route {
    /// Mail the daemon sent, or a message already triaged: nothing is done.
    Ignore { why: Suppression },
    /// The message stays in the mailbox it reached; `queue` owns the request.
    Keep { queue: String, why: Why },
    /// The message goes to `queue` with a context note.
    Forward { queue: String, why: Why },
    /// Not a customer request (a category without a queue, e.g. monitoring alerts): it
    /// stays where it arrived, with no ticket and no acknowledgement.
    Leave { category: String },
    /// Automatic mail nobody waits an answer to (an auto-reply, a delivery report, a
    /// list or bulk mailing, spam): it stays where it arrived, marked, with no ticket.
    Robot { why: Suppression },
    /// An auto-reply or a delivery report in a ticket's thread: a line in its history
    /// (and, for a mail of the ticket that could not be delivered, a note to the queue);
    /// no clock changes, nothing is forwarded or acknowledged.
    Record { why: Suppression },
}

/// Why a route was chosen; rendered into words in the note and by `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Why {
    /// A rule-recognised category that this mailbox handles.
    Handled { category: String },
    /// A rule-recognised category that belongs to another queue.
    Misdirected { category: String },
    /// No rule fired; the mailbox keeps such mail.
    UnmatchedKept,
    /// No rule fired; the mailbox passes such mail to a fixed queue.
    UnmatchedForwarded,
    /// A follow-up in an existing ticket, which goes to the queue that owns it.
    FollowUp { ticket: String, joined_by: JoinedBy },
    /// Staff of the owning queue passed the ticket to the queue of this mailbox.
    Handover { ticket: String, from: String },
    /// The ticket would go back to a queue it left, or past the handover limit: it goes
    /// to the escalation queue instead of round in circles.
    Bounced {
        ticket: String,
        between: Vec<String>,
    },
    /// The request belongs to a queue whose mailbox the customer wrote to as well: that
    /// mailbox has it already, so it is not forwarded there a second time.
    AlreadyThere { address: String },
}

/// Why no acknowledgement goes out. Codes follow RFC 3834's list of messages that must
/// not get an automatic reply, then the daemon's own limits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Suppression {
    OwnMail,
    AlreadyTriaged,
    AutoSubmitted,
    NullSender,
    RobotSender,
    Precedence,
    List,
    AutoResponseSuppress,
    Spam,
    /// The ticket was acknowledged before; follow-ups get no new acknowledgement.
    FollowUp,
    /// The address reached the daily cap of mails (plus-tags folded).
    DailyCap,
    /// Its domain reached the hourly cap of mails.
    DomainCap,
    /// All customers together reached the hourly cap of mails.
    HourlyCap,
    /// More than one From or Sender header: who wrote it is uncertain.
    ManySenders,
    /// The envelope sender is not aligned with the From and nothing vouches for it.
    Unaligned,
    /// There is no address to answer to.
    NoAddress,
    /// Not a customer request.
    NotARequest,
    /// Written by staff (not the ticket's customer): nobody to acknowledge.
    FromStaff,
    /// A trusted server says the message fails DMARC: the sender may be forged.
    DmarcFail,
    /// An automatic reply (`Precedence: auto_reply`, `X-Autoreply`, `X-Autorespond`).
    AutoReply,
    /// A delivery or read notification (`multipart/report`).
    Report,
}

impl Suppression {
    /// Its reason code, as `explain --json` and the metrics write it.
    pub fn code(self) -> &'static str {
        self.into()
    }

    /// A sentence for the note and `explain`.
    pub fn describe(self) -> &'static str {
        match self {
            Suppression::OwnMail => "mailtriage sent this message itself",
            Suppression::AlreadyTriaged => "this message was triaged before",
            Suppression::AutoSubmitted => "the message is automatic (Auto-Submitted)",
            Suppression::NullSender => "the envelope sender is empty (a bounce or notification)",
            Suppression::RobotSender => {
                "the sender is a robot address (mailer-daemon, postmaster, noreply, list owner)"
            }
            Suppression::Precedence => "the message is bulk or list mail (Precedence)",
            Suppression::List => "the message comes from a mailing list (List-* headers)",
            Suppression::AutoResponseSuppress => {
                "the sender asked for no automatic replies (X-Auto-Response-Suppress)"
            }
            Suppression::Spam => "the receiving server marked the message as spam",
            Suppression::FollowUp => "the customer was already acknowledged for this ticket",
            Suppression::DailyCap => "the address reached today's limit of mails from mailtriage",
            Suppression::DomainCap => "its domain reached this hour's limit of mails from mailtriage",
            Suppression::HourlyCap => "mailtriage reached this hour's limit of mails to customers",
            Suppression::ManySenders => {
                "the message has more than one From or Sender header: who wrote it is uncertain (a sign of forgery)"
            }
            Suppression::Unaligned => {
                "the envelope sender is not at the From's domain and no trusted server vouches for either: an answer could reach a forged address"
            }
            Suppression::NoAddress => "there is no address to answer to",
            Suppression::NotARequest => "the message is not a customer request",
            Suppression::FromStaff => "the message is from staff, not from the ticket's customer",
            Suppression::DmarcFail => {
                "a trusted server says the message fails DMARC (the sender may be forged)"
            }
            Suppression::AutoReply => {
                "the message is an automatic reply (Precedence: auto_reply, X-Autoreply, X-Autorespond)"
            }
            Suppression::Report => {
                "the message is a delivery or read notification (multipart/report)"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "send", rename_all = "kebab-case")]
pub enum AckPlan {
    /// The acknowledgement: ticket, team, expected time.
    Yes,
    /// A short "added to your request" for a follow-up.
    Added,
    No {
        reason: Suppression,
    },
}

impl AckPlan {
    pub fn is_yes(&self) -> bool {
        !matches!(self, AckPlan::No { .. })
    }
}

/// What to do with one message: everything the daemon will do with it. Compose and
/// record carry it out; `explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub route: Route,
    /// `Some(id)` when the message joins an existing ticket; `None` opens a new one
    /// (unless the route is Ignore).
    pub ticket: Option<String>,
    /// No ticket joined: the new ticket takes this id, of a state that was lost, which
    /// the subject's tag named.
    pub reopens: Option<String>,
    pub ack: AckPlan,
    /// Where the acknowledgement goes: `Some` exactly when `ack` says one is sent.
    pub ack_to: Option<String>,
    /// Red flags that fired: the message is escalated as well as handled.
    pub flags: Vec<String>,
    /// The escalation queue of a flagged message: named in the ticket's history, and
    /// the mails about it are marked.
    pub escalate_to: Option<String>,
    /// A queue that gets a copy of the message: the escalation queue, for a flagged
    /// message that is not going there anyway.
    pub copy_to: Option<String>,
    /// The active incident the message matches.
    pub incident: Option<String>,
    /// The sender is on the ticket's customer side (always true for a new ticket).
    pub from_customer: bool,
    /// Who wrote the message, as the ticket it names sees them; `None` for mail that is
    /// not looked at (the daemon's own, or known already).
    pub who: Option<Who>,
    /// A stranger's message named this ticket: it opened one of its own instead.
    pub names: Option<String>,
    /// The queues the ticket has been at once this message is handled, in order.
    pub hops: Vec<String>,
    /// What the message gets on the server once recorded; `None` leaves it as it is.
    pub marks: Option<Marks>,
    /// Whether it resolves or reopens its ticket, or follows a resolved one.
    pub lifecycle: Lifecycle,
}

/// IMAP keywords to set on the message, and the folder it moves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marks {
    pub keywords: Vec<&'static str>,
    pub move_to: Option<String>,
    /// The ticket's own keyword too (see [`crate::ticket::ticket_keyword`]), for a message
    /// that has copies in other watched mailboxes: whoever reads any of them can find
    /// that it is handled, and as which ticket. Set at record, where a new ticket's id
    /// is known.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ticket: bool,
}

impl Plan {
    pub fn queue(&self) -> Option<&str> {
        match &self.route {
            Route::Keep { queue, .. } | Route::Forward { queue, .. } => Some(queue),
            Route::Ignore { .. }
            | Route::Leave { .. }
            | Route::Robot { .. }
            | Route::Record { .. } => None,
        }
    }

    pub fn forwarded(&self) -> bool {
        matches!(self.route, Route::Forward { .. })
    }

    /// The message opens a ticket (a kept or forwarded request that joins none).
    pub fn opens_ticket(&self) -> bool {
        self.ticket.is_none() && self.queue().is_some()
    }

    /// A later message of the ticket's customer.
    pub fn follow_up(&self) -> bool {
        self.ticket.is_some() && self.from_customer
    }

    /// Why no acknowledgement goes out, if none does.
    pub fn ack_reason(&self) -> Option<Suppression> {
        match self.ack {
            AckPlan::No { reason } => Some(reason),
            AckPlan::Yes | AckPlan::Added => None,
        }
    }
}

pub fn decide(
    rules: &Rules,
    mailbox: &Mailbox,
    mail: &Mail,
    class: &Classification,
    thread: &ThreadView,
    now: time::OffsetDateTime,
) -> Plan {
    if is_own_mail(rules, mail) {
        return ignore(Suppression::OwnMail);
    }
    if let Some(ticket) = &thread.already_triaged {
        let plan = ignore(Suppression::AlreadyTriaged);
        return Plan {
            ticket: Some(ticket.clone()),
            marks: plan.marks.map(|m| with_copies(m, rules, mailbox, mail)),
            ..plan
        };
    }
    if let Some(why) = robot(mail) {
        return Plan {
            who: Some(Who {
                role: Role::Robot,
                address: writer(mail),
                reason: why.describe().to_string(),
            }),
            ..robot_plan(why, thread)
        };
    }
    let Joining {
        joined,
        who,
        names,
        life,
    } = joining(rules, mail, thread, now);
    let staff = who.role == Role::Staff;
    let from_customer = !staff;
    let route = match joined {
        Some((t, joined_by)) => route_joined(rules, mailbox, t, *joined_by, staff),
        None => already_there(rules, mail, route_new(rules, mailbox, class)),
    };
    let flags: Vec<String> = class.flags.iter().map(|f| f.rule.clone()).collect();
    let incident = active_incident(rules, class, now);
    if let Route::Leave { .. } = route {
        return Plan {
            route,
            flags,
            incident,
            from_customer,
            who: Some(who),
            ..ignore(Suppression::NotARequest)
        };
    }
    let ack = ack_plan(
        rules,
        mail,
        thread,
        joined.map(|(t, _)| t),
        from_customer,
        now,
    );
    let (ack, ack_to) = match ack.is_yes().then(|| ack_address(rules, mail)) {
        Some(Ok(to)) => (ack, Some(to)),
        Some(Err(reason)) => (AckPlan::No { reason }, None),
        None => (ack, None),
    };
    let escalate_to = escalation_queue(rules, &flags);
    Plan {
        ticket: joined.map(|(t, _)| t.id.clone()),
        reopens: thread.reopens.clone().filter(|_| joined.is_none()),
        ack,
        ack_to,
        copy_to: escalate_to
            .clone()
            .filter(|e| !matches!(&route, Route::Forward { queue, .. } if queue == e)),
        escalate_to,
        flags,
        incident,
        from_customer,
        who: Some(who),
        names,
        hops: hops(mailbox, joined.map(|(t, _)| t), &route),
        marks: Some(with_copies(marks(mailbox, &route), rules, mailbox, mail)),
        route,
        lifecycle: life,
    }
}

/// Which ticket a message joins, and as whom.
struct Joining<'a> {
    joined: Option<&'a (TicketRef, JoinedBy)>,
    who: Who,
    /// The ticket a stranger's message named without joining it.
    names: Option<String>,
    life: Lifecycle,
}

/// The ticket the thread found, unless the writer is a stranger to it (their message
/// opens a ticket of its own, which only says which one it named) or it was resolved so
/// long ago that a reply is a new request; with what the message does to its life.
fn joining<'a>(
    rules: &Rules,
    mail: &Mail,
    thread: &'a ThreadView,
    now: time::OffsetDateTime,
) -> Joining<'a> {
    let who = who(rules, mail, thread.ticket.as_ref().map(|(t, _)| t));
    let names = match (&who.role, &thread.ticket) {
        (Role::ThirdParty, Some((t, _))) => Some(t.id.clone()),
        _ => None,
    };
    let joined = thread.ticket.as_ref().filter(|_| names.is_none());
    let removed = thread
        .follows_removed
        .as_deref()
        .filter(|_| joined.is_none());
    let life = lifecycle::lifecycle(
        rules,
        mail,
        (joined.map(|(t, _)| t), removed),
        who.role,
        now,
    );
    // A reply to a ticket resolved long ago is a new request by its writer.
    let (joined, who) = match life.follows {
        Some(_) => (None, roles::who(rules, mail, None)),
        None => (joined, who),
    };
    Joining {
        joined,
        who,
        names,
        life,
    }
}

/// The queue that hears of an undelivered mail of `t`, with its address: the owner of `t`, or the escalation
/// queue when the mail was meant for the owner (its forward, a reminder to it).
/// Nobody for a note about an undelivered mail (no loops), nor when the one to tell
/// is the address that was not reached.
pub fn told_of_undelivered(rules: &Rules, t: &Ticket, u: &Undelivered) -> Option<(String, String)> {
    if u.mail == Some(MailKind::Undelivered) {
        return None;
    }
    let not_reached = |address: &str| {
        u.to.split(',')
            .any(|a| a.trim().eq_ignore_ascii_case(address))
    };
    let owner = rules.queues.get(&t.queue).map(|q| (t.queue.clone(), q));
    let for_owner = u.mail == Some(MailKind::Forward)
        || owner.as_ref().is_some_and(|(_, q)| not_reached(&q.address));
    let told = if for_owner {
        let e = rules.escalation.as_ref()?;
        rules.queues.get(&e.queue).map(|q| (e.queue.clone(), q))
    } else {
        owner
    };
    told.filter(|(_, q)| !not_reached(&q.address))
        .map(|(key, q)| (key, q.address.clone()))
}

/// Whether the customer gets an acknowledgement, "added to your request", or none and
/// why: RFC 3834 and DMARC first, then the daemon's own limits.
fn ack_plan(
    rules: &Rules,
    mail: &Mail,
    thread: &ThreadView,
    joined: Option<&TicketRef>,
    from_customer: bool,
    now: time::OffsetDateTime,
) -> AckPlan {
    let no = |reason| AckPlan::No { reason };
    // In this order: the first reason that applies is the one explain and the history give.
    let refused = auto_reply_forbidden(mail)
        .or_else(|| dmarc_fails(rules, mail).then_some(Suppression::DmarcFail))
        .or_else(|| (!from_customer).then_some(Suppression::FromStaff))
        .or_else(|| (mail.senders > 1).then_some(Suppression::ManySenders))
        .or_else(|| {
            mail.reply_address()
                .is_none()
                .then_some(Suppression::NoAddress)
        })
        .or_else(|| over_cap(rules, thread.mails_sent));
    match refused {
        Some(reason) => no(reason),
        // A follow-up: at most one "added to your request" per window.
        None if joined.is_some_and(|t| t.acknowledged) => {
            let t = joined.expect("checked");
            let window = time::Duration::try_from(rules.threading.added_ack_window)
                .unwrap_or(time::Duration::DAY);
            if t.added_ack_at.is_none_or(|at| now - at >= window) {
                AckPlan::Added
            } else {
                no(Suppression::FollowUp)
            }
        }
        None => AckPlan::Yes,
    }
}

/// The address an acknowledgement goes to, or why none: the envelope sender when its
/// domain is the From's (or a trusted server says SPF passes), else the From when a
/// trusted server says DMARC passes, else nobody: an answer to an address nothing
/// vouches for is how a forged sender turns the daemon against a third party.
fn ack_address(rules: &Rules, mail: &Mail) -> Result<String, Suppression> {
    let from = mail.from.as_ref().map(|a| a.address.as_str());
    let envelope = mail.return_path.as_deref().filter(|r| !r.is_empty());
    let passes = |what: &str| trusted_results(rules, mail).any(|r| r.starts_with(what));
    let to = match (envelope, from) {
        (Some(env), Some(from)) if aligned(env, from) || passes("spf=pass") => env,
        (Some(_), Some(from)) if passes("dmarc=pass") => from,
        (Some(_), Some(_)) => return Err(Suppression::Unaligned),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => return Err(Suppression::NoAddress),
    };
    match to.parse::<lettre::Address>() {
        Ok(_) => Ok(to.to_string()),
        // Decided yes, but lettre would refuse the address.
        Err(_) => Err(Suppression::NoAddress),
    }
}

/// Two addresses of one organisation: the same domain, or one a subdomain of the other.
fn aligned(a: &str, b: &str) -> bool {
    let domain = |x: &str| {
        x.rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let (a, b) = (domain(a), domain(b));
    !a.is_empty() && (a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}")))
}

fn active_incident(
    rules: &Rules,
    class: &Classification,
    now: time::OffsetDateTime,
) -> Option<String> {
    class
        .incidents
        .iter()
        .find(|id| {
            rules
                .incidents
                .iter()
                .any(|i| &i.id == *id && i.active_at(now))
        })
        .cloned()
}

/// The escalation queue, when red flags fired and one is set up.
fn escalation_queue(rules: &Rules, flags: &[String]) -> Option<String> {
    let e = rules.escalation.as_ref()?;
    (!flags.is_empty() && rules.queues.contains_key(&e.queue)).then(|| e.queue.clone())
}

/// The ticket's hops with the queue the message goes to last. A request forwarded away
/// from a mailbox has been at that mailbox's queue: sending it back there later is a
/// ping-pong.
fn hops(mailbox: &Mailbox, joined: Option<&TicketRef>, route: &Route) -> Vec<String> {
    let (Route::Forward { queue, .. } | Route::Keep { queue, .. }) = route else {
        return Vec::new();
    };
    let mut hops = match (joined, &mailbox.queue) {
        (Some(t), _) => t.hops.clone(),
        (None, Some(own)) if matches!(route, Route::Forward { .. }) => vec![own.clone()],
        (None, _) => Vec::new(),
    };
    if hops.last() != Some(queue) {
        hops.push(queue.clone());
    }
    hops
}

/// Every triaged message is marked as such; a forwarded one is marked forwarded too and
/// moves to the mailbox's folder for forwarded mail, if it has one.
fn marks(mailbox: &Mailbox, route: &Route) -> Marks {
    match route {
        Route::Forward { .. } => Marks {
            keywords: vec![KEYWORD_TRIAGED, KEYWORD_FORWARDED],
            move_to: mailbox.forwarded_folder.clone(),
            ticket: false,
        },
        _ => Marks {
            keywords: vec![KEYWORD_TRIAGED],
            move_to: None,
            ticket: false,
        },
    }
}

/// `m`, with the ticket's keyword when the message was also sent to other watched
/// mailboxes (each copy is marked with the ticket it belongs to).
fn with_copies(m: Marks, rules: &Rules, mailbox: &Mailbox, mail: &Mail) -> Marks {
    Marks {
        ticket: !also_sent_to(rules, mail, &mailbox.address).is_empty(),
        ..m
    }
}

/// A request sent to several watched mailboxes at once: when the queue it belongs to got
/// its own copy directly, the copy here is not forwarded to it again; it stays, owned by
/// that queue, and the other copy is the one its team reads.
fn already_there(rules: &Rules, mail: &Mail, route: Route) -> Route {
    let Route::Forward { queue, .. } = &route else {
        return route;
    };
    let Some(q) = rules.queues.get(queue) else {
        return route;
    };
    let sent_there = mail
        .to
        .iter()
        .chain(mail.cc.iter())
        .any(|a| a.address.eq_ignore_ascii_case(&q.address));
    if !sent_there || rules.mailbox_by_address(&q.address).is_none() {
        return route;
    }
    Route::Keep {
        queue: queue.clone(),
        why: Why::AlreadyThere {
            address: q.address.clone(),
        },
    }
}

/// The other watched mailboxes a message was also addressed to (To, Cc), for the note.
pub fn also_sent_to(rules: &Rules, mail: &Mail, reached: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in mail.to.iter().chain(mail.cc.iter()) {
        let watched = rules.mailbox_by_address(&a.address).is_some();
        let address = a.address.to_ascii_lowercase();
        if watched && !address.eq_ignore_ascii_case(reached) && !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

/// Where a message that joins an existing ticket goes. The customer's follow-ups go to
/// the queue that owns the ticket, whatever their words say: classifying them again is
/// how tickets start to ping-pong. Staff mail that reaches another queue's mailbox hands
/// the ticket over, unless that would send it back to a queue it left or past the
/// handover limit: then it goes to the escalation queue.
fn route_joined(
    rules: &Rules,
    mailbox: &Mailbox,
    t: &TicketRef,
    joined_by: JoinedBy,
    staff: bool,
) -> Route {
    let follow = Why::FollowUp {
        ticket: t.id.clone(),
        joined_by,
    };
    let to_owner = |why: Why| {
        if mailbox.queue.as_deref() == Some(t.queue.as_str()) {
            Route::Keep {
                queue: t.queue.clone(),
                why,
            }
        } else {
            Route::Forward {
                queue: t.queue.clone(),
                why,
            }
        }
    };
    let target = match &mailbox.queue {
        Some(q) if staff && *q != t.queue => q,
        _ => return to_owner(follow),
    };
    if let Some(esc) = &rules.escalation {
        let left_before = t.hops.iter().any(|h| h == target);
        let too_many = t.hops.len() > esc.max_hops;
        if t.queue != esc.queue && (left_before || too_many) {
            let mut between = t.hops.clone();
            between.push(target.clone());
            return Route::Forward {
                queue: esc.queue.clone(),
                why: Why::Bounced {
                    ticket: t.id.clone(),
                    between,
                },
            };
        }
    }
    Route::Keep {
        queue: target.clone(),
        why: Why::Handover {
            ticket: t.id.clone(),
            from: t.queue.clone(),
        },
    }
}

/// Robot mail: an auto-reply or a report in a ticket's thread is recorded there; any
/// other stays where it arrived with no ticket.
fn robot_plan(why: Suppression, thread: &ThreadView) -> Plan {
    let answers_a_mail = matches!(
        why,
        Suppression::AutoSubmitted
            | Suppression::AutoReply
            | Suppression::NullSender
            | Suppression::Report
    );
    match thread.ticket.as_ref().filter(|_| answers_a_mail) {
        Some((t, _)) => Plan {
            route: Route::Record { why },
            ticket: Some(t.id.clone()),
            ..ignore(why)
        },
        None => Plan {
            route: Route::Robot { why },
            ..ignore(why)
        },
    }
}

/// A plan that does nothing but say why: no ticket, no mail, no mark.
fn ignore(why: Suppression) -> Plan {
    Plan {
        route: Route::Ignore { why },
        ticket: None,
        reopens: None,
        ack: AckPlan::No { reason: why },
        ack_to: None,
        flags: Vec::new(),
        escalate_to: None,
        copy_to: None,
        incident: None,
        from_customer: false,
        who: None,
        names: None,
        hops: Vec::new(),
        // Marked like every message the daemon has looked at: after a state loss the
        // mark says it was seen, and a mail client can hide what needs no one.
        marks: Some(Marks {
            keywords: vec![KEYWORD_TRIAGED],
            move_to: None,
            ticket: false,
        }),
        lifecycle: Lifecycle::default(),
    }
}

fn route_new(rules: &Rules, mailbox: &Mailbox, class: &Classification) -> Route {
    let Some(cat) = &class.category else {
        return match (&mailbox.unmatched, &mailbox.queue) {
            (Unmatched::Forward(q), Some(own)) if q == own => Route::Keep {
                queue: q.clone(),
                why: Why::UnmatchedKept,
            },
            (Unmatched::Forward(q), _) => Route::Forward {
                queue: q.clone(),
                why: Why::UnmatchedForwarded,
            },
            (Unmatched::Keep, Some(own)) => Route::Keep {
                queue: own.clone(),
                why: Why::UnmatchedKept,
            },
            // Config validation refuses "keep" without a queue; leaving the message in
            // place is the safe reading if it ever gets here.
            (Unmatched::Keep, None) => Route::Leave {
                category: String::new(),
            },
        };
    };
    let Some(queue) = rules.categories.get(cat).and_then(|c| c.queue.clone()) else {
        return Route::Leave {
            category: cat.clone(),
        };
    };
    let why_kept = Why::Handled {
        category: cat.clone(),
    };
    match &mailbox.queue {
        // A category this mailbox handles, or one that belongs to the team reading it anyway.
        Some(own) if mailbox.handles.iter().any(|h| h == cat) || *own == queue => Route::Keep {
            queue: own.clone(),
            why: why_kept,
        },
        _ => Route::Forward {
            queue,
            why: Why::Misdirected {
                category: cat.clone(),
            },
        },
    }
}

/// Mail this daemon sent: its loop header, or a Message-ID in its own id domain.
pub fn is_own_mail(rules: &Rules, mail: &Mail) -> bool {
    mail.has_header(LOOP_HEADER)
        || mail.message_id.as_deref().is_some_and(|id| {
            id.to_ascii_lowercase().ends_with(&format!(
                "@mailtriage.{}",
                rules.company.domain.to_ascii_lowercase()
            ))
        })
}

/// RFC 3834 section 2 and the usual robot conventions: the first reason an automatic
/// reply must not be sent, in a fixed order so the reported reason is stable.
pub fn auto_reply_forbidden(mail: &Mail) -> Option<Suppression> {
    if let Some(v) = mail.header("auto-submitted") {
        if !v.trim().eq_ignore_ascii_case("no") {
            return Some(Suppression::AutoSubmitted);
        }
    }
    if null_sender(mail) {
        return Some(Suppression::NullSender);
    }
    let candidates = [
        mail.return_path.as_deref(),
        mail.from.as_ref().map(|a| a.address.as_str()),
    ];
    if candidates.iter().flatten().any(|a| is_robot_address(a)) {
        return Some(Suppression::RobotSender);
    }
    precedence(mail)
        .or_else(|| is_list(mail).then_some(Suppression::List))
        .or_else(|| response_suppressed(mail).then_some(Suppression::AutoResponseSuppress))
        .or_else(|| is_spam(mail).then_some(Suppression::Spam))
        .or_else(|| autoreply_header(mail).then_some(Suppression::AutoReply))
        .or_else(|| is_report(mail).then_some(Suppression::Report))
}

/// Automatic mail nobody waits an answer to, and the first sign of it: an RFC 3834
/// auto-reply (Auto-Submitted other than `auto-generated`, which is what helpdesks and
/// web forms write for people), a notification with the null sender, a delivery or read
/// report, list or bulk mail, spam. Mail that is only written by a program (a no-reply
/// invoice, a helpdesk escalation) is not one: it is still a request, never answered
/// automatically.
pub fn robot(mail: &Mail) -> Option<Suppression> {
    let auto_replied = mail.header("auto-submitted").is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        v != "no" && !v.starts_with("auto-generated")
    });
    if auto_replied {
        return Some(Suppression::AutoSubmitted);
    }
    if null_sender(mail) {
        return Some(Suppression::NullSender);
    }
    precedence(mail)
        .or_else(|| is_list(mail).then_some(Suppression::List))
        .or_else(|| is_spam(mail).then_some(Suppression::Spam))
        .or_else(|| autoreply_header(mail).then_some(Suppression::AutoReply))
        .or_else(|| is_report(mail).then_some(Suppression::Report))
}

fn null_sender(mail: &Mail) -> bool {
    mail.return_path.as_deref() == Some("")
}

/// `Precedence: bulk, list, junk` (mass mail) or `auto_reply`.
fn precedence(mail: &Mail) -> Option<Suppression> {
    match mail
        .header("precedence")?
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "bulk" | "list" | "junk" => Some(Suppression::Precedence),
        "auto_reply" => Some(Suppression::AutoReply),
        _ => None,
    }
}

fn is_list(mail: &Mail) -> bool {
    mail.headers.iter().any(|(n, _)| n.starts_with("list-"))
}

fn response_suppressed(mail: &Mail) -> bool {
    mail.header("x-auto-response-suppress").is_some_and(|v| {
        v.to_ascii_lowercase()
            .split([',', ' '])
            .any(|t| matches!(t.trim(), "all" | "autoreply" | "oof"))
    })
}

fn is_spam(mail: &Mail) -> bool {
    let flag = mail.header("x-spam-flag");
    let status = mail.header("x-spam-status");
    flag.is_some_and(|v| v.trim().eq_ignore_ascii_case("yes"))
        || status.is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("yes"))
}

/// `X-Autoreply` / `X-Autorespond`: vacation programs that write no Auto-Submitted.
fn autoreply_header(mail: &Mail) -> bool {
    mail.has_header("x-autoreply") || mail.has_header("x-autorespond")
}

/// A delivery status notification or a read receipt (RFC 6522 multipart/report).
fn is_report(mail: &Mail) -> bool {
    mail.header("content-type").is_some_and(|v| {
        v.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/report")
    })
}

/// `Authentication-Results: mx.example.com; ... dmarc=fail ...` from a trusted server.
/// Results from other servers are ignored: anyone can write that header.
pub fn dmarc_fails(rules: &Rules, mail: &Mail) -> bool {
    trusted_results(rules, mail).any(|r| r.starts_with("dmarc=fail"))
}

/// A trusted server says DMARC or SPF passes for the message.
pub fn authenticated(rules: &Rules, mail: &Mail) -> bool {
    trusted_results(rules, mail).any(|r| r.starts_with("dmarc=pass") || r.starts_with("spf=pass"))
}

/// The results (`dmarc=fail ...`, lower case) of every `Authentication-Results` header
/// written by a server in `company.trusted_authserv_ids`.
fn trusted_results<'m>(rules: &'m Rules, mail: &'m Mail) -> impl Iterator<Item = String> + 'm {
    mail.headers
        .iter()
        .filter(|(n, _)| n == "authentication-results")
        .filter_map(|(_, v)| {
            let (id, results) = v.split_once(';')?;
            let id = id
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            rules
                .company
                .trusted_authserv_ids
                .contains(&id)
                .then_some(results)
        })
        .flat_map(|results| results.split(';').map(|p| p.trim().to_ascii_lowercase()))
}

fn is_robot_address(addr: &str) -> bool {
    let local = addr.split('@').next().unwrap_or("").to_ascii_lowercase();
    let squashed: String = local
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    local == "mailer-daemon"
        || local == "postmaster"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.ends_with("-bounces")
        || squashed.starts_with("noreply")
        || squashed.starts_with("donotreply")
        || squashed == "mailerdaemon"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify;
    use crate::parse::parse;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn plan_for(
        mailbox: &str,
        headers: &str,
        subject: &str,
        body: &str,
        thread: &ThreadView,
    ) -> Plan {
        let r = rules();
        let raw = format!(
            "{headers}From: Ivan <ivan@mail.example>\r\nTo: {mailbox}@example.test\r\nSubject: {subject}\r\nMessage-ID: <x1@mail.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        let mail = parse(raw.as_bytes()).unwrap();
        let class = classify(&r, &mail);
        decide(
            &r,
            &r.mailboxes[mailbox],
            &mail,
            &class,
            thread,
            time::OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn technical_request_at_billing_is_forwarded_to_support_and_acked() {
        let p = plan_for(
            "billing",
            "",
            "Сайт не работает",
            "Ошибка 500 с утра",
            &ThreadView::default(),
        );
        assert_eq!(
            p.route,
            Route::Forward {
                queue: "support".into(),
                why: Why::Misdirected {
                    category: "technical".into()
                }
            }
        );
        assert_eq!(p.ack, AckPlan::Yes);
        assert_eq!(p.ticket, None);
    }

    #[test]
    fn request_at_the_right_mailbox_stays() {
        let p = plan_for(
            "billing",
            "",
            "Refund request",
            "Please refund my invoice",
            &ThreadView::default(),
        );
        assert_eq!(
            p.route,
            Route::Keep {
                queue: "billing".into(),
                why: Why::Handled {
                    category: "billing".into()
                }
            }
        );
        assert!(p.ack.is_yes());
        assert_eq!((p.escalate_to, p.copy_to), (None, None));
        assert_eq!(p.hops, vec!["billing".to_string()]);
        assert_eq!(p.marks.unwrap().keywords, vec![KEYWORD_TRIAGED]);
    }

    #[test]
    fn unmatched_follows_the_mailbox_setting() {
        let p = plan_for(
            "monitoring",
            "",
            "Hello",
            "Just a word",
            &ThreadView::default(),
        );
        assert_eq!(
            p.route,
            Route::Forward {
                queue: "support".into(),
                why: Why::UnmatchedForwarded
            }
        );
        let p = plan_for("sales", "", "Hello", "Just a word", &ThreadView::default());
        assert_eq!(
            p.route,
            Route::Keep {
                queue: "sales".into(),
                why: Why::UnmatchedKept
            }
        );
    }

    #[test]
    fn automatic_mail_from_a_system_gets_no_ack_but_is_still_routed() {
        // Written by a program for people (a helpdesk escalation, a web form, an invoice
        // from a no-reply address): still a request, only never answered automatically.
        let cases = [
            (
                "Auto-Submitted: auto-generated\r\n",
                Suppression::AutoSubmitted,
            ),
            (
                "Return-Path: <no-reply@shop.example>\r\n",
                Suppression::RobotSender,
            ),
            (
                "X-Auto-Response-Suppress: OOF, AutoReply\r\n",
                Suppression::AutoResponseSuppress,
            ),
        ];
        for (h, want) in cases {
            let p = site_down_with(h);
            assert_eq!(p.ack, AckPlan::No { reason: want }, "{h}");
            assert!(p.forwarded(), "{h}");
        }
        assert!(site_down_with("Auto-Submitted: no\r\n").ack.is_yes());
    }

    /// A technical request at billing@ with `headers` added.
    fn site_down_with(headers: &str) -> Plan {
        plan_for(
            "billing",
            headers,
            "Site is down",
            "error 500",
            &ThreadView::default(),
        )
    }

    #[test]
    fn robots_open_no_ticket_and_stay_where_they_arrived() {
        // Auto-replies, delivery reports, lists, bulk and spam: nobody waits for an answer.
        let cases = [
            (
                "Auto-Submitted: auto-replied\r\n",
                Suppression::AutoSubmitted,
            ),
            ("Return-Path: <>\r\n", Suppression::NullSender),
            ("Precedence: bulk\r\n", Suppression::Precedence),
            ("Precedence: junk\r\n", Suppression::Precedence),
            ("Precedence: auto_reply\r\n", Suppression::AutoReply),
            ("X-Autoreply: yes\r\n", Suppression::AutoReply),
            ("X-Autorespond: Out of office\r\n", Suppression::AutoReply),
            ("List-Id: <users.lists.example>\r\n", Suppression::List),
            (
                "List-Unsubscribe: <mailto:u@lists.example>\r\n",
                Suppression::List,
            ),
            ("X-Spam-Flag: YES\r\n", Suppression::Spam),
            (
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n",
                Suppression::Report,
            ),
        ];
        for (h, want) in cases {
            let p = site_down_with(h);
            assert_eq!(p.route, Route::Robot { why: want }, "{h}");
            assert_eq!(p.ack, AckPlan::No { reason: want }, "{h}");
            assert!(!p.opens_ticket(), "{h}");
            assert_eq!(p.marks.as_ref().unwrap().keywords, vec![KEYWORD_TRIAGED]);
        }
    }

    #[test]
    fn dmarc_fail_from_a_trusted_server_only() {
        let r = crate::config::testing::shipped_with(
            "trusted_authserv_ids = []",
            "trusted_authserv_ids = [\"mx.example.test\"]",
        );
        let plan = |h: &str| {
            let raw = format!("{h}From: Ivan <ivan@bank.example>\r\nSubject: Site is down\r\nMessage-ID: <d1@x>\r\n\r\nerror 500\r\n");
            plan_at_billing(&r, &raw, &ThreadView::default())
        };
        let p = plan("Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=bank.example;\r\n dkim=none; dmarc=fail (p=reject) header.from=bank.example\r\n");
        assert_eq!(
            p.ack,
            AckPlan::No {
                reason: Suppression::DmarcFail
            }
        );
        assert!(p.forwarded(), "still routed");
        let p =
            plan("Authentication-Results: evil.example; dmarc=fail header.from=bank.example\r\n");
        assert!(p.ack.is_yes(), "an untrusted server's word is ignored");
        let p = plan(
            "Authentication-Results: mx.example.test; dmarc=pass header.from=bank.example\r\n",
        );
        assert!(p.ack.is_yes());
    }

    #[test]
    fn own_mail_is_ignored() {
        let p = plan_for(
            "support",
            "X-Mailtriage: T-1001; forward\r\n",
            "Site is down",
            "",
            &ThreadView::default(),
        );
        assert_eq!(
            p.route,
            Route::Ignore {
                why: Suppression::OwnMail
            }
        );
        assert_eq!(
            p.ack,
            AckPlan::No {
                reason: Suppression::OwnMail
            }
        );
        assert_eq!((p.hops.len(), p.ack_to), (0, None));
        // Marked as seen, like every message the daemon looked at; never as forwarded.
        assert_eq!(p.marks.unwrap().keywords, vec![KEYWORD_TRIAGED]);
    }

    #[test]
    fn follow_up_goes_to_owner_without_new_ack() {
        let thread = ThreadView {
            ticket: Some((
                TicketRef {
                    id: "T-1001".into(),
                    queue: "support".into(),
                    acknowledged: true,
                    customer: "ivan@mail.example".into(),
                    hops: vec!["billing".into(), "support".into()],
                    customer_side: Vec::new(),
                    added_ack_at: Some(time::OffsetDateTime::now_utc()),
                    resolved_at: None,
                },
                JoinedBy::References,
            )),
            ..Default::default()
        };
        // Billing words, but the ticket is support's: it goes to support, not classified again.
        let p = plan_for(
            "billing",
            "",
            "Re: [#T-1001] invoice",
            "and the invoice too",
            &thread,
        );
        assert_eq!(
            p.route,
            Route::Forward {
                queue: "support".into(),
                why: Why::FollowUp {
                    ticket: "T-1001".into(),
                    joined_by: JoinedBy::References
                },
            }
        );
        assert_eq!(p.ticket.as_deref(), Some("T-1001"));
        assert_eq!(
            p.ack,
            AckPlan::No {
                reason: Suppression::FollowUp
            }
        );
    }

    /// The plan for the message `raw` at billing@, with `r`.
    fn plan_at_billing(r: &Rules, raw: &str, thread: &ThreadView) -> Plan {
        let mail = parse(raw.as_bytes()).unwrap();
        let class = classify(r, &mail);
        let now = time::OffsetDateTime::now_utc();
        decide(r, &r.mailboxes["billing"], &mail, &class, thread, now)
    }

    /// Ivan's ticket T-1001 at support, acknowledged, which a message names.
    fn ivans_ticket(customer: &str, side: &[&str]) -> ThreadView {
        ThreadView {
            ticket: Some((
                TicketRef {
                    id: "T-1001".into(),
                    queue: "support".into(),
                    acknowledged: true,
                    customer: customer.into(),
                    hops: vec!["support".into()],
                    customer_side: side.iter().map(|s| s.to_string()).collect(),
                    added_ack_at: None,
                    resolved_at: None,
                },
                JoinedBy::SubjectTag,
            )),
            ..Default::default()
        }
    }

    /// A message from `from` at billing@ naming T-1001, with `headers` added.
    fn written_by(from: &str, headers: &str, thread: &ThreadView) -> Plan {
        let r = rules();
        let raw = format!(
            "{headers}From: {from}\r\nTo: billing@example.test\r\nSubject: Re: [#T-1001] refund\r\nMessage-ID: <w1@x.example>\r\n\r\nPromise: full refund approved.\r\n"
        );
        let mail = parse(raw.as_bytes()).unwrap();
        let class = classify(&r, &mail);
        let now = time::OffsetDateTime::now_utc();
        decide(&r, &r.mailboxes["billing"], &mail, &class, thread, now)
    }

    fn role(p: &Plan) -> Role {
        p.who.as_ref().unwrap().role
    }

    #[test]
    fn every_copy_of_a_message_to_several_watched_mailboxes_is_marked_with_its_ticket() {
        let marks = |cc: &str, thread: &ThreadView| {
            plan_for("billing", cc, "Site is down", "error 500", thread)
                .marks
                .unwrap()
        };
        let fresh = ThreadView::default();
        assert!(marks("Cc: support@example.test\r\n", &fresh).ticket);
        assert!(!marks("Cc: bob@mail.example\r\n", &fresh).ticket);
        // The copy triaged second: known, marked with the ticket all the same.
        let known = ThreadView {
            already_triaged: Some("T-1001".into()),
            ..ThreadView::default()
        };
        let m = marks("Cc: support@example.test\r\n", &known);
        assert!(m.ticket && m.keywords == vec![KEYWORD_TRIAGED], "{m:?}");
        assert!(!marks("", &known).ticket);
    }

    #[test]
    fn a_stranger_who_names_a_ticket_opens_one_of_their_own() {
        let thread = ivans_ticket("ivan@mail.example", &[]);
        let p = written_by("Mallory <mallory@evil.example>", "", &thread);
        assert_eq!(role(&p), Role::ThirdParty);
        assert_eq!(
            (p.ticket.as_deref(), p.names.as_deref()),
            (None, Some("T-1001"))
        );
        assert!(p.opens_ticket() && p.from_customer);
        // Classified as a request of its own: billing words stay at billing.
        assert_eq!(p.queue(), Some("billing"));
        // A stranger on the same free mail provider is no colleague either.
        let thread = ivans_ticket("ivan@gmail.com", &[]);
        assert_eq!(
            role(&written_by("x@gmail.com", "", &thread)),
            Role::ThirdParty
        );
    }

    #[test]
    fn the_customers_colleague_follows_up_and_staff_hand_over() {
        let thread = ivans_ticket("ivan@mail.example", &["bob@partner.example"]);
        for from in ["Petr <petr@mail.example>", "bob@partner.example"] {
            let p = written_by(from, "", &thread);
            assert_eq!(role(&p), Role::CustomerSide, "{from}");
            assert!(p.follow_up(), "{from}");
            assert_eq!(
                p.queue(),
                Some("support"),
                "a follow-up, not a handover: {from}"
            );
            assert_eq!(p.ack, AckPlan::Added, "{from} hears it was added");
        }
        // Staff (the company's domain, by default) hand the ticket over to billing.
        let p = written_by("Anna <anna@example.test>", "", &thread);
        assert_eq!(role(&p), Role::Staff);
        assert!(
            matches!(p.route, Route::Keep { ref queue, why: Why::Handover { .. } } if queue == "billing")
        );
        // The envelope sender makes no one the customer: the From counts.
        let forged = written_by(
            "Mallory <mallory@evil.example>",
            "Return-Path: <ivan@mail.example>\r\n",
            &thread,
        );
        assert_eq!(role(&forged), Role::ThirdParty);
    }

    #[test]
    fn the_ack_goes_where_something_vouches_for_it_or_nowhere() {
        let ack = |headers: &str| {
            let p = plan_for(
                "billing",
                headers,
                "Site is down",
                "error 500",
                &ThreadView::default(),
            );
            (p.ack, p.ack_to)
        };
        // From is ivan@mail.example in plan_for.
        let aligned = ack("Return-Path: <bounce-1@out.mail.example>\r\n");
        assert_eq!(
            aligned,
            (AckPlan::Yes, Some("bounce-1@out.mail.example".into()))
        );
        let victim = ack("Return-Path: <victim4@third.example>\r\n");
        assert_eq!(
            victim.0,
            AckPlan::No {
                reason: Suppression::Unaligned
            }
        );
        // Two From headers: who wrote it is uncertain.
        let two = ack("From: Other <other@mail.example>\r\n");
        assert_eq!(
            two.0,
            AckPlan::No {
                reason: Suppression::ManySenders
            }
        );
        // A trusted server's word: SPF for the envelope, DMARC for the From.
        let r = crate::config::testing::shipped_with(
            "trusted_authserv_ids = []",
            "trusted_authserv_ids = [\"mx.example.test\"]",
        );
        let with = |headers: &str| {
            let raw = format!("{headers}From: Ivan <ivan@mail.example>\r\nTo: billing@example.test\r\nSubject: Site is down\r\nMessage-ID: <x2@mail.example>\r\n\r\nerror 500\r\n");
            plan_at_billing(&r, &raw, &ThreadView::default()).ack_to
        };
        let spf = "Return-Path: <b@esp.example>\r\nAuthentication-Results: mx.example.test; spf=pass smtp.mailfrom=esp.example\r\n";
        assert_eq!(with(spf).as_deref(), Some("b@esp.example"));
        let dmarc = "Return-Path: <victim4@third.example>\r\nAuthentication-Results: mx.example.test; spf=fail smtp.mailfrom=third.example; dmarc=pass header.from=mail.example\r\n";
        assert_eq!(with(dmarc).as_deref(), Some("ivan@mail.example"));
    }

    #[test]
    fn staff_authenticated_needs_a_trusted_pass() {
        let text = crate::config::testing::shipped_text()
            .replacen(
                "staff_authenticated = false",
                "staff_authenticated = true",
                1,
            )
            .replacen(
                "trusted_authserv_ids = []",
                "trusted_authserv_ids = [\"mx.example.test\"]",
                1,
            );
        let r = Rules::parse(std::path::Path::new("rules.toml"), &text).unwrap();
        let thread = ivans_ticket("ivan@mail.example", &[]);
        let run = |headers: &str| {
            let raw = format!("{headers}From: anna@example.test\r\nTo: billing@example.test\r\nSubject: Re: [#T-1001] x\r\nMessage-ID: <a1@example.test>\r\n\r\nhello\r\n");
            let mail = parse(raw.as_bytes()).unwrap();
            let class = classify(&r, &mail);
            let p = decide(
                &r,
                &r.mailboxes["billing"],
                &mail,
                &class,
                &thread,
                time::OffsetDateTime::now_utc(),
            );
            role(&p)
        };
        let trusted = r
            .company
            .trusted_authserv_ids
            .first()
            .cloned()
            .unwrap_or_default();
        assert!(!trusted.is_empty(), "the shipped rules trust a server");
        assert_eq!(run(""), Role::ThirdParty);
        let pass =
            format!("Authentication-Results: {trusted}; dmarc=pass header.from=example.test\r\n");
        assert_eq!(run(&pass), Role::Staff);
        let forged = "Authentication-Results: evil.example; dmarc=pass\r\n";
        assert_eq!(run(forged), Role::ThirdParty);
    }

    /// "Site is down" at billing, with what the state knows of its thread.
    fn plan_in_thread(thread: ThreadView) -> Plan {
        plan_for("billing", "", "Site is down", "", &thread)
    }

    #[test]
    fn reason_codes_are_the_documented_words_in_json_and_text() {
        use Suppression::*;
        let all = [
            (OwnMail, "own-mail"),
            (AlreadyTriaged, "already-triaged"),
            (AutoSubmitted, "auto-submitted"),
            (NullSender, "null-sender"),
            (RobotSender, "robot-sender"),
            (Precedence, "precedence"),
            (List, "list"),
            (AutoResponseSuppress, "auto-response-suppress"),
            (Spam, "spam"),
            (FollowUp, "follow-up"),
            (DailyCap, "daily-cap"),
            (NoAddress, "no-address"),
            (NotARequest, "not-a-request"),
            (FromStaff, "from-staff"),
            (DmarcFail, "dmarc-fail"),
        ];
        for (s, word) in all {
            assert_eq!(s.code(), word);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{word}\""));
        }
    }

    #[test]
    fn duplicate_and_daily_cap() {
        let p = plan_in_thread(ThreadView {
            already_triaged: Some("T-1".into()),
            ..Default::default()
        });
        assert_eq!(
            p.route,
            Route::Ignore {
                why: Suppression::AlreadyTriaged
            }
        );
        let p = plan_in_thread(ThreadView {
            mails_sent: MailCounts {
                address_today: 100,
                ..MailCounts::default()
            },
            ..Default::default()
        });
        assert_eq!(
            p.ack,
            AckPlan::No {
                reason: Suppression::DailyCap
            }
        );
    }

    #[test]
    fn a_flagged_request_is_copied_to_the_escalation_queue_and_marked() {
        let p = plan_for(
            "billing",
            "",
            "Site is down",
            "error 500, I will go to court",
            &ThreadView::default(),
        );
        assert!(p.forwarded());
        assert_eq!(p.flags, vec!["threat".to_string()]);
        assert_eq!(p.escalate_to.as_deref(), Some("supervisor"));
        assert_eq!(p.copy_to.as_deref(), Some("supervisor"));
        assert_eq!(p.ack_to.as_deref(), Some("ivan@mail.example"));
        // Forwarded away from billing: the ticket has been at billing, now at support.
        assert_eq!(p.hops, vec!["billing".to_string(), "support".to_string()]);
        assert_eq!(
            p.marks,
            Some(Marks {
                keywords: vec![KEYWORD_TRIAGED, KEYWORD_FORWARDED],
                move_to: None,
                ticket: false,
            })
        );
    }

    #[test]
    fn an_address_the_mail_library_refuses_gets_no_acknowledgement() {
        let p = plan_for(
            "billing",
            "Return-Path: <ivan..petrov@mail.example>\r\n",
            "Site is down",
            "error 500",
            &ThreadView::default(),
        );
        assert_eq!(
            (p.ack.clone(), p.ack_to.clone()),
            (
                AckPlan::No {
                    reason: Suppression::NoAddress
                },
                None
            )
        );
        assert!(p.forwarded(), "still routed");
    }
}
