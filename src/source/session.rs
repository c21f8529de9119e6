//! Source, the session: TCP (with keepalive), TLS as configured (implicit, STARTTLS or,
//! when configured, none), the greeting, LOGIN (or an OAuth2 AUTHENTICATE,
//! [`super::oauth`]) and SELECT of the watched folder (or EXAMINE, read-only, for a look
//! that must change nothing), with what the server offers ([`super::caps`]: CAPABILITY
//! after login, PERMANENTFLAGS from the SELECT). What
//! follows on the session is [`super::fetch`], [`super::idle`] and [`super::marks`].

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::caps::{Mode, Offered};
use super::{timed, ImapError, Source};
use crate::config::{Server, TlsMode};

type Stream = Either<TlsStream<TcpStream>, TcpStream>;
pub(super) type Client = async_imap::Client<Stream>;
pub(super) type Session = async_imap::Session<Stream>;

/// A logged-in session with the watched folder selected.
pub struct Connection {
    pub(super) session: Session,
    /// Every command's time limit.
    pub(super) timeout: Duration,
    /// How long one IDLE lasts before it is re-issued.
    pub(super) idle_refresh: Duration,
    pub(super) uid_validity: u32,
    pub(super) exists: u32,
    /// The UID the next message will get, when the server said (it must, RFC 3501).
    pub(super) uid_next: Option<u32>,
    /// What the server offered this session.
    pub(super) offered: Offered,
    /// How this session waits, moves and marks: from `offered` and the login's settings.
    pub(super) mode: Mode,
}

impl Connection {
    /// Connects, logs in and SELECTs the source's folder.
    pub async fn open(source: &Source) -> Result<Connection, ImapError> {
        Connection::opened(source, false, &mut Vec::new()).await
    }

    /// Connects, logs in and EXAMINEs the source's folder: read-only, so that nothing
    /// done on this connection can change a flag (`mailtriage preview`).
    pub async fn examine(source: &Source) -> Result<Connection, ImapError> {
        Connection::opened(source, true, &mut Vec::new()).await
    }

    /// As [`Connection::examine`], noting in `tried` each step as it is begun ("TCP
    /// connect", "TLS handshake", "greeting", "STARTTLS", "LOGIN", "CAPABILITY",
    /// "EXAMINE"): on failure the last one noted is the one that failed, the others
    /// worked (`mailtriage login-test`).
    pub async fn examine_noting(
        source: &Source,
        tried: &mut Vec<&'static str>,
    ) -> Result<Connection, ImapError> {
        Connection::opened(source, true, tried).await
    }

    async fn opened(
        source: &Source,
        read_only: bool,
        tried: &mut Vec<&'static str>,
    ) -> Result<Connection, ImapError> {
        let timeout = source.server.timeout;
        let mut session = connect(source, tried).await?;
        // Asked after login: a server may offer more (or less) to an authenticated session.
        tried.push("CAPABILITY");
        let caps = timed("CAPABILITY", timeout, session.capabilities()).await?;
        let mb = if read_only {
            tried.push("EXAMINE");
            timed("EXAMINE", timeout, session.examine(&source.folder)).await?
        } else {
            tried.push("SELECT");
            timed("SELECT", timeout, session.select(&source.folder)).await?
        };
        let offered = Offered {
            idle: caps.has_str("IDLE"),
            moves: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
            keywords: (!read_only).then(|| keywords_kept(&mb.permanent_flags)),
        };
        let mode = Mode::of(&offered, source.login.idle(), source.login.poll_interval());
        Ok(Connection {
            session,
            timeout,
            idle_refresh: source.options.idle_refresh,
            uid_validity: mb.uid_validity.unwrap_or(0),
            exists: mb.exists,
            uid_next: mb.uid_next,
            offered,
            mode,
        })
    }

    /// What the server offered this session.
    pub fn offered(&self) -> Offered {
        self.offered
    }

    /// How this session waits for mail, moves and marks.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The folder's UIDVALIDITY (0 when the server gave none).
    pub fn uid_validity(&self) -> u32 {
        self.uid_validity
    }

    /// How many messages the folder held when it was selected.
    pub fn exists(&self) -> u32 {
        self.exists
    }

    /// LOGOUT, within the time limit; the connection closes either way.
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.session.logout()).await;
    }
}

/// A session logged in on the source's server, TLS as configured; each step noted in
/// `tried` as it begins.
async fn connect(source: &Source, tried: &mut Vec<&'static str>) -> Result<Session, ImapError> {
    let s = &source.server;
    let t = s.timeout;
    tried.push("TCP connect");
    let tcp = tcp(s).await?;
    let client = match s.tls {
        TlsMode::Implicit => {
            tried.push("TLS handshake");
            let stream = handshake(source, tcp).await?;
            let mut c = async_imap::Client::new(Either::Left(stream));
            tried.push("greeting");
            greeting(&mut c, t).await?;
            c
        }
        TlsMode::Starttls => {
            let mut c = async_imap::Client::new(tcp);
            tried.push("greeting");
            greeting(&mut c, t).await?;
            tried.push("STARTTLS");
            timed("STARTTLS", t, c.run_command_and_check_ok("STARTTLS", None)).await?;
            tried.push("TLS handshake");
            let stream = handshake(source, c.into_inner()).await?;
            // No second greeting after STARTTLS.
            async_imap::Client::new(Either::Left(stream))
        }
        TlsMode::Plaintext => {
            let mut c = async_imap::Client::new(Either::Right(tcp));
            tried.push("greeting");
            greeting(&mut c, t).await?;
            c
        }
    };
    tried.push(match oauth_of(source) {
        Some(_) => "AUTHENTICATE",
        None => "LOGIN",
    });
    login(client, source).await
}

/// The OAuth2 table a mailbox logs in with: its own `oauth`, else `[imap.oauth]`, and
/// only when it names no password.
fn oauth_of(source: &Source) -> Option<&crate::config::OAuth> {
    let login = &source.login;
    if login.password().is_some() {
        return None;
    }
    login.oauth.as_ref().or(source.server.oauth.as_ref())
}

/// The TCP connection, without delay on small writes and with keepalive.
async fn tcp(s: &Server) -> Result<TcpStream, ImapError> {
    let addr = format!("{}:{}", s.host, s.port);
    let tcp = timed("connect", s.timeout, async {
        TcpStream::connect(&addr)
            .await
            .map_err(|e| ImapError::Connect(addr.clone(), e))
    })
    .await?;
    let _ = tcp.set_nodelay(true);
    // A peer that vanished (NAT timeout, pulled cable) is found by the kernel within
    // minutes even while IDLE waits quietly for the refresh.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15));
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    Ok(tcp)
}

/// The TLS handshake on `tcp`, checking the server's name.
async fn handshake(source: &Source, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
    let s = &source.server;
    timed("TLS handshake", s.timeout, async {
        let tls = source
            .tls
            .clone()
            .ok_or_else(|| ImapError::Tls("no TLS settings".into()))?;
        let name = ServerName::try_from(s.server_name().to_string())
            .map_err(|e| ImapError::Tls(format!("server name {:?}: {e}", s.server_name())))?;
        tls.connect(name, tcp)
            .await
            .map_err(|e| ImapError::Tls(e.to_string()))
    })
    .await
}

async fn greeting<T>(c: &mut async_imap::Client<T>, t: Duration) -> Result<(), ImapError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match tokio::time::timeout(t, c.read_response()).await {
        Err(_) => Err(ImapError::Timeout("greeting", t)),
        Ok(Err(e)) => Err(ImapError::Protocol(e.into())),
        Ok(Ok(None)) => Err(ImapError::Closed),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

/// LOGIN with the login's password, read now so that a changed secret takes effect on
/// the next connection; without a password, the token of the mailbox's `oauth` table
/// (or of `[imap.oauth]`).
async fn login(client: Client, source: &Source) -> Result<Session, ImapError> {
    let (login, t) = (&source.login, source.server.timeout);
    if let Some(o) = oauth_of(source) {
        return super::oauth::authenticate(client, &login.user, &source.server, o).await;
    }
    let pw = login
        .password()
        .ok_or_else(|| ImapError::Secret("no password_file or password_env".into()))?
        .read()
        .map_err(ImapError::Secret)?;
    let user = login.user.clone();
    match tokio::time::timeout(t, client.login(&user, &pw)).await {
        Err(_) => Err(ImapError::Timeout("LOGIN", t)),
        Ok(Err((e, _))) => Err(ImapError::Login(user, e.to_string())),
        Ok(Ok(session)) => Ok(session),
    }
}

/// Whether new keywords are kept: `\*` among the permanent flags, or no PERMANENTFLAGS
/// at all (RFC 3501: every flag is then permanent).
fn keywords_kept(permanent: &[async_imap::types::Flag<'_>]) -> bool {
    permanent.is_empty()
        || permanent
            .iter()
            .any(|f| matches!(f, async_imap::types::Flag::MayCreate))
}
