//! Auth: the OAuth2 access tokens that logins present instead of a password, beside the
//! flow like [`crate::tls`]: [`crate::source`] (IMAP) and [`crate::send`] (SMTP) ask for
//! a token when they log in and put it in a SASL exchange ([`sasl`]). A token comes from
//! the login's `token_command` ([`command`]), run for every login as isync runs its
//! PassCmd, or from a grant the daemon runs itself against a token endpoint ([`grant`]);
//! a grant's token is kept in memory until shortly before it expires, and renewed
//! earlier when a server refused it.

mod command;
mod grant;
pub mod sasl;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::OAuth;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token_command: {0}")]
    Command(String),
    /// The endpoint refused the grant (4xx): the client, its secret or the refresh token
    /// is wrong or revoked.
    #[error("token endpoint {url} refused the {grant} grant: {why}")]
    Refused {
        url: String,
        grant: &'static str,
        why: String,
    },
    /// The endpoint could not be reached or failed (5xx); it may work later.
    #[error("token endpoint {url}: {why}")]
    Unreachable { url: String, why: String },
    /// A secret file of the grant could not be read, or the refresh token not written.
    #[error("{0}")]
    Secret(String),
}

impl AuthError {
    /// Whether trying again later may help without an operator.
    pub fn is_temporary(&self) -> bool {
        matches!(self, AuthError::Unreachable { .. })
    }
}

/// A grant's token and when to fetch the next one.
struct Cached {
    token: String,
    renew_at: Instant,
    /// A rotated refresh token its file could not take (see [`grant::Fresh`]).
    unsaved_refresh: Option<String>,
}

/// The tokens of the grants, by their `oauth` table (less the mechanism, so that the
/// IMAP and SMTP logins of one account share a token, and a refresh token is never
/// traded twice at once). Each table has its own lock, held while its token is fetched:
/// a slow endpoint holds up only the logins that need it.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;
static TOKENS: LazyLock<std::sync::Mutex<HashMap<OAuth, Slot>>> = LazyLock::new(Default::default);

/// An access token for a login with `oauth`: from its command (run now), or its grant's
/// (the kept one unless `renew`, or when it is due). `limit` bounds the command or the
/// HTTP exchange.
pub async fn access_token(
    oauth: &OAuth,
    limit: Duration,
    renew: bool,
) -> Result<String, AuthError> {
    if let Some(cmd) = &oauth.token_command {
        return command::run(cmd, limit).await;
    }
    let key = OAuth {
        mechanism: None,
        ..oauth.clone()
    };
    let slot = TOKENS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.clone())
        .or_default()
        .clone();
    let mut kept = slot.lock().await;
    if let Some(c) = kept.as_ref() {
        if !renew && Instant::now() < c.renew_at {
            return Ok(c.token.clone());
        }
    }
    let unsaved = kept.take().and_then(|c| c.unsaved_refresh);
    let fresh = match grant::fetch(&key, limit, unsaved.clone()).await {
        Ok(f) => f,
        Err(e) => {
            // Not the token, but the rotated refresh token is still needed.
            *kept = unsaved.map(|r| Cached {
                token: String::new(),
                renew_at: Instant::now(),
                unsaved_refresh: Some(r),
            });
            return Err(e);
        }
    };
    tracing::info!(endpoint = %key.endpoint().unwrap_or_default(), expires_in = ?fresh.expires_in, "OAuth access token fetched.");
    let token = fresh.access_token.clone();
    *kept = Some(Cached {
        token: fresh.access_token,
        renew_at: Instant::now() + renew_after(fresh.expires_in),
        unsaved_refresh: fresh.unsaved_refresh,
    });
    Ok(token)
}

/// How long a token is used: its lifetime less a margin (a fifth, at most 5 minutes),
/// so that a login never presents one that expires on the way.
fn renew_after(expires_in: Duration) -> Duration {
    let margin = (expires_in / 5).min(Duration::from_secs(300));
    expires_in - margin
}

/// Whether `token` can go into a SASL message as it is: RFC 6750's b64token characters,
/// nothing that would end a field (`^A`), a line or the command.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the access token is empty".into());
    }
    if token.len() > 16 * 1024 {
        return Err(format!("the access token is {} bytes long", token.len()));
    }
    match token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(*c)))
    {
        Some(c) => Err(format!(
            "the access token holds {c:?}, which no token has (RFC 6750 b64token)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_renewed_before_it_expires() {
        assert_eq!(
            renew_after(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(renew_after(Duration::from_secs(10)), Duration::from_secs(8));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_token_is_one_word_of_token_characters() {
        assert!(check_token("eyJhbGciOi.J9-_x~+/==").is_ok());
        assert!(check_token("").is_err());
        assert!(check_token("two words").is_err());
        assert!(check_token("a\x01auth=Bearer b").is_err());
        assert!(check_token(&"a".repeat(20_000)).is_err());
    }
}
