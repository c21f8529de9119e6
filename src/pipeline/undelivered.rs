//! A mail of a ticket that did not reach its recipient, however that became known: the
//! SMTP server refused it for good (the dead letters, told by
//! [`crate::runtime::refused`]) or a delivery report came back later (a robot's mail in
//! the thread, [`super::robot`]). Both end here: one line in the ticket's history and one
//! note to the queue that should know ([`decide::told_of_undelivered`]).

use std::time::SystemTime;

use crate::compose::{self, ticket_context, NoticeInput};
use crate::config::Rules;
use crate::decide;
use crate::ticket::{MailKind, OutMail, Ticket, Undelivered};

/// Records `u` in `t`'s history and gives the note to the queue told of it, if any.
/// A note that cannot be composed is logged: the history still has the line.
pub fn tell(rules: &Rules, t: &mut Ticket, u: &Undelivered, now: SystemTime) -> Option<OutMail> {
    let note = decide::told_of_undelivered(rules, t, u)
        .and_then(|(queue, address)| Some((queue, compose_note(rules, t, u, &address, now)?)));
    let (told, note) = note.unzip();
    t.undelivered(&crate::when::stamp(now), u, told);
    note
}

/// The note to `to` about `u`; `None` (logged) when it cannot be composed.
fn compose_note(
    rules: &Rules,
    t: &mut Ticket,
    u: &Undelivered,
    to: &str,
    now: SystemTime,
) -> Option<OutMail> {
    let ctx = ticket_context(rules, t, &t.language);
    let word = MailKind::Undelivered.id_word();
    let message_id = t.next_mail_id(word, &format!("mailtriage.{}", rules.company.domain));
    let input = NoticeInput {
        which: word,
        kind: MailKind::Undelivered,
        from: &rules.company.ack_from,
        to,
        envelope_from: None,
        identity: None,
        lang: &t.language,
        ctx: &ctx,
        thread: t.messages.first().map(String::as_str),
        message_id: &message_id,
        now,
    };
    compose::undelivered(rules, input, u)
        .inspect_err(|e| {
            tracing::error!(ticket = %t.id, to = %to, error = %e, "Note about an undelivered mail cannot be composed; the ticket's history has it.")
        })
        .ok()
}
