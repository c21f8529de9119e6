//! The report of one message: what happened to it (from `triage`) or what would (from
//! `explain`), built from the same evaluation so the two cannot tell different stories.
//! `explain --json` prints it as it is.

use serde::{Deserialize, Serialize};

use crate::classify::{Fired, Score};
use crate::config::{Mailbox, Rules};
use crate::decide::{AckPlan, JoinedBy, Plan, Role, Route, Suppression};
use crate::ticket::MailKind;
use crate::when;
use crate::words::{self, queue_name};
use std::time::SystemTime;

use super::Evaluation;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckReport {
    pub send: bool,
    pub to: Option<String>,
    /// Reason code when no acknowledgement is sent (e.g. "auto-submitted").
    pub suppressed: Option<Suppression>,
    pub reason: Option<String>,
}

/// What happened to a message, in a word.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    Forward,
    Keep,
    /// Not a customer request: left where it arrived.
    Leave,
    /// Automatic mail (auto-reply, delivery report, list, bulk, spam): left where it
    /// arrived, with no ticket.
    Robot,
    /// The daemon's own mail (from `explain`, also a message triaged before).
    Ignore,
    Quarantine,
    /// Triaged before: nothing done again.
    Duplicate,
}

impl Action {
    /// Its name, as serde writes it (one derive gives both, so they cannot drift apart).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// So an action compares with its word, as `explain --json` and rule tests write it.
impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedMail {
    pub kind: MailKind,
    pub to: Vec<String>,
    /// Known once the mail is composed (`triage`), not in `explain`.
    pub message_id: Option<String>,
}

/// What happened to one message (or, from `explain`, what would happen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub mailbox: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub action: Action,
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
    /// Who wrote it, as the ticket it names sees them: `customer`, `customer-side`,
    /// `staff`, `third-party`, `robot`; `null` for mail not looked at.
    #[serde(default)]
    pub role: Option<Role>,
    /// Why that role, in words.
    #[serde(default)]
    pub role_reason: Option<String>,
    /// The ticket a stranger named: their message opened a ticket of its own.
    #[serde(default)]
    pub names: Option<String>,
    /// When the owning queue's answer to a request this message opens is due, on the
    /// queue's working-time clock (what the acknowledgement promises).
    #[serde(default)]
    pub answer_by: Option<AnswerBy>,
}

/// When an answer is due, and on which clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerBy {
    /// RFC 3339, UTC.
    pub at: String,
    /// In the queue's zone, as the acknowledgement says it: "Monday 7 December, 12:00 (MSK)".
    pub words: String,
    /// The queue's response time: "4 hours".
    pub within: String,
    /// Its business hours, "Mon-Fri 09:00-18:00 Europe/Moscow"; empty when it works all day.
    pub hours: String,
}

/// The report of an evaluated message, before anything is recorded.
pub fn report(rules: &Rules, mailbox: &Mailbox, ev: &Evaluation, now: SystemTime) -> Report {
    let (action, reason) = action_and_reason(rules, mailbox, &ev.plan.route);
    // A follow-up is not classified again: it goes where its ticket lives.
    let joined = ev.plan.ticket.is_some();
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
        ticket: ev.plan.ticket.clone().or_else(|| ev.plan.reopens.clone()),
        new_ticket: ev.plan.opens_ticket(),
        acknowledgement: ack_report(&ev.plan),
        mails: planned_mails(rules, &ev.plan),
        joined_by: ev.joined_by,
        flags: ev.class.flags.clone(),
        incident: ev.plan.incident.clone(),
        role: ev.plan.who.as_ref().map(|w| w.role),
        role_reason: ev.plan.who.as_ref().map(|w| w.reason.clone()),
        names: ev.plan.names.clone(),
        answer_by: answer_by(rules, &ev.plan, now),
    }
}

/// When the answer to the request `plan` opens is due: the queue's response time in its
/// working time from `now`. `None` for a message that opens no ticket of a customer's
/// (a follow-up keeps the clock of its ticket, which `tickets show` has).
fn answer_by(rules: &Rules, plan: &Plan, now: SystemTime) -> Option<AnswerBy> {
    if !plan.opens_ticket() || !plan.from_customer {
        return None;
    }
    let queue = rules.queues.get(plan.queue()?)?;
    let due = queue.calendar.add(now.into(), queue.response_time)?;
    Some(AnswerBy {
        at: when::stamp(due.into()),
        words: words::moment(due, queue.calendar.zone(), "en"),
        within: words::duration(queue.response_time, "en"),
        hours: queue
            .calendar
            .hours()
            .map(|h| h.to_string())
            .unwrap_or_default(),
    })
}

fn action_and_reason(rules: &Rules, mailbox: &Mailbox, route: &Route) -> (Action, String) {
    let why = |why, queue| words::why(why, &mailbox.address, queue_name(rules, queue, "en"), "en");
    match route {
        Route::Forward { queue, why: w } => (Action::Forward, why(w, queue)),
        Route::Keep { queue, why: w } => (Action::Keep, why(w, queue)),
        Route::Leave { category } => (
            Action::Leave,
            format!(
                "a {category} message, not a customer request: it stays in {}",
                mailbox.address
            ),
        ),
        Route::Ignore { why } => (Action::Ignore, why.describe().to_string()),
        Route::Record { why } => (
            Action::Robot,
            format!(
                "automatic mail in a ticket's thread: {}; it is added to the ticket's history and stays in {}",
                why.describe(),
                mailbox.address
            ),
        ),
        Route::Robot { why } => (
            Action::Robot,
            format!(
                "automatic mail, nobody waits for an answer: {}; it stays in {} with no ticket",
                why.describe(),
                mailbox.address
            ),
        ),
    }
}

fn ack_report(plan: &Plan) -> AckReport {
    let reason = plan.ack_reason();
    AckReport {
        send: plan.ack.is_yes(),
        to: plan.ack_to.clone(),
        suppressed: reason,
        reason: reason.map(|r| r.describe().to_string()),
    }
}

/// The mails the plan implies, in the order `triage` composes them.
fn planned_mails(rules: &Rules, plan: &Plan) -> Vec<PlannedMail> {
    let to_queue = |q: &String| rules.queues.get(q).map(|q| q.address.clone());
    let forward = match &plan.route {
        Route::Forward { queue, .. } => Some((MailKind::Forward, to_queue(queue))),
        _ => None,
    };
    let copy = plan
        .copy_to
        .as_ref()
        .map(|q| (MailKind::Escalation, to_queue(q)));
    let ack_kind = if plan.ack == AckPlan::Added {
        MailKind::Added
    } else {
        MailKind::Acknowledgement
    };
    let ack = plan.ack_to.clone().map(|to| (ack_kind, Some(to)));
    [forward, copy, ack]
        .into_iter()
        .flatten()
        .map(|(kind, to)| PlannedMail {
            kind,
            to: to.into_iter().collect(),
            message_id: None,
        })
        .collect()
}

/// The report of a message that could not be read.
pub fn quarantined(mailbox: &Mailbox, reason: String) -> Report {
    Report {
        mailbox: mailbox.key.clone(),
        message_id: None,
        from: None,
        subject: None,
        action: Action::Quarantine,
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
        role: None,
        role_reason: None,
        names: None,
        answer_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_written_as_their_words() {
        use Action::*;
        for a in [Forward, Keep, Leave, Robot, Ignore, Quarantine, Duplicate] {
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
            assert_eq!(a, a.as_str());
        }
    }
}
