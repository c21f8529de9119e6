//! `[company]` and `[threading]`: who the daemon speaks for, and the time windows that
//! tie a customer's messages into one ticket's thread.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::raw;
use super::values::{duration_key, looks_like_address, parse_size, span};
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
    if co
        .ack_from
        .get_ref()
        .parse::<lettre::message::Mailbox>()
        .is_err()
    {
        c.at(
            span(&co.ack_from),
            "company.ack_from",
            "not an address (write \"Name <user@example.com>\" or \"user@example.com\")",
        );
    }
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
    }
}
