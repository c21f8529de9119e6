//! The control socket: `mailtriage tickets` reads and changes tickets, `mailtriage
//! outbox` lists the mails not sent and sends a refused one again or drops it
//! ([`crate::runtime::refused`]), and `mailtriage status` reads the daemon's state
//! ([`crate::runtime::status`]), while the daemon runs. sled allows one process per state directory, so the CLI asks the daemon over a
//! Unix socket in the state directory (mode 0600: tickets hold customers' data). When
//! no daemon answers, the CLI opens the state itself and calls the same [`handle`].
//! One JSON request per line, one JSON response per line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Report;
use crate::record::{Listing, Store, Stored};
use crate::runtime::refused;
use crate::runtime::status::Depths;
use crate::send::Retry;
use crate::ticket::{MailKind, OutMail, Ticket};

/// The most tickets one listing holds: each is decoded whole, history and all, in the
/// daemon's memory and in its answer.
pub const MAX_LISTED: usize = 1000;

/// What `tickets list` shows when not told.
pub const DEFAULT_LISTED: usize = 100;

fn default_listed() -> usize {
    DEFAULT_LISTED
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// The newest tickets, oldest of them first (`mailtriage tickets list`).
    List {
        #[serde(default)]
        which: Listing,
        /// At most [`MAX_LISTED`], whatever is asked.
        #[serde(default = "default_listed")]
        limit: usize,
    },
    Show {
        id: String,
        /// With the held mails' whole text.
        #[serde(default)]
        mails: bool,
    },
    Promise {
        id: String,
        text: String,
        by: String,
    },
    /// Resolve a ticket (`mailtriage tickets resolve`).
    Resolve {
        id: String,
        by: String,
        #[serde(default)]
        note: String,
    },
    /// The running daemon's state: mailboxes, outbox, rules version, last errors. Only
    /// the daemon answers it.
    Status,
    /// What the daemon would do with a message, looked up in the live state (its ticket,
    /// the thread) with the rules the CLI was given: `mailtriage explain` while the
    /// daemon holds the state.
    Explain {
        mailbox: String,
        /// The rules file's path (for its error messages) and text.
        rules_file: PathBuf,
        rules: String,
        /// The message's exact bytes, base64.
        mail: String,
    },
    /// The mails not sent: waiting in the outbox, refused for good (`mailtriage outbox`).
    Outbox,
    /// A refused mail back to the outbox, to be sent again.
    Retry { id: u64 },
    /// A refused mail removed for good.
    Drop { id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub tickets: Vec<Ticket>,
    /// For `list`: the tickets that matched beyond the limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
    /// Which of `tickets` were opened in shadow mode.
    #[serde(default)]
    pub shadow: Vec<String>,
    /// For `show`: the ticket's mails not sent (yet): shadow mode's, those waiting in
    /// the outbox, those the server refused for good.
    #[serde(default)]
    pub held: Vec<HeldMail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::runtime::status::StatusReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// For `outbox`: the mails not sent; for `retry` and `drop`: the one it was about.
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
}

/// A mail not sent, as `mailtriage outbox` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Its key in the outbox or the dead letters: what `retry` and `drop` take.
    pub id: u64,
    /// Waiting, or refused for good.
    pub state: Held,
    pub ticket: String,
    pub kind: MailKind,
    pub to: Vec<String>,
    pub message_id: String,
    /// The server's refusal, for a refused mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl OutboxEntry {
    pub fn new(id: u64, state: Held, m: &OutMail, reason: Option<String>) -> OutboxEntry {
        OutboxEntry {
            id,
            state,
            ticket: m.ticket.clone(),
            kind: m.kind,
            to: m.to.clone(),
            message_id: m.message_id.clone(),
            reason,
        }
    }
}

/// Why a mail of a ticket was not sent (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "lowercase")]
pub enum Held {
    /// Decided in shadow mode: never sent.
    #[strum(to_string = "not sent")]
    NotSent,
    /// In the outbox, to be sent.
    Waiting,
    /// Refused by the server for good: in the dead letters.
    Refused,
}

/// A mail of a ticket that no server has accepted, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldMail {
    pub held: Held,
    /// The server's refusal, for a refused mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub mail: OutMail,
    /// The whole mail as it would go out, when asked for (`--mails`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Carries out one request against the store, and says which tickets are shadow ones.
pub fn handle(store: &Store, req: &Request) -> Response {
    let mut r = handle_tickets(store, req);
    r.shadow = r
        .tickets
        .iter()
        .filter(|t| store.is_shadow_ticket(&t.id).unwrap_or(false))
        .map(|t| t.id.clone())
        .collect();
    if let (Request::Show { id, mails }, true) = (req, r.ok) {
        r.held = held_mails(store, id, *mails);
    }
    r
}

/// Every mail of ticket `id` not accepted by a server: shadow, waiting, refused; with
/// their text when `text`.
fn held_mails(store: &Store, id: &str, text: bool) -> Vec<HeldMail> {
    // Heads first, and the bytes (from the spool, for a big mail) only of this ticket's
    // mails, and only when asked for.
    let held = |held, reason, s: Stored| {
        (s.mail.ticket == id).then(|| HeldMail {
            held,
            reason,
            text: text.then(|| match store.with_bytes(&s) {
                Ok(m) => String::from_utf8_lossy(&m.raw).into_owned(),
                Err(e) => format!("({e})"),
            }),
            mail: s.mail,
        })
    };
    // One entry decoded at a time: a show holds this ticket's mails, not every mail
    // the state holds back (a month of shadow mails, a queue's refused forwards).
    let shadow = store.shadow_iter().filter_map(Result::ok);
    let waiting = store.outbox_iter().filter_map(Result::ok);
    let dead = store.dead_letter_iter().filter_map(Result::ok);
    shadow
        .filter_map(|s| held(Held::NotSent, None, s))
        .chain(waiting.filter_map(|(_, s)| held(Held::Waiting, None, s)))
        .chain(dead.filter_map(|(_, why, s)| held(Held::Refused, Some(why), s)))
        .collect()
}

fn handle_tickets(store: &Store, req: &Request) -> Response {
    let fail = |e: String| Response {
        ok: false,
        error: Some(e),
        ..Default::default()
    };
    match req {
        Request::List { which, limit } => match store.listing(*which, (*limit).min(MAX_LISTED)) {
            Ok(listed) => Response {
                ok: true,
                error: None,
                tickets: listed.tickets,
                more: listed.more,
                ..Default::default()
            },
            Err(e) => fail(e.to_string()),
        },
        Request::Show { id, .. } => match store.ticket(id) {
            Ok(Some(t)) => Response {
                ok: true,
                error: None,
                tickets: vec![t],
                ..Default::default()
            },
            Ok(None) => fail(format!("no ticket {id}")),
            Err(e) => fail(e.to_string()),
        },
        Request::Promise { id, text, by } => match store.ticket(id) {
            Ok(Some(mut t)) => {
                t.promise(&crate::when::stamp(SystemTime::now()), by, text);
                match store.commit_ticket(&t, &[]).and_then(|_| store.flush()) {
                    Ok(()) => Response {
                        ok: true,
                        error: None,
                        tickets: vec![t],
                        ..Default::default()
                    },
                    Err(e) => fail(e.to_string()),
                }
            }
            Ok(None) => fail(format!("no ticket {id}")),
            Err(e) => fail(e.to_string()),
        },
        Request::Resolve { id, by, note } => match resolve(store, id, by, note) {
            Ok(t) => Response {
                ok: true,
                tickets: vec![t],
                ..Default::default()
            },
            Err(e) => fail(e),
        },
        Request::Status => fail("no mailtriage daemon is running on this state directory".into()),
        Request::Outbox | Request::Retry { .. } | Request::Drop { .. } => {
            match refused::outbox(store, req, SystemTime::now()) {
                Ok(outbox) => Response {
                    ok: true,
                    outbox,
                    ..Default::default()
                },
                Err(e) => fail(e),
            }
        }
        Request::Explain {
            mailbox,
            rules_file,
            rules,
            mail,
        } => match explain(store, mailbox, rules_file, rules, mail) {
            Ok(report) => Response {
                ok: true,
                report: Some(report),
                ..Default::default()
            },
            Err(e) => fail(e),
        },
    }
}

/// Resolves ticket `id` for an operator: it leaves the follow-up clock, and a reply of
/// the customer reopens it as one to a ticket staff resolved by mail does.
fn resolve(store: &Store, id: &str, by: &str, note: &str) -> Result<Ticket, String> {
    let Some(mut t) = store.ticket(id).map_err(|e| e.to_string())? else {
        return Err(format!("no ticket {id}"));
    };
    let at = crate::when::stamp(SystemTime::now());
    if !t.resolve(&at, by, crate::ticket::ResolvedHow::Command, note) {
        let since = t.resolved.as_ref().map(|r| r.at.as_str()).unwrap_or("");
        return Err(format!(
            "{id} is resolved already (since {})",
            crate::when::human(since)
        ));
    }
    store
        .put_ticket(&t)
        .and_then(|_| store.flush())
        .map_err(|e| e.to_string())?;
    Ok(t)
}

/// `explain` against this state: the CLI has checked the rules and the message already,
/// so an error here is one of the state's, or a file changed in between.
fn explain(
    store: &Store,
    mailbox: &str,
    rules_file: &Path,
    rules: &str,
    mail: &str,
) -> Result<Report, String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(mail)
        .map_err(|e| format!("the message is not base64: {e}"))?;
    let rules = crate::pipeline::ruletest::parse(rules_file, rules).map_err(|e| e.to_string())?;
    let mb = rules
        .mailboxes
        .get(mailbox)
        .ok_or_else(|| format!("no mailbox {mailbox:?} in {}", rules_file.display()))?;
    crate::pipeline::explain(&rules, Some(store), mb, &raw, super::now::now())
        .map_err(|e| e.to_string())
}

/// Serves the socket until `stop`. A stale socket file from a crashed run is replaced.
pub async fn serve(
    path: PathBuf,
    store: Store,
    board: Arc<crate::runtime::status::Board>,
    sender: (Arc<Notify>, Retry),
    stop: CancellationToken,
) {
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "Control socket unavailable; `mailtriage tickets` will not work while the daemon runs.");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let store = store.clone();
        let board = board.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
            else {
                return;
            };
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Status) => Response {
                    ok: true,
                    status: Some(board.snapshot(Depths::with_details(&store))),
                    ..Default::default()
                },
                Ok(req) => {
                    let retry = matches!(req, Request::Retry { .. });
                    let resp = tokio::task::spawn_blocking(move || handle(&store, &req))
                        .await
                        .unwrap_or_default();
                    // The mail is back in the outbox: it goes now, not at the next
                    // rescan, and on a new SMTP session.
                    if retry && resp.ok {
                        sender.1.asked();
                        sender.0.notify_one();
                    }
                    resp
                }
                Err(e) => Response {
                    ok: false,
                    error: Some(format!("bad request: {e}")),
                    ..Default::default()
                },
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Asks a running daemon; `None` when no daemon listens on the socket.
pub fn ask(path: &Path, req: &Request) -> Option<std::io::Result<Response>> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    Some((|| {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        s.write_all(&line)?;
        let mut resp = String::new();
        BufReader::new(&s).read_line(&mut resp)?;
        Ok(serde_json::from_str(&resp)?)
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_s_big_mails_are_shown_whole_from_the_spool_when_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = Ticket::new(
            "T-1001".into(),
            "c@example.test".into(),
            "s".into(),
            "support".into(),
            "en".into(),
            "2026-12-01T00:00:00Z".into(),
        );
        let body = "the original, line after line\r\n".repeat(2_000);
        let mail = |n: u32| OutMail {
            message_id: format!("T-1001.{n}@mailtriage.example.test"),
            kind: MailKind::Forward,
            ticket: "T-1001".into(),
            envelope_from: None,
            to: vec!["support@example.test".into()],
            identity: None,
            raw: format!("Subject: {n}\r\n\r\n{body}").into_bytes(),
        };
        store.commit_ticket(&t, &[mail(1), mail(2)]).unwrap();
        let key = store.outbox_heads().unwrap()[1].0;
        store.outbox_dead(key, "550 no such user").unwrap();
        store.shadowed().commit_ticket(&t, &[mail(3)]).unwrap();

        let show = |mails| {
            handle(
                &store,
                &Request::Show {
                    id: "T-1001".into(),
                    mails,
                },
            )
        };
        let held = show(true).held;
        let states: Vec<Held> = held.iter().map(|h| h.held).collect();
        assert_eq!(states, vec![Held::NotSent, Held::Waiting, Held::Refused]);
        for h in &held {
            let text = h.text.as_deref().unwrap();
            assert!(text.ends_with(&body), "whole: {}", text.len());
        }
        assert!(show(false).held.iter().all(|h| h.text.is_none()));
    }
}
