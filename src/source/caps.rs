//! Source, the capabilities: what the server offers (CAPABILITY, asked after login,
//! when the server lists what an authenticated session may use; PERMANENTFLAGS, from
//! SELECT) and, from it and the login's settings, the mode the mailbox runs in: wait for
//! mail by IDLE or by polling, move by MOVE or by COPY, keep the marks on the server or
//! in the state only. Nothing here is assumed: a server that does not offer IDLE is
//! never sent IDLE, one that does not offer MOVE is never sent MOVE.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the server offered this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Offered {
    /// IDLE (RFC 2177): the server tells of new mail.
    pub idle: bool,
    /// MOVE (RFC 6851).
    #[serde(rename = "move")]
    pub moves: bool,
    /// UIDPLUS (RFC 4315): UID EXPUNGE removes only the messages named.
    pub uidplus: bool,
    /// Whether new keywords ($Triaged and the others) are kept on the folder's messages:
    /// `\*` in PERMANENTFLAGS, or no PERMANENTFLAGS at all (RFC 3501: then every flag is
    /// permanent). `None` when the folder was only EXAMINEd: a read-only folder lists no
    /// permanent flags, whatever a SELECT would say.
    pub keywords: Option<bool>,
}

/// How a mailbox waits for new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// IDLE: the server tells.
    Push,
    /// No IDLE (not offered, or `idle = false`): NOOP and a search this often.
    Poll(#[serde(with = "humantime_serde")] Duration),
}

/// How a mailbox moves a message to another folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Moves {
    /// UID MOVE.
    Move,
    /// UID COPY, `\Deleted`, UID EXPUNGE of those messages alone (UIDPLUS).
    CopyExpunge,
    /// UID COPY and `\Deleted`; no expunge, since a plain EXPUNGE would also remove
    /// the messages other clients marked `\Deleted`. The original stays, struck out,
    /// until a client that expunges comes by.
    CopyDelete,
}

/// Where a mailbox keeps the marks ($Triaged, $Forwarded, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Marks {
    /// As keywords on the messages, and in the state.
    Server,
    /// In the state only: the folder does not keep new keywords. The checkpoint and the
    /// Message-ID index still keep each message from being triaged twice.
    State,
}

/// The mode one mailbox runs in, as `status` and the start's log line say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    pub wait: Wait,
    pub moves: Moves,
    pub marks: Marks,
}

impl Mode {
    /// The mode for what the server `offered`, given the login's `idle` (false forces
    /// polling) and `poll_interval`.
    pub fn of(offered: &Offered, idle: bool, poll_interval: Duration) -> Mode {
        Mode {
            wait: match offered.idle && idle {
                true => Wait::Push,
                false => Wait::Poll(poll_interval),
            },
            moves: match (offered.moves, offered.uidplus) {
                (true, _) => Moves::Move,
                (false, true) => Moves::CopyExpunge,
                (false, false) => Moves::CopyDelete,
            },
            marks: match offered.keywords {
                Some(false) => Marks::State,
                _ => Marks::Server,
            },
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Push => write!(f, "push (IDLE)"),
            Wait::Poll(d) => write!(f, "poll every {}", humantime::format_duration(*d)),
        }
    }
}

impl fmt::Display for Moves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Moves::Move => "move (MOVE)",
            Moves::CopyExpunge => "copy (COPY + UID EXPUNGE)",
            Moves::CopyDelete => "copy (COPY + \\Deleted, no expunge)",
        })
    }
}

impl fmt::Display for Marks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Marks::Server => "marks on server",
            Marks::State => "marks in state only",
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}, {}", self.wait, self.moves, self.marks)
    }
}

impl fmt::Display for Offered {
    /// What the server offered, for `login-test`: "IDLE yes, MOVE no, ...".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let keywords = match self.keywords {
            Some(k) => yes(k),
            None => "not known (read-only look)",
        };
        write!(
            f,
            "IDLE {}, MOVE {}, UIDPLUS {}, new keywords kept {keywords}",
            yes(self.idle),
            yes(self.moves),
            yes(self.uidplus)
        )
    }
}

/// One IMAP command of a mark, in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// UID STORE +FLAGS.SILENT of these keywords.
    Keywords(Vec<String>),
    /// UID MOVE to the folder.
    Move(String),
    /// UID COPY to the folder (of the messages not yet struck out).
    Copy(String),
    /// UID STORE +FLAGS.SILENT (\Deleted).
    Delete,
    /// UID EXPUNGE of the same messages.
    UidExpunge,
}

/// The commands that carry out one mark (`keywords`, and a move to `move_to`) in `mode`.
pub(super) fn steps(mode: &Mode, keywords: &[String], move_to: Option<&str>) -> Vec<Step> {
    let mut steps = Vec::new();
    if mode.marks == Marks::Server && !keywords.is_empty() {
        steps.push(Step::Keywords(keywords.to_vec()));
    }
    if let Some(folder) = move_to {
        match mode.moves {
            Moves::Move => steps.push(Step::Move(folder.into())),
            Moves::CopyExpunge => {
                steps.extend([Step::Copy(folder.into()), Step::Delete, Step::UidExpunge])
            }
            Moves::CopyDelete => steps.extend([Step::Copy(folder.into()), Step::Delete]),
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(idle: bool, moves: bool, uidplus: bool, keywords: Option<bool>) -> Offered {
        Offered {
            idle,
            moves,
            uidplus,
            keywords,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_mode_follows_what_the_server_offers_and_idle_false_forces_polling() {
        let all = offered(true, true, true, Some(true));
        let m = Mode::of(&all, true, MINUTE);
        assert_eq!(
            (m.wait, m.moves, m.marks),
            (Wait::Push, Moves::Move, Marks::Server)
        );
        assert_eq!(Mode::of(&all, false, MINUTE).wait, Wait::Poll(MINUTE));
        let bare = offered(false, false, true, Some(false));
        let m = Mode::of(&bare, true, MINUTE);
        assert_eq!(
            (m.wait, m.moves, m.marks),
            (Wait::Poll(MINUTE), Moves::CopyExpunge, Marks::State)
        );
        assert_eq!(
            Mode::of(&offered(false, false, false, None), true, MINUTE).moves,
            Moves::CopyDelete
        );
        assert_eq!(
            m.to_string(),
            "poll every 1m, copy (COPY + UID EXPUNGE), marks in state only"
        );
    }

    #[test]
    fn a_move_without_move_copies_and_expunges_only_its_own_messages() {
        let kw = vec!["$Triaged".to_string()];
        let mode = |o: Offered| Mode::of(&o, true, MINUTE);
        assert_eq!(
            steps(
                &mode(offered(true, true, true, Some(true))),
                &kw,
                Some("Done")
            ),
            vec![Step::Keywords(kw.clone()), Step::Move("Done".into())]
        );
        assert_eq!(
            steps(
                &mode(offered(true, false, true, Some(true))),
                &kw,
                Some("Done")
            ),
            vec![
                Step::Keywords(kw.clone()),
                Step::Copy("Done".into()),
                Step::Delete,
                Step::UidExpunge
            ]
        );
        // Without UIDPLUS there is no expunge of the messages named alone: never a
        // plain EXPUNGE.
        assert_eq!(
            steps(
                &mode(offered(true, false, false, Some(true))),
                &kw,
                Some("Done")
            ),
            vec![
                Step::Keywords(kw.clone()),
                Step::Copy("Done".into()),
                Step::Delete
            ]
        );
    }

    #[test]
    fn marks_in_the_state_only_send_no_keywords_and_a_mark_without_a_move_sends_nothing() {
        let kw = vec!["$Triaged".to_string(), "$Forwarded".to_string()];
        let state_only = Mode::of(&offered(true, true, true, Some(false)), true, MINUTE);
        assert_eq!(steps(&state_only, &kw, None), vec![]);
        assert_eq!(
            steps(&state_only, &kw, Some("Done")),
            vec![Step::Move("Done".into())]
        );
    }
}
