//! `mailtriage check`: loads rules.toml (and mailtriage.toml when there is one), and
//! prints every error and warning, so an admin sees all the mistakes in one run. It
//! touches no network unless asked: `--connect` then logs in to every mailbox (and its
//! Sent folder) and to the SMTP server as `run` would, and says what each answered.

use super::{render, Cli, CliError};
use crate::config::{ConfigError, ConfigErrors, Rules, Settings};
use crate::send::Transport;
use crate::source::{Connection, Source};

pub async fn check(cli: &Cli, connect: bool) -> Result<(), CliError> {
    let settings = check_files(cli)?;
    match (connect, settings) {
        (false, _) => Ok(()),
        (true, Some(s)) => connect_all(&s).await,
        (true, None) => Err(CliError::ConnectWithoutSettings {
            file: cli.config.clone(),
        }),
    }
}

/// Every login of `s`, one after the other: each mailbox's folder and Sent folder, then
/// SMTP. A line for each on stdout when it worked, on stderr when it did not.
async fn connect_all(s: &Settings) -> Result<(), CliError> {
    let mut failed = Vec::new();
    let tls =
        crate::tls::ImapTls::new(s).map_err(|e| CliError::Connect(vec![format!("imap: {e}")]))?;
    for (name, login) in &s.mailboxes {
        let source = Source::new(name.clone(), s, login.clone(), &tls, false);
        let folders = std::iter::once(login.folder.clone()).chain(login.sent_folder.clone());
        for folder in folders {
            let source = Source {
                folder: folder.clone(),
                ..source.clone()
            };
            match Connection::open(&source).await {
                Ok(c) => {
                    println!(
                        "mailboxes.{name}: IMAP OK: {} on {}:{}, folder {folder} ({} messages)",
                        login.user,
                        source.server.host,
                        source.server.port,
                        c.exists()
                    );
                    c.logout().await;
                }
                Err(e) => failed.push(format!("mailboxes.{name}: folder {folder}: {e}")),
            }
        }
    }
    let own = s.smtp_identities();
    let logins = std::iter::once(("smtp".to_string(), &s.smtp)).chain(
        own.iter()
            .map(|(name, o)| (format!("mailboxes.{name}.smtp"), o)),
    );
    for (key, server) in logins {
        match try_smtp(server).await {
            Ok(()) => println!("{}", smtp_ok(&key, server)),
            Err(e) => failed.push(format!("{key}: {e}")),
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(CliError::Connect(failed)),
    }
}

/// The line for an SMTP login that worked.
pub(super) fn smtp_ok(key: &str, server: &crate::config::Server) -> String {
    format!(
        "{key}: SMTP OK: {}:{}{}",
        server.host,
        server.port,
        server
            .user
            .as_deref()
            .map(|u| format!(", logged in as {u}"))
            .unwrap_or_default()
    )
}

/// The SMTP identity the mail of `mailbox` goes through, with its section: its own
/// (`mailboxes.NAME.smtp`) or `[smtp]`.
pub(super) fn smtp_login(s: &Settings, mailbox: &str) -> (String, crate::config::Server) {
    match s.smtp_identities().remove(mailbox) {
        Some(own) => (format!("mailboxes.{mailbox}.smtp"), own),
        None => ("smtp".to_string(), s.smtp.clone()),
    }
}

/// Logs in to one SMTP server (EHLO, STARTTLS or TLS as configured, AUTH when it has a
/// login) and out again (QUIT).
pub(super) async fn try_smtp(server: &crate::config::Server) -> Result<(), crate::send::SmtpError> {
    Transport::smtp(server, &Default::default(), None)?
        .try_login()
        .await
}

/// The offline part: both files, every error and warning; the settings when given.
fn check_files(cli: &Cli) -> Result<Option<Settings>, CliError> {
    let mut errors = Vec::new();
    let rules = kept(crate::pipeline::ruletest::load(&cli.rules), &mut errors);
    let settings = load_settings(cli, &mut errors);
    if let (Some(r), Some(s)) = (&rules, &settings) {
        errors.extend(s.check_against(r));
        for w in s.blind_queues(r) {
            eprintln!("warning: {w}");
        }
    }
    if let Some(s) = &settings {
        errors.extend(s.secret_errors());
    }
    // Warnings are printed even when there are errors: they are often the cause.
    if let Some(r) = &rules {
        print_warnings(r);
    }
    if !errors.is_empty() {
        return Err(CliError::Check(errors));
    }
    let rules = rules.expect("no errors means rules loaded");
    println!("{}", render::rules_ok(&cli.rules, &rules));
    if let Some(s) = &settings {
        println!("{}", render::settings_ok(s));
    }
    Ok(settings)
}

/// The settings, when a settings file was named or exists at its default place.
fn load_settings(cli: &Cli, errors: &mut Vec<ConfigError>) -> Option<Settings> {
    let config_given = std::env::args().any(|a| a == "--config" || a.starts_with("--config="))
        || std::env::var_os("MAILTRIAGE_CONFIG").is_some();
    if !config_given && !cli.config.exists() {
        return None;
    }
    kept(Settings::load(&cli.config), errors)
}

/// The loaded file, or `None` with its errors added to the others.
fn kept<T>(loaded: Result<T, ConfigErrors>, errors: &mut Vec<ConfigError>) -> Option<T> {
    loaded.map_err(|e| errors.extend(e.0)).ok()
}

fn print_warnings(rules: &Rules) {
    for w in &rules.warnings {
        eprintln!("warning: {w}");
    }
    if !rules.warnings.is_empty() {
        eprintln!("{} warning(s)", rules.warnings.len());
    }
}
