//! OAuth2 logins on the real stack: Dovecot checks the tokens itself (an `oauth2` passdb
//! validating JWTs locally) for IMAP, and Postfix's submission port asks Dovecot, so the
//! same tokens log in for SMTP. Tokens come from a `token_command` or from the grants the
//! daemon runs against a token endpoint the test starts ([`TokenEndpoint`], a small
//! RFC 6749 endpoint in the harness). Postfix writes the SASL login a mail was submitted
//! with into its Received header; Dovecot's log says which mechanism a login used.

mod support;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::cli::cli;
use support::daemon::Daemon;
use support::lab::Lab;
use support::mail::Mail;
use support::oauth::{jwt_signed, Grants, TokenEndpoint};
use support::ops::{wait_status, write_secret};
use support::{poll, FetchedMail, WAIT};

/// The login lines of billing's and the others' sections as the lab writes them.
fn password_login(lab: &Lab, mailbox: &str) -> String {
    format!(
        "user = \"{mailbox}@example.test\"\npassword_file = \"{}\"",
        lab.password_file(lab.dir()).display()
    )
}

/// `mailbox` logs in to IMAP with the `oauth` table `table` (inline) instead of the password.
fn imap_oauth(lab: &Lab, mailbox: &str, table: &str) {
    let login = password_login(lab, mailbox);
    lab.edit_config(
        &login,
        &format!("user = \"{mailbox}@example.test\"\noauth = {{ {table} }}"),
    );
}

/// A file holding `token`, mode 0600, and the `token_command` that prints it.
fn token_file(lab: &Lab, name: &str, token: &str) -> (PathBuf, String) {
    let path = lab.dir().join(name);
    write_secret(&path, &format!("{token}\n"));
    let command = format!("cat {}", path.display());
    (path, command)
}

/// As [`token_file`], with a token for billing signed with another key than the stack's.
fn forged_token(lab: &Lab, name: &str) -> (PathBuf, String) {
    let forged = jwt_signed(
        b"not the stack's key",
        &lab.oauth_issuer,
        "billing@example.test",
        3600,
    );
    token_file(lab, name, &forged)
}

/// `[mailboxes.NAME.smtp]` on the submission port (AUTH required) as `NAME@`, with the
/// `oauth` table `table` (inline).
fn smtp_oauth(lab: &Lab, mailbox: &str, table: &str) -> String {
    format!(
        "\n[mailboxes.{mailbox}.smtp]\nport = {port}\nuser = \"{mailbox}@example.test\"\noauth = {{ {table} }}\n",
        port = lab.submission_port,
    )
}

fn dovecot_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.stack.dir.join("log/dovecot.log")).unwrap_or_default()
}

/// Waits until Dovecot logged a login of `user` with `mechanism`.
fn wait_dovecot_login(lab: &Lab, user: &str, mechanism: &str) {
    let needle = format!("user=<{user}>, method={mechanism}");
    poll(&needle, WAIT, Duration::from_millis(100), || {
        let log = dovecot_log(lab);
        log.contains(&needle).then_some(()).ok_or(log)
    });
}

fn sent_with_login(m: &FetchedMail, user: &str) -> bool {
    String::from_utf8_lossy(&m.raw).contains(&format!("(Authenticated sender: {user})"))
}

fn question(from: &str, to: &str, id: &str) -> Mail {
    Mail::from(from)
        .to(to)
        .id(id)
        .subject("A question about my contract")
        .body("Hello, could you tell me when my contract ends?")
}

fn outage(from: &str, to: &str, id: &str) -> Mail {
    Mail::from(from)
        .to(to)
        .id(id)
        .subject("Website is down")
        .body("Error 500 on every page.")
}

#[test]
fn tokens_from_a_command_log_in_to_imap_and_smtp_with_xoauth2_and_oauthbearer() {
    let lab = Lab::start();
    let (_, billing_cmd) = token_file(
        &lab,
        "billing.token",
        &lab.jwt("billing@example.test", 3600),
    );
    let (_, support_cmd) = token_file(
        &lab,
        "support.token",
        &lab.jwt("support@example.test", 3600),
    );
    imap_oauth(
        &lab,
        "billing",
        &format!("mechanism = \"xoauth2\", token_command = \"{billing_cmd}\""),
    );
    // No mechanism: the server offers OAUTHBEARER, which is taken.
    imap_oauth(
        &lab,
        "support",
        &format!("token_command = \"{support_cmd}\""),
    );
    // Billing's mail goes out on the submission port (AUTH required) with its token.
    let own_smtp = smtp_oauth(
        &lab,
        "billing",
        &format!("token_command = \"{billing_cmd}\""),
    );
    // Support's with OAUTHBEARER, as its table says.
    let support_smtp = smtp_oauth(
        &lab,
        "support",
        &format!("mechanism = \"oauthbearer\", token_command = \"{support_cmd}\""),
    );
    lab.write_config(&(lab.config_text() + &own_smtp + &support_smtp));
    let daemon = lab.daemon();

    wait_dovecot_login(&lab, "billing@example.test", "XOAUTH2");
    wait_dovecot_login(&lab, "support@example.test", "OAUTHBEARER");

    lab.send_mail(&question(
        "customer1@example.test",
        "billing@example.test",
        "oauth-a-1@client.test",
    ));
    let ack = lab.wait_ack("customer1@example.test", "oauth-a-1@client.test");
    assert!(
        sent_with_login(&ack, "billing@example.test"),
        "the acknowledgement went out with billing's token:\n{}",
        String::from_utf8_lossy(&ack.raw)
    );
    lab.send_mail(&outage(
        "customer2@example.test",
        "billing@example.test",
        "oauth-a-2@client.test",
    ));
    let fwd = lab.wait_forward("support@example.test", "oauth-a-2@client.test");
    assert!(
        sent_with_login(&fwd, "billing@example.test"),
        "the forward went out with billing's token:\n{}",
        String::from_utf8_lossy(&fwd.raw)
    );
    // Support reads its mail with its OAUTHBEARER login, triages it and acknowledges it
    // through SMTP with OAUTHBEARER.
    lab.send_mail(&outage(
        "customer3@example.test",
        "support@example.test",
        "oauth-a-3@client.test",
    ));
    lab.wait_flagged("support@example.test", "oauth-a-3@client.test", "$Triaged");
    let ack = lab.wait_ack("customer3@example.test", "oauth-a-3@client.test");
    assert!(
        sent_with_login(&ack, "support@example.test"),
        "support's acknowledgement went out with its token:\n{}",
        String::from_utf8_lossy(&ack.raw)
    );
    lab.wait_flagged("billing@example.test", "oauth-a-1@client.test", "$Triaged");
    assert!(dovecot_log(&lab).contains("method=XOAUTH2"));
    assert!(daemon.stop().success());
}

/// A grant table for `endpoint`: its URL, client ID and secret (the secret in a 0600 file).
fn grant_table(lab: &Lab, endpoint: &TokenEndpoint, grant: &str, extra: &str) -> String {
    let secret = lab.dir().join(format!("{grant}.client-secret"));
    let (id, value) = endpoint.with(|g| (g.client_id.clone(), g.client_secret.clone()));
    write_secret(&secret, &format!("{value}\n"));
    format!(
        "grant = \"{grant}\", token_url = \"{url}\", client_id = \"{id}\", client_secret_file = \"{s}\"{extra}",
        url = endpoint.url,
        s = secret.display()
    )
}

/// A refresh token file holding the endpoint's current refresh token, 0600.
fn refresh_file(lab: &Lab, endpoint: &TokenEndpoint) -> PathBuf {
    let path = lab.dir().join("refresh.token");
    write_secret(
        &path,
        &format!("{}\n", endpoint.with(|g| g.refresh_token.clone())),
    );
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_client_credentials_and_refresh_token_grants_get_tokens_from_the_endpoint() {
    let lab = Lab::start();
    let app = TokenEndpoint::start(&lab, "billing@example.test");
    let user = TokenEndpoint::start(&lab, "support@example.test");
    imap_oauth(
        &lab,
        "billing",
        &grant_table(&lab, &app, "client_credentials", ", scope = \"mail.imap\""),
    );
    let refresh = refresh_file(&lab, &user);
    let table = grant_table(
        &lab,
        &user,
        "refresh_token",
        &format!(", refresh_token_file = \"{}\"", refresh.display()),
    );
    imap_oauth(&lab, "support", &table);
    let check = cli(&["check", "--connect", "--config"])
        .arg(&lab.config)
        .rules(&lab.rules)
        .run();
    assert!(check.status.success(), "{}", check.text());
    let daemon = lab.daemon();

    lab.send_mail(&question(
        "customer4@example.test",
        "billing@example.test",
        "oauth-b-1@client.test",
    ));
    lab.send_mail(&outage(
        "customer5@example.test",
        "support@example.test",
        "oauth-b-2@client.test",
    ));
    lab.wait_flagged("billing@example.test", "oauth-b-1@client.test", "$Triaged");
    lab.wait_flagged("support@example.test", "oauth-b-2@client.test", "$Triaged");

    let first = app.with(|g| g.requests[0].clone());
    assert_eq!(first["grant_type"], "client_credentials");
    assert_eq!(first["scope"], "mail.imap");
    assert_eq!(first["client_secret"], "client-s3cret");
    // Every refresh rotated the token, and the file holds the latest, still 0600.
    let (current, rotated, grants) = user.with(|g| {
        let grants: Vec<String> = g.requests.iter().map(|r| r["grant_type"].clone()).collect();
        (g.refresh_token.clone(), g.rotated.len(), grants)
    });
    assert!(
        rotated >= 1 && grants.iter().all(|g| g == "refresh_token"),
        "{grants:?}"
    );
    assert_eq!(std::fs::read_to_string(&refresh).unwrap().trim(), current);
    assert_eq!(mode(&refresh), 0o600);
    assert!(daemon.stop().success());
}

/// Kicks `user`'s IMAP sessions off the stack's Dovecot (`doveadm kick`).
fn kick(lab: &Lab, user: &str) {
    let conf = lab.stack.dir.join("dovecot/dovecot.conf");
    let out = Command::new("doveadm")
        .arg("-c")
        .arg(&conf)
        .args(["kick", user])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doveadm kick: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Billing logs in with the client credentials grant against an endpoint set up by
/// `set`; the daemon runs, one mail is triaged on the first token. Returns the endpoint,
/// the daemon and when that token was issued (seconds since the epoch).
fn billing_on_one_token(lab: &Lab, set: impl FnOnce(&mut Grants)) -> (TokenEndpoint, Daemon, u64) {
    let endpoint = TokenEndpoint::start(lab, "billing@example.test");
    endpoint.with(set);
    imap_oauth(
        lab,
        "billing",
        &grant_table(lab, &endpoint, "client_credentials", ""),
    );
    let daemon = lab.daemon();
    lab.send_mail(&question(
        "customer6@example.test",
        "billing@example.test",
        "oauth-c-1@client.test",
    ));
    lab.wait_flagged("billing@example.test", "oauth-c-1@client.test", "$Triaged");
    let issued = unix_now();
    assert_eq!(endpoint.with(|g| g.requests.len()), 1);
    (endpoint, daemon, issued)
}

/// Once the clock is past `t`, billing's session is cut, and a mail arriving then is
/// triaged after the daemon logged in again.
fn relogin_after(lab: &Lab, t: u64) {
    wait_past(t);
    kick(lab, "billing@example.test");
    lab.send_mail(&question(
        "customer7@example.test",
        "billing@example.test",
        "oauth-c-2@client.test",
    ));
    lab.wait_flagged("billing@example.test", "oauth-c-2@client.test", "$Triaged");
    lab.wait_ack("customer7@example.test", "oauth-c-2@client.test");
}

/// Waits until the clock is past `t` (seconds since the epoch).
fn wait_past(t: u64) {
    poll("the time", WAIT, Duration::from_millis(200), || {
        (unix_now() > t)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
}

#[test]
fn an_expired_token_is_renewed_and_no_mail_is_lost() {
    let lab = Lab::start();
    // The endpoint says an hour, but the first token expires after 3 s: kept, it is
    // refused at the next login, renewed, and the login goes through.
    let (endpoint, daemon, issued) = billing_on_one_token(&lab, |g| g.token_lifetime = 3);
    // The next tokens last: a failed login is answered late (Dovecot's penalty for the
    // address), later than a 3 s token lives.
    endpoint.with(|g| g.token_lifetime = 3600);
    relogin_after(&lab, issued + 4);
    daemon.wait_log("OAuth token refused; renewing it and trying once more.");
    assert!(endpoint.with(|g| g.requests.len()) >= 2);
    assert!(
        !daemon.log().contains("Mailbox cannot log in"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_token_about_to_expire_is_renewed_before_the_login() {
    let lab = Lab::start();
    // The endpoint says 5 s (the tokens themselves last): the kept token is used for
    // 4 s, and a login after that fetches a new one first.
    let (endpoint, daemon, issued) = billing_on_one_token(&lab, |g| g.expires_in = 5);
    relogin_after(&lab, issued + 5);
    assert_eq!(endpoint.with(|g| g.requests.len()), 2);
    assert!(
        !daemon.log().contains("OAuth token refused"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_refused_token_is_an_error_naming_the_mailbox_and_the_others_go_on() {
    let lab = Lab::start();
    // Billing's command prints a token signed with another key; sales' refresh token
    // was revoked at the endpoint.
    let (_, cmd) = forged_token(&lab, "billing.token");
    imap_oauth(&lab, "billing", &format!("token_command = \"{cmd}\""));
    let endpoint = TokenEndpoint::start(&lab, "sales@example.test");
    let refresh = refresh_file(&lab, &endpoint);
    endpoint.with(|g| g.refresh_token = "rt-revoked-meanwhile".into());
    let table = grant_table(
        &lab,
        &endpoint,
        "refresh_token",
        &format!(", refresh_token_file = \"{}\"", refresh.display()),
    );
    imap_oauth(&lab, "sales", &table);
    // Dovecot answers the failed logins of an address later each time, up to 15 s:
    // billing waits for the answer, so that it is the server's words that show.
    let patient = "\n[mailboxes.billing.imap]\ntimeout = \"30s\"\n";
    lab.write_config(&(lab.config_text() + patient));
    let daemon = lab.daemon();

    daemon.wait_log_until("billing's and sales' errors", |log| {
        log.lines()
            .any(|l| l.contains("section=mailboxes.billing") && l.contains("ERROR"))
            && log
                .lines()
                .any(|l| l.contains("section=mailboxes.sales") && l.contains("ERROR"))
    });
    let log = daemon.log();
    let billing = log
        .lines()
        .find(|l| l.contains("section=mailboxes.billing"))
        .unwrap();
    assert!(
        billing.contains("Mailbox cannot log in")
            && billing.contains("AUTHENTICATIONFAILED")
            && billing.contains("billing@example.test"),
        "{billing}"
    );
    let sales = log
        .lines()
        .find(|l| l.contains("section=mailboxes.sales"))
        .unwrap();
    assert!(
        sales.contains("invalid_grant") && sales.contains("revoked"),
        "{sales}"
    );
    // Support (a password) goes on.
    lab.send_mail(&outage(
        "customer8@example.test",
        "support@example.test",
        "oauth-d-1@client.test",
    ));
    lab.wait_flagged("support@example.test", "oauth-d-1@client.test", "$Triaged");
    let st = wait_status(&daemon, &lab.state, |s| {
        s["mailboxes"]["billing"]["state"] == "failing"
            && s["mailboxes"]["sales"]["state"] == "failing"
    });
    let why = st["mailboxes"]["billing"]["last_error"].as_str().unwrap();
    assert!(why.contains("AUTHENTICATIONFAILED"), "{st:#}");
    let why = st["mailboxes"]["sales"]["last_error"].as_str().unwrap();
    assert!(why.contains("invalid_grant"), "{st:#}");
    assert!(daemon.stop().success());
}

#[test]
fn a_refused_smtp_token_keeps_the_mail_until_the_command_gives_a_good_one() {
    let lab = Lab::start();
    let (token, cmd) = forged_token(&lab, "billing-smtp.token");
    let own_smtp = smtp_oauth(&lab, "billing", &format!("token_command = \"{cmd}\""));
    lab.write_config(&(lab.config_text() + &own_smtp));
    let daemon = lab.daemon();
    lab.send_mail(&question(
        "customer9@example.test",
        "billing@example.test",
        "oauth-e-1@client.test",
    ));
    // Refused, renewed (the command run again: the same token), refused again: an
    // ERROR with the server's answer, naming the login billing's mail goes through (not
    // `[smtp]`, which is fine), and the acknowledgement waits in the outbox.
    let line = daemon.log_line("SMTP login failed");
    assert!(
        line.contains("ERROR")
            && line.contains("535")
            && line.contains("XOAUTH2 as billing@example.test")
            && line.contains("section=mailboxes.billing.smtp")
            && line.contains("password or token"),
        "{line}"
    );
    let st = wait_status(&daemon, &lab.state, |s| s["smtp"]["state"] == "failing");
    assert!(
        st["smtp"]["last_answer"]
            .as_str()
            .unwrap_or_default()
            .contains("535"),
        "{st:#}"
    );
    // The command prints a good token now: the next connection sends the mail.
    write_secret(
        &token,
        &format!("{}\n", lab.jwt("billing@example.test", 3600)),
    );
    let ack = lab.wait_ack("customer9@example.test", "oauth-e-1@client.test");
    assert!(sent_with_login(&ack, "billing@example.test"));
    assert!(daemon.stop().success());
}

#[test]
fn the_tokens_stay_out_of_the_log_even_when_the_clients_are_asked_to_trace() {
    let lab = Lab::start();
    let token = lab.jwt("billing@example.test", 3600);
    let (_, cmd) = token_file(&lab, "billing.token", &token);
    imap_oauth(
        &lab,
        "billing",
        &format!("mechanism = \"xoauth2\", token_command = \"{cmd}\""),
    );
    let own_smtp = smtp_oauth(&lab, "billing", &format!("token_command = \"{cmd}\""));
    lab.write_config(&(lab.config_text() + &own_smtp));
    // The IMAP and SMTP clients write every command they send at debug and trace.
    let daemon = lab.daemon_with_env(&[(
        "RUST_LOG",
        std::ffi::OsStr::new("info,lettre=trace,async_imap=trace"),
    )]);
    lab.send_mail(&question(
        "customer10@example.test",
        "billing@example.test",
        "oauth-f-1@client.test",
    ));
    let ack = lab.wait_ack("customer10@example.test", "oauth-f-1@client.test");
    assert!(sent_with_login(&ack, "billing@example.test"));
    let sasl = format!("user=billing@example.test\x01auth=Bearer {token}\x01\x01");
    let encoded = base64::engine::general_purpose::STANDARD.encode(sasl);
    let log = daemon.log();
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature) && !log.contains(&encoded[..40]),
        "the token is in the log:\n{log}"
    );
    assert!(daemon.stop().success());
}
