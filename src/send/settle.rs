//! Send, the settling at start. SMTP has no two-phase commit: the mails in flight when
//! the last run stopped may or may not have been accepted (the first entries of the
//! outbox; none after a clean stop). Each is looked for by its Message-ID before it is
//! sent again: in the archive, which holds every mail the server accepted; without one,
//! in the watched mailboxes a mail was sent to (a queue's forward). A mail found there
//! leaves the outbox; any other is sent again, since a duplicate is better than a loss.
//! The looking itself is IMAP, which the daemon does between [`in_flight`] and
//! [`settle`].

use std::collections::{BTreeMap, HashSet};

use crate::config::{Login, Rules, Settings};
use crate::record::Store;
use crate::ticket::OutMail;

/// A mail whose fate the last stop left unknown.
pub struct InFlight {
    /// Its outbox entry.
    key: u64,
    mail: OutMail,
    /// Where it is if the server accepted it: (name, login) of each folder.
    places: Vec<(String, Login)>,
}

/// Every place to search, each once, with the Message-IDs to look for there.
pub type Searches = BTreeMap<String, (Login, Vec<String>)>;

/// What each place searched holds of the Message-IDs looked for; a place that could
/// not be searched is missing.
pub type Found = BTreeMap<String, HashSet<String>>;

/// The mails in flight at the last stop, each with where to look for it.
pub fn in_flight(store: &Store, rules: &Rules, settings: &Settings) -> Vec<InFlight> {
    let uncertain = match store.outbox_uncertain() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "Outbox cannot be read at start.");
            return Vec::new();
        }
    };
    uncertain
        .into_iter()
        .map(|(key, stored)| {
            let mail = stored.mail;
            let places = where_to_look(rules, settings, &mail);
            InFlight { key, mail, places }
        })
        .collect()
}

/// Where a mail is if the server accepted it: the archive, which gets every mail; else
/// the watched mailboxes it was sent to, when it was sent to nothing else. Empty: it
/// cannot be looked up.
fn where_to_look(rules: &Rules, settings: &Settings, m: &OutMail) -> Vec<(String, Login)> {
    if let Some(a) = &settings.archive {
        return vec![("archive".to_string(), a.login.clone())];
    }
    let watched: Vec<(String, Login)> =
        m.to.iter()
            .filter_map(|a| rules.mailbox_by_address(a))
            .filter_map(|mb| Some((mb.key.clone(), settings.mailboxes.get(&mb.key)?.clone())))
            .collect();
    if watched.len() == m.to.len() {
        watched
    } else {
        Vec::new()
    }
}

/// Each place is searched once for all the mails it may hold.
pub fn searches(in_flight: &[InFlight]) -> Searches {
    let mut wanted = Searches::new();
    for f in in_flight {
        for (name, login) in &f.places {
            wanted
                .entry(name.clone())
                .or_insert_with(|| (login.clone(), Vec::new()))
                .1
                .push(f.mail.message_id.clone());
        }
    }
    wanted
}

/// Takes the mails that were found out of the outbox and says what becomes of the rest;
/// `archive`: an archive was configured.
pub fn settle(store: &Store, in_flight: Vec<InFlight>, found: &Found, archive: bool) {
    for f in in_flight {
        settle_one(store, f, found, archive);
    }
    if let Err(e) = store.flush() {
        tracing::warn!(error = %e, "Cannot write what was found about the mails in flight.");
    }
}

fn settle_one(store: &Store, f: InFlight, found: &Found, archive: bool) {
    let (m, at) = (&f.mail, &f.places);
    let place = at.iter().map(|(name, _)| name).find(|name| {
        found
            .get(*name)
            .is_some_and(|ids| ids.contains(&m.message_id))
    });
    match place {
        Some(place) => {
            if store.outbox_done(f.key).is_ok() {
                tracing::info!(message_id = %m.message_id, ticket = %m.ticket, found_in = %place, "Mail in flight at the last stop was accepted; not sent again.");
            }
        }
        None if !at.is_empty() && at.iter().all(|(n, _)| found.contains_key(n)) => {
            let looked_in: Vec<&str> = at.iter().map(|(n, _)| n.as_str()).collect();
            tracing::info!(message_id = %m.message_id, ticket = %m.ticket, looked_in = ?looked_in, "Mail in flight at the last stop was not accepted; it is sent now.");
        }
        None if archive => tracing::warn!(
            uncertain = %m.message_id,
            ticket = %m.ticket,
            to = ?m.to,
            "Mail in flight at the last stop could not be looked up in the archive; it is sent again with the same Message-ID, and a receiver may see it twice."
        ),
        None => tracing::warn!(
            uncertain = %m.message_id,
            ticket = %m.ticket,
            to = ?m.to,
            "Mail may have been accepted just before the last stop; it is sent again with the same Message-ID, and a receiver may see it twice. An [archive] in mailtriage.toml prevents this."
        ),
    }
}
