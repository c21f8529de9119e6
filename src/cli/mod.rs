//! Command-line interface: argument parsing and the offline commands (`check`,
//! `explain`, `triage`, `demo`). `run` hands over to [`crate::runtime::daemon`].

pub mod demo;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::config::{Mailbox, Rules, Settings, DEFAULT_CONFIG, DEFAULT_RULES};
use crate::parse::parse;
use crate::pipeline::{self, Action, Incoming, Report};
use crate::record::Store;
use crate::send::{self, Transport};
use crate::ticket::MailKind;

#[derive(Parser, Debug)]
#[command(
    name = "mailtriage",
    version,
    about = "Triage of shared support mailboxes: forwards misdirected requests to the right team with a context note and acknowledges the customer."
)]
pub struct Cli {
    /// The rules file (what to do with mail).
    #[arg(long, global = true, env = "MAILTRIAGE_RULES", default_value = DEFAULT_RULES)]
    pub rules: PathBuf,
    /// The settings file (servers, logins, state directory).
    #[arg(long, global = true, env = "MAILTRIAGE_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: watch every mailbox, triage new mail, send the outbox.
    Run {
        /// Shadow mode for every mailbox: triage and record what would be done; send
        /// nothing, change nothing on the server.
        #[arg(long)]
        shadow: bool,
    },
    /// Ask the running daemon how it is: each mailbox's state, the outbox, the rules
    /// version, the last errors.
    Status {
        /// The state directory; by default the one in --config.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check rules.toml (and mailtriage.toml, when it exists or --config is given); print every error.
    Check,
    /// Show what the daemon would do with a message, and why. Touches nothing.
    Explain {
        /// The message, as an .eml file.
        file: PathBuf,
        /// The mailbox it reached (a name from rules.toml); by default found from its recipients.
        #[arg(long)]
        mailbox: Option<String>,
        /// Print JSON (documented in the README) instead of text.
        #[arg(long)]
        json: bool,
        /// Read thread state from this state directory (never written).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Triage .eml files offline: the whole pipeline, mails written as .eml files.
    Triage {
        /// The messages.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The mailbox they reached; by default found from each message's recipients.
        #[arg(long)]
        mailbox: Option<String>,
        /// Folder the forwards and acknowledgements are written to.
        #[arg(long)]
        outbox: PathBuf,
        /// State directory (tickets, Message-ID index); a fresh temporary one by default.
        #[arg(long)]
        state: Option<PathBuf>,
        /// One JSON report per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show tickets and their timelines, or record a promise on one (through the running
    /// daemon, or from the state directory when no daemon runs).
    Tickets {
        #[command(subcommand)]
        cmd: TicketsCmd,
        /// The state directory; by default the one in --config.
        #[arg(long, global = true)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Triage the sample mail built into the binary with the shipped rules, offline.
    Demo {
        /// Folder the forwards and acknowledgements are written to.
        #[arg(long, default_value = "outbox")]
        outbox: PathBuf,
        /// Use this rules file instead of the built-in one.
        #[arg(long = "with-rules")]
        with_rules: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TicketsCmd {
    /// One line per ticket.
    List,
    /// A ticket with its whole timeline.
    Show { id: String },
    /// Record a promise made to the customer; it appears in every later note.
    Promise {
        id: String,
        text: String,
        /// Who promised it.
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

/// A failure the user must see, already worded; the exit code is 1.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

pub fn load_rules(path: &Path) -> Result<Rules, Failure> {
    Rules::load(path).map_err(|e| {
        Failure(format!(
            "{e}\n{}: {} error(s); nothing was changed",
            path.display(),
            e.0.len()
        ))
    })
}

pub fn check(cli: &Cli) -> Result<(), Failure> {
    let mut errors = Vec::new();
    let rules = match Rules::load(&cli.rules) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.extend(e.0);
            None
        }
    };
    let config_given = std::env::args().any(|a| a == "--config" || a.starts_with("--config="))
        || std::env::var_os("MAILTRIAGE_CONFIG").is_some();
    let mut settings = None;
    if config_given || cli.config.exists() {
        match Settings::load(&cli.config) {
            Ok(s) => settings = Some(s),
            Err(e) => errors.extend(e.0),
        }
    }
    if let (Some(r), Some(s)) = (&rules, &settings) {
        errors.extend(s.check_against(r));
    }
    // Warnings are printed even when there are errors: they are often the cause.
    if let Some(r) = &rules {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        if !r.warnings.is_empty() {
            eprintln!("{} warning(s)", r.warnings.len());
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(Failure(format!("{}\n{n} error(s)", text.join("\n"))));
    }
    let r = rules.expect("no errors means rules loaded");
    println!(
        "{}: OK ({} rules, {} categories, {} queues, {} mailboxes, {} tests passed, languages: {})",
        cli.rules.display(),
        r.rules.len(),
        r.categories.len(),
        r.queues.len(),
        r.mailboxes.len(),
        r.tests.len(),
        r.templates.languages.join(", ")
    );
    if let Some(s) = settings {
        println!(
            "{}: OK ({} mailbox logins, state in {})",
            s.path.display(),
            s.mailboxes.len(),
            s.state_dir.display()
        );
    }
    Ok(())
}

/// The mailbox a message reached: the one named, or the first watched address among
/// its Delivered-To, To and Cc.
fn mailbox_for<'r>(
    rules: &'r Rules,
    name: Option<&str>,
    raw: &[u8],
    file: &Path,
) -> Result<&'r Mailbox, Failure> {
    let names = || {
        rules
            .mailboxes
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(n) = name {
        return rules.mailboxes.get(n).ok_or_else(|| {
            Failure(format!(
                "no mailbox {n:?} in the rules (there are: {})",
                names()
            ))
        });
    }
    if let Ok(mail) = parse(raw) {
        let candidates = mail
            .delivered_to
            .iter()
            .map(String::as_str)
            .chain(mail.to.iter().map(|a| a.address.as_str()))
            .chain(mail.cc.iter().map(|a| a.address.as_str()));
        for a in candidates {
            if let Some(m) = rules.mailbox_by_address(a) {
                return Ok(m);
            }
        }
    }
    Err(Failure(format!(
        "{}: cannot tell which mailbox this message reached; pass --mailbox (one of: {})",
        file.display(),
        names()
    )))
}

fn read(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| Failure(format!("{}: {e}", file.display())))
}

pub fn explain(
    cli: &Cli,
    file: &Path,
    mailbox: Option<&str>,
    json: bool,
    state: Option<&Path>,
) -> Result<(), Failure> {
    let rules = load_rules(&cli.rules)?;
    let raw = read(file)?;
    if let Err(e) = pipeline::read_mail(&rules, &raw) {
        return Err(Failure(format!(
            "{}: not a message mailtriage can read: {e}",
            file.display()
        )));
    }
    let mb = mailbox_for(&rules, mailbox, &raw, file)?;
    let store = state.map(Store::open).transpose()?;
    let report = pipeline::explain(&rules, store.as_ref(), mb, &raw, SystemTime::now())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", explain_text(&rules, &report));
    }
    Ok(())
}

fn explain_text(rules: &Rules, r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mb = &rules.mailboxes[&r.mailbox];
    let _ = writeln!(s, "mailbox:   {} ({})", r.mailbox, mb.address);
    let _ = writeln!(
        s,
        "message:   {}",
        r.message_id
            .as_deref()
            .map(|i| format!("<{i}>"))
            .unwrap_or_else(|| "(no Message-ID)".into())
    );
    let _ = writeln!(s, "from:      {}", r.from.as_deref().unwrap_or("(none)"));
    let _ = writeln!(s, "subject:   {}", r.subject.as_deref().unwrap_or(""));
    let _ = writeln!(s, "language:  {}", r.language.as_deref().unwrap_or("-"));
    match &r.category {
        Some(c) => {
            let score = r
                .scores
                .iter()
                .find(|x| &x.category == c)
                .map(|x| x.score)
                .unwrap_or(0);
            let _ = writeln!(s, "category:  {c} (score {score})");
        }
        None => {
            let _ = writeln!(s, "category:  none (no rule fired)");
        }
    }
    for other in r.scores.iter().skip(1) {
        let _ = writeln!(
            s,
            "           also {} (score {})",
            other.category, other.score
        );
    }
    for f in &r.rules {
        let _ = writeln!(
            s,
            "rule:      {} [{} +{}] matched {}: {:?}",
            f.rule, f.category, f.priority, f.field, f.matched
        );
    }
    let action = match r.action {
        Action::Forward => format!(
            "forward to {} ({})",
            r.queue.as_deref().unwrap_or(""),
            r.queue_address.as_deref().unwrap_or("")
        ),
        Action::Keep => format!(
            "keep in {}, owned by {}",
            mb.address,
            r.queue.as_deref().unwrap_or("")
        ),
        other => other.to_string(),
    };
    let _ = writeln!(s, "action:    {action}");
    let _ = writeln!(s, "why:       {}", r.reason);
    let _ = writeln!(
        s,
        "ticket:    {}",
        r.ticket.clone().unwrap_or_else(|| if r.new_ticket {
            "new".into()
        } else {
            "-".into()
        })
    );
    if r.acknowledgement.send {
        let _ = writeln!(
            s,
            "ack:       yes, to {}",
            r.acknowledgement.to.as_deref().unwrap_or("")
        );
    } else {
        let _ = writeln!(
            s,
            "ack:       no: {} ({})",
            r.acknowledgement.reason.as_deref().unwrap_or(""),
            r.acknowledgement.suppressed.unwrap_or("-")
        );
    }
    for m in &r.mails {
        let _ = writeln!(s, "mail:      {} -> {}", m.kind, m.to.join(", "));
    }
    s
}

fn summary_line(name: &str, r: &Report) -> String {
    let request = match (&r.joined_by, &r.category) {
        (Some(_), _) => format!("follow-up of {}", r.ticket.as_deref().unwrap_or("a ticket")),
        (None, Some(c)) => format!("{c} request"),
        (None, None) => "unrecognised request".to_string(),
    };
    let what = match r.action {
        Action::Forward => format!(
            "{request} -> forwarded to {} as {}",
            r.queue_address.as_deref().unwrap_or(""),
            r.ticket.as_deref().unwrap_or("")
        ),
        Action::Keep => format!(
            "{request} -> kept for {} as {}",
            r.queue.as_deref().unwrap_or(""),
            r.ticket.as_deref().unwrap_or("")
        ),
        _ => String::new(),
    };
    let flags = if r.flags.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = r.flags.iter().map(|f| f.rule.as_str()).collect();
        let copy = r
            .mails
            .iter()
            .find(|m| m.kind == MailKind::Escalation)
            .map(|m| format!(", copy to {}", m.to.join(", ")))
            .unwrap_or_default();
        format!("; RED FLAGS: {}{copy}", names.join(", "))
    };
    let what = match r.action {
        Action::Forward | Action::Keep => format!("{what}{flags}"),
        Action::Leave => format!(
            "{} -> left in place, not a customer request",
            r.category.as_deref().unwrap_or("")
        ),
        Action::Ignore => format!("ignored: {}", r.reason),
        Action::Duplicate => format!(
            "already triaged{}",
            r.ticket
                .as_deref()
                .map(|t| format!(" as {t}"))
                .unwrap_or_default()
        ),
        Action::Quarantine => format!("QUARANTINED: {}", r.reason),
    };
    let added = r.mails.iter().any(|m| m.kind == MailKind::Added);
    let ack = if r.acknowledgement.send && added {
        format!(
            "; 'added to your request' to {}",
            r.acknowledgement.to.as_deref().unwrap_or("")
        )
    } else if r.acknowledgement.send {
        format!(
            "; acknowledgement to {} ({})",
            r.acknowledgement.to.as_deref().unwrap_or(""),
            r.language.as_deref().unwrap_or("")
        )
    } else if matches!(r.action, Action::Forward | Action::Keep) {
        format!(
            "; no acknowledgement: {}",
            r.acknowledgement.reason.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    };
    let rules: Vec<&str> = r
        .rules
        .iter()
        .map(|f| f.rule.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rules = if rules.is_empty() {
        String::new()
    } else {
        format!(" [rules: {}]", rules.join(", "))
    };
    format!("{name}: reached {}{rules}: {what}{ack}", r.mailbox)
}

/// Offline triage of files through the whole pipeline, then the outbox drained into
/// `outbox` as .eml files. Returns how many messages were quarantined.
pub async fn triage_files(
    rules: &Rules,
    inputs: &[(String, Vec<u8>)],
    mailbox: Option<&str>,
    outbox: &Path,
    state: &Path,
    json: bool,
) -> Result<usize, Failure> {
    std::fs::create_dir_all(outbox)
        .map_err(|e| Failure(format!("outbox {}: {e}", outbox.display())))?;
    let store =
        Store::open(state).map_err(|e| Failure(format!("state {}: {e}", state.display())))?;
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for (name, raw) in inputs {
        let mb = mailbox_for(rules, mailbox, raw, Path::new(name))?;
        let report = pipeline::triage(
            rules,
            &store,
            Incoming {
                mailbox: mb,
                raw,
                source: None,
            },
            SystemTime::now(),
        )?;
        *counts.entry(report.action.as_str()).or_default() += 1;
        if json {
            let mut v = serde_json::to_value(&report)?;
            v["file"] = serde_json::Value::String(name.clone());
            println!("{v}");
        } else {
            println!("{}", summary_line(name, &report));
        }
    }
    let drained = send::drain(&store, &Transport::files(outbox)).await?;
    if !json {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{} message(s): {}. {} mail(s) written to {}{}",
            inputs.len(),
            parts.join(", "),
            drained.sent,
            outbox.display(),
            if drained.refused + drained.left > 0 {
                format!(" ({} not written)", drained.refused + drained.left)
            } else {
                String::new()
            }
        );
    }
    Ok(counts.get("quarantine").copied().unwrap_or(0))
}

pub async fn triage(
    cli: &Cli,
    files: &[PathBuf],
    mailbox: Option<&str>,
    outbox: &Path,
    state: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let rules = load_rules(&cli.rules)?;
    let inputs = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<Vec<_>, Failure>>()?;
    let tmp;
    let state = match state {
        Some(s) => s,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let quarantined = triage_files(&rules, &inputs, mailbox, outbox, state, json).await?;
    if quarantined > 0 {
        return Err(Failure(format!(
            "{quarantined} message(s) could not be read and were quarantined (see above)"
        )));
    }
    Ok(())
}

pub async fn demo(outbox: &Path, with_rules: Option<&Path>) -> Result<(), Failure> {
    let rules = match with_rules {
        Some(p) => load_rules(p)?,
        None => Rules::parse(Path::new("rules.toml (built in)"), crate::cli::demo::RULES)
            .map_err(|e| Failure(e.to_string()))?,
    };
    if crate::cli::demo::SAMPLES.is_empty() {
        return Err(Failure(
            "this binary was built without sample mail (samples/ was empty)".into(),
        ));
    }
    let inputs: Vec<(String, Vec<u8>)> = crate::cli::demo::SAMPLES
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    let tmp = tempfile::tempdir()?;
    println!(
        "Triaging {} sample messages with the shipped rules (offline; mails go to {}/):",
        inputs.len(),
        outbox.display()
    );
    triage_files(&rules, &inputs, None, outbox, tmp.path(), false).await?;
    Ok(())
}

fn state_dir(cli: &Cli, state: Option<&Path>) -> Result<PathBuf, Failure> {
    match state {
        Some(s) => Ok(s.to_path_buf()),
        None => Ok(Settings::load(&cli.config)
            .map_err(|e| {
                Failure(format!(
                    "{e}\n(pass --state DIR to name the state directory directly)"
                ))
            })?
            .state_dir),
    }
}

/// `mailtriage status`: asks the running daemon over its control socket.
pub fn status(cli: &Cli, state: Option<&Path>, json: bool) -> Result<(), Failure> {
    use crate::runtime::control::{self, Request};
    let state = state_dir(cli, state)?;
    let sock = control::socket_path(&state);
    let resp = control::ask(&sock, &Request::Status)
        .ok_or_else(|| {
            Failure(format!(
                "no mailtriage daemon answers on {} (is it running with this state directory?)",
                sock.display()
            ))
        })?
        .map_err(|e| {
            Failure(format!(
                "the daemon did not answer on its control socket: {e}"
            ))
        })?;
    let st = match (resp.ok, resp.status) {
        (true, Some(st)) => st,
        _ => {
            return Err(Failure(
                resp.error.unwrap_or_else(|| "status request failed".into()),
            ))
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "daemon:    running since {}{}",
        crate::when::human(&st.started),
        if st.shadow { " (shadow mode)" } else { "" }
    );
    println!(
        "rules:     {} version {} (loaded {}; reloads: {} ok, {} refused)",
        st.rules_file,
        st.rules_version,
        crate::when::human(&st.rules_loaded),
        st.reloads_ok,
        st.reloads_failed
    );
    println!("outbox:    {} mail(s) waiting", st.outbox);
    if st.shadow_mails > 0 {
        println!(
            "shadow:    {} mail(s) decided and not sent",
            st.shadow_mails
        );
    }
    for (name, m) in &st.mailboxes {
        println!(
            "mailbox:   {name:<20} {:<10} since {}; last sync {}{}{}",
            format!("{:?}", m.state).to_lowercase(),
            crate::when::human(&m.since),
            m.last_sync
                .as_deref()
                .map(crate::when::human)
                .unwrap_or_else(|| "never".into()),
            if m.shadow { " [shadow]" } else { "" },
            m.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
    for e in &st.last_errors {
        println!("error:     {e}");
    }
    Ok(())
}

pub fn tickets(
    cli: &Cli,
    cmd: &TicketsCmd,
    state: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    use crate::runtime::control::{self, Request};
    let rules = load_rules(&cli.rules)?;
    let state = state_dir(cli, state)?;
    let req = match cmd {
        TicketsCmd::List => Request::List,
        TicketsCmd::Show { id } => Request::Show { id: id.clone() },
        TicketsCmd::Promise { id, text, by } => Request::Promise {
            id: id.clone(),
            text: text.clone(),
            by: by.clone(),
        },
    };
    let resp = match control::ask(&control::socket_path(&state), &req) {
        Some(r) => r.map_err(|e| {
            Failure(format!(
                "the daemon did not answer on its control socket: {e}"
            ))
        })?,
        None => {
            if !state.join("db").exists() {
                return Err(Failure(format!(
                    "{}: no mailtriage state here",
                    state.display()
                )));
            }
            let store = Store::open(&state).map_err(|e| {
                Failure(format!(
                    "state {}: {e} (is a daemon running without its control socket?)",
                    state.display()
                ))
            })?;
            control::handle(&store, &req)
        }
    };
    if !resp.ok {
        return Err(Failure(
            resp.error.unwrap_or_else(|| "request failed".into()),
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&resp.tickets)?);
        return Ok(());
    }
    match cmd {
        TicketsCmd::List => {
            for t in &resp.tickets {
                let state = if t.answered_at.is_some() {
                    "answered"
                } else if t.escalated_at.is_some() {
                    "escalated"
                } else {
                    "open"
                };
                let mut flags = if t.flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", t.flags.join(", "))
                };
                if resp.shadow.contains(&t.id) {
                    flags.push_str(" [shadow]");
                }
                println!(
                    "{:<8} {:<10} {:<9} {}  {}  {}{flags}",
                    t.id,
                    t.queue,
                    state,
                    crate::when::human(&t.created),
                    t.customer,
                    t.subject
                );
            }
            if resp.tickets.is_empty() {
                println!("no tickets");
            }
        }
        TicketsCmd::Show { .. } | TicketsCmd::Promise { .. } => {
            for t in &resp.tickets {
                println!("ticket:    {}", t.id);
                println!(
                    "customer:  {}{}",
                    t.customer_name
                        .as_deref()
                        .map(|n| format!("{n} "))
                        .unwrap_or_default(),
                    format_args!("<{}>", t.customer)
                );
                println!("subject:   {}", t.subject);
                if resp.shadow.contains(&t.id) {
                    println!(
                        "mode:      shadow: decided and recorded, nothing sent, nothing marked"
                    );
                    for m in resp.would_send.iter().filter(|m| m.ticket == t.id) {
                        println!("not sent:  {} -> {}", m.kind, m.to.join(", "));
                    }
                }
                println!(
                    "queue:     {} (since {}); hops: {}",
                    t.queue,
                    crate::when::human(&t.owner_since),
                    t.hops.join(" -> ")
                );
                if !t.flags.is_empty() {
                    println!("flags:     {}", t.flags.join(", "));
                }
                if let Some(i) = &t.incident {
                    println!("incident:  {i}");
                }
                for p in &t.promises {
                    println!(
                        "promise:   {} ({}, {})",
                        p.text,
                        p.by,
                        crate::when::human(&p.at)
                    );
                }
                println!("timeline:");
                for e in &t.history {
                    println!(
                        "  {}  {}",
                        crate::when::human(&e.at),
                        pipeline::history_text(&rules, e, "en")
                    );
                }
            }
        }
    }
    Ok(())
}
