//! `mailtriage login-test [MAILBOX] [--smtp]`: for each mailbox (or the one named), the
//! steps of a session one by one (TCP, TLS, greeting, LOGIN, CAPABILITY, EXAMINE:
//! read-only, nothing changes), what the server offers and the mode the daemon would
//! run the mailbox in; with `--smtp`, a session on the mailbox's own SMTP identity
//! (EHLO, STARTTLS, AUTH, QUIT). It says what worked and, for the step that failed,
//! what the server said. Shares the SMTP side with `check --connect`.

use super::check::{smtp_login, smtp_ok};
use super::{Cli, CliError};
use crate::config::Settings;
use crate::source::{Connection, Source};

pub async fn login_test(cli: &Cli, mailbox: Option<&str>, smtp: bool) -> Result<(), CliError> {
    let s = Settings::load(&cli.config).map_err(CliError::Settings)?;
    let names: Vec<&String> = match mailbox {
        Some(n) => vec![s
            .mailboxes
            .get_key_value(n)
            .map(|(k, _)| k)
            .ok_or_else(|| CliError::NoLogin {
                name: n.to_string(),
                file: cli.config.clone(),
            })?],
        None => s.mailboxes.keys().collect(),
    };
    let tls = crate::tls::ImapTls::new(&s)?;
    let mut failed: Vec<String> = Vec::new();
    for name in names {
        let source = Source::new(name.clone(), &s, s.mailboxes[name].clone(), &tls, false);
        if let Err(e) = imap_steps(&source).await {
            failed.push(e);
        }
        if smtp {
            let (key, server) = smtp_login(&s, name);
            match super::check::try_smtp(&server).await {
                Ok(()) => println!("{}", smtp_ok(&key, &server)),
                Err(e) => {
                    let line =
                        format!("{key}: SMTP FAILED on {}:{}: {e}", server.host, server.port);
                    println!("{line}");
                    failed.push(line);
                }
            }
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(CliError::LoginTest(failed.len())),
    }
}

/// One mailbox's session, step by step on stdout; the failure line when a step failed.
async fn imap_steps(source: &Source) -> Result<(), String> {
    let key = format!("mailboxes.{}", source.name);
    let server = &source.server;
    let mut tried = Vec::new();
    let opened = Connection::examine_noting(source, &mut tried).await;
    let worked = tried.len() - usize::from(opened.is_err());
    for step in &tried[..worked] {
        println!("{key}: {step} OK");
    }
    match opened {
        Ok(c) => {
            println!(
                "{key}: logged in as {} on {}:{}, folder {} ({} messages)",
                source.login.user,
                server.host,
                server.port,
                source.folder,
                c.exists()
            );
            println!("{key}: server offers: {}", c.offered());
            println!("{key}: would run as: {}", c.mode());
            c.logout().await;
            Ok(())
        }
        Err(e) => {
            let step = tried.last().copied().unwrap_or("connect");
            let line = format!(
                "{key}: {step} FAILED on {}:{} as {}: {e}",
                server.host, server.port, source.login.user
            );
            println!("{line}");
            Err(line)
        }
    }
}
