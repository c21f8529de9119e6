//! OAuth2 on the stack: the JWTs Dovecot accepts (HS256 with the stack's secret, see
//! `scripts/mailstack`), signed here, and a token endpoint started by the test.
//!
//! No identity provider runs offline, so [`TokenEndpoint`] is a small RFC 6749 endpoint
//! in the harness: plain HTTP/1.1 on loopback, one request per connection, the client
//! credentials grant (4.4) and the refresh token grant (6) with rotation. It checks the
//! grant type, the client's ID and secret and the refresh token, and issues the stack's
//! JWTs for one user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Stack;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT for `email` valid for `lifetime` seconds from now (negative: expired), signed
/// with `secret`.
pub fn jwt_signed(secret: &[u8], issuer: &str, email: &str, lifetime: i64) -> String {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let t = now();
    let claims = serde_json::json!({
        "sub": email, "email": email, "iss": issuer,
        "iat": t - 5, "nbf": t - 5, "exp": t + lifetime,
    });
    let claims = B64URL.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{header}.{claims}").as_bytes());
    let sig = B64URL.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{sig}")
}

impl Stack {
    /// A token the stack takes for `email` for `lifetime` seconds.
    pub fn jwt(&self, email: &str, lifetime: i64) -> String {
        jwt_signed(&self.oauth_secret, &self.oauth_issuer, email, lifetime)
    }
}

/// What the endpoint accepts and issues; the test changes it while it runs.
pub struct Grants {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token valid now; each refresh grant replaces it (rotation).
    pub refresh_token: String,
    /// The user the tokens are for.
    pub email: String,
    /// How long the JWTs it issues are valid, in seconds.
    pub token_lifetime: i64,
    /// The `expires_in` it says, in seconds.
    pub expires_in: u64,
    /// Each request's form, in order.
    pub requests: Vec<BTreeMap<String, String>>,
    /// The refresh tokens issued, in order.
    pub rotated: Vec<String>,
}

/// The endpoint: `url` is its token URL; it stops when dropped (at the test's end).
pub struct TokenEndpoint {
    pub url: String,
    pub grants: Arc<Mutex<Grants>>,
    secret: Vec<u8>,
    issuer: String,
}

impl TokenEndpoint {
    /// Listens on a free loopback port, issuing the stack's tokens for `email`.
    pub fn start(stack: &Stack, email: &str) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let grants = Arc::new(Mutex::new(Grants {
            client_id: "mailtriage-test".into(),
            client_secret: "client-s3cret".into(),
            refresh_token: "rt-0".into(),
            email: email.into(),
            token_lifetime: 3600,
            expires_in: 3600,
            requests: Vec::new(),
            rotated: Vec::new(),
        }));
        let endpoint = TokenEndpoint {
            url,
            grants: grants.clone(),
            secret: stack.oauth_secret.clone(),
            issuer: stack.oauth_issuer.clone(),
        };
        let (secret, issuer) = (endpoint.secret.clone(), endpoint.issuer.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let _ = serve(conn, &grants, &secret, &issuer);
            }
        });
        endpoint
    }

    /// Changes what it accepts or issues.
    pub fn with<T>(&self, f: impl FnOnce(&mut Grants) -> T) -> T {
        f(&mut self.grants.lock().unwrap())
    }
}

/// One request, one answer, then the connection closes.
fn serve(
    conn: TcpStream,
    grants: &Mutex<Grants>,
    secret: &[u8],
    issuer: &str,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim_end().to_string();
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    reader.read_exact(&mut body)?;
    let form = parse_form(&String::from_utf8_lossy(&body));
    let (status, answer) = if request_line.starts_with("POST /token ") {
        grant(&mut grants.lock().unwrap(), form, secret, issuer)
    } else {
        (404, serde_json::json!({"error": "not_found"}))
    };
    let body = answer.to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// RFC 6749's token request, as this endpoint answers it.
fn grant(
    g: &mut Grants,
    form: BTreeMap<String, String>,
    secret: &[u8],
    issuer: &str,
) -> (u16, serde_json::Value) {
    g.requests.push(form.clone());
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let error = |status, error: &str, why: &str| {
        (
            status,
            serde_json::json!({"error": error, "error_description": why}),
        )
    };
    if field("client_id") != g.client_id || field("client_secret") != g.client_secret {
        return error(401, "invalid_client", "Client authentication failed.");
    }
    let mut answer = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": g.expires_in,
        "access_token": jwt_signed(secret, issuer, &g.email, g.token_lifetime),
    });
    match field("grant_type") {
        "client_credentials" => {}
        "refresh_token" => {
            if field("refresh_token") != g.refresh_token {
                return error(
                    400,
                    "invalid_grant",
                    "The refresh token is invalid or was revoked.",
                );
            }
            let next = format!("rt-{}", g.rotated.len() + 1);
            g.refresh_token = next.clone();
            g.rotated.push(next.clone());
            answer["refresh_token"] = next.into();
        }
        other => {
            return error(
                400,
                "unsupported_grant_type",
                &format!("grant_type {other:?}"),
            );
        }
    }
    (200, answer)
}

/// `application/x-www-form-urlencoded`.
fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
