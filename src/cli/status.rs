//! `mailtriage status`: asks the running daemon over its control socket how it is.

use std::path::Path;

use super::{ask_daemon, refused, render, state_dir, Cli, CliError};
use crate::runtime::control::{self, Request};
use crate::runtime::status::StatusReport;

pub fn status(cli: &Cli, state: Option<&Path>, json: bool) -> Result<(), CliError> {
    let st = ask_status(&state_dir(cli, state)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", render::status_text(&st));
    }
    Ok(())
}

/// Only a running daemon can answer: there is no offline fallback for its state.
fn ask_status(state: &Path) -> Result<StatusReport, CliError> {
    let resp = ask_daemon(state, &Request::Status)?.ok_or_else(|| CliError::NoDaemon {
        socket: control::socket_path(state),
    })?;
    match (resp.ok, resp.status) {
        (true, Some(st)) => Ok(st),
        _ => Err(refused(resp.error, "status request failed")),
    }
}
