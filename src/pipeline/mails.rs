//! Composing: the ticket and the message into the mails the plan implies (the forward,
//! the escalation copy, the acknowledgement), each numbered on the ticket.

use crate::compose::{self, flag_reason, AckInput, ComposeError, ForwardInput};
use crate::config::{FlagLine, RuleLine, TemplateContext};
use crate::decide::{AckPlan, Why};
use crate::ticket::Ticket;
use crate::ticket::{MailKind, OutMail};
use crate::when;
use crate::words;

use super::Case;

/// The mails, in the order they go out; each counts as a mail of the ticket.
pub fn compose(case: &Case, ticket: &mut Ticket) -> Result<Vec<OutMail>, ComposeError> {
    let (rules, plan) = (case.rules, &case.ev.plan);
    let ctx = context(case, ticket);
    let mut out = Vec::new();
    if case.forward {
        out.push(hand_over(case, ticket, &ctx, None, MailKind::Forward)?);
    }
    if let Some(q) = plan.copy_to.as_ref().map(|q| &rules.queues[q]) {
        let to = (q.name_in(&ticket.language), q.address.as_str());
        // The original travels once: with the forward when there is one.
        let mut copy_ctx = ctx.clone();
        if case.forward && case.attach_whole() {
            let queue = rules.queues[&case.queue].name_in(&ticket.language);
            copy_ctx.reason += &words::original_with_forward(queue, &ticket.language);
        }
        out.push(hand_over(
            case,
            ticket,
            &copy_ctx,
            Some(to),
            MailKind::Escalation,
        )?);
    }
    if let Some(to) = &plan.ack_to {
        out.push(acknowledgement(case, ticket, &ctx, to)?);
    }
    Ok(out)
}

/// The template context: the ticket's, with this message's part filled in.
fn context(case: &Case, ticket: &Ticket) -> TemplateContext {
    let (rules, ev, lang) = (case.rules, &case.ev, ticket.language.as_str());
    let joined = ev.plan.ticket.is_some();
    let mut ctx = compose::ticket_context(rules, ticket, lang);
    compose::set_mailbox(rules, &mut ctx, Some(case.inc.mailbox));
    if !joined {
        ctx.category = ev.class.category.clone().unwrap_or_default();
        ctx.rules = ev
            .class
            .fired
            .iter()
            .map(|f| RuleLine {
                name: f.rule.clone(),
                field: f.field.clone(),
                matched: f.matched.clone(),
            })
            .collect();
    }
    ctx.reason = case.reason(lang);
    ctx.writer = writer(ev, ticket);
    ctx.subject = ev.mail.subject.clone();
    ctx.received = when::human(&case.at);
    ctx.ack_reason = ev
        .plan
        .ack_reason()
        .map(|r| words::suppression(r, lang))
        .unwrap_or_default();
    ctx.forwarded = case.forward;
    ctx.follow_up = ev.plan.follow_up();
    if let Why::Bounced { between, .. } = &case.why {
        let names: Vec<String> = between
            .iter()
            .map(|q| words::queue_name(rules, q, lang).to_string())
            .collect();
        ctx.bounced = words::and_list(&names, lang);
    }
    ctx.flags = ev
        .class
        .flags
        .iter()
        .map(|f| FlagLine {
            name: f.rule.clone(),
            reason: flag_reason(rules, &f.rule, lang),
            matched: f.matched.clone(),
        })
        .collect();
    ctx
}

/// Who wrote the message, with their role and why, when it is not the ticket's customer.
fn writer(ev: &crate::pipeline::Evaluation, ticket: &Ticket) -> String {
    match &ev.plan.who {
        Some(w) if !w.address.eq_ignore_ascii_case(&ticket.customer) => {
            format!("{} ({}: {})", w.address, w.role, w.reason)
        }
        _ => String::new(),
    }
}

/// The forward to the queue, or the copy to the escalation queue: one mail with
/// different recipients and kinds.
fn hand_over(
    case: &Case,
    ticket: &mut Ticket,
    ctx: &TemplateContext,
    to: Option<(&str, &str)>,
    kind: MailKind,
) -> Result<OutMail, ComposeError> {
    let what = match kind {
        MailKind::Escalation => "escalation",
        _ => "forward",
    };
    let id = next_id(case, ticket, what);
    // Every mail about a flagged message stands out.
    let marker = (case.ev.plan.escalate_to.as_ref())
        .and(case.rules.escalation.as_ref())
        .map(|e| e.marker.as_str());
    let whole = case.attach_whole() && !(kind == MailKind::Escalation && case.forward);
    let m = compose::forward(
        case.rules,
        ForwardInput {
            to,
            escalated: marker,
            mail: &case.ev.mail,
            raw: case.inc.raw,
            whole,
            lang: &ticket.language,
            ctx,
            message_id: &id,
            now: case.now,
        },
    )?;
    Ok(OutMail { kind, ..m })
}

fn acknowledgement(
    case: &Case,
    ticket: &mut Ticket,
    ctx: &TemplateContext,
    to: &str,
) -> Result<OutMail, ComposeError> {
    let which = if case.ev.plan.ack == AckPlan::Added {
        "added"
    } else {
        "ack"
    };
    let id = next_id(case, ticket, which);
    // To the customer from the address they wrote to when the ticket was opened, in
    // that mailbox's words and through its login, wherever this message arrived.
    let home = if ticket.mailbox == case.inc.mailbox.key {
        Some(case.inc.mailbox)
    } else {
        compose::home_mailbox(case.rules, ticket)
    };
    let mut ctx = ctx.clone();
    compose::set_mailbox(case.rules, &mut ctx, home);
    // "Added to your request" names the request, not this message: a reply's subject
    // would repeat the tag and the acknowledgement's own words.
    if which == "added" {
        ctx.subject = ticket.subject.clone();
    }
    compose::acknowledgement(
        case.rules,
        AckInput {
            which,
            mail: &case.ev.mail,
            to,
            lang: &ticket.language,
            ctx: &ctx,
            message_id: &id,
            now: case.now,
        },
    )
}

fn next_id(case: &Case, ticket: &mut Ticket, what: &str) -> String {
    ticket.next_mail_id(what, &format!("mailtriage.{}", case.rules.company.domain))
}
