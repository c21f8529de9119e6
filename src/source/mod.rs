//! Source: IMAP in, the first stage of the flow. It yields the messages of one watched
//! folder and applies the marks it is handed; what happens to a message is not its
//! business (the per-mailbox runner, [`crate::runtime::runner`], calls the pipeline).
//! [`session`] logs in (TLS by default, plaintext only when configured) and SELECTs the
//! folder (or EXAMINEs it, read-only, for `preview`); [`caps`] turns what the server
//! offers into the mailbox's mode (push or poll, MOVE or COPY, marks on the server or in
//! the state only); [`fetch`] lists and fetches what
//! is above a UID, finds what a folder met for the first time holds (its last UID, what
//! arrived since a time, what is unseen) and reads its last messages; [`idle`] waits
//! for new mail (NOOP polling right after mail, then IDLE re-issued on a timer, or
//! polling every `poll_interval` without IDLE); [`marks`] stores keywords and moves. Every command runs under a timeout, because a
//! server that accepts and never answers must not stall the mailbox.

mod caps;
mod fetch;
mod idle;
mod marks;
mod oauth;
mod session;

use std::time::Duration;

use tokio_rustls::TlsConnector;

use crate::config::{ImapOptions, Login, Server};

pub use caps::{Marks, Mode, Moves, Offered, Wait};
pub use fetch::{messages_present, Fetched, FETCH_BATCH};
pub use marks::MARK_BATCH;
pub use session::Connection;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("login as {0} refused: {1}")]
    Login(String, String),
    #[error("password: {0}")]
    Secret(String),
    #[error("OAuth token: {0}")]
    Token(crate::auth::AuthError),
    #[error("IMAP: {0}")]
    Protocol(#[from] async_imap::error::Error),
    #[error("server closed the connection")]
    Closed,
}

impl ImapError {
    /// Whether reconnecting may help. Refused credentials, a missing password and a TLS
    /// set-up that fails stay so until an operator changes the settings.
    pub fn is_temporary(&self) -> bool {
        match self {
            ImapError::Token(e) => e.is_temporary(),
            e => !matches!(
                e,
                ImapError::Login(..) | ImapError::Secret(..) | ImapError::Tls(..)
            ),
        }
    }
}

/// Runs one IMAP command, or anything else that speaks to the server, within `d`.
async fn timed<T, E: Into<ImapError>>(
    what: &'static str,
    d: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(what, d)),
    }
}

/// Everything one mailbox task needs to reach its folder.
#[derive(Clone)]
pub struct Source {
    /// Mailbox name in rules.toml.
    pub name: String,
    pub server: Server,
    pub login: Login,
    pub options: ImapOptions,
    pub tls: Option<TlsConnector>,
    /// The folder watched: the login's folder, or its Sent folder in observe mode.
    pub folder: String,
    /// Observe mode: the folder holds the queue's own replies; they update tickets and
    /// are never triaged or marked.
    pub observe: bool,
}

impl Source {
    /// The source reading `login`'s own folder on its IMAP server (`[imap]`, or the
    /// mailbox's own); `observe` for a folder whose mail is only looked at (see
    /// [`Source::observe`]).
    pub fn new(
        name: String,
        settings: &crate::config::Settings,
        login: Login,
        tls: &crate::tls::ImapTls,
        observe: bool,
    ) -> Source {
        Source {
            server: settings.imap_of(&name),
            tls: tls.of(&name),
            name,
            folder: login.folder.clone(),
            login,
            options: settings.imap_options.clone(),
            observe,
        }
    }

    /// The key of this folder's checkpoint in the store (also its name in `status`).
    pub fn checkpoint_key(&self) -> String {
        if self.observe {
            format!("{}#{}", self.name, self.folder)
        } else {
            self.name.clone()
        }
    }
}
