//! Finding the thread: what the store knows of the ticket a message belongs to (read
//! by `explain` and `triage` alike), and the ticket itself, opened or joined, for
//! `triage` to change.

use std::time::SystemTime;

use time::OffsetDateTime;

use crate::config::Rules;
use crate::decide::{JoinedBy, ThreadView, TicketRef};
use crate::parse::Mail;
use crate::record::{Disposition, Store, StoreError};
use crate::ticket::Ticket;
use crate::when;

/// Subject without reply/forward prefixes, tags and case, for threading by subject.
pub fn normalised_subject(subject: &str) -> String {
    let mut s = subject.trim().to_lowercase();
    loop {
        let before = s.clone();
        for p in [
            "re:",
            "re :",
            "fw:",
            "fwd:",
            "aw:",
            "wg:",
            "sv:",
            "vs:",
            "ответ:",
            "отв:",
            "пересл:",
            "на:",
        ] {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest.trim_start().to_string();
            }
        }
        if s.starts_with('[') {
            if let Some(end) = s.find(']') {
                s = s[end + 1..].trim_start().to_string();
            }
        }
        if s == before {
            break;
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// (sender, normalised subject): the key of threading by subject.
pub fn subject_key(mail: &Mail) -> Option<String> {
    let sender = mail.sender();
    let subject = normalised_subject(&mail.subject);
    (!sender.is_empty() && !subject.is_empty()).then(|| format!("{sender}\0{subject}"))
}

/// A ticket found for a message, and how.
type Found = Option<(Ticket, JoinedBy)>;

fn ticket_ref(t: &Ticket) -> TicketRef {
    TicketRef {
        id: t.id.clone(),
        queue: t.queue.clone(),
        acknowledged: t.acknowledged,
        customer: t.customer.to_ascii_lowercase(),
        hops: t.hops.clone(),
        customer_side: t.customer_side.clone(),
        added_ack_at: t.added_ack_at.as_deref().and_then(when::parse),
        resolved_at: t.resolved.as_ref().and_then(|r| when::parse(&r.at)),
    }
}

/// What the store knows about this message's thread: In-Reply-To/References first, then
/// the ticket tag in the subject, then same sender and subject within the window.
pub fn thread_view(
    rules: &Rules,
    store: Option<&Store>,
    mail: &Mail,
    key: &str,
    now: SystemTime,
) -> Result<ThreadView, StoreError> {
    let Some(store) = store else {
        return Ok(ThreadView::default());
    };
    let already_triaged = store
        .message(key)?
        .filter(|rec| rec.disposition != Disposition::Sent)
        .map(|rec| rec.ticket.unwrap_or_default());
    let mut found = by_references(store, mail)?;
    let (mut lost, mut removed) = (None, None);
    if found.is_none() {
        let tagged = by_subject_tag(rules, store, mail)?;
        (found, lost, removed) = (tagged.found, tagged.lost, tagged.removed);
    }
    if found.is_none() {
        found = by_sender_and_subject(rules, store, mail, now)?;
    }
    let mails_sent = match mail.reply_address() {
        Some(to) => crate::decide::counts(
            &store.counted(&crate::decide::cap_keys(to, OffsetDateTime::from(now)))?,
        ),
        None => crate::decide::MailCounts::default(),
    };
    Ok(ThreadView {
        reopens: if found.is_none() { lost } else { None },
        follows_removed: if found.is_none() { removed } else { None },
        ticket: found.map(|(t, j)| (ticket_ref(&t), j)),
        already_triaged,
        mails_sent,
    })
}

fn by_references(store: &Store, mail: &Mail) -> Result<Found, StoreError> {
    for id in mail.thread_ids() {
        if let Some(t) = store.message(id)?.and_then(|r| r.ticket) {
            if let Some(t) = store.ticket(&t)? {
                return Ok(Some((t, JoinedBy::References)));
            }
        }
    }
    Ok(None)
}

/// The ticket the subject's tag names; failing that, a tagged id of a lost state, which
/// a new ticket takes.
fn by_subject_tag(rules: &Rules, store: &Store, mail: &Mail) -> Result<Tagged, StoreError> {
    let sender = crate::decide::writer(mail);
    let (mut lost, mut removed) = (None, None);
    for cap in rules.ticket_tag.captures_iter(&mail.subject) {
        let id = format!("{}-{}", rules.company.ticket_prefix, &cap[2]);
        // "[T-1042]" or "#T-1042" is a tag; a bare "T1042" could be anything, so
        // it is only trusted from the ticket's own customer.
        let tagged = !cap[1].is_empty();
        match store.ticket(&id)? {
            Some(t) if tagged || t.customer.eq_ignore_ascii_case(&sender) => {
                return Ok(Tagged {
                    found: Some((t, JoinedBy::SubjectTag)),
                    lost,
                    removed,
                });
            }
            Some(_) => {}
            None if tagged => {
                let Ok(n) = cap[2].parse::<u64>() else {
                    continue;
                };
                if lost.is_none() && store.lost_ticket_number(n)? {
                    lost = Some(id);
                } else if removed.is_none() && store.gave_ticket_number(n)? {
                    removed = Some(id);
                }
            }
            None => {}
        }
    }
    Ok(Tagged {
        found: None,
        lost,
        removed,
    })
}

/// What the subject's ticket tags say.
struct Tagged {
    /// The ticket a tag names.
    found: Found,
    /// A ticket number of a lost state, which a new ticket takes.
    lost: Option<String>,
    /// A ticket this state resolved and removed at retention, which a new ticket follows.
    removed: Option<String>,
}

fn by_sender_and_subject(
    rules: &Rules,
    store: &Store,
    mail: &Mail,
    now: SystemTime,
) -> Result<Found, StoreError> {
    let Some(rec) = subject_key(mail)
        .map(|k| store.by_subject(&k))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    let window =
        time::Duration::try_from(rules.threading.subject_window).unwrap_or(time::Duration::WEEK);
    let recent = when::parse(&rec.at).is_some_and(|at| OffsetDateTime::from(now) - at <= window);
    if !recent {
        return Ok(None);
    }
    Ok(store
        .ticket(&rec.ticket)?
        .map(|t| (t, JoinedBy::SenderSubject)))
}

/// The ticket the message joins, as the store has it, or a new one: under the id of a
/// lost state the subject named, else the next number.
pub(super) fn open_or_join(store: &Store, case: &super::Case) -> Result<Ticket, StoreError> {
    let (ev, rules) = (&case.ev, case.rules);
    if let Some(id) = &ev.plan.ticket {
        return Ok(store
            .ticket(id)?
            .expect("decide joins only tickets the store returned"));
    }
    let id = match &ev.plan.reopens {
        Some(id) => id.clone(),
        None => format!(
            "{}-{}",
            rules.company.ticket_prefix,
            store.next_ticket_number()?
        ),
    };
    // The customer is who the From says (what mail clients show and DMARC protects),
    // not the envelope sender.
    let mut t = Ticket::new(
        id,
        crate::decide::writer(&ev.mail),
        ev.mail.subject.clone(),
        case.queue.clone(),
        ev.class.language.clone(),
        case.at.clone(),
    );
    t.customer_name = ev.mail.from.as_ref().and_then(|a| a.name.clone());
    // The address the customer wrote to: every later mail to them comes from it.
    t.mailbox = case.inc.mailbox.key.clone();
    t.id_secret = secret()?;
    Ok(t)
}

/// 16 random bytes as hex, from the kernel.
fn secret() -> Result<String, StoreError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| StoreError::Sled(e.into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
