//! The template context of a ticket: the part every mail about a ticket shares (its
//! queue, customer, history, promises, flags, incident). Triage adds the message's own
//! part; reminders and status mails use it as it is.

use crate::config::{Mailbox, Rules};
use crate::decide::wait;
use crate::ticket::{EventKind, Ticket};
use crate::when;
use crate::words::{self, queue_name};

use crate::config::{FlagLine, HistoryLine, IncidentLine, PromiseLine, TemplateContext};

/// The watched mailbox the customer wrote to when the ticket was opened: mail to the
/// customer about the ticket comes from it (its `ack_from`, its brand, its templates,
/// its SMTP login). A ticket stored before it was kept has the mailbox of its first
/// `Arrived` line; `None` (the company's sender) when neither is a watched mailbox now.
pub fn home_mailbox<'r>(rules: &'r Rules, ticket: &Ticket) -> Option<&'r Mailbox> {
    rules.mailboxes.get(&ticket.mailbox).or_else(|| {
        ticket.history.iter().find_map(|e| match &e.what {
            EventKind::Arrived { mailbox, .. } => rules.mailbox_by_address(mailbox),
            _ => None,
        })
    })
}

/// Puts `mailbox` into `ctx`: its name, its address and its brand (`company`); `None`
/// leaves them empty and the company's name.
pub fn set_mailbox(rules: &Rules, ctx: &mut TemplateContext, mailbox: Option<&Mailbox>) {
    ctx.mailbox = mailbox.map(|m| m.key.clone()).unwrap_or_default();
    ctx.mailbox_address = mailbox.map(|m| m.address.clone()).unwrap_or_default();
    ctx.company = rules.company_name(&ctx.mailbox).to_string();
}

/// Everything of the template context that does not depend on one message; the
/// mailbox is the ticket's own ([`home_mailbox`]).
pub fn ticket_context(rules: &Rules, ticket: &Ticket, lang: &str) -> TemplateContext {
    let queue = rules.queues.get(&ticket.queue);
    let mut ctx = TemplateContext {
        ticket: ticket.id.clone(),
        tag: format!("[#{}]", ticket.id),
        queue_name: queue_name(rules, &ticket.queue, lang).to_string(),
        queue_address: queue.map(|q| q.address.clone()).unwrap_or_default(),
        response_time: queue
            .map(|q| words::duration(q.response_time, lang))
            .unwrap_or_default(),
        answer_by: queue
            .zip(wait::answer_due(rules, ticket))
            .map(|(q, due)| words::moment(due, q.calendar.zone(), lang))
            .unwrap_or_default(),
        mailbox: String::new(),
        mailbox_address: String::new(),
        category: String::new(),
        reason: String::new(),
        rules: Vec::new(),
        customer: ticket.customer.clone(),
        customer_name: ticket.customer_name.clone().unwrap_or_default(),
        writer: String::new(),
        subject: ticket.subject.clone(),
        received: when::human(&ticket.created),
        history: history_lines(rules, ticket, lang),
        acked: ticket.acknowledged,
        ack_reason: String::new(),
        forwarded: false,
        company: rules.company.name.clone(),
        follow_up: false,
        follow_up_number: ticket.followups,
        owner_since: when::human(&ticket.owner_since),
        bounced: String::new(),
        flags: ticket
            .flags
            .iter()
            .map(|f| FlagLine {
                name: f.clone(),
                reason: flag_reason(rules, f, lang),
                matched: String::new(),
            })
            .collect(),
        incident: incident_line(rules, ticket, lang),
        promises: promise_lines(ticket),
        overdue: String::new(),
        escalated: ticket.escalated_at.is_some(),
        escalation_name: rules
            .escalation
            .as_ref()
            .map(|e| queue_name(rules, &e.queue, lang).to_string())
            .unwrap_or_default(),
    };
    set_mailbox(rules, &mut ctx, home_mailbox(rules, ticket));
    ctx
}

/// Why a red flag matters, in `lang` (else any language given), from rules.toml.
pub fn flag_reason(rules: &Rules, flag: &str, lang: &str) -> String {
    rules
        .flag_reasons
        .get(flag)
        .and_then(|r| r.get(lang).or_else(|| r.values().next()))
        .cloned()
        .unwrap_or_else(|| flag.to_string())
}

fn history_lines(rules: &Rules, ticket: &Ticket, lang: &str) -> Vec<HistoryLine> {
    ticket
        .history
        .iter()
        .map(|e| HistoryLine {
            at: when::human(&e.at),
            text: words::history_text(rules, e, lang),
        })
        .collect()
}

fn incident_line(rules: &Rules, ticket: &Ticket, lang: &str) -> Option<IncidentLine> {
    let id = ticket.incident.as_ref()?;
    let i = rules.incidents.iter().find(|i| &i.id == id)?;
    Some(IncidentLine {
        id: i.id.clone(),
        text: i.text_in(lang).to_string(),
        since: when::human_at(i.since),
        next_update: i.next_update.map(when::human_at).unwrap_or_default(),
    })
}

fn promise_lines(ticket: &Ticket) -> Vec<PromiseLine> {
    ticket
        .promises
        .iter()
        .map(|p| PromiseLine {
            at: when::human(&p.at),
            by: p.by.clone(),
            text: p.text.clone(),
        })
        .collect()
}
