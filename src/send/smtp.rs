//! Send, the SMTP side: kept connections (TCP without delay, TLS as configured, EHLO,
//! AUTH: a password, or an OAuth2 token by [`super::oauth`]) and one mail handed over on one of them, under a time limit.

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
use lettre::Address;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{SmtpError, SmtpHealth};
use crate::config::{Server, TlsMode};

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
    timeout: Duration,
    /// How many mails the sender hands over at once, each on its own connection.
    connections: usize,
    /// Every mail also goes to this address, as one more envelope recipient only.
    archive: Option<Address>,
    /// Open connections not in use, each with when it last did something; the most
    /// recently used is last.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    health: Arc<SmtpHealth>,
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

impl SmtpOut {
    /// The SMTP side as `s` says; `archive`, when given, gets a copy of every mail.
    pub(super) fn new(
        s: &Server,
        archive: Option<&str>,
        health: Arc<SmtpHealth>,
    ) -> Result<SmtpOut, SmtpError> {
        let archive = archive
            .map(|a| {
                a.parse::<Address>()
                    .map_err(|e| SmtpError::Archive(a.to_string(), e))
            })
            .transpose()?;
        let (starttls, implicit) = match s.tls {
            TlsMode::Starttls => (Some(starttls_parameters(s)?), None),
            TlsMode::Implicit => {
                let c = crate::tls::connector(s)?;
                ServerName::try_from(s.server_name().to_string())
                    .map_err(|e| SmtpError::ServerNameSetting(s.server_name().to_string(), e))?;
                (None, Some(c))
            }
            TlsMode::Plaintext => (None, None),
        };
        // At start a secret that cannot be read is a settings error: the daemon says so
        // and does not start.
        credentials(s).map_err(SmtpError::Settings)?;
        Ok(SmtpOut {
            server: s.clone(),
            hello: ClientId::default(),
            starttls,
            implicit,
            timeout: s.timeout,
            connections: s.connections(),
            archive,
            idle: std::sync::Mutex::new(Vec::new()),
            health,
        })
    }

    /// How many mails the sender hands over at once.
    pub(super) fn connections(&self) -> usize {
        self.connections
    }

    /// The address that gets a copy of every mail.
    pub(super) fn archive(&self) -> Option<&Address> {
        self.archive.as_ref()
    }

    /// A new connection: TCP with TCP_NODELAY, TLS as configured, EHLO, AUTH when configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let s = &self.server;
        let stream = self.stream().await?;
        let mut c = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(SmtpError::Greeting)?;
        if let Some(params) = &self.starttls {
            c.starttls(params.clone(), &self.hello)
                .await
                .map_err(SmtpError::Starttls)?;
        }
        // Read for every connection, so a corrected password file needs no restart. A
        // secret that cannot be read now is temporary: the mails wait for the fix.
        let creds = credentials(s).map_err(SmtpError::Secret)?;
        if let Some(creds) = &creds {
            c.auth(&[Mechanism::Plain, Mechanism::Login], creds)
                .await
                .map_err(SmtpError::Auth)?;
        }
        if let (Some(user), Some(oauth), None) = (&s.user, &s.oauth, s.password()) {
            super::oauth::authenticate(&mut c, user, s, oauth).await?;
        }
        tracing::info!(
            server = %format!("{}:{}", s.host, s.port),
            user = s.user.as_deref().unwrap_or(""),
            "SMTP connection opened."
        );
        Ok(c)
    }

    /// The TCP stream, without delay on small writes, in TLS from the start for implicit TLS.
    async fn stream(&self) -> Result<Box<dyn AsyncTokioStream>, SmtpError> {
        let s = &self.server;
        let tcp = TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|e| SmtpError::Connect(format!("{}:{}", s.host, s.port), e))?;
        tcp.set_nodelay(true).map_err(SmtpError::NoDelay)?;
        let Some(tls) = &self.implicit else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(s.server_name().to_string())
            .map_err(|e| SmtpError::ServerName(s.server_name().to_string(), e))?;
        let tls = tls.connect(name, tcp).await.map_err(SmtpError::Handshake)?;
        Ok(Box::new(ImplicitTls(tls)))
    }

    /// Connects, says EHLO, STARTTLS and AUTH as configured, and QUITs: what `check
    /// --connect` tries. Nothing is sent and the health is left alone.
    pub(super) async fn try_login(&self) -> Result<(), SmtpError> {
        let limit = self.timeout * 2;
        let mut c = tokio::time::timeout(limit, self.connect())
            .await
            .map_err(|_| SmtpError::Timeout(limit))??;
        let _ = tokio::time::timeout(self.timeout, c.quit()).await;
        Ok(())
    }

    /// Closes the kept connections not in use (QUIT), so that the next mails go on new
    /// sessions.
    pub(super) async fn close_idle(&self) {
        let kept = std::mem::take(&mut *self.idle.lock().expect("idle connections"));
        for (mut c, _) in kept {
            let _ = tokio::time::timeout(self.timeout, c.quit()).await;
        }
    }

    /// Sends one mail (see [`SmtpOut::exchange`]) and notes the outcome in the health.
    pub(super) async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), SmtpError> {
        let outcome = self.exchange(envelope, raw).await;
        self.health.note(&outcome);
        outcome.map(|_| ())
    }

    /// Sends one mail on a kept connection not in use (or a new one) and keeps the
    /// connection for the next mail when the exchange went well; returns the server's
    /// answer. The sender hands over at most `connections` mails at once, so no more
    /// connections than that are made.
    async fn exchange(&self, envelope: &Envelope, raw: &[u8]) -> Result<String, SmtpError> {
        let kept = self.idle.lock().expect("idle connections").pop();
        // lettre bounds no command with a timeout (lettre#1027): bound the whole exchange.
        // When it runs out, the connection is dropped with the future, so no reply is left
        // unread on it for the next mail to take as its own.
        let limit = self.timeout * 2;
        let attempt = tokio::time::timeout(limit, async {
            let mut conn = match self.reuse(kept).await {
                Some(c) => c,
                None => self.connect().await?,
            };
            // lettre quits a connection on any error: only a good one is kept.
            let answer = conn.send(envelope, raw).await.map_err(SmtpError::Answer)?;
            Ok::<_, SmtpError>((conn, answer))
        })
        .await
        .map_err(|_| SmtpError::Timeout(limit))?;
        let (conn, answer) = attempt?;
        self.idle
            .lock()
            .expect("idle connections")
            .push((conn, Instant::now()));
        let text = answer.first_line().unwrap_or_default();
        Ok(format!("{} {text}", answer.code()))
    }

    /// A kept connection, unless it idled too long or no longer answers.
    async fn reuse(
        &self,
        kept: Option<(AsyncSmtpConnection, Instant)>,
    ) -> Option<AsyncSmtpConnection> {
        let (mut c, last) = kept?;
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
}

/// lettre's TLS parameters for STARTTLS: the public roots, plus `ca_file` when given.
fn starttls_parameters(s: &Server) -> Result<TlsParameters, SmtpError> {
    let mut b = TlsParameters::builder(s.server_name().to_string());
    if let Some(ca) = &s.ca_file {
        let bad = |why: String| SmtpError::CaFile {
            path: ca.clone(),
            why,
        };
        let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(SmtpError::TlsParameters)
}

/// The login for AUTH PLAIN/LOGIN, when `smtp.user` is set with a password (not an
/// `oauth` table); the password is read now. The error is
/// the secret's problem in words: a settings error at start, a temporary one later.
fn credentials(s: &Server) -> Result<Option<Credentials>, String> {
    let Some(user) = &s.user else {
        return Ok(None);
    };
    if s.password().is_none() && s.oauth.is_some() {
        return Ok(None);
    }
    let pw = s
        .password()
        .ok_or("smtp.user is set but neither password_file nor password_env")?
        .read()?;
    Ok(Some(Credentials::new(user.clone(), pw)))
}
