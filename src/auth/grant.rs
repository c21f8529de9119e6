//! The grants the daemon runs itself (RFC 6749): client credentials (4.4) and refresh
//! token (6), one form POST to the token endpoint, over ureq (blocking, so on the
//! blocking pool) with rustls. A refresh token the endpoint rotates is written back to
//! its file at once, atomically and 0600: the old one may already be void.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{check_token, AuthError};
use crate::config::{read_secret_file, Grant, OAuth};

/// A token endpoint's answer is a small JSON object.
const MAX_ANSWER: u64 = 64 * 1024;
/// When the endpoint gives no `expires_in` (it should): an hour, as both presets do.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// An access token and how long it lasts.
pub(super) struct Fresh {
    pub access_token: String,
    pub expires_in: Duration,
    /// A rotated refresh token that could not be written to its file: the next refresh
    /// must use it (the one in the file may be void), and it is lost at a restart.
    pub unsaved_refresh: Option<String>,
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Runs the grant of `o` (checked at load: it has one, with what it needs); `unsaved`
/// is a rotated refresh token its file does not hold, used instead of the file's.
pub(super) async fn fetch(
    o: &OAuth,
    limit: Duration,
    unsaved: Option<String>,
) -> Result<Fresh, AuthError> {
    let o = o.clone();
    tokio::task::spawn_blocking(move || fetch_blocking(&o, limit, unsaved))
        .await
        .map_err(|e| AuthError::Secret(format!("token request task: {e}")))?
}

fn fetch_blocking(o: &OAuth, limit: Duration, unsaved: Option<String>) -> Result<Fresh, AuthError> {
    let url = o.endpoint().unwrap_or_default();
    let grant = o.grant.unwrap_or(Grant::ClientCredentials);
    let name = match grant {
        Grant::ClientCredentials => "client_credentials",
        Grant::RefreshToken => "refresh_token",
    };
    let secret = |path: &Path, what| read_secret_file(path, what).map_err(AuthError::Secret);
    let mut form: Vec<(&str, String)> = vec![
        ("grant_type", name.to_string()),
        ("client_id", o.client_id.clone().unwrap_or_default()),
    ];
    if let Some(p) = &o.client_secret_file {
        form.push(("client_secret", secret(p, "client secret file")?));
    }
    let refresh = match (&o.refresh_token_file, grant) {
        (Some(p), Grant::RefreshToken) => match unsaved {
            Some(r) => Some(r),
            None => Some(secret(p, "refresh token file")?),
        },
        _ => None,
    };
    if let Some(r) = &refresh {
        form.push(("refresh_token", r.clone()));
    }
    if let Some(s) = o.scopes() {
        form.push(("scope", s));
    }
    let (status, body) = post(&url, &form, limit)?;
    let refused = |why: String| AuthError::Refused {
        url: url.clone(),
        grant: name,
        why,
    };
    let answer: Answer = serde_json::from_str(&body).map_err(|e| {
        let why = format!("HTTP {status}, not a token answer ({e})");
        match status {
            500.. => AuthError::Unreachable {
                url: url.clone(),
                why,
            },
            _ => refused(why),
        }
    })?;
    if !(200..300).contains(&status) || answer.access_token.is_none() {
        let error = answer.error.as_deref().unwrap_or("no access_token");
        let words = match &answer.error_description {
            Some(d) => format!("HTTP {status}, {error}: {}", bounded(d)),
            None => format!("HTTP {status}, {error}"),
        };
        return Err(match status {
            500.. => AuthError::Unreachable { url, why: words },
            _ => refused(words),
        });
    }
    let token = answer.access_token.unwrap_or_default();
    check_token(&token).map_err(refused)?;
    let mut unsaved_refresh = None;
    if let (Some(new), Some(old), Some(path)) =
        (&answer.refresh_token, &refresh, &o.refresh_token_file)
    {
        if new != old {
            // The new access token works either way; the new refresh token is kept in
            // memory until the file can be written.
            match write_back(path, new) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "Rotated refresh token written back.")
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "Rotated refresh token kept in memory only; a restart loses it: make the file's folder writable for the daemon.");
                    unsaved_refresh = Some(new.clone());
                }
            }
        }
    }
    Ok(Fresh {
        unsaved_refresh,
        access_token: token,
        expires_in: answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME),
    })
}

/// POSTs `form` to `url`; the status and the body (bounded), whatever the status.
fn post(url: &str, form: &[(&str, String)], limit: Duration) -> Result<(u16, String), AuthError> {
    let unreachable = |e: ureq::Error| AuthError::Unreachable {
        url: url.to_string(),
        why: e.to_string(),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().map(|(k, v)| (*k, v.as_str())))
        .map_err(unreachable)?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(unreachable)?;
    Ok((status, body))
}

/// The endpoint's words, at most 300 characters of them.
fn bounded(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Replaces the refresh token file with `token`: a new file beside it (0600, as
/// tempfile makes them), synced, renamed over the old one.
fn write_back(path: &Path, token: &str) -> Result<(), AuthError> {
    let fail = |e: std::io::Error| {
        AuthError::Secret(format!(
            "cannot write the rotated refresh token to {}: {e}; the old one may no longer work",
            path.display()
        ))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut f = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    f.write_all(token.as_bytes()).map_err(fail)?;
    f.write_all(b"\n").map_err(fail)?;
    f.as_file().sync_all().map_err(fail)?;
    f.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A token endpoint on loopback that answers every request with `answer` and hands
    /// each request's body to the test.
    fn endpoint(answer: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                let _ = tx.send(String::from_utf8(body).unwrap());
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        (url, rx)
    }

    #[test]
    fn a_rotated_refresh_token_that_cannot_be_written_is_used_from_memory() {
        let (url, bodies) = endpoint(
            r#"{"access_token":"at-2","expires_in":60,"refresh_token":"rt-2","token_type":"Bearer"}"#,
        );
        // The file's folder is a file: no new file can be made beside it.
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("plain-file");
        std::fs::write(&not_a_dir, "").unwrap();
        let o = OAuth {
            mechanism: None,
            token_command: None,
            grant: Some(Grant::RefreshToken),
            provider: None,
            token_url: Some(url),
            tenant: None,
            client_id: Some("c".into()),
            client_secret_file: None,
            refresh_token_file: Some(not_a_dir.join("refresh")),
            scope: None,
        };
        let fresh = fetch_blocking(&o, Duration::from_secs(10), Some("rt-1".into())).unwrap();
        assert_eq!(fresh.access_token, "at-2");
        assert_eq!(fresh.unsaved_refresh.as_deref(), Some("rt-2"));
        assert_eq!(fresh.expires_in, Duration::from_secs(60));
        let body = bodies.recv().unwrap();
        assert!(
            body.contains("grant_type=refresh_token") && body.contains("refresh_token=rt-1"),
            "{body}"
        );
    }

    #[test]
    fn a_rotated_refresh_token_replaces_the_file_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("refresh");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_back(&p, "new-token").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new-token\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
