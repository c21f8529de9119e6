//! `[company]` and `[threading]`: who the daemon speaks for, and the time windows that
//! tie a customer's messages into one ticket's thread.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::raw;
use super::values::{check_sender, duration_key, looks_like_address, parse_size, span};
use crate::config::error::Collector;

/// Messages bigger than this are forwarded unread when `max_message_size` is not given.
const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 << 20;
/// Originals bigger than this are not attached to a forward when
/// `max_original_attached` is not given.
const DEFAULT_MAX_ORIGINAL_ATTACHED: usize = 10 << 20;

#[derive(Debug, Clone)]
pub struct Company {
    pub name: String,
    pub domain: String,
    pub ticket_prefix: String,
    /// The From of acknowledgements, as written (`Name <addr>`).
    pub ack_from: String,
    pub default_language: String,
    /// At most this many acknowledgements to one sender per day (UTC): a cap that stops
    /// any loop the RFC 3834 checks miss.
    pub acks_per_sender_per_day: u32,
    /// At most this many mails to one domain per hour (UTC).
    pub acks_per_domain_per_hour: u32,
    /// At most this many mails to customers per hour, all together.
    pub acks_per_hour: u32,
    /// Authentication-Results from these servers (their authserv-id) are believed: a
    /// message they say fails DMARC gets no acknowledgement (its sender may be forged).
    pub trusted_authserv_ids: Vec<String>,
    /// Bigger messages are forwarded with a note without their body being read.
    pub max_message_size: usize,
    /// A bigger original is not attached to the mails about it: they carry its header
    /// and say where it lies on the server.
    pub max_original_attached: usize,
}

#[derive(Debug, Clone)]
pub struct Threading {
    /// How often open tickets are checked for overdue answers.
    pub followup_check: Duration,
    /// A message from the same sender with the same subject joins a ticket this recent.
    pub subject_window: Duration,
    /// At most one "added to your request" mail per ticket in this window.
    pub added_ack_window: Duration,
    /// At most one status mail to the customer per ticket in this window.
    pub status_window: Duration,
    /// At most this many status mails per ticket.
    pub max_status_mails: u32,
    /// Reminders and escalations of tickets that fell due together go out spread over
    /// this much working time, each ticket at its own place in it.
    pub reminder_spread: Duration,
    /// A ticket staff answered is resolved when the customer has not written for this
    /// long since; `None` (`"off"`) leaves it open until staff resolve it.
    pub resolve_after: Option<Duration>,
    /// A customer's reply this soon after the resolution reopens the ticket; a later
    /// one opens a new ticket that names it.
    pub reopen_within: Duration,
    /// Resolved tickets, and their entries in the Message-ID index, are removed this long
    /// after the resolution; messages of no ticket this long after they arrived.
    pub retention: Duration,
    /// The mails shadow mode decided (and never sent) are kept this long, for
    /// `tickets show --mails`.
    pub shadow_mails_kept: Duration,
}

/// `languages` are the declared ones, as written: the default must be one of them.
pub(super) fn compile_company(
    c: &mut Collector<'_>,
    co: raw::Company,
    languages: &BTreeMap<String, Spanned<raw::Language>>,
) -> Company {
    check_company(c, &co, languages);
    Company {
        max_message_size: size_key(
            c,
            "company.max_message_size",
            co.max_message_size.as_ref(),
            DEFAULT_MAX_MESSAGE_SIZE,
        ),
        max_original_attached: size_key(
            c,
            "company.max_original_attached",
            co.max_original_attached.as_ref(),
            DEFAULT_MAX_ORIGINAL_ATTACHED,
        ),
        name: co.name,
        domain: co.domain.into_inner(),
        ticket_prefix: co.ticket_prefix.into_inner(),
        ack_from: co.ack_from.into_inner(),
        default_language: co.default_language.into_inner(),
        acks_per_sender_per_day: co.acks_per_sender_per_day,
        acks_per_domain_per_hour: co.acks_per_domain_per_hour,
        acks_per_hour: co.acks_per_hour,
        trusted_authserv_ids: co
            .trusted_authserv_ids
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
    }
}

fn check_company(
    c: &mut Collector<'_>,
    co: &raw::Company,
    languages: &BTreeMap<String, Spanned<raw::Language>>,
) {
    if !looks_like_address(&format!("x@{}", co.domain.get_ref())) {
        c.at(span(&co.domain), "company.domain", "not a domain name");
    }
    let prefix = co.ticket_prefix.get_ref();
    if prefix.is_empty() || !prefix.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        c.at(
            span(&co.ticket_prefix),
            "company.ticket_prefix",
            "must be ASCII letters or digits (it becomes part of subjects and Message-IDs)",
        );
    }
    check_sender(c, "company.ack_from", &co.ack_from);
    if !languages.is_empty() && !languages.contains_key(co.default_language.get_ref()) {
        c.at(
            span(&co.default_language),
            "company.default_language",
            format!(
                "language {:?} is not declared in [languages]",
                co.default_language.get_ref()
            ),
        );
    }
}

/// A size key of `[company]`; `default` when it is left out or wrong.
fn size_key(
    c: &mut Collector<'_>,
    key: &str,
    v: Option<&Spanned<String>>,
    default: usize,
) -> usize {
    let Some(v) = v else {
        return default;
    };
    parse_size(v.get_ref()).unwrap_or_else(|e| {
        c.at(span(v), key, e);
        default
    })
}

pub(super) fn compile_threading(c: &mut Collector<'_>, t: &raw::Threading) -> Threading {
    const DAY: u64 = 86400;
    let reopen_within = duration_key(
        c,
        "threading.reopen_within",
        &t.reopen_within,
        Duration::from_secs(30 * DAY),
    );
    Threading {
        followup_check: duration_key(
            c,
            "threading.followup_check",
            &t.followup_check,
            Duration::from_secs(60),
        ),
        subject_window: duration_key(
            c,
            "threading.subject_window",
            &t.subject_window,
            Duration::from_secs(7 * DAY),
        ),
        added_ack_window: duration_key(
            c,
            "threading.added_ack_window",
            &t.added_ack_window,
            Duration::from_secs(DAY),
        ),
        status_window: duration_key(
            c,
            "threading.status_window",
            &t.status_window,
            Duration::from_secs(DAY),
        ),
        max_status_mails: t.max_status_mails.unwrap_or(3),
        reminder_spread: duration_key(
            c,
            "threading.reminder_spread",
            &t.reminder_spread,
            Duration::from_secs(30 * 60),
        ),
        resolve_after: resolve_after(c, t),
        reopen_within,
        retention: retention(c, t, reopen_within),
        shadow_mails_kept: duration_key(
            c,
            "threading.shadow_mails_kept",
            &t.shadow_mails_kept,
            Duration::from_secs(30 * DAY),
        ),
    }
}

/// `"off"` keeps answered tickets open until staff resolve them.
fn resolve_after(c: &mut Collector<'_>, t: &raw::Threading) -> Option<Duration> {
    if t.resolve_after
        .as_ref()
        .is_some_and(|v| v.get_ref() == "off")
    {
        return None;
    }
    let d = duration_key(
        c,
        "threading.resolve_after",
        &t.resolve_after,
        Duration::from_secs(14 * 86400),
    );
    Some(d)
}

/// The retention, which must outlast the reopen window: a reply within the window must
/// still find its ticket.
fn retention(c: &mut Collector<'_>, t: &raw::Threading, reopen: Duration) -> Duration {
    let retention = duration_key(
        c,
        "threading.retention",
        &t.retention,
        Duration::from_secs(365 * 86400),
    );
    if let Some(v) = &t.retention {
        if retention < reopen {
            c.at(
                span(v),
                "threading.retention",
                "must be at least threading.reopen_within (30d unless set): a reply within the reopen window must still find its ticket",
            );
        }
    }
    retention
}
