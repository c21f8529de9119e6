//! `mailtriage status`: asks the running daemon over its control socket how it is.

use std::path::Path;

use super::{ask_daemon, render, state_dir, Cli, Failure};
use crate::runtime::control::{self, Request};
use crate::runtime::status::StatusReport;

pub fn status(cli: &Cli, state: Option<&Path>, json: bool) -> Result<(), Failure> {
    let st = ask_status(&state_dir(cli, state)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", render::status_text(&st));
    }
    Ok(())
}

/// Only a running daemon can answer: there is no offline fallback for its state.
fn ask_status(state: &Path) -> Result<StatusReport, Failure> {
    let resp = ask_daemon(state, &Request::Status)?.ok_or_else(|| {
        Failure(format!(
            "no mailtriage daemon answers on {} (is it running with this state directory?)",
            control::socket_path(state).display()
        ))
    })?;
    match (resp.ok, resp.status) {
        (true, Some(st)) => Ok(st),
        _ => Err(Failure(
            resp.error.unwrap_or_else(|| "status request failed".into()),
        )),
    }
}
