//! The report of one message: what happened to it (from `triage`) or what would (from
//! `explain`), built from the same evaluation so the two cannot tell different stories.
//! `explain --json` prints it as it is.

use serde::Serialize;

use crate::classify::{Fired, Score};
use crate::config::{Mailbox, Rules};
use crate::decide::{AckPlan, JoinedBy, Route};
use crate::words::{self, queue_name};

use super::Evaluation;

#[derive(Debug, Clone, Serialize)]
pub struct AckReport {
    pub send: bool,
    pub to: Option<String>,
    /// Reason code when no acknowledgement is sent (e.g. "auto-submitted").
    pub suppressed: Option<&'static str>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedMail {
    pub kind: &'static str,
    pub to: Vec<String>,
    /// Known once the mail is composed (`triage`), not in `explain`.
    pub message_id: Option<String>,
}

/// What happened to one message (or, from `explain`, what would happen).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mailbox: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// "forward", "keep", "leave", "ignore", "quarantine" or "duplicate".
    pub action: &'static str,
    pub category: Option<String>,
    pub queue: Option<String>,
    pub queue_address: Option<String>,
    /// True when the request reached a mailbox that does not own it.
    pub misdirected: bool,
    pub reason: String,
    pub rules: Vec<Fired>,
    pub scores: Vec<Score>,
    pub language: Option<String>,
    pub ticket: Option<String>,
    pub new_ticket: bool,
    pub acknowledgement: AckReport,
    pub mails: Vec<PlannedMail>,
    /// How the message joined an existing ticket ("references", "subject-tag",
    /// "sender-subject"); `null` for a new request. A joined message is not classified.
    pub joined_by: Option<JoinedBy>,
    /// Red flags that fired, with the matched text.
    pub flags: Vec<Fired>,
    /// The active incident the message is linked to.
    pub incident: Option<String>,
}

/// The report of an evaluated message, before anything is recorded.
pub fn report(rules: &Rules, mailbox: &Mailbox, ev: &Evaluation) -> Report {
    let (action, reason) = action_and_reason(rules, mailbox, &ev.plan.route);
    // A follow-up is not classified again: it goes where its ticket lives.
    let joined = ev.plan.ticket.is_some();
    let routed = matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. });
    let queue = ev.plan.queue().map(str::to_string);
    Report {
        mailbox: mailbox.key.clone(),
        message_id: ev.mail.message_id.clone(),
        from: ev.mail.from.as_ref().map(|a| a.display()),
        subject: Some(ev.mail.subject.clone()),
        action,
        category: ev.class.category.clone().filter(|_| !joined),
        queue_address: queue
            .as_ref()
            .and_then(|q| rules.queues.get(q))
            .map(|q| q.address.clone()),
        queue,
        misdirected: ev.plan.forwarded(),
        reason,
        rules: if joined {
            Vec::new()
        } else {
            ev.class.fired.clone()
        },
        scores: if joined {
            Vec::new()
        } else {
            ev.class.scores.clone()
        },
        language: Some(ev.class.language.clone()),
        // A new ticket of a lost state keeps its number: `explain --state` shows it.
        ticket: ev
            .plan
            .ticket
            .clone()
            .or_else(|| ev.reopens.clone().filter(|_| routed)),
        new_ticket: ev.plan.ticket.is_none() && routed,
        acknowledgement: ack_report(ev),
        mails: planned_mails(rules, ev),
        joined_by: ev.joined_by,
        flags: ev.class.flags.clone(),
        incident: ev.plan.incident.clone(),
    }
}

fn action_and_reason(rules: &Rules, mailbox: &Mailbox, route: &Route) -> (&'static str, String) {
    let why = |why, queue| words::why(why, &mailbox.address, queue_name(rules, queue, "en"), "en");
    match route {
        Route::Forward { queue, why: w } => ("forward", why(w, queue)),
        Route::Keep { queue, why: w } => ("keep", why(w, queue)),
        Route::Leave { category } => (
            "leave",
            format!(
                "a {category} message, not a customer request: it stays in {}",
                mailbox.address
            ),
        ),
        Route::Ignore { why } => ("ignore", why.describe().to_string()),
    }
}

fn ack_report(ev: &Evaluation) -> AckReport {
    let (suppressed, reason) = match &ev.plan.ack {
        AckPlan::Yes | AckPlan::Added => (None, None),
        AckPlan::No { reason } => (Some(reason.code()), Some(reason.describe().to_string())),
    };
    AckReport {
        send: ev.plan.ack.is_yes(),
        to: ev
            .mail
            .reply_address()
            .map(str::to_string)
            .filter(|_| ev.plan.ack.is_yes()),
        suppressed,
        reason,
    }
}

/// The mails the plan implies, in the order `triage` composes them.
fn planned_mails(rules: &Rules, ev: &Evaluation) -> Vec<PlannedMail> {
    let mail = |kind, to: Vec<String>| PlannedMail {
        kind,
        to,
        message_id: None,
    };
    let mut mails = Vec::new();
    if let Route::Forward { queue, .. } = &ev.plan.route {
        let to = rules.queues.get(queue).map(|q| q.address.clone());
        mails.push(mail("forward", to.into_iter().collect()));
    }
    let escalation = rules
        .escalation
        .as_ref()
        .and_then(|e| rules.queues.get(&e.queue).map(|q| (e, q)));
    if let Some((e, q)) = escalation {
        let going_there =
            matches!(&ev.plan.route, Route::Forward { queue, .. } if *queue == e.queue);
        if !ev.plan.flags.is_empty()
            && !going_there
            && matches!(ev.plan.route, Route::Forward { .. } | Route::Keep { .. })
        {
            mails.push(mail("escalation", vec![q.address.clone()]));
        }
    }
    if ev.plan.ack.is_yes() {
        let kind = if ev.plan.ack == AckPlan::Added {
            "added"
        } else {
            "acknowledgement"
        };
        let to = ev.mail.reply_address().map(str::to_string);
        mails.push(mail(kind, to.into_iter().collect()));
    }
    mails
}

/// The report of a message that could not be read.
pub fn quarantined(mailbox: &Mailbox, reason: String) -> Report {
    Report {
        mailbox: mailbox.key.clone(),
        message_id: None,
        from: None,
        subject: None,
        action: "quarantine",
        category: None,
        queue: None,
        queue_address: None,
        misdirected: false,
        reason,
        rules: Vec::new(),
        scores: Vec::new(),
        language: None,
        ticket: None,
        new_ticket: false,
        acknowledgement: AckReport {
            send: false,
            to: None,
            suppressed: None,
            reason: Some("the message could not be read".into()),
        },
        mails: Vec::new(),
        joined_by: None,
        flags: Vec::new(),
        incident: None,
    }
}
