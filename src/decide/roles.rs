//! Decide, who is who: the writer of a message as its ticket sees them. Only staff
//! change a ticket's owner, promises or answered state; the customer's side (the
//! customer, their colleagues, people they wrote to) adds follow-ups; anyone else who
//! names a ticket opens one of their own. Pure, like the rest of decide.

use serde::Serialize;

use super::TicketRef;
use crate::config::Rules;
use crate::parse::Mail;

pub use crate::ticket::Role;

/// The writer's role, their address, and why, in words for `explain` and the note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Who {
    pub role: Role,
    pub address: String,
    pub reason: String,
}

impl From<&Who> for crate::ticket::Writer {
    fn from(w: &Who) -> Self {
        crate::ticket::Writer {
            address: w.address.clone(),
            role: w.role,
            why: w.reason.clone(),
        }
    }
}

/// Who wrote `mail`, for the ticket it would join (`None`: a new request). The From
/// address counts, the one mail clients show and DMARC protects; an envelope sender
/// or a Reply-To of someone else's makes no one a customer.
pub fn who(rules: &Rules, mail: &Mail, ticket: Option<&TicketRef>) -> Who {
    let address = writer(mail);
    let (role, reason) = role_of(rules, mail, &address, ticket);
    Who {
        role,
        address,
        reason: reason.to_string(),
    }
}

/// The address a message is written by: its From, else its envelope sender.
pub fn writer(mail: &Mail) -> String {
    mail.from
        .as_ref()
        .map(|a| a.address.to_ascii_lowercase())
        .unwrap_or_else(|| mail.sender())
}

fn role_of(
    rules: &Rules,
    mail: &Mail,
    address: &str,
    ticket: Option<&TicketRef>,
) -> (Role, String) {
    let staff = is_staff(rules, mail, address);
    let Some(t) = ticket else {
        return match staff {
            Some(why) => (
                Role::Customer,
                format!("writes a new request ({why}): its customer"),
            ),
            None => (Role::Customer, "writes a new request: its customer".into()),
        };
    };
    if !t.customer.is_empty() && t.customer.eq_ignore_ascii_case(address) {
        return (Role::Customer, format!("the customer of {}", t.id));
    }
    if let Some(why) = staff {
        return (Role::Staff, why);
    }
    let domain = domain_of(address);
    if !domain.is_empty() && domain == domain_of(&t.customer) && !rules.roles.is_freemail(domain) {
        return (
            Role::CustomerSide,
            format!(
                "the same organisation as the customer of {} ({domain})",
                t.id
            ),
        );
    }
    if t.customer_side.iter().any(|a| a == address) {
        return (
            Role::CustomerSide,
            format!("the customer of {} wrote to them in the thread", t.id),
        );
    }
    (
        Role::ThirdParty,
        format!(
            "not the customer of {}, nor of their organisation, nor staff",
            t.id
        ),
    )
}

/// Why `address` counts as staff, if it does: a queue's or watched mailbox's address, or
/// listed in `[roles] staff` (and, with `staff_authenticated`, vouched for by a trusted
/// server).
fn is_staff(rules: &Rules, mail: &Mail, address: &str) -> Option<String> {
    let own = rules
        .queues
        .values()
        .any(|q| q.address.eq_ignore_ascii_case(address))
        || rules
            .mailboxes
            .values()
            .any(|m| m.address.eq_ignore_ascii_case(address));
    if own {
        return Some("a queue's address".into());
    }
    if !rules.roles.lists_staff(address) {
        return None;
    }
    if rules.roles.staff_authenticated && !super::authenticated(rules, mail) {
        return None;
    }
    Some(match rules.roles.staff_authenticated {
        true => "staff by [roles] staff, authenticated by a trusted server".into(),
        false => "staff by [roles] staff".into(),
    })
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// The people a customer's message is also addressed to, for the ticket's customer side:
/// not the watched mailboxes and queues, not staff.
pub fn copied_people(rules: &Rules, mail: &Mail) -> Vec<String> {
    mail.to
        .iter()
        .chain(mail.cc.iter())
        .map(|a| a.address.to_ascii_lowercase())
        .filter(|a| is_staff(rules, mail, a).is_none() && !rules.roles.lists_staff(a))
        .collect()
}
