//! The command line's words: every line the offline commands print for a person (JSON
//! is serde's). The only place in `cli` that reads a report's outcome fields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use crate::config::{Mailbox, Rules, Settings};
use crate::pipeline::{Action, Report};
use crate::record::Adoption;
use crate::runtime::control::{HeldMail, OutboxEntry, Response};
use crate::runtime::status::{MailboxStatus, StatusReport};
use crate::send::{Drained, SmtpState, SmtpStatus};
use crate::ticket::{MailKind, Ticket};
use crate::when::human;

use super::preview::Previewed;

/// `explain`'s text: the message, how it was classified, what would be done.
pub(super) fn explain_text(rules: &Rules, r: &Report) -> String {
    let mb = &rules.mailboxes[&r.mailbox];
    let mut s = String::new();
    message_lines(&mut s, mb, r);
    classification_lines(&mut s, r);
    decision_lines(&mut s, mb, r);
    s
}

fn message_lines(s: &mut String, mb: &Mailbox, r: &Report) {
    let id = r
        .message_id
        .as_deref()
        .map(|i| format!("<{i}>"))
        .unwrap_or_else(|| "(no Message-ID)".into());
    let _ = writeln!(s, "mailbox:   {} ({})", r.mailbox, mb.address);
    let _ = writeln!(s, "message:   {}", printable(&id));
    let from = r.from.as_deref().unwrap_or("(none)");
    let _ = writeln!(s, "from:      {}", printable(from));
    let _ = writeln!(
        s,
        "subject:   {}",
        printable(r.subject.as_deref().unwrap_or(""))
    );
    let _ = writeln!(s, "language:  {}", r.language.as_deref().unwrap_or("-"));
}

fn classification_lines(s: &mut String, r: &Report) {
    match &r.category {
        Some(c) => {
            let score = r
                .scores
                .iter()
                .find(|x| &x.category == c)
                .map(|x| x.score)
                .unwrap_or(0);
            let _ = writeln!(s, "category:  {c} (score {score})");
        }
        None => {
            let _ = writeln!(s, "category:  none (no rule fired)");
        }
    }
    for other in r.scores.iter().skip(1) {
        let _ = writeln!(
            s,
            "           also {} (score {})",
            other.category, other.score
        );
    }
    for f in &r.rules {
        let _ = writeln!(
            s,
            "rule:      {} [{} +{}] matched {}: {:?}",
            f.rule, f.category, f.priority, f.field, f.matched
        );
    }
}

fn decision_lines(s: &mut String, mb: &Mailbox, r: &Report) {
    let ticket = match (&r.ticket, r.new_ticket) {
        (Some(t), _) => t.as_str(),
        (None, true) => "new",
        (None, false) => "-",
    };
    let _ = writeln!(s, "action:    {}", action_text(mb, r));
    let _ = writeln!(s, "why:       {}", r.reason);
    let _ = writeln!(s, "ticket:    {ticket}");
    let ack = &r.acknowledgement;
    if ack.send {
        let _ = writeln!(s, "ack:       yes, to {}", ack.to.as_deref().unwrap_or(""));
    } else {
        let _ = writeln!(
            s,
            "ack:       no: {} ({})",
            ack.reason.as_deref().unwrap_or(""),
            ack.suppressed.map_or("-", |s| s.code())
        );
    }
    if let Some(due) = &r.answer_by {
        let clock = match due.hours.as_str() {
            "" => ", around the clock".to_string(),
            hours => format!(" of working time, {hours}"),
        };
        let _ = writeln!(s, "answer by: {} (within {}{clock})", due.words, due.within);
    }
    for m in &r.mails {
        let _ = writeln!(s, "mail:      {} -> {}", m.kind, m.to.join(", "));
    }
}

fn action_text(mb: &Mailbox, r: &Report) -> String {
    let queue = r.queue.as_deref().unwrap_or("");
    match r.action {
        Action::Forward => format!(
            "forward to {queue} ({})",
            r.queue_address.as_deref().unwrap_or("")
        ),
        Action::Keep => format!("keep in {}, owned by {queue}", mb.address),
        other => other.to_string(),
    }
}

/// `preview`'s text: each message with where it is, then what `explain` says of it.
pub(super) fn preview_text(rules: &Rules, mailbox: &str, previewed: &[Previewed]) -> String {
    let mut s = String::new();
    for p in previewed {
        let arrived = p.arrived.as_deref().map(human).unwrap_or_default();
        let _ = writeln!(s, "----- uid {}, arrived {arrived} -----", p.uid);
        if p.marked {
            let _ = writeln!(
                s,
                "marked:    {} on the server: triaged by an earlier run, the daemon leaves it",
                p.keywords.join(" ")
            );
        }
        s.push_str(&explain_text(rules, &p.report));
    }
    let _ = writeln!(
        s,
        "{} message(s) of {mailbox} previewed; nothing was marked, sent or recorded",
        previewed.len()
    );
    s
}

/// `triage`'s line for one message: what it was, what was done, whom it was sent to.
pub(super) fn summary_line(name: &str, r: &Report) -> String {
    format!(
        "{name}: reached {}{}: {}{}",
        r.mailbox,
        fired_rules(r),
        outcome(r),
        acknowledgement(r)
    )
}

fn outcome(r: &Report) -> String {
    let ticket = r.ticket.as_deref();
    match r.action {
        Action::Forward => routed(r, "forwarded to", r.queue_address.as_deref()),
        Action::Keep => routed(r, "kept for", r.queue.as_deref()),
        Action::Leave => format!(
            "{} -> left in place, not a customer request",
            r.category.as_deref().unwrap_or("")
        ),
        Action::Robot => format!(
            "automatic mail -> left in place, no ticket: {}",
            r.acknowledgement.reason.as_deref().unwrap_or_default()
        ),
        Action::Ignore => format!("ignored: {}", r.reason),
        Action::Duplicate => format!(
            "already triaged{}",
            ticket.map(|t| format!(" as {t}")).unwrap_or_default()
        ),
        Action::Quarantine => format!("QUARANTINED: {}", r.reason),
    }
}

/// A request that went to a queue (`forwarded to support@...`, `kept for support`).
fn routed(r: &Report, how: &str, whom: Option<&str>) -> String {
    format!(
        "{} -> {how} {} as {}{}",
        request(r),
        whom.unwrap_or(""),
        r.ticket.as_deref().unwrap_or(""),
        red_flags(r)
    )
}

fn request(r: &Report) -> String {
    match (&r.joined_by, &r.category) {
        (Some(_), _) => format!("follow-up of {}", r.ticket.as_deref().unwrap_or("a ticket")),
        (None, Some(c)) => format!("{c} request"),
        (None, None) => "unrecognised request".to_string(),
    }
}

fn red_flags(r: &Report) -> String {
    if r.flags.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = r.flags.iter().map(|f| f.rule.as_str()).collect();
    let copy = r
        .mails
        .iter()
        .find(|m| m.kind == MailKind::Escalation)
        .map(|m| format!(", copy to {}", m.to.join(", ")))
        .unwrap_or_default();
    format!("; RED FLAGS: {}{copy}", names.join(", "))
}

fn acknowledgement(r: &Report) -> String {
    let ack = &r.acknowledgement;
    let to = ack.to.as_deref().unwrap_or("");
    if ack.send && r.mails.iter().any(|m| m.kind == MailKind::Added) {
        format!("; 'added to your request' to {to}")
    } else if ack.send {
        format!(
            "; acknowledgement to {to} ({})",
            r.language.as_deref().unwrap_or("")
        )
    } else if matches!(r.action, Action::Forward | Action::Keep) {
        format!(
            "; no acknowledgement: {}",
            ack.reason.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    }
}

/// The rules that fired, each named once, in order of name.
fn fired_rules(r: &Report) -> String {
    let names: BTreeSet<&str> = r.rules.iter().map(|f| f.rule.as_str()).collect();
    if names.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = names.into_iter().collect();
    format!(" [rules: {}]", names.join(", "))
}

/// `triage`'s last line: how many messages met each action, and the mails written.
pub(super) fn triage_totals(
    messages: usize,
    counts: &BTreeMap<&'static str, usize>,
    drained: &Drained,
    outbox: &Path,
) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let unwritten = drained.refused + drained.left;
    let unwritten = if unwritten > 0 {
        format!(" ({unwritten} not written)")
    } else {
        String::new()
    };
    format!(
        "{messages} message(s): {}. {} mail(s) written to {}{unwritten}",
        parts.join(", "),
        drained.sent,
        outbox.display()
    )
}

/// `check`'s line for a rules file without errors.
pub(super) fn rules_ok(path: &Path, r: &Rules) -> String {
    format!(
        "{}: OK ({} rules, {} categories, {} queues, {} mailboxes, {} tests passed, languages: {})",
        path.display(),
        r.rules.len(),
        r.categories.len(),
        r.queues.len(),
        r.mailboxes.len(),
        r.tests.len(),
        r.templates.languages.join(", ")
    )
}

/// `check`'s line for a settings file without errors.
pub(super) fn settings_ok(s: &Settings) -> String {
    format!(
        "{}: OK ({} mailbox logins, state in {})",
        s.path.display(),
        s.mailboxes.len(),
        s.state_dir.display()
    )
}

/// `status`'s text: the daemon, its rules, the outbox, then one line per mailbox.
pub(super) fn status_text(st: &StatusReport) -> String {
    let mut s = String::new();
    let shadow = if st.shadow { " (shadow mode)" } else { "" };
    let _ = writeln!(s, "daemon:    running since {}{shadow}", human(&st.started));
    let _ = writeln!(
        s,
        "rules:     {} version {} (loaded {}; reloads: {} ok, {} refused)",
        st.rules_file,
        st.rules_version,
        human(&st.rules_loaded),
        st.reloads_ok,
        st.reloads_failed
    );
    if let Some(why) = &st.rules_refused {
        let _ = writeln!(
            s,
            "rules:     the file on disk is REFUSED, the rules above stay: {why}"
        );
    }
    let _ = writeln!(s, "outbox:    {} mail(s) waiting", st.outbox);
    if let Some(smtp) = &st.smtp {
        let _ = writeln!(s, "smtp:      {}", smtp_status(smtp));
    }
    if st.dead_letters > 0 {
        let _ = writeln!(
            s,
            "refused:   {} mail(s) refused for good by the SMTP server (dead letters): see mailtriage outbox list",
            st.dead_letters
        );
    }
    if st.quarantined > 0 {
        let _ = writeln!(
            s,
            "quarantined: {} message(s) kept for an operator, marked $Quarantined where they lie; the last:",
            st.quarantined
        );
    }
    for q in &st.last_quarantined {
        let place = match (q.uid_validity, q.uid) {
            (Some(v), Some(u)) => format!("{} UID {u} (UIDVALIDITY {v})", q.mailbox),
            _ => q.mailbox.clone(),
        };
        let _ = writeln!(
            s,
            "  {}  {place}  {}: {}",
            human(&q.at),
            printable(&q.message),
            printable(&q.reason)
        );
    }
    if st.shadow_mails > 0 {
        let _ = writeln!(
            s,
            "shadow:    {} mail(s) decided and not sent",
            st.shadow_mails
        );
    }
    for (name, m) in &st.mailboxes {
        let _ = writeln!(s, "mailbox:   {name:<20} {}", mailbox_status(m));
    }
    for e in &st.last_errors {
        let _ = writeln!(s, "error:     {e}");
    }
    s
}

/// The SMTP side: its state and since when, the server's last answer, the counts.
fn smtp_status(m: &SmtpStatus) -> String {
    let state = match m.state {
        SmtpState::Unused => "no mail sent yet".to_string(),
        _ => format!(
            "{:<10} since {}",
            m.state,
            m.since.as_deref().map(human).unwrap_or_default()
        ),
    };
    format!(
        "{state}; sent {}, deferred {}, refused {}{}",
        m.sent,
        m.deferred,
        m.refused,
        m.last_answer
            .as_deref()
            .map(|a| format!("; last answer: {a}"))
            .unwrap_or_default()
    )
}

fn mailbox_status(m: &MailboxStatus) -> String {
    format!(
        "{:<10} since {}; last sync {}{}{}",
        format!("{:?}", m.state).to_lowercase(),
        human(&m.since),
        m.last_sync
            .as_deref()
            .map(human)
            .unwrap_or_else(|| "never".into()),
        if m.shadow { " [shadow]" } else { "" },
        m.last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    ) + &m
        .problem
        .as_deref()
        .map(|p| format!("; UNHEALTHY: {p}"))
        .unwrap_or_default()
        + &m.adoption.as_ref().map(adoption_text).unwrap_or_default()
        + &m.mode.map(|mode| format!("; {mode}")).unwrap_or_default()
}

/// How a folder was taken on: when, by which `start`, what was left alone.
fn adoption_text(a: &Adoption) -> String {
    let met = match a.resynced_from {
        Some(old) => format!(
            "new UIDVALIDITY ({old} -> {}) {}",
            a.uid_validity,
            human(&a.at)
        ),
        None => format!("first seen {}", human(&a.at)),
    };
    let still = if a.done { "" } else { ", still taking them" };
    format!(
        "; {met} with start \"{}\": {} older message(s) left alone, {} taken{still}",
        a.start, a.skipped, a.taken
    )
}

/// `tickets list`: one line per ticket, then what was left out and how to see it.
pub(super) fn ticket_list(resp: &Response, all: bool) -> String {
    let mut s = String::new();
    for t in &resp.tickets {
        let _ = writeln!(s, "{}", ticket_line(t, resp.shadow.contains(&t.id)));
    }
    match (resp.tickets.is_empty(), all) {
        (true, true) => s.push_str("no tickets\n"),
        (true, false) => s.push_str("no open tickets (--all lists resolved ones too)\n"),
        _ => {}
    }
    if resp.more > 0 {
        let _ = writeln!(s, "{}", not_listed(resp.more));
    }
    s
}

/// What a listing left out, and how to see it.
pub(super) fn not_listed(more: usize) -> String {
    format!(
        "... {more} older ticket(s) not listed: --limit N lists up to {}, `tickets show ID` any one",
        crate::runtime::control::MAX_LISTED
    )
}

fn ticket_line(t: &Ticket, shadow: bool) -> String {
    let state = if t.resolved.is_some() {
        "resolved"
    } else if t.answered_at.is_some() {
        "answered"
    } else if t.escalated_at.is_some() {
        "escalated"
    } else {
        "open"
    };
    let mut flags = if t.flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", t.flags.join(", "))
    };
    if shadow {
        flags.push_str(" [shadow]");
    }
    format!(
        "{:<8} {:<10} {:<9} {}  {}  {}{flags}",
        t.id,
        t.queue,
        state,
        human(&t.created),
        printable(&t.customer),
        printable(&t.subject)
    )
}

/// `tickets show` (and `tickets promise`, `tickets resolve`): each ticket with its whole timeline, and
/// its mails that no server accepted; `mails` prints them whole. Without the rules the
/// queues are named by their keys.
pub(super) fn ticket_details(rules: Option<&Rules>, resp: &Response, mails: bool) -> String {
    let mut s = String::new();
    for t in &resp.tickets {
        ticket_head(&mut s, t);
        let shadow = resp.shadow.contains(&t.id);
        if shadow {
            let _ = writeln!(
                s,
                "mode:      shadow: decided and recorded, nothing sent, nothing marked"
            );
        }
        let held = resp.held.iter().filter(|h| h.mail.ticket == t.id);
        for h in held.clone() {
            held_line(&mut s, h);
        }
        ticket_body(&mut s, rules, t, shadow);
        if mails {
            for h in held {
                held_mail(&mut s, h);
            }
        }
    }
    s
}

fn ticket_head(s: &mut String, t: &Ticket) {
    let name = t
        .customer_name
        .as_deref()
        .map(|n| format!("{n} "))
        .unwrap_or_default();
    let _ = writeln!(s, "ticket:    {}", t.id);
    let _ = writeln!(
        s,
        "customer:  {}<{}>",
        printable(&name),
        printable(&t.customer)
    );
    let _ = writeln!(s, "subject:   {}", printable(&t.subject));
    let state = match &t.resolved {
        Some(r) => format!(
            "resolved {} by {} ({})",
            human(&r.at),
            printable(&r.by),
            r.how
        ),
        None => "open".into(),
    };
    let _ = writeln!(s, "state:     {state}");
}

/// One mail no server accepted: "not sent:  forward -> billing@...".
fn held_line(s: &mut String, h: &HeldMail) {
    let why = h
        .reason
        .as_deref()
        .map(|r| format!(": {}", printable(r)))
        .unwrap_or_default();
    let label = format!("{}:", h.held);
    let _ = writeln!(
        s,
        "{label:<10} {} -> {}{why}",
        h.mail.kind.as_str(),
        h.mail.to.join(", ")
    );
}

/// One held mail whole, between marker lines, with whatever a terminal would act on
/// escaped (it is a stranger's text).
fn held_mail(s: &mut String, h: &HeldMail) {
    let _ = writeln!(
        s,
        "----- {} {} -> {} ({}) -----",
        h.mail.ticket,
        h.mail.kind.as_str(),
        h.mail.to.join(", "),
        h.held
    );
    let text = h.text.as_deref().unwrap_or_default();
    for line in text.lines() {
        let _ = writeln!(s, "{}", printable(line));
    }
}

/// `outbox list`: one line per mail not sent.
pub(super) fn outbox_list(entries: &[OutboxEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(s, "{}", outbox_line(e));
    }
    if entries.is_empty() {
        let _ = writeln!(s, "nothing waiting, nothing refused");
    }
    s
}

/// "57  refused  T-1001  forward -> techdesk@example.test: 550 ...".
fn outbox_line(e: &OutboxEntry) -> String {
    let why = e
        .reason
        .as_deref()
        .map(|r| format!(": {}", printable(r)))
        .unwrap_or_default();
    format!(
        "{:<6} {:<8} {:<8} {} -> {}{why}",
        e.id,
        e.state,
        e.ticket,
        e.kind.as_str(),
        e.to.join(", ")
    )
}

/// `outbox retry`: where the mail went, and when it is sent.
pub(super) fn outbox_retried(id: u64, entries: &[OutboxEntry], daemon: bool) -> String {
    let Some(e) = entries.first() else {
        return String::new();
    };
    let when = if daemon {
        "the daemon sends it now"
    } else {
        "it is sent when the daemon runs"
    };
    format!(
        "mail {id} ({} of {} to {}) is back in the outbox as {}; {when}
",
        e.kind.as_str(),
        e.ticket,
        e.to.join(", "),
        e.id
    )
}

/// `outbox drop`: what the mail was.
pub(super) fn outbox_dropped(entries: &[OutboxEntry]) -> String {
    let Some(e) = entries.first() else {
        return String::new();
    };
    format!(
        "dropped mail {} for good: {} of {} to {} ({}), refused with: {}
",
        e.id,
        e.kind.as_str(),
        e.ticket,
        e.to.join(", "),
        e.message_id,
        printable(e.reason.as_deref().unwrap_or(""))
    )
}

/// `tickets --json`: each ticket as stored, with `shadow`, and for `show` its mails no
/// server accepted.
pub(super) fn tickets_json(resp: &Response) -> serde_json::Value {
    let tickets = resp.tickets.iter().map(|t| {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("shadow".into(), resp.shadow.contains(&t.id).into());
            let state = if t.is_open() { "open" } else { "resolved" };
            o.insert("state".into(), state.into());
            let held: Vec<&HeldMail> = resp.held.iter().filter(|h| h.mail.ticket == t.id).collect();
            if !held.is_empty() {
                o.insert(
                    "held".into(),
                    serde_json::to_value(held).unwrap_or_default(),
                );
            }
        }
        v
    });
    serde_json::Value::Array(tickets.collect())
}

/// `text` with control characters (terminal escapes, a carriage return that rewrites a
/// line) and bidirectional overrides (which reorder what is shown) written as `\u{..}`:
/// mail text is a stranger's, and a terminal must show it, not obey it.
pub(super) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| match unsafe_char(c) {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect::<String>()
        .into()
}

fn ticket_body(s: &mut String, rules: Option<&Rules>, t: &Ticket, shadow: bool) {
    let _ = writeln!(
        s,
        "queue:     {} (since {}); hops: {}",
        t.queue,
        human(&t.owner_since),
        t.hops.join(" -> ")
    );
    if !t.flags.is_empty() {
        let _ = writeln!(s, "flags:     {}", t.flags.join(", "));
    }
    if let Some(i) = &t.incident {
        let _ = writeln!(s, "incident:  {i}");
    }
    for p in &t.promises {
        let (text, by) = (printable(&p.text), printable(&p.by));
        let _ = writeln!(s, "promise:   {text} ({by}, {})", human(&p.at));
    }
    let _ = writeln!(s, "timeline:");
    for e in &t.history {
        let _ = writeln!(
            s,
            "  {}  {}",
            human(&e.at),
            printable(&crate::words::operator_history(rules, e, shadow))
        );
    }
}
