//! Send: SMTP out, the last stage of the flow. The outbox sender ([`sender`]) hands
//! durable outbox entries to a [`Transport`] (SMTP on a few kept connections,
//! [`smtp`], or .eml files for offline triage) and removes each one only when the
//! server accepted it. A refusal for good moves the mail to the dead letters with the
//! server's words; anything else is retried with backoff. [`settle`] decides, at start,
//! about the mails whose fate a crash left unknown.

mod health;
mod oauth;
pub mod sender;
pub mod settle;
mod smtp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::{AddressError, Envelope};
use lettre::{Address, AsyncFileTransport, AsyncTransport, Tokio1Executor};
use rustls::pki_types::InvalidDnsNameError;

use crate::config::Server;
use crate::record::StoreError;
use crate::ticket::OutMail;
use crate::tls::TlsError;

pub use health::{SmtpHealth, SmtpState, SmtpStatus};
pub use sender::{drain, ready, run, Drained, Retry, Signals};
pub use smtp::SmtpOut;

/// What lettre's SMTP client reports.
type LettreSmtp = lettre::transport::smtp::Error;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The password could not be read for a new connection; the mails wait.
    #[error("SMTP password: {0}")]
    Secret(String),
    #[error("SMTP settings: {0}")]
    Settings(String),
    #[error("SMTP settings: archive address {0:?}: {1}")]
    Archive(String, AddressError),
    #[error("SMTP settings: ca_file {}: {why}", .path.display())]
    CaFile {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("SMTP settings: {0}")]
    TlsParameters(LettreSmtp),
    #[error("SMTP settings: {0}")]
    Tls(#[from] TlsError),
    #[error("SMTP settings: server name {0:?}: {1}")]
    ServerNameSetting(String, InvalidDnsNameError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("envelope sender {0:?}: {1}")]
    Sender(String, AddressError),
    #[error("recipient: {0}")]
    Recipient(AddressError),
    #[error("envelope: {0}")]
    Envelope(lettre::error::Error),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TCP_NODELAY: {0}")]
    NoDelay(std::io::Error),
    #[error("server name {0:?}: {1}")]
    ServerName(String, InvalidDnsNameError),
    #[error("TLS: {0}")]
    Handshake(std::io::Error),
    #[error("{0}")]
    Greeting(LettreSmtp),
    #[error("STARTTLS: {0}")]
    Starttls(LettreSmtp),
    #[error("AUTH: {0}")]
    Auth(LettreSmtp),
    #[error("OAuth token: {0}")]
    Token(crate::auth::AuthError),
    #[error("AUTH {0}")]
    TokenRefused(String),
    /// The server's answer to the mail itself.
    #[error("{0}")]
    Answer(LettreSmtp),
    #[error("no answer from the SMTP server within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    File(lettre::transport::file::Error),
    #[error("sending task failed: {0}")]
    Task(tokio::task::JoinError),
}

impl SmtpError {
    /// Retried, but an operator must act before it can pass: the server refused the
    /// login, or the password cannot be read.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            SmtpError::Auth(_)
                | SmtpError::Secret(_)
                | SmtpError::Token(_)
                | SmtpError::TokenRefused(_)
        )
    }

    /// Whether trying again may help. Permanent: settings an operator must fix, and a
    /// mail the server refused for good (5xx) or that cannot be sent as it is; such a
    /// mail goes to the dead letters. Failures on the way to the mail (connecting, TLS,
    /// AUTH) are temporary whatever the server said.
    pub fn is_temporary(&self) -> bool {
        match self {
            SmtpError::Settings(_)
            | SmtpError::Archive(..)
            | SmtpError::CaFile { .. }
            | SmtpError::TlsParameters(_)
            | SmtpError::Tls(_)
            | SmtpError::ServerNameSetting(..)
            | SmtpError::Sender(..)
            | SmtpError::Recipient(_)
            | SmtpError::Envelope(_) => false,
            SmtpError::Answer(e) => !e.is_permanent(),
            SmtpError::Store(e) => e.is_temporary(),
            _ => true,
        }
    }
}

/// Where outgoing mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<Identities>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

/// The SMTP identities: `[smtp]`, and the mailboxes' own by mailbox name. They share one
/// health, so `status` and the watchdog see every login's failures.
pub struct Identities {
    global: SmtpOut,
    own: BTreeMap<String, SmtpOut>,
    health: Arc<SmtpHealth>,
}

impl Identities {
    /// The identity that sends `m`: its mailbox's own, else `[smtp]`.
    fn of(&self, m: &OutMail) -> &SmtpOut {
        m.identity
            .as_ref()
            .and_then(|name| self.own.get(name))
            .unwrap_or(&self.global)
    }

    /// The settings section of the login that sends `m`, as [`Identities::of`] picks it.
    fn section_of(&self, m: &OutMail) -> String {
        match m
            .identity
            .as_ref()
            .filter(|name| self.own.contains_key(*name))
        {
            Some(name) => format!("mailboxes.{name}.smtp"),
            None => "smtp".into(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &SmtpOut> {
        std::iter::once(&self.global).chain(self.own.values())
    }
}

impl Transport {
    pub fn files(dir: &std::path::Path) -> Transport {
        Transport::Files(AsyncFileTransport::new(dir))
    }

    /// SMTP as `s` says, and as `own` says for the mail of each mailbox named there
    /// (see [`crate::config::Settings::smtp_identities`]); `archive`, when given, gets
    /// a copy of every mail (see [`crate::config::Archive`]).
    pub fn smtp(
        s: &Server,
        own: &BTreeMap<String, Server>,
        archive: Option<&str>,
    ) -> Result<Transport, SmtpError> {
        let health = Arc::new(SmtpHealth::default());
        let out = |s: &Server| SmtpOut::new(s, archive, health.clone());
        let own = own
            .iter()
            .map(|(name, s)| Ok((name.clone(), out(s)?)))
            .collect::<Result<_, SmtpError>>()?;
        Ok(Transport::Smtp(Arc::new(Identities {
            global: out(s)?,
            own,
            health,
        })))
    }

    /// How many outbox entries may be handed over at once.
    pub fn connections(&self) -> usize {
        match self {
            Transport::Smtp(ids) => ids.global.connections(),
            // Offline triage writes files; order on disk is all that matters there.
            Transport::Files(_) => 1,
        }
    }

    /// Logs in to every SMTP identity and out again (see [`SmtpOut::try_login`]); files
    /// need nothing.
    pub async fn try_login(&self) -> Result<(), SmtpError> {
        if let Transport::Smtp(ids) = self {
            for out in ids.all() {
                out.try_login().await?;
            }
        }
        Ok(())
    }

    /// Closes the SMTP connections kept open, so that the next mails start new sessions
    /// (a server may read its tables only when a session starts).
    pub async fn close_idle(&self) {
        if let Transport::Smtp(ids) = self {
            for out in ids.all() {
                out.close_idle().await;
            }
        }
    }

    /// How the SMTP side fares; `None` for files.
    pub fn health(&self) -> Option<Arc<SmtpHealth>> {
        match self {
            Transport::Smtp(ids) => Some(ids.health.clone()),
            Transport::Files(_) => None,
        }
    }

    /// The settings section whose login sends `m`: `mailboxes.NAME.smtp` for a mailbox
    /// with an SMTP login of its own, else `smtp` (files too: they need no login). An
    /// operator told that a login failed must be told which one.
    pub fn section_of(&self, m: &OutMail) -> String {
        match self {
            Transport::Smtp(ids) => ids.section_of(m),
            Transport::Files(_) => "smtp".into(),
        }
    }

    /// Hands one mail over, through its mailbox's SMTP identity; `Ok` once the server
    /// (or the folder) has it.
    pub async fn deliver(&self, m: &OutMail) -> Result<(), SmtpError> {
        let envelope = self.envelope(m)?;
        match self {
            Transport::Smtp(ids) => ids.of(m).send(&envelope, &m.raw).await,
            Transport::Files(t) => t
                .send_raw(&envelope, &m.raw)
                .await
                .map(|_| ())
                .map_err(SmtpError::File),
        }
    }

    fn envelope(&self, m: &OutMail) -> Result<Envelope, SmtpError> {
        let from = match &m.envelope_from {
            Some(f) => Some(
                f.parse::<Address>()
                    .map_err(|e| SmtpError::Sender(f.clone(), e))?,
            ),
            None => None,
        };
        let mut to =
            m.to.iter()
                .map(|t| t.parse::<Address>())
                .collect::<Result<Vec<Address>, _>>()
                .map_err(SmtpError::Recipient)?;
        // The archive copy is an envelope recipient only (a Bcc in no header): the bytes
        // sent are the stored ones, and the server accepts the mail for all recipients
        // at once, so the archive holds it if and only if it was accepted.
        if let Transport::Smtp(ids) = self {
            if let Some(a) = ids.global.archive().filter(|a| !to.contains(a)) {
                to.push(a.clone());
            }
        }
        Envelope::new(from, to).map_err(SmtpError::Envelope)
    }
}
