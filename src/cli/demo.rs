//! The sample mail shipped in `samples/` and the shipped `rules.toml`, embedded in the
//! binary so `mailtriage demo` shows the whole flow on any machine, offline.

include!(concat!(env!("OUT_DIR"), "/samples.rs"));

/// The shipped rules.toml, as it is in the repository.
pub const RULES: &str = include_str!("../../rules.toml");
