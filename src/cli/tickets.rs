//! `mailtriage tickets`: lists and shows tickets (from the state alone; the rules only
//! name the queues), resolves one or records a promise on it. The
//! running daemon answers over its control socket; with no daemon, the state directory
//! is read (and, for a promise, written) directly.

use std::path::Path;

use super::{ask_daemon, load_rules, refused, render, state_dir, Cli, CliError, TicketsCmd};
use crate::record::{Listing, Store, StoreError};
use crate::runtime::control::{self, Request, Response};

pub fn tickets(
    cli: &Cli,
    cmd: &TicketsCmd,
    state: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    // Only for the queues' names: a ticket is shown from the state alone.
    let rules = load_rules(&cli.rules).ok();
    let (resp, _) = carry_out(&state_dir(cli, state)?, &request(cmd))?;
    let mails = matches!(cmd, TicketsCmd::Show { mails: true, .. });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::tickets_json(&resp))?
        );
        // The array stays an array of tickets; what it leaves out is said beside it.
        if resp.more > 0 {
            eprintln!("{}", render::not_listed(resp.more));
        }
        return Ok(());
    }
    let text = match cmd {
        TicketsCmd::List { all, .. } => render::ticket_list(&resp, *all),
        TicketsCmd::Show { .. } | TicketsCmd::Promise { .. } | TicketsCmd::Resolve { .. } => {
            render::ticket_details(rules.as_ref(), &resp, mails)
        }
    };
    print!("{text}");
    Ok(())
}

fn request(cmd: &TicketsCmd) -> Request {
    match cmd {
        TicketsCmd::List { all, limit } => Request::List {
            which: match all {
                true => Listing::All,
                false => Listing::Open,
            },
            limit: *limit as usize,
        },
        TicketsCmd::Show { id, mails } => Request::Show {
            id: id.clone(),
            mails: *mails,
        },
        TicketsCmd::Resolve { id, by, note } => Request::Resolve {
            id: id.clone(),
            by: by.clone(),
            note: note.clone(),
        },
        TicketsCmd::Promise { id, text, by } => Request::Promise {
            id: id.clone(),
            text: text.clone(),
            by: by.clone(),
        },
    }
}

/// Carries out `req`: the daemon that holds `state` does, or, with none, the state
/// itself. Returns the answer, and whether a daemon gave it; a request turned down is an
/// error in its own words.
pub(super) fn carry_out(state: &Path, req: &Request) -> Result<(Response, bool), CliError> {
    let (resp, daemon) = match ask_daemon(state, req)? {
        Some(r) => (r, true),
        None => (handle_offline(state, req)?, false),
    };
    if !resp.ok {
        return Err(refused(resp.error, "request failed"));
    }
    Ok((resp, daemon))
}

/// No daemon listens: the request is carried out on the state directory itself.
fn handle_offline(state: &Path, req: &Request) -> Result<Response, CliError> {
    if !state.join("db").exists() {
        return Err(CliError::NoState {
            dir: state.to_path_buf(),
        });
    }
    let store = Store::open(state).map_err(|source| match source {
        // It says so itself, with the directory.
        StoreError::Held(_) => CliError::Store(source),
        source => CliError::StateHeld {
            dir: state.to_path_buf(),
            source,
        },
    })?;
    Ok(control::handle(&store, req))
}
