//! mailtriage: triage of shared support mailboxes.
//!
//! The flow of one message, one module per stage:
//! source ([`imap`]) -> parse ([`message`]) -> classify ([`classify`]) -> decide
//! ([`decide`]) -> act ([`compose`], [`smtp`]) -> record ([`store`]). [`pipeline`] lists
//! the stages in order; [`daemon`] wires the tasks; `explain` and `triage` run the very
//! same pipeline offline.

pub mod config;
pub mod decide;
pub mod classify;
pub mod compose;
pub mod message;
pub mod store;
pub mod words;
