//! Runtime: what keeps the daemon running. [`daemon`] wires the tasks (a [`runner`] per
//! watched folder, which drives the source and calls the pipeline, and takes a folder
//! on at first sight through [`adopt`]; the sender, [`refused`] (what becomes of a mail
//! the server refused for good), the
//! follow-up clock, the [`retention`] sweep, reloads, signals, systemd, the control socket) and stops them; the
//! rest are those tasks.

pub mod adopt;
pub mod control;
pub mod daemon;
pub mod followup;
pub mod now;
pub mod refused;
pub mod reload;
pub mod retention;
pub mod runner;
pub mod status;
pub mod systemd;
