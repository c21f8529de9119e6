//! Act, part two: the outbox sender. It hands durable outbox entries to a transport
//! (SMTP through lettre, or .eml files for offline triage) and removes each one only
//! when the server accepted it. A refusal for good moves the mail to the dead letters
//! with the server's words; anything else is retried with backoff. Entries are sent in
//! the order they were decided, and only after the state that produced them is on disk.

use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::Notify;
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
    Smtp {
        inner: AsyncSmtpTransport<Tokio1Executor>,
        timeout: Duration,
    },
    Files(AsyncFileTransport<Tokio1Executor>),
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
        let tls_params = || -> Result<TlsParameters, SmtpError> {
            let mut b = TlsParameters::builder(s.server_name().to_string());
            if let Some(ca) = &s.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| SmtpError::Settings(format!("ca_file {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| SmtpError::Settings(format!("ca_file {}: {e}", ca.display())))?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| SmtpError::Settings(e.to_string()))
        };
        let tls = match s.tls {
            TlsMode::Implicit => Tls::Wrapper(tls_params()?),
            TlsMode::Starttls => Tls::Required(tls_params()?),
            TlsMode::Plaintext => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
            .port(s.port)
            .tls(tls)
            .timeout(Some(s.timeout));
        if let Some(user) = &s.user {
            let pw = s
                .password()
                .ok_or_else(|| {
                    SmtpError::Settings(
                        "smtp.user is set but neither password_file nor password_env".into(),
                    )
                })?
                .read()
                .map_err(SmtpError::Settings)?;
            b = b.credentials(Credentials::new(user.clone(), pw));
        }
        Ok(Transport::Smtp {
            inner: b.build(),
            timeout: s.timeout,
        })
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
            Transport::Smtp { inner, timeout } => {
                // lettre's own timeout covers only the connect (lettre#1027): bound the
                // whole exchange here.
                match tokio::time::timeout(*timeout * 2, inner.send_raw(&envelope, &m.raw)).await {
                    Ok(Ok(_)) => Delivery::Accepted,
                    Ok(Err(e)) if e.is_permanent() => Delivery::Refused(e.to_string()),
                    Ok(Err(e)) => Delivery::Failed(e.to_string()),
                    Err(_) => Delivery::Failed(format!(
                        "no answer from the SMTP server within {:?}",
                        *timeout * 2
                    )),
                }
            }
            Transport::Files(t) => match t.send_raw(&envelope, &m.raw).await {
                Ok(_) => Delivery::Accepted,
                Err(e) => Delivery::Failed(e.to_string()),
            },
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
