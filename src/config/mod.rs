//! Configuration: `rules.toml` (what to do with mail; edited by admins) and
//! `mailtriage.toml` (how to reach the servers; written once by operators). Both are
//! loaded, checked and compiled before anything runs; the rest of the program only
//! ever sees the compiled, valid values.

mod error;
mod rules;
pub mod ruletest;
mod settings;

pub use error::{ConfigError, ConfigErrors};
pub use rules::{
    Category, Company, Expect, Field, Language, Mailbox, Pattern, Queue, Rule, RuleTest, Rules,
    Templates, Unmatched,
};
pub use settings::{
    Archive, ImapOptions, Login, SecretSource, Server, Settings, TlsMode, DEFAULT_SMTP_CONNECTIONS,
    MAX_SMTP_CONNECTIONS,
};

/// Default locations, documented in the README and `--help`.
pub const DEFAULT_RULES: &str = "/etc/mailtriage/rules.toml";
pub const DEFAULT_CONFIG: &str = "/etc/mailtriage/mailtriage.toml";

/// The shipped rules.toml, for the unit tests of every stage.
#[cfg(test)]
pub(crate) mod testing {
    use super::Rules;
    use std::path::Path;

    pub fn shipped_text() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules.toml")).unwrap()
    }

    pub fn shipped() -> Rules {
        Rules::parse(Path::new("rules.toml"), &shipped_text()).unwrap()
    }

    /// The shipped rules with `from` replaced by `to` once; `from` must be there, so a
    /// test never runs silently on the unchanged file.
    pub fn shipped_with(from: &str, to: &str) -> Rules {
        let text = shipped_text();
        assert!(
            text.contains(from),
            "rules.toml no longer contains {from:?}"
        );
        Rules::parse(Path::new("rules.toml"), &text.replacen(from, to, 1)).unwrap()
    }
}
