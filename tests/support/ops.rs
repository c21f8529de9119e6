//! What an operator looks at while the daemon runs: `mailtriage status --json` over the
//! control socket and the Prometheus endpoint.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::cli::cli;
use super::daemon::Daemon;
use super::{poll, WAIT};

/// `mailtriage status --json` against the daemon's state directory.
pub fn status(state: &Path) -> serde_json::Value {
    let o = cli(&["status", "--json"]).state(state).run();
    assert!(o.status.success(), "status failed: {}", o.stderr);
    o.json()
}

/// Polls `status` until `pred` holds; panics with the last answer and the log.
pub fn wait_status(
    daemon: &Daemon,
    state: &Path,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll("the status", WAIT, Duration::from_millis(100), || {
        // The socket appears a moment after the daemon starts.
        if !state.join("control.sock").exists() {
            return Err(format!("no control socket; log:\n{}", daemon.log()));
        }
        let st = status(state);
        if pred(&st) {
            Ok(st)
        } else {
            Err(format!(
                "status never got there: {st:#}\nlog:\n{}",
                daemon.log()
            ))
        }
    })
}

/// A loopback port nothing listens on now (for `[metrics] listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `[metrics]` section that makes the daemon listen on `port`.
pub fn metrics_section(port: u16) -> String {
    format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// GET /metrics on `port`: the whole HTTP answer.
pub fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name{labels...}` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Writes a secret file as an admin should: mode 0600.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
