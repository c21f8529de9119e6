//! Source, the OAuth2 login: AUTHENTICATE XOAUTH2 or OAUTHBEARER with a token from
//! [`crate::auth`], in place of LOGIN, for a login with an `oauth` table. A refused
//! token is renewed once and tried again on the same connection; refused again, the
//! login fails with what the server said.

use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::session::{Client, Session};
use super::{timed, ImapError};
use crate::auth::{self, sasl};
use crate::config::{OAuth, SaslMechanism, Server};

/// Logs `user` in on `client` with a token of `oauth`.
pub(super) async fn authenticate(
    mut client: Client,
    user: &str,
    server: &Server,
    oauth: &OAuth,
) -> Result<Session, ImapError> {
    let t = server.timeout;
    let mechanism = match oauth.mechanism {
        Some(m) => m,
        None => offered(&mut client, t).await?,
    };
    let mut renew = false;
    loop {
        let token = auth::access_token(oauth, t, renew)
            .await
            .map_err(ImapError::Token)?;
        let exchange = Exchange {
            first: Some(sasl::initial_response(
                mechanism,
                user,
                &token,
                &server.host,
                server.port,
            )),
            mechanism,
            challenge: Arc::default(),
        };
        let challenge = exchange.challenge.clone();
        let attempt = tokio::time::timeout(t, client.authenticate(mechanism.name(), exchange));
        let (e, back) = match attempt.await {
            Err(_) => return Err(ImapError::Timeout("AUTHENTICATE", t)),
            Ok(Ok(session)) => return Ok(session),
            Ok(Err(failed)) => failed,
        };
        let words = refusal(
            mechanism,
            &e,
            challenge.lock().expect("challenge").as_deref(),
        );
        // Only a NO is the server refusing the token; anything else is the connection.
        if renew || !matches!(e, async_imap::error::Error::No(_)) {
            return Err(ImapError::Login(user.to_string(), words));
        }
        tracing::info!(user = %user, mechanism = mechanism.name(), refused = %words, "OAuth token refused; renewing it and trying once more.");
        client = back;
        renew = true;
    }
}

/// The mechanism the server offers: OAUTHBEARER (the standard) before XOAUTH2; neither
/// offered, XOAUTH2 is tried and the server's answer says the rest. async-imap asks for
/// CAPABILITY only on a logged-in session, so it is written here on the stream (which
/// async-imap flushes after each command) with a tag of our own (the client's are `A`
/// and a number), and the answer read through the client.
async fn offered(client: &mut Client, t: Duration) -> Result<SaslMechanism, ImapError> {
    use async_imap::imap_proto::{Capability, Response};
    let ask = async {
        let stream = client.get_mut();
        stream.write_all(b"mtcap CAPABILITY\r\n").await?;
        stream.flush().await?;
        let mut bearer = false;
        loop {
            let Some(r) = client.read_response().await? else {
                return Err(async_imap::error::Error::ConnectionLost);
            };
            match r.parsed() {
                Response::Capabilities(caps) => {
                    bearer |= caps.iter().any(|c| {
                        matches!(c, Capability::Auth(m) if m.eq_ignore_ascii_case("OAUTHBEARER"))
                    });
                }
                Response::Done { tag, .. } if tag.0 == "mtcap" => return Ok(bearer),
                _ => {}
            }
        }
    };
    Ok(match timed("CAPABILITY", t, ask).await? {
        true => SaslMechanism::Oauthbearer,
        false => SaslMechanism::Xoauth2,
    })
}

/// What the server said to a refused AUTHENTICATE: its tagged answer and the error
/// challenge it sent before.
fn refusal(
    mechanism: SaslMechanism,
    e: &async_imap::error::Error,
    challenge: Option<&[u8]>,
) -> String {
    let answer = match e {
        async_imap::error::Error::No(text) => format!("NO {}", answer_text(text)),
        async_imap::error::Error::Bad(text) => format!("BAD {}", answer_text(text)),
        other => other.to_string(),
    };
    match challenge.map(sasl::challenge_words) {
        Some(w) if !w.is_empty() => format!("{} {answer} ({w})", mechanism.name()),
        _ => format!("{} {answer}", mechanism.name()),
    }
}

/// The server's words in async-imap's rendering of a tagged answer (`code: Some(X),
/// info: Some("text")`): `[X] text`.
fn answer_text(rendered: &str) -> String {
    let inner = |key: &str| {
        let start = rendered.find(key)? + key.len();
        let rest = &rendered[start..];
        Some(rest[..rest.rfind(')')?].to_string())
    };
    let info = inner("info: Some(\"").map(|i| i.trim_end_matches('"').to_string());
    let code = inner("code: Some(").and_then(|c| c.split(')').next().map(str::to_uppercase));
    match (code, info) {
        (Some(c), Some(i)) => format!("[{c}] {i}"),
        (None, Some(i)) => i,
        _ => rendered.trim().to_string(),
    }
}

/// One AUTHENTICATE exchange: the initial response to the first (empty) challenge, then
/// the abort answer to the error challenge, which is kept for the error.
struct Exchange {
    first: Option<String>,
    mechanism: SaslMechanism,
    challenge: Arc<Mutex<Option<Vec<u8>>>>,
}

impl async_imap::Authenticator for Exchange {
    type Response = String;

    fn process(&mut self, challenge: &[u8]) -> String {
        match self.first.take() {
            Some(first) => first,
            None => {
                *self.challenge.lock().expect("challenge") = Some(challenge.to_vec());
                sasl::abort_response(self.mechanism).to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_said_as_the_server_wrote_it() {
        assert_eq!(
            answer_text("code: Some(AuthenticationFailed), info: Some(\"Authentication failed.\")"),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(answer_text("code: None, info: Some(\"No.\")"), "No.");
    }
}
