//! The control socket: `mailtriage tickets` reads and changes tickets, and `mailtriage
//! status` reads the daemon's state ([`crate::runtime::status`]), while the daemon
//! runs. sled allows one process per state directory, so the CLI asks the daemon over a
//! Unix socket in the state directory (mode 0600: tickets hold customers' data). When
//! no daemon answers, the CLI opens the state itself and calls the same [`handle`].
//! One JSON request per line, one JSON response per line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::record::Store;
use crate::ticket::Ticket;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    List,
    Show {
        id: String,
    },
    Promise {
        id: String,
        text: String,
        by: String,
    },
    /// The running daemon's state: mailboxes, outbox, rules version, last errors. Only
    /// the daemon answers it.
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub tickets: Vec<Ticket>,
    /// Which of `tickets` were opened in shadow mode.
    #[serde(default)]
    pub shadow: Vec<String>,
    /// For `show` of a shadow ticket: the mails shadow mode decided and did not send.
    #[serde(default)]
    pub would_send: Vec<crate::ticket::OutMail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::runtime::status::StatusReport>,
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
    if matches!(req, Request::Show { .. }) && !r.shadow.is_empty() {
        r.would_send = store
            .shadow_mails()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| r.shadow.contains(&m.ticket))
            .collect();
    }
    r
}

fn handle_tickets(store: &Store, req: &Request) -> Response {
    let fail = |e: String| Response {
        ok: false,
        error: Some(e),
        ..Default::default()
    };
    match req {
        Request::List => match store.tickets() {
            Ok(mut t) => {
                t.sort_by(|a, b| a.created.cmp(&b.created));
                Response {
                    ok: true,
                    error: None,
                    tickets: t,
                    ..Default::default()
                }
            }
            Err(e) => fail(e.to_string()),
        },
        Request::Show { id } => match store.ticket(id) {
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
        Request::Status => fail("no mailtriage daemon is running on this state directory".into()),
    }
}

/// Serves the socket until `stop`. A stale socket file from a crashed run is replaced.
pub async fn serve(
    path: PathBuf,
    store: Store,
    board: std::sync::Arc<crate::runtime::status::Board>,
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
                    status: Some(board.snapshot(store.outbox_len(), store.shadow_len())),
                    ..Default::default()
                },
                Ok(req) => tokio::task::spawn_blocking(move || handle(&store, &req))
                    .await
                    .unwrap_or_default(),
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
