//! Send, the OAuth2 login on an SMTP connection: `AUTH XOAUTH2` (or OAUTHBEARER when
//! the login says so) with a token from [`crate::auth`], in place of PLAIN/LOGIN. The
//! exchange is written here on lettre's connection: lettre's own XOAUTH2 drops the
//! server's error challenge (what it says about the token) and has no OAUTHBEARER. A
//! refused token is renewed once and tried again on the same connection.

use base64::Engine;
use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::SmtpError;
use crate::auth::{self, sasl};
use crate::config::{OAuth, SaslMechanism, Server};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Logs `user` in on `c` with a token of `oauth`.
pub(super) async fn authenticate(
    c: &mut AsyncSmtpConnection,
    user: &str,
    s: &Server,
    oauth: &OAuth,
) -> Result<(), SmtpError> {
    let mechanism = oauth.mechanism.unwrap_or(SaslMechanism::Xoauth2);
    let mut renew = false;
    loop {
        let token = auth::access_token(oauth, s.timeout, renew)
            .await
            .map_err(SmtpError::Token)?;
        let first = sasl::initial_response(mechanism, user, &token, &s.host, s.port);
        let command = format!("AUTH {} {}\r\n", mechanism.name(), B64.encode(first));
        let words = match c.command(command).await {
            Ok(r) if r.has_code(334) => {
                // The error challenge: answered, the server ends the exchange with its
                // failure.
                let said = r.first_line().unwrap_or_default();
                let said = sasl::challenge_words(&B64.decode(said.trim()).unwrap_or_default());
                let abort = format!("{}\r\n", B64.encode(sasl::abort_response(mechanism)));
                let end = match c.command(abort).await {
                    Ok(r) => format!("{} {}", r.code(), r.first_line().unwrap_or_default()),
                    Err(e) if answered(&e) => e.to_string(),
                    Err(e) => return Err(SmtpError::Auth(e)),
                };
                format!("{end} ({said})")
            }
            Ok(_) => return Ok(()),
            Err(e) if answered(&e) => e.to_string(),
            Err(e) => return Err(SmtpError::Auth(e)),
        };
        let words = format!("{} as {user}: {words}", mechanism.name());
        if renew {
            return Err(SmtpError::TokenRefused(words));
        }
        tracing::info!(user = %user, refused = %words, "OAuth token refused by the SMTP server; renewing it and trying once more.");
        renew = true;
    }
}

/// Whether `e` is the server's answer (a 4xx or 5xx), not a broken connection.
fn answered(e: &lettre::transport::smtp::Error) -> bool {
    e.is_permanent() || e.is_transient()
}
