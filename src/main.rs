//! The `mailtriage` binary: parses the command line, sets up logging and runs one
//! command. Everything else lives in the library.

#![deny(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use mailtriage::cli::{self, Cli, CliError, Command};
use mailtriage::runtime::daemon;

fn init_logging(daemon: bool) {
    // The offline commands print their own report on stdout; their logs are only for
    // trouble, unless RUST_LOG asks for more.
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The IMAP and SMTP clients log every command as written at debug and trace, LOGIN
    // and AUTH included: passwords and OAuth tokens. They stay at info, whatever
    // RUST_LOG asks for.
    let filter = ["async_imap=info", "lettre=info"]
        .into_iter()
        .fold(filter, |f, d| {
            f.add_directive(d.parse().expect("a valid directive"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Blocks of 256 KB or more (a mail, its forward, the bytes read back from the spool)
/// are mapped on their own and go back to the system when freed. glibc's default
/// threshold starts at 128 KB and rises to the size of each such block freed, up to
/// 32 MB; past that, the next mails' blocks come from the heap arenas, which keep the
/// memory once they are freed: a backlog of 8 MB forwards peaked at 143 MB of RSS, 73 MB
/// with the threshold fixed (bench/e2e.py, phase bigbacklog). Setting it also stops it
/// rising.
///
/// Why not higher: sled allocates 41 metric histograms of 512 KB each at its first open,
/// zeroed, and never writes them (its metrics are compiled out). From the heap, calloc
/// clears whatever of them lands on memory used before, and those pages stay: 5.4 MB of
/// zeros in an idle daemon with a threshold of 1 MB. Mapped on their own, they are
/// zero pages the system never backs (bench/e2e.py, phase year: idle RSS 30.3 -> 25.0 MB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn big_blocks_go_back_to_the_system() {
    // SAFETY: mallopt only sets a parameter of the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        // Each thread that allocates would get an arena of its own (up to eight per
        // CPU), each keeping what was freed in it; the tokio workers and blocking
        // threads share two.
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn big_blocks_go_back_to_the_system() {}

fn main() -> ExitCode {
    big_blocks_go_back_to_the_system();
    // Everything mailtriage writes (the state, quarantined mail, an offline outbox) holds
    // customers' mail: the owner's alone, whatever umask the shell or unit gave.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = Cli::parse();
    init_logging(matches!(args.command, Command::Run { .. }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Cli) -> Result<(), CliError> {
    match &args.command {
        Command::Run { shadow } => Ok(daemon::run(&daemon::Inputs {
            rules: args.rules.clone(),
            config: args.config.clone(),
            shadow: *shadow,
        })
        .await?),
        Command::Status { state, json } => cli::status(args, state.as_deref(), *json),
        Command::Check { connect } => cli::check(args, *connect).await,
        Command::LoginTest { mailbox, smtp } => {
            cli::login_test(args, mailbox.as_deref(), *smtp).await
        }
        Command::Explain {
            file,
            mailbox,
            json,
            state,
        } => cli::explain(args, file, mailbox.as_deref(), *json, state.as_deref()),
        Command::Preview {
            mailbox,
            last,
            json,
            state,
        } => cli::preview(args, mailbox, *last, *json, state.as_deref()).await,
        Command::Triage {
            files,
            mailbox,
            outbox,
            state,
            json,
        } => {
            let (mailbox, state) = (mailbox.as_deref(), state.as_deref());
            cli::triage(args, files, mailbox, outbox, state, *json).await
        }
        Command::Demo { outbox, with_rules } => cli::demo(outbox, with_rules.as_deref()).await,
        Command::Tickets { cmd, state, json } => cli::tickets(args, cmd, state.as_deref(), *json),
        Command::Outbox { cmd, state, json } => cli::outbox(args, cmd, state.as_deref(), *json),
    }
}
