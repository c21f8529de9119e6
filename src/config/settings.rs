//! `mailtriage.toml`: how to reach the servers and where to keep state. Kept apart from
//! `rules.toml` so rules can be shared and reviewed without secrets. Passwords are never
//! written here: each login names a file or an environment variable that holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{Collector, ConfigError, ConfigErrors};

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain connect, then STARTTLS before anything else is said.
    Starttls,
    /// No encryption at all; only for loopback or a trusted network, and only when
    /// written explicitly.
    Plaintext,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Extra CA certificate (PEM) to trust besides the public roots; for private CAs.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name checked against the server certificate; defaults to `host`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Timeout of every single command.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Login for SMTP submission (IMAP logins are per mailbox).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Server {
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImapOptions {
    /// IDLE is re-issued this often, to find a dead link sooner than the server's
    /// 30-minute limit.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_refresh: Duration,
    /// Longest wait between reconnect attempts (backoff doubles up to this).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for ImapOptions {
    fn default() -> Self {
        Self {
            idle_refresh: default_idle(),
            max_backoff: default_backoff(),
        }
    }
}

fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_backoff() -> Duration {
    Duration::from_secs(60)
}

/// How one watched mailbox logs in; the key is the mailbox's name in rules.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct Login {
    pub user: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "inbox")]
    pub folder: String,
    /// The folder where this queue's staff replies are kept (e.g. "Sent"): watched so
    /// that a ticket learns it was answered, and promises made in the replies.
    #[serde(default)]
    pub sent_folder: Option<String>,
}

fn inbox() -> String {
    "INBOX".to_string()
}

#[derive(Debug, Deserialize)]
struct RawSettings {
    state_dir: PathBuf,
    imap: Spanned<Server>,
    #[serde(default)]
    imap_options: ImapOptions,
    smtp: Spanned<Server>,
    #[serde(default)]
    mailboxes: BTreeMap<String, Spanned<Login>>,
    #[serde(default)]
    metrics: Option<Spanned<MetricsSettings>>,
}

/// `[metrics]`: the Prometheus endpoint, off unless `listen` is given.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsSettings {
    /// Loopback address and port of GET /metrics, e.g. "127.0.0.1:9898".
    pub listen: Option<std::net::SocketAddr>,
}

/// The connection settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub imap: Server,
    pub imap_options: ImapOptions,
    pub smtp: Server,
    pub mailboxes: BTreeMap<String, Login>,
    /// Where the Prometheus endpoint listens; `None`: no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Where a secret comes from; resolved only when a connection is made, so `check`
/// can report a missing file without the daemon ever logging the secret itself.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    fn of(file: &Option<PathBuf>, env: &Option<String>) -> Option<SecretSource> {
        match (file, env) {
            (Some(f), _) => Some(SecretSource::File(f.clone())),
            (None, Some(e)) => Some(SecretSource::Env(e.clone())),
            (None, None) => None,
        }
    }

    /// Reads the secret. A password file that others can read is refused: a leaked
    /// mailbox password lets anyone read the customers' mail.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::File(p) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let meta = std::fs::metadata(p)
                        .map_err(|e| format!("password file {}: {e}", p.display()))?;
                    if meta.permissions().mode() & 0o007 != 0 {
                        return Err(format!(
                            "password file {} is readable by others (mode {:o}); run chmod 600 on it",
                            p.display(),
                            meta.permissions().mode() & 0o777
                        ));
                    }
                }
                let s = std::fs::read_to_string(p)
                    .map_err(|e| format!("password file {}: {e}", p.display()))?;
                Ok(s.trim_end_matches(['\r', '\n']).to_string())
            }
            SecretSource::Env(v) => {
                std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))
            }
        }
    }
}

impl Login {
    pub fn password(&self) -> Option<SecretSource> {
        SecretSource::of(&self.password_file, &self.password_env)
    }
}

impl Server {
    pub fn password(&self) -> Option<SecretSource> {
        SecretSource::of(&self.password_file, &self.password_env)
    }
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = super::error::read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let Some(raw) = c.parse::<RawSettings>(text) else {
            return Err(ConfigErrors(c.errors));
        };
        for (name, server) in [("imap", &raw.imap), ("smtp", &raw.smtp)] {
            let s = server.get_ref();
            if s.host.trim().is_empty() {
                c.at(Some(server.span()), format!("{name}.host"), "is empty");
            }
            if s.password_file.is_some() && s.password_env.is_some() {
                c.at(
                    Some(server.span()),
                    name,
                    "give either password_file or password_env, not both",
                );
            }
            if let Some(ca) = &s.ca_file {
                if !ca.exists() {
                    c.at(
                        Some(server.span()),
                        format!("{name}.ca_file"),
                        format!("{} does not exist", ca.display()),
                    );
                }
            }
        }
        for (name, login) in &raw.mailboxes {
            let l = login.get_ref();
            match (&l.password_file, &l.password_env) {
                (None, None) => c.at(
                    Some(login.span()),
                    format!("mailboxes.{name}"),
                    "needs password_file or password_env (passwords are never written inline)",
                ),
                (Some(_), Some(_)) => c.at(
                    Some(login.span()),
                    format!("mailboxes.{name}"),
                    "give either password_file or password_env, not both",
                ),
                _ => {}
            }
        }
        let metrics_listen = raw.metrics.as_ref().and_then(|m| m.get_ref().listen);
        if let (Some(addr), Some(m)) = (metrics_listen, &raw.metrics) {
            // The counters name mailboxes and queues: they are for the machine's own
            // scraper (or a proxy an operator puts in front), not for the network.
            if !addr.ip().is_loopback() {
                c.at(
                    Some(m.span()),
                    "metrics.listen",
                    format!("{addr} is not a loopback address; use 127.0.0.1 or [::1] and let the scraper or a proxy reach it there"),
                );
            }
        }
        let settings = Settings {
            metrics_listen,
            path: path.to_path_buf(),
            state_dir: raw.state_dir,
            imap: raw.imap.into_inner(),
            imap_options: raw.imap_options,
            smtp: raw.smtp.into_inner(),
            mailboxes: raw
                .mailboxes
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
        };
        c.finish(settings)
    }

    /// Errors for mailboxes the rules declare but the settings cannot log in to, and the
    /// other way round.
    pub fn check_against(&self, rules: &super::Rules) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        for name in rules.mailboxes.keys() {
            if !self.mailboxes.contains_key(name) {
                errs.push(ConfigError {
                    file: self.path.clone(),
                    key: format!("mailboxes.{name}"),
                    line: None,
                    message: format!(
                        "rules.toml watches mailbox {name:?} but there is no [mailboxes.{name}] login here"
                    ),
                });
            }
        }
        for name in self.mailboxes.keys() {
            if !rules.mailboxes.contains_key(name) {
                errs.push(ConfigError {
                    file: self.path.clone(),
                    key: format!("mailboxes.{name}"),
                    line: None,
                    message: format!("no mailbox {name:?} is declared in rules.toml"),
                });
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn shipped_example_parses_and_matches_the_rules() {
        let s = Settings::load(&root().join("systemd/mailtriage.toml")).unwrap();
        assert_eq!(s.imap.tls, TlsMode::Implicit);
        assert_eq!(s.imap_options.idle_refresh, Duration::from_secs(300));
        let rules = crate::config::Rules::load(&root().join("rules.toml")).unwrap();
        assert!(s.check_against(&rules).is_empty());
    }

    #[test]
    fn inline_passwords_and_unknown_keys_are_errors() {
        let text = std::fs::read_to_string(root().join("systemd/mailtriage.toml")).unwrap();
        let bad = text.replacen(
            "password_file = \"/etc/mailtriage/billing.pass\"",
            "password = \"hunter2\"",
            1,
        );
        let err = Settings::parse(Path::new("m.toml"), &bad).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "mailboxes.billing.password");
        assert!(e.message.contains("unknown key `password`"), "{e}");
        assert!(
            !e.to_string().contains("hunter2"),
            "the secret must not be echoed: {e}"
        );
    }

    #[test]
    fn password_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "secret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretSource::File(f.clone()).read().unwrap_err();
        assert!(err.contains("readable by others"), "{err}");
        assert!(!err.contains("secret\n"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretSource::File(f).read().unwrap(), "secret");
    }
}
