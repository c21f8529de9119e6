//! `mailtriage outbox`: the mails not sent (waiting in the outbox, refused for good by
//! the SMTP server), and, for a refused one, `retry` (back to the outbox, to be sent
//! again once its cause is mended) or `drop` (gone for good, after saying what it was).
//! Like `tickets`: the running daemon answers over its control socket; with no daemon,
//! the state directory is read and changed directly.

use std::path::Path;

use super::tickets::carry_out;
use super::{render, state_dir, Cli, CliError, OutboxCmd};
use crate::runtime::control::Request;

pub fn outbox(
    cli: &Cli,
    cmd: &OutboxCmd,
    state: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let req = match cmd {
        OutboxCmd::List => Request::Outbox,
        OutboxCmd::Retry { id } => Request::Retry { id: *id },
        OutboxCmd::Drop { id } => Request::Drop { id: *id },
    };
    let (resp, daemon) = carry_out(&state_dir(cli, state)?, &req)?;
    if json {
        let v = match cmd {
            OutboxCmd::List => serde_json::to_value(&resp.outbox)?,
            _ => serde_json::to_value(resp.outbox.first())?,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = match cmd {
        OutboxCmd::List => render::outbox_list(&resp.outbox),
        OutboxCmd::Retry { id } => render::outbox_retried(*id, &resp.outbox, daemon),
        OutboxCmd::Drop { .. } => render::outbox_dropped(&resp.outbox),
    };
    print!("{text}");
    Ok(())
}
