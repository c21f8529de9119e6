//! mailtriage: triage of shared support mailboxes.
//!
//! The folders follow one message: [`source`] (IMAP in) -> [`parse`] -> [`classify`]
//! -> [`decide`] -> [`compose`] -> [`record`] -> [`send`] (SMTP out). [`pipeline`] lists
//! those stages in order for one message; [`runtime`] runs the daemon's tasks around
//! it (a runner per mailbox, the sender, the follow-up clock, reloads, status);
//! [`cli`] is the command line, whose `explain` and `triage` run the very same pipeline
//! offline. Beside the flow: [`config`] (both files, compiled once), [`ticket`] (the
//! domain: tickets, their history, the mails decided; no I/O), [`words`] (the daemon's
//! own phrases per language), [`when`] (time stamps), [`tls`] and [`auth`] (OAuth2
//! tokens for the IMAP and SMTP logins), [`memory`] (free memory back to the system).
//!
//! Dependencies point one way: config, ticket, when, tls, auth and memory at the bottom; the pure
//! stages (parse, classify, decide, compose) above them; record, source and send (the
//! only modules that touch sled, IMAP and SMTP) above those; pipeline, runtime and cli
//! on top.

#![deny(clippy::too_many_lines)]

pub mod auth;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod compose;
pub mod config;
pub mod decide;
pub mod memory;
pub mod parse;
pub mod pipeline;
pub mod record;
pub mod runtime;
pub mod send;
pub mod source;
pub mod ticket;
pub mod tls;
pub mod when;
pub mod words;
