//! Act, part two: the outbox sender. It hands durable outbox entries to a transport
//! (SMTP on one kept connection, or .eml files for offline triage) and removes each one only
//! when the server accepted it. A refusal for good moves the mail to the dead letters
//! with the server's words; anything else is retried with backoff. Entries are sent in
//! the order they were decided, and only after the state that produced them is on disk.

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
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::config::{Server, TlsMode};
use crate::store::{OutMail, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("SMTP settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where outgoing mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<SmtpOut>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// The SMTP side. It keeps one connection open between mails, so that a mail costs one
/// SMTP transaction rather than a TCP connect, a TLS handshake, two EHLOs and a QUIT.
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
    /// The open connection and when it last did something.
    conn: Mutex<Option<(AsyncSmtpConnection, Instant)>>,
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

    pub fn smtp(s: &Server) -> Result<Transport, SmtpError> {
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
                let c = crate::imap::tls_connector(s)
                    .map_err(|e| SmtpError::Settings(e.to_string()))?;
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
            conn: Mutex::new(None),
        })))
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
        let to = match to {
            Ok(t) => t,
            Err(e) => return Delivery::Refused(format!("recipient: {e}")),
        };
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
        Ok(c)
    }

    /// Sends one mail on the kept connection (or a new one) and keeps the connection for
    /// the next mail when the exchange went well.
    async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Delivery {
        let mut slot = self.conn.lock().await;
        let kept = slot.take();
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
                *slot = Some((conn, Instant::now()));
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

/// Sends everything in the outbox once, in order; stops at the first transient failure
/// (the server is likely down for all of them) and reports what is left.
pub async fn drain(store: &Store, transport: &Transport) -> Result<Drained, SmtpError> {
    // Only what is on disk is sent: a crash must never leave a sent mail whose decision
    // was not recorded, or the message would be triaged and sent again.
    store.flush_async().await?;
    let entries = store.outbox()?;
    let mut d = Drained::default();
    let total = entries.len();
    for (i, (key, m)) in entries.into_iter().enumerate() {
        store.outbox_sending(key).await?;
        match transport.deliver(&m).await {
            Delivery::Accepted => {
                // Written at once: until then a crash sends this mail a second time.
                store.outbox_done(key)?;
                store.flush_async().await?;
                d.sent += 1;
                tracing::info!(ticket = %m.ticket, message_id = %m.message_id, kind = ?m.kind, to = ?m.to, "Mail accepted.");
            }
            Delivery::Refused(why) => {
                store.outbox_dead(key, &why)?;
                d.refused += 1;
                tracing::error!(ticket = %m.ticket, message_id = %m.message_id, to = ?m.to, reason = %why, "Mail refused for good; kept in dead letters.");
            }
            Delivery::Failed(why) => {
                tracing::warn!(ticket = %m.ticket, message_id = %m.message_id, reason = %why, "Delivery failed; will retry.");
                d.left = total - i;
                break;
            }
        }
    }
    store.flush_async().await?;
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
    match store.outbox_uncertain() {
        Ok(Some((_, m))) => tracing::warn!(
            uncertain = %m.message_id,
            ticket = %m.ticket,
            to = ?m.to,
            "Mail was being handed to SMTP when the last run stopped; it is sent again with the same Message-ID, and a receiver may see it twice."
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "Outbox cannot be read at start."),
    }
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
        Ok(Ok(d)) if d.left > 0 => tracing::warn!(
            left = d.left,
            "Outbox not empty at stop; it is sent at the next start."
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "Last outbox drain failed; the outbox is kept."),
        Err(_) => {
            tracing::warn!("Last outbox drain took too long; the rest is sent at the next start.")
        }
        _ => {}
    }
}
