//! Runtime: what keeps the daemon running. [`daemon`] wires the tasks (one source per
//! mailbox, the sender, the follow-up clock, reloads, signals, systemd, the control
//! socket) and stops them; the rest are those tasks.

pub mod control;
pub mod daemon;
pub mod followup;
pub mod reload;
pub mod status;
