//! mailtriage: triage of shared support mailboxes.
//!
//! The flow of one message, one module per stage:
//! source ([`imap`]) -> parse ([`message`]) -> classify ([`classify`], its patterns run
//! by [`matcher`]) -> decide ([`decide`]) -> act ([`compose`], [`smtp`]) -> record
//! ([`store`]). [`pipeline`] lists the stages in order; [`daemon`] wires the tasks;
//! `explain` and `triage` run the very same pipeline offline. [`reload`] swaps in new
//! rules while the daemon runs; [`status`] is what it knows about itself, for
//! `mailtriage status`, systemd and metrics.

pub mod classify;
pub mod cli;
pub mod compose;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod followup;
pub mod imap;
pub mod matcher;
pub mod message;
pub mod pipeline;
pub mod reload;
pub mod smtp;
pub mod status;
pub mod store;
pub mod when;
pub mod words;
