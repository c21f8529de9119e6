//! Decide, tickets that end: staff resolve a ticket with a `Resolved:` line, a ticket
//! answered and then left quiet resolves itself, and a customer who writes again
//! reopens it within the reopen window or, after it, opens a new ticket that follows the
//! old one. Pure, like the rest of decide: the pipeline and the follow-up clock apply
//! what it says.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Role, TicketRef};
use crate::config::Rules;
use crate::parse::Mail;
use crate::ticket::Ticket;
use crate::when;

/// What a message does to the life of the ticket it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Lifecycle {
    /// Staff resolve the ticket: the text of their `Resolved:` line (may be empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
    /// The customer's reply reopens the resolved ticket it joins.
    pub reopens: bool,
    /// The customer wrote to a ticket resolved longer ago than the reopen window: the
    /// message opens a new ticket that follows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<Follows>,
}

/// The resolved ticket a new one follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Follows {
    pub ticket: String,
    /// When it was resolved (RFC 3339); `None` when the state no longer holds it
    /// (removed at retention, so resolved longer ago than that).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

/// What a message by `role` does to `ticket` (the ticket it would join) at `now`;
/// `removed`: with no ticket to join, the one the subject's tag names that retention
/// removed.
pub fn lifecycle(
    rules: &Rules,
    mail: &Mail,
    (ticket, removed): (Option<&TicketRef>, Option<&str>),
    role: Role,
    now: OffsetDateTime,
) -> Lifecycle {
    let Some(t) = ticket else {
        return Lifecycle {
            follows: removed.map(|id| Follows {
                ticket: id.to_string(),
                resolved_at: None,
            }),
            ..Lifecycle::default()
        };
    };
    if role == Role::Staff {
        return Lifecycle {
            resolves: resolution_in(mail).map(str::to_string),
            ..Lifecycle::default()
        };
    }
    let Some(resolved_at) = t.resolved_at else {
        return Lifecycle::default();
    };
    let window =
        time::Duration::try_from(rules.threading.reopen_within).unwrap_or(time::Duration::days(30));
    if now - resolved_at <= window {
        return Lifecycle {
            reopens: true,
            ..Lifecycle::default()
        };
    }
    Lifecycle {
        follows: Some(Follows {
            ticket: t.id.clone(),
            resolved_at: Some(when::stamp_at(resolved_at)),
        }),
        ..Lifecycle::default()
    }
}

/// The first line staff write to resolve a ticket ("Resolved: refund sent", "Решено:"),
/// with what follows it. Quoted earlier mail is not in the text, so a customer quoting
/// it does not count (and only staff mail is read for it anyway).
pub fn resolution_in(mail: &Mail) -> Option<&str> {
    mail.text.lines().find_map(resolution_line)
}

fn resolution_line(line: &str) -> Option<&str> {
    let t = line.trim();
    for p in ["resolved:", "решено:"] {
        // Byte lengths match in lower case for these prefixes.
        let Some(head) = t.get(..p.len()) else {
            continue;
        };
        if head.to_lowercase() == p {
            return t.get(p.len()..).map(str::trim);
        }
    }
    None
}

/// A ticket staff answered resolves itself once the customer has not written for
/// `threading.resolve_after` since the answer.
pub fn quiet_resolution_due(rules: &Rules, t: &Ticket, now: OffsetDateTime) -> bool {
    quiet_resolution_at(rules, t).is_some_and(|at| now >= at)
}

/// When `t` resolves itself if nothing changes: `threading.resolve_after` after staff's
/// answer, unless the customer wrote since; `None` when it never does as it stands.
pub fn quiet_resolution_at(rules: &Rules, t: &Ticket) -> Option<OffsetDateTime> {
    let after = rules.threading.resolve_after?;
    let answered = t.answered_at.as_deref().and_then(when::parse)?;
    let customer_since = t
        .last_customer_message()
        .and_then(when::parse)
        .is_some_and(|c| c > answered);
    let after = time::Duration::try_from(after).unwrap_or(time::Duration::days(14));
    (t.is_open() && !customer_since).then_some(answered + after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{EventKind, ResolvedHow};

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn mail(text: &str) -> Mail {
        let raw = format!("From: anna@example.test\r\nTo: ivan@mail.example\r\nSubject: Re: [#T-1001] x\r\nMessage-ID: <s@x>\r\n\r\n{text}\r\n");
        crate::parse::parse(raw.as_bytes()).unwrap()
    }

    fn t(s: &str) -> OffsetDateTime {
        when::parse(s).unwrap()
    }

    fn resolved_ref(at: &str) -> TicketRef {
        TicketRef {
            id: "T-1001".into(),
            queue: "billing".into(),
            customer: "ivan@mail.example".into(),
            resolved_at: Some(t(at)),
            ..Default::default()
        }
    }

    #[test]
    fn a_resolved_line_is_read_in_both_languages_and_only_at_a_line_s_start() {
        assert_eq!(
            resolution_in(&mail("Hello.\r\nResolved: refund sent")),
            Some("refund sent")
        );
        assert_eq!(
            resolution_in(&mail("РЕШЕНО: деньги вернули")),
            Some("деньги вернули")
        );
        assert_eq!(resolution_in(&mail("resolved:")), Some(""));
        assert_eq!(resolution_in(&mail("It is not resolved: sorry")), None);
        assert_eq!(resolution_in(&mail("Привет")), None);
        assert_eq!(resolution_in(&mail("Решено:")), Some(""));
    }

    #[test]
    fn only_staff_resolve() {
        let r = rules();
        let open = TicketRef {
            id: "T-1001".into(),
            ..Default::default()
        };
        let m = mail("Resolved: done");
        let now = t("2026-01-02T00:00:00Z");
        let by = |role| lifecycle(&r, &m, (Some(&open), None), role, now).resolves;
        assert_eq!(by(Role::Staff).as_deref(), Some("done"));
        for role in [Role::Customer, Role::CustomerSide, Role::ThirdParty] {
            assert_eq!(by(role), None, "{role}");
        }
    }

    #[test]
    fn a_reply_reopens_within_the_window_and_follows_after_it() {
        let r = rules(); // reopen_within 30d by default
        let m = mail("It broke again");
        let resolved = resolved_ref("2026-01-01T00:00:00Z");
        let at = |now: &str| lifecycle(&r, &m, (Some(&resolved), None), Role::Customer, t(now));
        assert!(at("2026-01-30T00:00:00Z").reopens);
        assert_eq!(at("2026-01-30T00:00:00Z").follows, None);
        let later = at("2026-02-01T00:00:00Z");
        assert!(!later.reopens);
        assert_eq!(
            later.follows,
            Some(Follows {
                ticket: "T-1001".into(),
                resolved_at: Some("2026-01-01T00:00:00Z".into())
            })
        );
        // Staff writing in a resolved ticket neither reopens it nor starts a new one.
        let staff = lifecycle(
            &r,
            &m,
            (Some(&resolved), None),
            Role::Staff,
            t("2026-03-01T00:00:00Z"),
        );
        assert_eq!(staff, Lifecycle::default());
    }

    fn answered_ticket() -> Ticket {
        let mut tk = crate::ticket::ivans_refund();
        let arrived = EventKind::Arrived {
            mailbox: "billing@example.test".into(),
            message_id: None,
            subject: "Refund".into(),
            from: None,
        };
        tk.record("2026-01-01T10:00:00Z", arrived);
        tk.answered("2026-01-02T10:00:00Z", "anna@example.test");
        tk
    }

    #[test]
    fn an_answered_ticket_resolves_itself_after_the_customer_stays_quiet() {
        let r = rules(); // resolve_after 14d by default
        let mut tk = answered_ticket();
        assert!(!quiet_resolution_due(&r, &tk, t("2026-01-16T09:59:00Z")));
        assert!(quiet_resolution_due(&r, &tk, t("2026-01-16T10:00:00Z")));
        // The customer wrote after the answer: their turn is over, staff's is not.
        tk.follow_up(
            "2026-01-03T10:00:00Z",
            "billing@example.test",
            "Re: Refund",
            None,
        );
        assert!(!quiet_resolution_due(&r, &tk, t("2026-03-01T00:00:00Z")));
        // Never answered: never resolves itself.
        let mut unanswered = answered_ticket();
        unanswered.answered_at = None;
        assert!(!quiet_resolution_due(
            &r,
            &unanswered,
            t("2027-01-01T00:00:00Z")
        ));
        // Resolved already: nothing more to do.
        let mut done = answered_ticket();
        done.resolve(
            "2026-01-05T00:00:00Z",
            "anna@example.test",
            ResolvedHow::Mail,
            "",
        );
        assert!(!quiet_resolution_due(&r, &done, t("2026-03-01T00:00:00Z")));
    }

    #[test]
    fn resolve_after_off_keeps_answered_tickets_open() {
        let r = crate::config::testing::shipped_with(
            "resolve_after = \"14d\"",
            "resolve_after = \"off\"",
        );
        assert_eq!(r.threading.resolve_after, None);
        assert!(!quiet_resolution_due(
            &r,
            &answered_ticket(),
            t("2027-01-01T00:00:00Z")
        ));
    }
}
