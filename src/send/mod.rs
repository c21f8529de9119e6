//! Act, part two: the outbox sender. It hands durable outbox entries to a transport
//! (SMTP on a few kept connections, or .eml files for offline triage) and removes each
//! one only when the server accepted it. A refusal for good moves the mail to the dead
//! letters with the server's words; anything else is retried with backoff. Entries are
//! handed over in the order they were decided, several at once but never two of one
//! ticket (so a ticket's mails arrive in order), and only after the state that produced
//! them is on disk. Which entries may be in flight at once is [`ready`]'s decision; it
//! keeps them among the first few of the outbox, which is what lets the next start name
//! the mails whose fate a crash left unknown ([`Store::outbox_uncertain`]).

pub mod settle;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncFileTransport, AsyncTransport, Tokio1Executor};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::config::{Server, TlsMode};
use crate::record::{OutMail, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("SMTP settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SmtpError {
    /// Whether trying again may help: settings stay wrong until an operator fixes them.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, SmtpError::Settings(_))
    }
}

/// Where outgoing mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<SmtpOut>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// The SMTP side. It keeps its connections open between mails, so that a mail costs one
/// SMTP transaction rather than a TCP connect, a TLS handshake, two EHLOs and a QUIT.
/// The sender uses up to `connections` of them at once; lettre 0.11 has no PIPELINING,
/// so parallel connections are how several mails overlap their round trips.
///
/// The connection is made here, not by lettre's transport or pool, for one reason: lettre
/// 0.11 leaves Nagle's algorithm on, and it writes the message and the final `.` in two
/// writes, so every mail waits for the server's delayed ACK (40 ms on Linux; lettre PR
/// #1159, not released yet). With TCP_NODELAY a mail takes about 2 ms on loopback. The
/// SMTP dialogue itself stays lettre's (`AsyncSmtpConnection`).
pub struct SmtpOut {
    server: Server,
    hello: ClientId,
    /// For STARTTLS (lettre upgrades the stream).
    starttls: Option<TlsParameters>,
    /// For implicit TLS (the stream is TLS before the greeting).
    implicit: Option<TlsConnector>,
    credentials: Option<Credentials>,
    timeout: Duration,
    /// How many mails the sender hands over at once, each on its own connection.
    connections: usize,
    /// Every mail also goes to this address, as one more envelope recipient only.
    archive: Option<Address>,
    /// Open connections not in use, each with when it last did something; the most
    /// recently used is last.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

/// How long an unused connection is kept: under the 5 minutes RFC 5321 (4.5.3.2.7) asks
/// servers to wait at least, so it is normally still alive when the next mail comes.
const SMTP_IDLE: Duration = Duration::from_secs(240);
/// A connection idle for longer than this is checked with NOOP before a mail goes on it
/// (the server may have closed it); within a burst the check is skipped.
const SMTP_CHECK_AFTER: Duration = Duration::from_secs(1);

/// A TLS stream made by us (implicit TLS), in the shape lettre takes.
#[derive(Debug)]
struct ImplicitTls(TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// How one delivery attempt ended.
#[derive(Debug)]
pub enum Delivery {
    Accepted,
    /// The server refused for good (5xx) or the mail cannot be sent as it is.
    Refused(String),
    /// Try again later.
    Failed(String),
}

impl Transport {
    pub fn files(dir: &std::path::Path) -> Transport {
        Transport::Files(AsyncFileTransport::new(dir))
    }

    /// SMTP as `s` says; `archive`, when given, gets a copy of every mail (see
    /// [`crate::config::Archive`]).
    pub fn smtp(s: &Server, archive: Option<&str>) -> Result<Transport, SmtpError> {
        let archive = archive
            .map(|a| {
                a.parse::<Address>()
                    .map_err(|e| SmtpError::Settings(format!("archive address {a:?}: {e}")))
            })
            .transpose()?;
        let (starttls, implicit) = match s.tls {
            TlsMode::Starttls => {
                let mut b = TlsParameters::builder(s.server_name().to_string());
                if let Some(ca) = &s.ca_file {
                    let bad =
                        |e: String| SmtpError::Settings(format!("ca_file {}: {e}", ca.display()));
                    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
                    b = b.add_root_certificate(cert);
                }
                let params = b.build().map_err(|e| SmtpError::Settings(e.to_string()))?;
                (Some(params), None)
            }
            TlsMode::Implicit => {
                let c = crate::tls::connector(s).map_err(|e| SmtpError::Settings(e.to_string()))?;
                ServerName::try_from(s.server_name().to_string()).map_err(|e| {
                    SmtpError::Settings(format!("server name {:?}: {e}", s.server_name()))
                })?;
                (None, Some(c))
            }
            TlsMode::Plaintext => (None, None),
        };
        let credentials = match &s.user {
            Some(user) => {
                let pw = s
                    .password()
                    .ok_or_else(|| {
                        SmtpError::Settings(
                            "smtp.user is set but neither password_file nor password_env".into(),
                        )
                    })?
                    .read()
                    .map_err(SmtpError::Settings)?;
                Some(Credentials::new(user.clone(), pw))
            }
            None => None,
        };
        Ok(Transport::Smtp(Arc::new(SmtpOut {
            server: s.clone(),
            hello: ClientId::default(),
            starttls,
            implicit,
            credentials,
            timeout: s.timeout,
            connections: s.connections(),
            archive,
            idle: std::sync::Mutex::new(Vec::new()),
        })))
    }

    /// How many outbox entries may be handed over at once.
    pub fn connections(&self) -> usize {
        match self {
            Transport::Smtp(out) => out.connections,
            // Offline triage writes files; order on disk is all that matters there.
            Transport::Files(_) => 1,
        }
    }

    pub async fn deliver(&self, m: &OutMail) -> Delivery {
        let from = match &m.envelope_from {
            Some(f) => match f.parse::<Address>() {
                Ok(a) => Some(a),
                Err(e) => return Delivery::Refused(format!("envelope sender {f:?}: {e}")),
            },
            None => None,
        };
        let to: Result<Vec<Address>, _> = m.to.iter().map(|t| t.parse::<Address>()).collect();
        let mut to = match to {
            Ok(t) => t,
            Err(e) => return Delivery::Refused(format!("recipient: {e}")),
        };
        // The archive copy is an envelope recipient only (a Bcc in no header): the bytes
        // sent are the stored ones, and the server accepts the mail for all recipients
        // at once, so the archive holds it if and only if it was accepted.
        if let Transport::Smtp(out) = self {
            if let Some(a) = out.archive.as_ref().filter(|a| !to.contains(a)) {
                to.push(a.clone());
            }
        }
        let envelope = match Envelope::new(from, to) {
            Ok(e) => e,
            Err(e) => return Delivery::Refused(format!("envelope: {e}")),
        };
        match self {
            Transport::Smtp(out) => out.send(&envelope, &m.raw).await,
            Transport::Files(t) => match t.send_raw(&envelope, &m.raw).await {
                Ok(_) => Delivery::Accepted,
                Err(e) => Delivery::Failed(e.to_string()),
            },
        }
    }
}

impl SmtpOut {
    /// A new connection: TCP with TCP_NODELAY, TLS as configured, EHLO, AUTH when configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, String> {
        let s = &self.server;
        let tcp = TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", s.host, s.port))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            Some(tls) => {
                let name = ServerName::try_from(s.server_name().to_string())
                    .map_err(|e| format!("server name {:?}: {e}", s.server_name()))?;
                let tls = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::new(ImplicitTls(tls))
            }
            None => Box::new(tcp),
        };
        let mut c = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(params) = &self.starttls {
            c.starttls(params.clone(), &self.hello)
                .await
                .map_err(|e| format!("STARTTLS: {e}"))?;
        }
        if let Some(creds) = &self.credentials {
            c.auth(&[Mechanism::Plain, Mechanism::Login], creds)
                .await
                .map_err(|e| format!("AUTH: {e}"))?;
        }
        tracing::info!(server = %format!("{}:{}", s.host, s.port), "SMTP connection opened.");
        Ok(c)
    }

    /// Sends one mail on a kept connection not in use (or a new one) and keeps the
    /// connection for the next mail when the exchange went well. The sender hands over
    /// at most `connections` mails at once, so no more connections than that are made.
    async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Delivery {
        let kept = self.idle.lock().expect("idle connections").pop();
        // lettre bounds no command with a timeout (lettre#1027): bound the whole exchange.
        // When it runs out, the connection is dropped with the future, so no reply is left
        // unread on it for the next mail to take as its own.
        let limit = self.timeout * 2;
        let attempt = tokio::time::timeout(limit, async {
            let mut conn = match kept {
                Some((mut c, last)) => {
                    let idle = last.elapsed();
                    if idle >= SMTP_IDLE {
                        c.abort().await;
                        None
                    } else if idle >= SMTP_CHECK_AFTER && !c.test_connected().await {
                        None
                    } else {
                        Some(c)
                    }
                }
                None => None,
            };
            if conn.is_none() {
                conn = Some(self.connect().await.map_err(Delivery::Failed)?);
            }
            let mut conn = conn.expect("a connection was just made");
            match conn.send(envelope, raw).await {
                // lettre quits a connection on any error: only a good one is kept.
                Ok(_) => Ok(conn),
                Err(e) if e.is_permanent() => Err(Delivery::Refused(e.to_string())),
                Err(e) => Err(Delivery::Failed(e.to_string())),
            }
        })
        .await;
        match attempt {
            Ok(Ok(conn)) => {
                self.idle
                    .lock()
                    .expect("idle connections")
                    .push((conn, Instant::now()));
                Delivery::Accepted
            }
            Ok(Err(d)) => d,
            Err(_) => Delivery::Failed(format!("no answer from the SMTP server within {limit:?}")),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub sent: usize,
    pub refused: usize,
    /// Entries left for a later attempt.
    pub left: usize,
}

/// Which outbox entries may be handed to SMTP now. `pending` lists, in outbox order,
/// each entry not yet removed for good as (ticket, already handed over). An entry may
/// start when it is among the first `window` of them, is not handed over yet, and no
/// earlier entry of its ticket is still pending: a ticket's mails (a forward, then the
/// follow-up's forward) arrive in the order they were decided. Keeping everything in
/// flight among the first `window` entries is what bounds the mails a crash can leave
/// uncertain to the first `window` entries of the outbox on disk.
pub fn ready<T: PartialEq>(pending: &[(T, bool)], window: usize) -> Vec<usize> {
    let head = &pending[..pending.len().min(window)];
    head.iter()
        .enumerate()
        .filter(|(i, (ticket, started))| {
            !started && !head[..*i].iter().any(|(earlier, _)| earlier == ticket)
        })
        .map(|(i, _)| i)
        .collect()
}

/// One outbox entry of a drain.
struct Pending {
    key: u64,
    mail: Arc<OutMail>,
    started: bool,
}

/// Sends everything in the outbox once: several entries at once (see [`ready`]), each
/// removed when the server accepted it. Stops handing over new entries at the first
/// transient failure (the server is likely down for all of them), lets the ones in
/// flight finish, and reports what is left.
pub async fn drain(store: &Store, transport: &Transport) -> Result<Drained, SmtpError> {
    let entries = store.outbox()?;
    if entries.is_empty() {
        return Ok(Drained::default());
    }
    let window = transport.connections();
    store.outbox_sending_starts(window)?;
    // Only what is on disk is sent: a crash must never leave a sent mail whose decision
    // was not recorded, or the message would be triaged and sent again. The same flush
    // makes the end of any clean-stop note durable before a mail can be in flight.
    store.flush_async().await?;
    let mut pending: VecDeque<Pending> = entries
        .into_iter()
        .map(|(key, m)| Pending {
            key,
            mail: Arc::new(m),
            started: false,
        })
        .collect();
    let mut running = JoinSet::new();
    let mut in_flight: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut failed = false;
    let mut d = Drained::default();
    loop {
        if !failed {
            let view: Vec<(&str, bool)> = pending
                .iter()
                .take(window)
                .map(|p| (p.mail.ticket.as_str(), p.started))
                .collect();
            for i in ready(&view, window) {
                let p = &mut pending[i];
                p.started = true;
                let (t, m) = (transport.clone(), p.mail.clone());
                let task = running.spawn(async move { t.deliver(&m).await });
                in_flight.insert(task.id(), p.key);
            }
        }
        let Some(first) = running.join_next_with_id().await else {
            break;
        };
        // Answers that came in together share one flush.
        let mut answers = vec![first];
        while let Some(r) = running.try_join_next_with_id() {
            answers.push(r);
        }
        let mut finished = Vec::new();
        for answer in answers {
            let (key, delivery) = match answer {
                Ok((id, delivery)) => (in_flight.remove(&id), delivery),
                Err(e) => (
                    in_flight.remove(&e.id()),
                    Delivery::Failed(format!("sending task failed: {e}")),
                ),
            };
            let Some(key) = key else { continue };
            let m = pending
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.mail.clone())
                .expect("a mail in flight is pending");
            match delivery {
                Delivery::Accepted => {
                    store.outbox_done(key)?;
                    finished.push((key, Some(m)));
                }
                Delivery::Refused(why) => {
                    store.outbox_dead(key, &why)?;
                    d.refused += 1;
                    tracing::error!(ticket = %m.ticket, message_id = %m.message_id, to = ?m.to, reason = %why, "Mail refused for good; kept in dead letters.");
                    finished.push((key, None));
                }
                Delivery::Failed(why) => {
                    tracing::warn!(ticket = %m.ticket, message_id = %m.message_id, reason = %why, "Delivery failed; will retry.");
                    failed = true;
                }
            }
        }
        // Written at once: until the removal is on disk a crash sends the mail again, and
        // its place among the first `window` entries is not given to the next one before.
        store.flush_async().await?;
        for (key, accepted) in finished {
            pending.retain(|p| p.key != key);
            if let Some(m) = accepted {
                d.sent += 1;
                tracing::info!(ticket = %m.ticket, message_id = %m.message_id, kind = ?m.kind, to = ?m.to, "Mail accepted.");
            }
        }
    }
    d.left = pending.len();
    Ok(d)
}
/// The sender task: the only one that drains the outbox while the daemon runs (two
/// drainers could send one entry twice). It drains on every wake-up and on a timer,
/// backs off while the server fails, and on `stop` drains once more, bounded by
/// `final_drain`, so mails decided just before a stop go out now.
pub async fn run(
    store: Store,
    transport: Transport,
    wake: Arc<Notify>,
    stop: CancellationToken,
    final_drain: Duration,
) {
    // A drain cut short by an error drops the mails it had in flight, whose answers are
    // then unknown: after that, no stop of this run is called clean.
    let mut clean = true;
    let mut backoff = Duration::from_secs(1);
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    const IDLE_RESCAN: Duration = Duration::from_secs(30);
    loop {
        let wait = match drain(&store, &transport).await {
            Ok(d) if d.left == 0 => {
                backoff = Duration::from_secs(1);
                IDLE_RESCAN
            }
            Ok(_) => {
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
            Err(e) => {
                clean = false;
                tracing::error!(error = %e, "Outbox cannot be read; will retry.");
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified(), if wait == IDLE_RESCAN => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    match tokio::time::timeout(final_drain, drain(&store, &transport)).await {
        Ok(Ok(d)) => {
            if d.left > 0 {
                tracing::warn!(
                    left = d.left,
                    "Outbox not empty at stop; it is sent at the next start."
                );
            }
            // Every mail handed over got its answer: the next start has nothing to look up.
            if clean {
                if let Err(e) = store.outbox_stopped_clean().await {
                    tracing::warn!(error = %e, "Cannot note the clean stop; the next start looks up the first mails of the outbox.");
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "Last outbox drain failed; the outbox is kept."),
        // Dropping the drain dropped the mails in flight: their answers are unknown, and
        // the next start looks them up.
        Err(_) => {
            tracing::warn!("Last outbox drain took too long; the rest is sent at the next start.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ready;

    fn pending<'a>(entries: &[(&'a str, bool)]) -> Vec<(&'a str, bool)> {
        entries.to_vec()
    }

    #[test]
    fn first_entries_of_different_tickets_start_together() {
        let p = pending(&[
            ("T-1", false),
            ("T-2", false),
            ("T-3", false),
            ("T-4", false),
        ]);
        assert_eq!(ready(&p, 3), vec![0, 1, 2]);
        assert_eq!(ready(&p, 1), vec![0]);
    }

    #[test]
    fn a_ticket_waits_for_its_earlier_mail() {
        // T-1's second mail waits while its first is in flight, and keeps its place:
        // T-3 is beyond the window and waits too.
        let p = pending(&[
            ("T-1", true),
            ("T-1", false),
            ("T-2", false),
            ("T-3", false),
        ]);
        assert_eq!(ready(&p, 3), vec![2]);
        // Also when the earlier mail has not started either.
        let p = pending(&[("T-1", false), ("T-1", false), ("T-2", false)]);
        assert_eq!(ready(&p, 3), vec![0, 2]);
    }

    #[test]
    fn nothing_beyond_the_window_starts_even_when_the_head_is_busy() {
        let p = pending(&[("T-1", true), ("T-2", true), ("T-3", true), ("T-4", false)]);
        assert!(ready(&p, 3).is_empty());
        assert_eq!(ready(&p, 4), vec![3]);
    }

    #[test]
    fn in_flight_entries_are_not_started_again_and_empty_is_empty() {
        let p = pending(&[("T-1", true), ("T-2", false)]);
        assert_eq!(ready(&p, 16), vec![1]);
        assert!(ready::<&str>(&[], 3).is_empty());
    }
}
