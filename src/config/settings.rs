//! `mailtriage.toml`: how to reach the servers and where to keep state. Kept apart from
//! `rules.toml` so rules can be shared and reviewed without secrets. Passwords are never
//! written here: each login names a file or an environment variable that holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{Collector, ConfigError, ConfigErrors};
use super::oauth::{check_oauth, OAuth};

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
    /// A systemd credential (`LoadCredential=`): the file of that name in
    /// `$CREDENTIALS_DIRECTORY`.
    #[serde(default)]
    pub password_credential: Option<String>,
    /// SMTP only: how many connections the outbox sender keeps and sends on at once.
    #[serde(default)]
    pub connections: Option<usize>,
    /// `[smtp.oauth]`: the SMTP login's OAuth2 token instead of a password.
    /// `[imap.oauth]`: the token of every mailbox that names no login secret of its own.
    #[serde(default)]
    pub oauth: Option<OAuth>,
}

/// SMTP connections when `[smtp] connections` is not given: enough to keep Postfix
/// busy while one connection waits for a reply, few enough for any relay's limits.
pub const DEFAULT_SMTP_CONNECTIONS: usize = 3;
/// More connections gain nothing on one relay and only multiply the mails whose fate is
/// unknown after a crash (the start looks each of them up).
pub const MAX_SMTP_CONNECTIONS: usize = 16;

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Server {
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }

    /// SMTP connections to send on at once (checked to be 1..=16 at load).
    pub fn connections(&self) -> usize {
        self.connections.unwrap_or(DEFAULT_SMTP_CONNECTIONS)
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
    /// After new mail, the mailbox is asked again (NOOP, 10 ms doubling to 160 ms) for
    /// this long before it IDLEs: Dovecot holds every IDLE push about 500 ms, so mail
    /// that comes in a burst is fetched that much sooner. 0 turns it off.
    #[serde(default = "default_poll_after_mail", with = "humantime_serde")]
    pub poll_after_mail: Duration,
    /// A mailbox down this long, or this long in a sync without handling a message,
    /// makes the daemon unhealthy: `status` says so and the systemd watchdog is no
    /// longer fed, so systemd restarts it.
    #[serde(default = "default_unhealthy_after", with = "humantime_serde")]
    pub unhealthy_after: Duration,
}

impl Default for ImapOptions {
    fn default() -> Self {
        Self {
            idle_refresh: default_idle(),
            max_backoff: default_backoff(),
            poll_after_mail: default_poll_after_mail(),
            unhealthy_after: default_unhealthy_after(),
        }
    }
}

fn default_unhealthy_after() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_backoff() -> Duration {
    Duration::from_secs(60)
}
/// Longest `poll_after_mail`: past a few seconds the NOOPs only stand in for IDLE.
const MAX_POLL_AFTER_MAIL: Duration = Duration::from_secs(10);

fn default_poll_after_mail() -> Duration {
    Duration::from_millis(300)
}

/// `[limits]`: what one message may cost the daemon, whatever the mail.
#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// CPU time the pipeline may spend on one message; past it the message is
    /// quarantined with the reason and the mailbox goes on.
    #[serde(default = "default_triage_budget", with = "humantime_serde")]
    pub triage_budget: Duration,
    /// Bytes one UID FETCH may bring in, by the messages' RFC822.SIZE: a batch holds
    /// at most this much mail (and at most 50 messages); a bigger message comes alone.
    #[serde(default = "default_fetch_bytes", deserialize_with = "size")]
    pub fetch_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            triage_budget: default_triage_budget(),
            fetch_bytes: default_fetch_bytes(),
        }
    }
}

fn default_fetch_bytes() -> u64 {
    16 << 20
}

/// A size as written ("16MB", "512KB").
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    super::rules::values::parse_size(&text)
        .map(|n| n as u64)
        .map_err(serde::de::Error::custom)
}

fn default_triage_budget() -> Duration {
    Duration::from_secs(2)
}

/// Shortest `triage_budget`: below it an ordinary message on a slow machine could be
/// quarantined.
const MIN_TRIAGE_BUDGET: Duration = Duration::from_millis(10);

fn check_limits(c: &mut Collector, limits: &Limits) {
    if limits.triage_budget < MIN_TRIAGE_BUDGET {
        c.at_key(
            "limits.triage_budget",
            format!(
                "is {}; give at least {}: an ordinary message takes a few milliseconds, a crafted one is bounded by the parser's and the rules' caps",
                humantime::format_duration(limits.triage_budget),
                humantime::format_duration(MIN_TRIAGE_BUDGET)
            ),
        );
    }
}

/// How one watched mailbox logs in; the key is the mailbox's name in rules.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct Login {
    pub user: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_credential: Option<String>,
    /// `[mailboxes.NAME.oauth]`: log in with an OAuth2 token instead of a password.
    #[serde(default)]
    pub oauth: Option<OAuth>,
    #[serde(default = "inbox")]
    pub folder: String,
    /// The folder where this queue's staff replies are kept (e.g. "Sent"): watched so
    /// that a ticket learns it was answered, and promises made in the replies.
    #[serde(default)]
    pub sent_folder: Option<String>,
    /// `start` as written; checked and compiled into [`Login::start`] at load.
    #[serde(default, rename = "start")]
    start_text: Option<String>,
    /// What of the mail already in the folders is triaged when the daemon first meets
    /// them (see [`Start`]).
    #[serde(skip)]
    pub start: Start,
    /// `idle = false` polls the folder even when the server offers IDLE (a server whose
    /// IDLE is known to be unreliable). A server that does not offer IDLE is polled anyway.
    #[serde(default, rename = "idle")]
    pub idle_wanted: Option<bool>,
    /// How often the folder is asked for new mail when it is polled (no IDLE).
    #[serde(default, with = "humantime_serde", rename = "poll_interval")]
    pub poll_every: Option<Duration>,
    /// `[mailboxes.NAME.imap]`: this mailbox's own IMAP server, over `[imap]`.
    #[serde(default)]
    pub imap: Option<ServerOverride>,
    /// `[mailboxes.NAME.smtp]`: the SMTP server and login that send this mailbox's
    /// mail (its acknowledgements, the forwards of mail that reached it), over `[smtp]`.
    #[serde(default)]
    pub smtp: Option<ServerOverride>,
}

/// A mailbox's own server: each key given replaces the global one (`[imap]` or
/// `[smtp]`), the others are taken from it. A login (`user` and one password source)
/// is taken whole: a mailbox that names its own user never logs in with the global
/// password.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerOverride {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: Option<TlsMode>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Not taken from the global server when `host` is given: another host has another
    /// name in its certificate.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_credential: Option<String>,
    #[serde(default)]
    pub connections: Option<usize>,
    #[serde(default)]
    pub oauth: Option<OAuth>,
}

impl ServerOverride {
    fn password_keys(&self) -> PasswordKeys<'_> {
        PasswordKeys {
            file: &self.password_file,
            env: &self.password_env,
            credential: &self.password_credential,
        }
    }

    /// Whether this names a login of its own (a user, a password source or a token).
    fn has_login(&self) -> bool {
        self.user.is_some() || !self.password_keys().sources().is_empty() || self.oauth.is_some()
    }

    /// `base` with the keys given here put over it.
    pub fn over(&self, base: &Server) -> Server {
        let (user, file, env, credential, oauth) = match self.has_login() {
            true => (
                &self.user,
                &self.password_file,
                &self.password_env,
                &self.password_credential,
                &self.oauth,
            ),
            false => (
                &base.user,
                &base.password_file,
                &base.password_env,
                &base.password_credential,
                &base.oauth,
            ),
        };
        Server {
            host: self.host.clone().unwrap_or_else(|| base.host.clone()),
            port: self.port.unwrap_or(base.port),
            tls: self.tls.unwrap_or(base.tls),
            ca_file: self.ca_file.clone().or_else(|| base.ca_file.clone()),
            tls_server_name: match self.host {
                Some(_) => self.tls_server_name.clone(),
                None => self
                    .tls_server_name
                    .clone()
                    .or_else(|| base.tls_server_name.clone()),
            },
            timeout: self.timeout.unwrap_or(base.timeout),
            user: user.clone(),
            password_file: file.clone(),
            password_env: env.clone(),
            password_credential: credential.clone(),
            connections: self.connections.or(base.connections),
            oauth: oauth.clone(),
        }
    }
}

/// What the daemon does with the mail already in a folder the state does not know
/// (the first start on a mailbox, or a new UIDVALIDITY after the state was lost): a
/// shared mailbox holds years of answered mail, and triaging it would forward all of
/// it and acknowledge every message again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Nothing of it: only mail that arrives after the first connection.
    #[default]
    New,
    /// What arrived (INTERNALDATE) at or after a time: `since 2d`, `since 2026-11-01`.
    Since(Since),
    /// The messages no one has read yet (no `\Seen` flag).
    Unseen,
    /// All of it.
    All,
}

/// The time `start = "since ..."` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the first connection.
    Ago(Duration),
    /// From this day on, 00:00 UTC.
    Day(time::Date),
}

impl Start {
    /// `"new"`, `"since 2d"`, `"since 2026-11-01"`, `"unseen"` or `"all"`.
    pub fn parse(text: &str) -> Result<Start, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let since = match words.as_slice() {
            ["new"] => return Ok(Start::New),
            ["unseen"] => return Ok(Start::Unseen),
            ["all"] => return Ok(Start::All),
            ["since", rest @ ..] if !rest.is_empty() => rest.join(" "),
            _ => {
                return Err(format!(
                    "is {text:?}; give \"new\" (the default: only mail that arrives after the first connection), \"since 2d\" (a duration), \"since 2026-11-01\" (a day, UTC), \"unseen\" or \"all\""
                ))
            }
        };
        let day = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(&since, day) {
            return Ok(Start::Since(Since::Day(d)));
        }
        humantime::parse_duration(&since)
            .map(|d| Start::Since(Since::Ago(d)))
            .map_err(|e| {
                format!("is {text:?}: {since:?} is neither a duration (\"2d\", \"12h\") nor a day (\"2026-11-01\"): {e}")
            })
    }

    /// For `since`, the earliest arrival taken when the folder is first met at `now`.
    pub fn cutoff(&self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        match self {
            Start::Since(Since::Ago(d)) => {
                Some(now.checked_sub(*d).unwrap_or(std::time::UNIX_EPOCH))
            }
            Start::Since(Since::Day(d)) => Some(d.midnight().assume_utc().into()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::New => write!(f, "new"),
            Start::Since(Since::Ago(d)) => write!(f, "since {}", humantime::format_duration(*d)),
            Start::Since(Since::Day(d)) => write!(f, "since {d}"),
            Start::Unseen => write!(f, "unseen"),
            Start::All => write!(f, "all"),
        }
    }
}

fn inbox() -> String {
    "INBOX".to_string()
}

/// `[archive]` as written: an address and an IMAP login like a mailbox's (no Sent
/// folder). Kept apart from [`Login`] rather than flattened into it: serde's flatten
/// hides unknown keys from the check that reports them.
#[derive(Debug, Deserialize)]
struct RawArchive {
    address: String,
    user: String,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_credential: Option<String>,
    #[serde(default)]
    oauth: Option<OAuth>,
    #[serde(default = "inbox")]
    folder: String,
}

/// The archive mailbox: every mail the daemon sends also goes there, as one more
/// envelope recipient (in no header). The server accepts a mail for all its recipients
/// at once, so the archive holds a mail if and only if the server accepted it: after a
/// crash, the start looks there to know whether a mail in flight went out.
#[derive(Debug, Clone)]
pub struct Archive {
    pub address: String,
    /// How the daemon reads the archive (IMAP server of `[imap]`).
    pub login: Login,
}

#[derive(Debug, Deserialize)]
struct RawSettings {
    state_dir: PathBuf,
    imap: Spanned<Server>,
    #[serde(default)]
    imap_options: ImapOptions,
    #[serde(default)]
    limits: Limits,
    smtp: Spanned<Server>,
    #[serde(default)]
    mailboxes: BTreeMap<String, Spanned<Login>>,
    #[serde(default)]
    metrics: Option<Spanned<MetricsSettings>>,
    #[serde(default)]
    archive: Option<Spanned<RawArchive>>,
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
    pub limits: Limits,
    pub smtp: Server,
    pub mailboxes: BTreeMap<String, Login>,
    /// Where the Prometheus endpoint listens; `None`: no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where a copy of every sent mail goes; `None`: no archive.
    pub archive: Option<Archive>,
}

/// Where a secret comes from; resolved only when a connection is made, so `check`
/// can report a missing file without the daemon ever logging the secret itself.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
}

/// The three keys a login may name its password with, as written.
pub struct PasswordKeys<'a> {
    pub file: &'a Option<PathBuf>,
    pub env: &'a Option<String>,
    pub credential: &'a Option<String>,
}

impl PasswordKeys<'_> {
    /// Every source named (more than one is a mistake `check_password` reports).
    fn sources(&self) -> Vec<SecretSource> {
        let file = self.file.clone().map(SecretSource::File);
        let credential = self.credential.clone().map(SecretSource::Credential);
        let env = self.env.clone().map(SecretSource::Env);
        [file, credential, env].into_iter().flatten().collect()
    }
}

impl SecretSource {
    fn of(keys: PasswordKeys<'_>) -> Option<SecretSource> {
        keys.sources().into_iter().next()
    }

    /// The key that names this source.
    pub fn key(&self) -> &'static str {
        match self {
            SecretSource::File(_) => "password_file",
            SecretSource::Env(_) => "password_env",
            SecretSource::Credential(_) => "password_credential",
        }
    }

    /// Reads the secret. A password file that others can read is refused: a leaked
    /// mailbox password lets anyone read the customers' mail.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::File(p) => read_secret_file(p, "password file"),
            SecretSource::Env(v) => {
                std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))
            }
            SecretSource::Credential(name) => read_credential(name),
        }
    }
}

/// Reads a secret file (`what` names it in errors: "password file", "client secret
/// file"), refused when anyone but its owner can read it or when its owner is neither
/// the daemon's user nor root; the final line break is not part of the secret.
pub fn read_secret_file(p: &Path, what: &str) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
        let euid = rustix::process::geteuid().as_raw();
        if let Some(why) = owner_problem(meta.uid(), euid) {
            return Err(format!("{what} {}: {why}", p.display()));
        }
        // 0600 or stricter: a group that can read it is as many more people who can
        // read the customers' mail.
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "{what} {} is readable by others than its owner (mode {:o}); run chmod 600 on it",
                p.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    let s = std::fs::read_to_string(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// A systemd credential: systemd copies the file named in `LoadCredential=` into a
/// directory only the service's user can read, so neither its owner (root) nor its
/// group bits (an ACL) say anything; a file everyone can read is still refused.
fn read_credential(name: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        format!(
            "credential {name}: CREDENTIALS_DIRECTORY is not set: under systemd the unit's \
             LoadCredential={name}:/etc/mailtriage/{name} sets it; to check the files by hand, \
             run CREDENTIALS_DIRECTORY=/etc/mailtriage mailtriage check"
        )
    })?;
    let path = Path::new(&dir).join(name);
    let meta =
        std::fs::metadata(&path).map_err(|e| format!("credential {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "credential {} is readable by everyone (mode {:o}); run chmod o-rwx on it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let s = std::fs::read_to_string(&path)
        .map_err(|e| format!("credential {}: {e}", path.display()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Why a secret file owned by `owner` must not be trusted by a process running as `euid`:
/// whoever owns it can change the password the daemon logs in with. Root's files are
/// trusted (root can change anything anyway).
fn owner_problem(owner: u32, euid: u32) -> Option<String> {
    (owner != euid && owner != 0).then(|| {
        format!(
            "owned by uid {owner}, not by the user mailtriage runs as (uid {euid}) or root; run chown on it"
        )
    })
}

impl Login {
    /// Whether IDLE is used when the server offers it (`idle`, true by default).
    pub fn idle(&self) -> bool {
        self.idle_wanted.unwrap_or(true)
    }

    /// How often a polled folder is asked for new mail (`poll_interval`).
    pub fn poll_interval(&self) -> Duration {
        self.poll_every.unwrap_or(DEFAULT_POLL_INTERVAL)
    }

    pub fn password_keys(&self) -> PasswordKeys<'_> {
        PasswordKeys {
            file: &self.password_file,
            env: &self.password_env,
            credential: &self.password_credential,
        }
    }

    pub fn password(&self) -> Option<SecretSource> {
        SecretSource::of(self.password_keys())
    }
}

impl Server {
    pub fn password_keys(&self) -> PasswordKeys<'_> {
        PasswordKeys {
            file: &self.password_file,
            env: &self.password_env,
            credential: &self.password_credential,
        }
    }

    pub fn password(&self) -> Option<SecretSource> {
        SecretSource::of(self.password_keys())
    }
}

/// A login names where its password comes from, once: never inline, never twice.
fn check_password(c: &mut Collector, span: std::ops::Range<usize>, key: &str, keys: PasswordKeys) {
    match keys.sources().len() {
        0 => c.at(
            Some(span),
            key,
            "needs password_file, password_credential or password_env (passwords are never written inline)",
        ),
        1 => check_credential_name(c, span, key, keys.credential),
        _ => c.at(Some(span), key, ONE_PASSWORD_SOURCE),
    }
}

/// A mailbox's (or the archive's) login: one password source or an `oauth` table. One
/// with neither logs in with `[imap.oauth]` (`global`) when there is one.
fn check_login(
    c: &mut Collector,
    span: std::ops::Range<usize>,
    key: &str,
    login: &Login,
    global: Option<&OAuth>,
) {
    let passwords = login.password_keys().sources().len();
    match &login.oauth {
        Some(o) => {
            check_oauth(c, &format!("{key}.oauth"), o);
            if passwords > 0 {
                c.at(Some(span), key, PASSWORD_OR_TOKEN);
            }
        }
        None if passwords == 0 && global.is_some() => {}
        None => check_password(c, span, key, login.password_keys()),
    }
}

const PASSWORD_OR_TOKEN: &str =
    "give a password source or an [oauth] table, not both: the login uses one of them";

const ONE_PASSWORD_SOURCE: &str =
    "give one of password_file, password_credential and password_env, not several";

/// A credential is a file name in systemd's credentials directory, nothing more.
fn check_credential_name(
    c: &mut Collector,
    span: std::ops::Range<usize>,
    key: &str,
    name: &Option<String>,
) {
    if let Some(why) = name.as_deref().and_then(bad_credential_name) {
        c.at(Some(span), format!("{key}.password_credential"), why);
    }
}

/// Why `name` is not a credential name, if it is not.
fn bad_credential_name(name: &str) -> Option<String> {
    (name.is_empty() || name.contains('/') || name == "." || name == "..").then(|| {
        format!("{name:?} is not a credential name (a file name as in LoadCredential=NAME:PATH)")
    })
}

/// `[imap]` or `[smtp]` (or a mailbox's own, at `key`): a host, one password source at
/// most, a CA file that exists; `connections` only for SMTP, and within bounds.
fn check_server(c: &mut Collector, key: &str, smtp: bool, s: &Server) {
    if s.host.trim().is_empty() {
        c.at_key(format!("{key}.host"), "is empty");
    }
    let keys = s.password_keys();
    if keys.sources().len() > 1 {
        c.at_key(key, ONE_PASSWORD_SOURCE);
    }
    if let Some(why) = keys.credential.as_deref().and_then(bad_credential_name) {
        c.at_key(format!("{key}.password_credential"), why);
    }
    if s.oauth.is_some() {
        if !keys.sources().is_empty() {
            c.at_key(key, PASSWORD_OR_TOKEN);
        }
        if smtp && s.user.is_none() {
            c.at_key(
                format!("{key}.user"),
                "is missing: the OAuth token is presented with a user name",
            );
        }
    }
    match (smtp, s.connections) {
        (true, Some(n)) if !(1..=MAX_SMTP_CONNECTIONS).contains(&n) => c.at_key(
            format!("{key}.connections"),
            format!("is {n}; give 1 to {MAX_SMTP_CONNECTIONS}"),
        ),
        (false, Some(_)) => c.at_key(
            format!("{key}.connections"),
            "is an [smtp] setting (each mailbox has its own IMAP connection)",
        ),
        _ => {}
    }
    if let Some(ca) = &s.ca_file {
        if !ca.exists() {
            c.at_key(
                format!("{key}.ca_file"),
                format!("{} does not exist", ca.display()),
            );
        }
    }
}

/// A mailbox's own IMAP and SMTP servers, checked as they will be used (over the
/// global ones). The IMAP login is the mailbox's own `user`, so its `[imap]` table
/// names none; an SMTP login of its own needs a user and one password source.
fn check_overrides(c: &mut Collector, name: &str, login: &Login, imap: &Server, smtp: &Server) {
    let base = format!("mailboxes.{name}");
    if let Some(o) = &login.imap {
        let key = format!("{base}.imap");
        if o.has_login() {
            c.at_key(
                &key,
                format!("names a login; the IMAP login is the mailbox's own `user` and password (set them in [{base}])"),
            );
        }
        check_server(c, &key, false, &o.over(imap));
    }
    if let Some(o) = &login.smtp {
        let key = format!("{base}.smtp");
        if o.has_login() && o.user.is_none() {
            c.at_key(
                format!("{key}.user"),
                "is missing: a password is given, for which user?",
            );
        }
        if o.user.is_some() && o.password_keys().sources().is_empty() && o.oauth.is_none() {
            c.at_key(
                &key,
                "needs password_file, password_credential, password_env or an [oauth] table for its user (passwords are never written inline)",
            );
        }
        if let Some(oauth) = &o.oauth {
            check_oauth(c, &format!("{key}.oauth"), oauth);
        }
        check_server(c, &key, true, &o.over(smtp));
    }
}

/// `poll_interval` when not given: new mail is seen within a minute, and a server
/// without IDLE is asked 60 times an hour.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest `poll_interval`: below it the polls are a load on the server.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A mailbox's `poll_interval`, checked.
fn check_poll_interval(c: &mut Collector, name: &str, login: &Login) {
    match login.poll_every {
        Some(d) if d < MIN_POLL_INTERVAL => c.at_key(
            format!("mailboxes.{name}.poll_interval"),
            format!(
                "is {}; give at least {}: each poll is a NOOP and a search on the server",
                humantime::format_duration(d),
                humantime::format_duration(MIN_POLL_INTERVAL)
            ),
        ),
        _ => {}
    }
}

/// Shortest `unhealthy_after`: a restart loop is worse than a slow message.
const MIN_UNHEALTHY_AFTER: Duration = Duration::from_secs(60);

fn check_unhealthy_after(c: &mut Collector, options: &ImapOptions) {
    if options.unhealthy_after < MIN_UNHEALTHY_AFTER {
        c.at_key(
            "imap_options.unhealthy_after",
            format!(
                "is {}; give at least {}: past it the watchdog restarts the daemon",
                humantime::format_duration(options.unhealthy_after),
                humantime::format_duration(MIN_UNHEALTHY_AFTER)
            ),
        );
    }
}

fn check_poll_after_mail(c: &mut Collector, options: &ImapOptions) {
    if options.poll_after_mail > MAX_POLL_AFTER_MAIL {
        c.at_key(
            "imap_options.poll_after_mail",
            format!(
                "is {}; give at most {}: the mailbox is asked every 160 ms for that long after each new mail, and IDLE does the waiting after it",
                humantime::format_duration(options.poll_after_mail),
                humantime::format_duration(MAX_POLL_AFTER_MAIL)
            ),
        );
    }
}

/// `[archive]`: its login is checked like a mailbox's, its address must be one.
fn compile_archive(c: &mut Collector, a: Spanned<RawArchive>, global: Option<&OAuth>) -> Archive {
    let span = a.span();
    let a = a.into_inner();
    let login = Login {
        user: a.user,
        password_file: a.password_file,
        password_env: a.password_env,
        password_credential: a.password_credential,
        oauth: a.oauth,
        folder: a.folder,
        sent_folder: None,
        start_text: None,
        start: Start::New,
        idle_wanted: None,
        poll_every: None,
        imap: None,
        smtp: None,
    };
    check_login(c, span, "archive", &login, global);
    if let Err(e) = a.address.parse::<lettre::Address>() {
        c.at_key(
            "archive.address",
            format!("{:?} is not an address: {e}", a.address),
        );
    }
    Archive {
        address: a.address,
        login,
    }
}

/// A login's `start`, checked: a mistake names the key and its line.
fn compile_start(c: &mut Collector, name: &str, login: &mut Login) {
    let Some(text) = &login.start_text else {
        return;
    };
    match Start::parse(text) {
        Ok(start) => login.start = start,
        Err(why) => c.at_key(format!("mailboxes.{name}.start"), why),
    }
}

/// Where the metrics endpoint listens. The counters name mailboxes and queues: they are
/// for the machine's own scraper (or a proxy an operator puts in front), not for the
/// network, so only a loopback address is accepted.
fn metrics_listen(
    c: &mut Collector,
    metrics: Option<&Spanned<MetricsSettings>>,
) -> Option<std::net::SocketAddr> {
    let m = metrics?;
    let addr = m.get_ref().listen?;
    if !addr.ip().is_loopback() {
        c.at(
            Some(m.span()),
            "metrics.listen",
            format!("{addr} is not a loopback address; use 127.0.0.1 or [::1] and let the scraper or a proxy reach it there"),
        );
    }
    Some(addr)
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = super::error::read(path)?;
        Self::parse(path, &text)
    }

    /// Checks settings given as text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let Some(mut raw) = c.parse::<RawSettings>(text) else {
            return Err(ConfigErrors(c.errors));
        };
        check_server(&mut c, "imap", false, raw.imap.get_ref());
        check_server(&mut c, "smtp", true, raw.smtp.get_ref());
        for (key, s) in [("imap", &raw.imap), ("smtp", &raw.smtp)] {
            if let Some(o) = &s.get_ref().oauth {
                check_oauth(&mut c, &format!("{key}.oauth"), o);
            }
        }
        let global = raw.imap.get_ref().oauth.clone();
        check_poll_after_mail(&mut c, &raw.imap_options);
        check_unhealthy_after(&mut c, &raw.imap_options);
        check_limits(&mut c, &raw.limits);
        for (name, login) in &raw.mailboxes {
            let l = login.get_ref();
            let key = format!("mailboxes.{name}");
            check_login(&mut c, login.span(), &key, l, global.as_ref());
            check_overrides(&mut c, name, l, raw.imap.get_ref(), raw.smtp.get_ref());
            check_poll_interval(&mut c, name, l);
        }
        for (name, login) in &mut raw.mailboxes {
            compile_start(&mut c, name, login.get_mut());
        }
        let archive = raw
            .archive
            .map(|a| compile_archive(&mut c, a, global.as_ref()));
        let metrics_listen = metrics_listen(&mut c, raw.metrics.as_ref());
        let settings = Settings {
            metrics_listen,
            archive,
            path: path.to_path_buf(),
            state_dir: raw.state_dir,
            imap: raw.imap.into_inner(),
            imap_options: raw.imap_options,
            limits: raw.limits,
            smtp: raw.smtp.into_inner(),
            mailboxes: raw
                .mailboxes
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
        };
        c.finish(settings)
    }

    /// The IMAP server `mailbox` is read on: `[imap]`, with the mailbox's own
    /// `[mailboxes.NAME.imap]` keys over it.
    pub fn imap_of(&self, mailbox: &str) -> Server {
        match self.mailboxes.get(mailbox).and_then(|l| l.imap.as_ref()) {
            Some(o) => o.over(&self.imap),
            None => self.imap.clone(),
        }
    }

    /// The SMTP identities of the mailboxes that have their own (`[mailboxes.NAME.smtp]`),
    /// by mailbox name; the mail of the others goes through `[smtp]`.
    pub fn smtp_identities(&self) -> BTreeMap<String, Server> {
        self.mailboxes
            .iter()
            .filter_map(|(name, l)| Some((name.clone(), l.smtp.as_ref()?.over(&self.smtp))))
            .collect()
    }

    /// Errors for mailboxes the rules declare but the settings cannot log in to, and the
    /// other way round.
    /// Every password the daemon will need, read as `run` reads it: a missing file, a
    /// file others can read, an unset variable are errors here, not at the first login.
    pub fn secret_errors(&self) -> Vec<ConfigError> {
        let mut logins: Vec<(String, Option<SecretSource>, Option<&OAuth>)> = vec![
            (
                "imap".into(),
                self.imap.password(),
                self.imap.oauth.as_ref(),
            ),
            (
                "smtp".into(),
                self.smtp.password(),
                self.smtp.oauth.as_ref(),
            ),
        ];
        if let Some(a) = &self.archive {
            logins.push(("archive".into(), a.login.password(), a.login.oauth.as_ref()));
        }
        for (name, login) in &self.mailboxes {
            logins.push((
                format!("mailboxes.{name}"),
                login.password(),
                login.oauth.as_ref(),
            ));
        }
        let identities = self.smtp_identities();
        for (name, smtp) in &identities {
            logins.push((
                format!("mailboxes.{name}.smtp"),
                smtp.password(),
                smtp.oauth.as_ref(),
            ));
        }
        let mut problems = Vec::new();
        for (section, password, oauth) in logins {
            if let Some(p) = password {
                problems.push((format!("{section}.{}", p.key()), p.read().err()));
            }
            for (key, path) in oauth.map(OAuth::files).unwrap_or_default() {
                let what = key.trim_end_matches("_file").replace('_', " ") + " file";
                let problem = read_secret_file(&path, &what).err();
                problems.push((format!("{section}.oauth.{key}"), problem));
            }
        }
        problems
            .into_iter()
            .filter_map(|(key, problem)| {
                let message = problem?;
                Some(ConfigError {
                    file: self.path.clone(),
                    key,
                    line: None,
                    message,
                })
            })
            .collect()
    }

    /// The watched mailboxes a team answers from whose login has no `sent_folder`: the
    /// daemon cannot see answers sent from a mail client there, so it would remind,
    /// escalate and apologise to the customer for tickets already answered.
    pub fn blind_queues(&self, rules: &super::Rules) -> Vec<ConfigError> {
        self.mailboxes
            .iter()
            .filter(|(name, login)| {
                login.sent_folder.is_none()
                    && rules.mailboxes.get(*name).is_some_and(|m| m.queue.is_some())
            })
            .map(|(name, _)| ConfigError {
                file: self.path.clone(),
                key: format!("mailboxes.{name}.sent_folder"),
                line: None,
                message: format!(
                    "not set: answers the {name} team sends from its mail client are not seen, so its tickets get reminders, escalations and \"sorry for the delay\" mails to customers who already have an answer; set it to the folder its replies are kept in (\"Sent\")"
                ),
            })
            .collect()
    }

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
        assert_eq!(s.imap_options.poll_after_mail, Duration::from_millis(300));
        let rules = crate::config::Rules::load(&root().join("rules.toml")).unwrap();
        assert!(s.check_against(&rules).is_empty());
    }

    #[test]
    fn a_credential_is_a_file_name_and_one_password_source_is_enough() {
        let text = shipped_text();
        let with = |new: &str| {
            let t = text.replacen("password_credential = \"billing.pass\"", new, 1);
            assert_ne!(t, text);
            Settings::parse(Path::new("m.toml"), &t).unwrap_err()
        };
        let err = with("password_credential = \"../shadow\"");
        assert_eq!(err.0[0].key, "mailboxes.billing.password_credential");
        assert!(
            err.0[0].message.contains("not a credential name"),
            "{}",
            err.0[0]
        );
        let err = with("password_credential = \"billing.pass\"\npassword_env = \"X\"");
        assert_eq!(err.0[0].key, "mailboxes.billing");
        assert!(err.0[0].message.contains("give one of"), "{}", err.0[0]);
    }

    #[test]
    fn inline_passwords_and_unknown_keys_are_errors() {
        let text = std::fs::read_to_string(root().join("systemd/mailtriage.toml")).unwrap();
        let bad = text.replacen(
            "password_credential = \"billing.pass\"",
            "password = \"hunter2\"",
            1,
        );
        assert_ne!(bad, text);
        let err = Settings::parse(Path::new("m.toml"), &bad).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "mailboxes.billing.password");
        assert!(e.message.contains("unknown key `password`"), "{e}");
        assert!(
            !e.to_string().contains("hunter2"),
            "the secret must not be echoed: {e}"
        );
    }

    fn shipped_text() -> String {
        std::fs::read_to_string(root().join("systemd/mailtriage.toml")).unwrap()
    }

    /// The shipped example with its first `from` written as `to` (`from` must be there).
    fn shipped_with(from: &str, to: &str) -> Result<Settings, ConfigErrors> {
        let text = shipped_text();
        let t = text.replacen(from, to, 1);
        assert_ne!(t, text, "{from:?} is not in the shipped example");
        Settings::parse(Path::new("m.toml"), &t)
    }

    #[test]
    fn unhealthy_after_is_at_least_a_minute() {
        let with = |v: &str| {
            let line = format!("unhealthy_after = \"{v}\"");
            shipped_with("unhealthy_after = \"15m\"", &line)
        };
        let ok = with("2m").unwrap();
        assert_eq!(ok.imap_options.unhealthy_after, Duration::from_secs(120));
        let err = with("5s").unwrap_err();
        assert_eq!(err.0[0].key, "imap_options.unhealthy_after");
        assert!(err.0[0].message.contains("at least 1m"), "{}", err.0[0]);
    }

    #[test]
    fn poll_after_mail_is_at_most_10s() {
        let text = shipped_text();
        let with = |v: &str| {
            let line = format!("poll_after_mail = \"{v}\"");
            shipped_with("poll_after_mail = \"300ms\"", &line)
        };
        assert_eq!(
            with("0s").unwrap().imap_options.poll_after_mail,
            Duration::ZERO
        );
        assert_eq!(
            with("10s").unwrap().imap_options.poll_after_mail,
            Duration::from_secs(10)
        );
        let err = with("1h").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "imap_options.poll_after_mail");
        let line = text
            .lines()
            .position(|l| l.starts_with("poll_after_mail"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("is 1h; give at most 10s"), "{e}");
    }

    #[test]
    fn start_is_new_unless_written_and_a_bad_one_names_its_key_and_line() {
        let text = shipped_text();
        let s = Settings::parse(Path::new("m.toml"), &text).unwrap();
        assert!(s.mailboxes.values().all(|l| l.start == Start::New));
        let with = |v: &str| {
            let table = format!("[mailboxes.billing]\nstart = \"{v}\"\n");
            shipped_with("[mailboxes.billing]\n", &table)
        };
        let start = |v: &str| with(v).unwrap().mailboxes["billing"].start;
        assert_eq!(start("all"), Start::All);
        assert_eq!(start("unseen"), Start::Unseen);
        assert_eq!(start("new"), Start::New);
        let two_days = Duration::from_secs(2 * 86400);
        assert_eq!(start("since 2d"), Start::Since(Since::Ago(two_days)));
        let day = time::macros::date!(2026 - 11 - 01);
        assert_eq!(start("since 2026-11-01"), Start::Since(Since::Day(day)));
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            start("since 2d").cutoff(now),
            Some(now - two_days),
            "since a duration counts back from the first connection"
        );
        assert_eq!(
            start("since 2026-11-01").cutoff(now),
            Some(time::macros::datetime!(2026-11-01 00:00 UTC).into())
        );
        assert_eq!(start("since 48h").to_string(), "since 2days");
        let line = text
            .lines()
            .position(|l| l == "[mailboxes.billing]")
            .unwrap()
            + 2;
        for bad in ["everything", "since", "since yesterday", "since 2026-13-01"] {
            let err = with(bad).unwrap_err();
            let e = &err.0[0];
            assert_eq!(e.key, "mailboxes.billing.start", "{e}");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.starts_with(&format!("is {bad:?}")), "{e}");
        }
        let e = &with("everything").unwrap_err().0[0];
        assert!(
            e.message.contains("\"since 2d\"") && e.message.contains("\"all\""),
            "{e}"
        );
    }

    #[test]
    fn a_mailbox_polls_every_minute_unless_told_and_idle_false_forces_polling() {
        let s = Settings::parse(Path::new("m.toml"), &shipped_text()).unwrap();
        let billing = &s.mailboxes["billing"];
        assert!(billing.idle());
        assert_eq!(billing.poll_interval(), Duration::from_secs(60));
        let with = |v: &str| {
            let table = format!("[mailboxes.billing]\n{v}\n");
            shipped_with("[mailboxes.billing]\n", &table)
        };
        let s = with("poll_interval = \"15s\"\nidle = false").unwrap();
        let billing = &s.mailboxes["billing"];
        assert!(!billing.idle());
        assert_eq!(billing.poll_interval(), Duration::from_secs(15));
        let err = with("poll_interval = \"100ms\"").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "mailboxes.billing.poll_interval", "{e}");
        let line = shipped_text()
            .lines()
            .position(|l| l == "[mailboxes.billing]")
            .unwrap()
            + 2;
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("is 100ms; give at least 1s"), "{e}");
    }

    #[test]
    fn smtp_connections_default_to_3_and_must_be_1_to_16() {
        let text = shipped_text();
        let s = Settings::parse(Path::new("m.toml"), &text).unwrap();
        assert_eq!(s.smtp.connections(), DEFAULT_SMTP_CONNECTIONS);
        let with = |n: &str| {
            let t = text.replacen("[smtp]\n", &format!("[smtp]\nconnections = {n}\n"), 1);
            assert_ne!(t, text);
            Settings::parse(Path::new("m.toml"), &t)
        };
        assert_eq!(with("16").unwrap().smtp.connections(), 16);
        let line = text.lines().position(|l| l == "[smtp]").unwrap() + 2;
        for bad in ["0", "17"] {
            let e = &with(bad).unwrap_err().0[0];
            assert_eq!(e.key, "smtp.connections");
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains("give 1 to 16"), "{e}");
        }
        let t = text.replacen("[imap]\n", "[imap]\nconnections = 2\n", 1);
        let e = &Settings::parse(Path::new("m.toml"), &t).unwrap_err().0[0];
        assert_eq!(e.key, "imap.connections");
        assert!(e.message.contains("[smtp] setting"), "{e}");
    }

    #[test]
    fn a_mailbox_may_have_its_own_imap_server_and_smtp_login() {
        let own = "[mailboxes.billing.imap]\nhost = \"imap.billing.example\"\nport = 143\ntls = \"starttls\"\n\n[mailboxes.billing.smtp]\nport = 465\ntls = \"implicit\"\nuser = \"billing@example.com\"\npassword_env = \"BILLING_SMTP\"\n\n[mailboxes.sales]\n";
        let s = shipped_with("[mailboxes.sales]\n", own).unwrap();
        let imap = s.imap_of("billing");
        assert_eq!(
            (imap.host.as_str(), imap.port, imap.tls),
            ("imap.billing.example", 143, TlsMode::Starttls)
        );
        assert_eq!(
            imap.timeout, s.imap.timeout,
            "what is not given is [imap]'s"
        );
        assert_eq!(s.imap_of("sales").host, "imap.example.com");
        let ids = s.smtp_identities();
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["billing"]);
        let smtp = &ids["billing"];
        assert_eq!(smtp.host, "smtp.example.com", "the host is [smtp]'s");
        assert_eq!((smtp.port, smtp.tls), (465, TlsMode::Implicit));
        assert_eq!(smtp.user.as_deref(), Some("billing@example.com"));
        // Its own login whole: not [smtp]'s credential with billing's user.
        assert!(matches!(smtp.password(), Some(SecretSource::Env(v)) if v == "BILLING_SMTP"));
        assert_eq!(smtp.password_credential, None);
        // A secret that cannot be read is named by the identity's key.
        let errs = s.secret_errors();
        assert!(
            errs.iter()
                .any(|e| e.key == "mailboxes.billing.smtp.password_env"
                    && e.message.contains("BILLING_SMTP")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_mailbox_server_names_its_key_path_and_line_when_wrong() {
        let text = shipped_text();
        let with = |table: &str| {
            let t = text.replacen(
                "[mailboxes.sales]\n",
                &format!("{table}\n[mailboxes.sales]\n"),
                1,
            );
            let errs = Settings::parse(Path::new("m.toml"), &t).unwrap_err().0;
            (t, errs)
        };
        let line = |t: &str, l: &str| t.lines().position(|x| x == l).map(|i| i + 1);

        let (t, errs) =
            with("[mailboxes.billing.imap]\nhost = \"imap.billing.example\"\nuser = \"other\"\n");
        let e = &errs[0];
        assert_eq!(e.key, "mailboxes.billing.imap", "{errs:?}");
        assert_eq!(e.line, line(&t, "[mailboxes.billing.imap]"), "{e}");
        assert!(
            e.message.contains("the IMAP login is the mailbox's own"),
            "{e}"
        );

        let (t, errs) =
            with("[mailboxes.billing.smtp]\nuser = \"billing@example.com\"\nconnections = 0\n");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mailboxes.billing.smtp",
                "mailboxes.billing.smtp.connections"
            ],
            "{errs:?}"
        );
        assert_eq!(errs[0].line, line(&t, "[mailboxes.billing.smtp]"));
        assert!(
            errs[0].message.contains("needs password_file"),
            "{}",
            errs[0]
        );
        assert_eq!(errs[1].line, line(&t, "connections = 0"));
        assert!(errs[1].message.contains("give 1 to 16"), "{}", errs[1]);

        let (t, errs) =
            with("[mailboxes.billing.smtp]\npassword_env = \"X\"\nhots = \"smtp.other\"\n");
        let e = errs
            .iter()
            .find(|e| e.key == "mailboxes.billing.smtp.hots")
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert_eq!(e.line, line(&t, "hots = \"smtp.other\""), "{e}");
        let e = errs
            .iter()
            .find(|e| e.key == "mailboxes.billing.smtp.user")
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert!(e.message.contains("for which user"), "{e}");

        let (t, errs) = with("[mailboxes.billing.smtp]\nhost = \" \"\n");
        assert_eq!(errs[0].key, "mailboxes.billing.smtp.host", "{errs:?}");
        assert_eq!(errs[0].line, line(&t, "host = \" \""));
    }

    #[test]
    fn archive_is_a_login_with_an_address_and_the_same_checks() {
        let text = shipped_text();
        assert!(Settings::parse(Path::new("m.toml"), &text)
            .unwrap()
            .archive
            .is_none());
        let good = format!("{text}\n[archive]\naddress = \"archive@example.com\"\nuser = \"archive@example.com\"\npassword_env = \"ARCHIVE_PASSWORD\"\n");
        let a = Settings::parse(Path::new("m.toml"), &good)
            .unwrap()
            .archive
            .unwrap();
        assert_eq!(a.address, "archive@example.com");
        assert_eq!(a.login.folder, "INBOX");
        assert!(
            matches!(a.login.password(), Some(SecretSource::Env(v)) if v == "ARCHIVE_PASSWORD")
        );

        let bad = format!("{text}\n[archive]\naddress = \"not an address\"\nuser = \"archive\"\npassword = \"hunter2\"\nsent_folder = \"Sent\"\n");
        let errs = Settings::parse(Path::new("m.toml"), &bad).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "archive.password",
                "archive.sent_folder",
                "archive",
                "archive.address"
            ],
            "{errs:?}"
        );
        let archive_line = bad.lines().position(|l| l == "[archive]").unwrap() + 1;
        assert_eq!(errs[0].line, Some(archive_line + 3));
        assert_eq!(errs[2].line, Some(archive_line));
        assert!(errs[2]
            .message
            .contains("needs password_file, password_credential or password_env"));
        assert_eq!(errs[3].line, Some(archive_line + 1));
        assert!(errs.iter().all(|e| !e.to_string().contains("hunter2")));
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
        // A group that can read it is others too.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretSource::File(f.clone()).read().unwrap_err();
        assert!(err.contains("readable by others"), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SecretSource::File(f).read().unwrap(), "secret");
    }

    #[test]
    fn a_login_takes_a_password_or_an_oauth_table() {
        let billing = "password_credential = \"billing.pass\"";
        let oauth = "oauth = { token_command = \"get-token billing\" }";
        let s = shipped_with(billing, oauth).unwrap();
        let o = s.mailboxes["billing"].oauth.as_ref().unwrap();
        assert_eq!(o.token_command.as_deref(), Some("get-token billing"));
        let both = format!("{billing}\n{oauth}");
        let err = shipped_with(billing, &both).unwrap_err();
        assert_eq!(err.0[0].key, "mailboxes.billing", "{err}");
        assert!(err.0[0].message.contains("not both"), "{err}");
        // A mailbox without a login secret of its own takes [imap.oauth].
        let err = shipped_with(billing, "").unwrap_err();
        assert!(err.0[0].message.contains("needs password_file"), "{err}");
        let text = shipped_text().replacen(billing, "", 1).replacen(
            "[imap_options]",
            "[imap.oauth]\ntoken_command = \"get-token\"\n\n[imap_options]",
            1,
        );
        let s = Settings::parse(Path::new("m.toml"), &text).unwrap();
        assert!(s.mailboxes["billing"].oauth.is_none() && s.imap.oauth.is_some());
        // A mistake in the table names its key.
        let bad = "oauth = { grant = \"refresh_token\", provider = \"google\" }";
        let err = shipped_with(billing, bad).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.key == "mailboxes.billing.oauth.client_id"),
            "{err}"
        );
        let smtp = "smtp = { user = \"b@example.com\", oauth = { mechanism = \"oauthbearer\", token_command = \"t\" } }";
        let s = shipped_with(billing, &format!("{billing}\n{smtp}")).unwrap();
        let id = &s.smtp_identities()["billing"];
        assert_eq!(id.user.as_deref(), Some("b@example.com"));
        assert!(id.oauth.is_some() && id.password().is_none());
    }

    #[test]
    fn check_reads_the_grant_secret_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let oauth = format!(
            "oauth = {{ grant = \"client_credentials\", provider = \"microsoft\", tenant = \"contoso.onmicrosoft.com\", client_id = \"c\", client_secret_file = \"{}\" }}",
            secret.display()
        );
        let s = shipped_with("password_credential = \"billing.pass\"", &oauth).unwrap();
        let errs = s.secret_errors();
        let e = errs
            .iter()
            .find(|e| e.key == "mailboxes.billing.oauth.client_secret_file")
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert!(
            e.message.contains("client secret file") && e.message.contains("readable by others"),
            "{e}"
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!s
            .secret_errors()
            .iter()
            .any(|e| e.key.starts_with("mailboxes.billing.oauth")));
    }

    #[test]
    fn a_password_file_owned_by_another_user_is_refused() {
        // Whoever owns the file can change the password the daemon logs in with.
        let err = owner_problem(1001, 1000).unwrap();
        assert!(
            err.contains("owned by uid 1001") && err.contains("uid 1000") && err.contains("chown"),
            "{err}"
        );
        assert_eq!(owner_problem(1000, 1000), None);
        assert_eq!(owner_problem(0, 1000), None, "root's files are trusted");
    }
}
