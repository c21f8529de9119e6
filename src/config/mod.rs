//! Configuration: `rules.toml` (what to do with mail; edited by admins) and
//! `mailtriage.toml` (how to reach the servers; written once by operators). Both are
//! loaded, checked and compiled before anything runs; the rest of the program only
//! ever sees the compiled, valid values.
//!
//! Near the bottom: nothing here runs a stage of the flow. Below it are only `parse`
//! and `classify::matcher` (what a pattern is and its compiled form), because every
//! pattern is compiled when the file is loaded; the matcher itself knows nothing of
//! the configuration. `rules/` compiles
//! rules.toml one section per file, `templates.rs` holds what templates may use (compose
//! fills it in), `settings.rs` reads mailtriage.toml (`oauth.rs` its OAuth2 tables) and `error.rs` collects mistakes
//! with their key path and line. Rule tests are compiled here and run by
//! `pipeline::ruletest`, the loader the daemon and `check` use.

mod error;
mod oauth;
mod rules;
mod settings;
mod templates;

pub use error::{ConfigError, ConfigErrors};
pub use oauth::{bad_token_url, Grant, OAuth, Provider, SaslMechanism};
pub use rules::{
    version_of, version_with, Category, Company, Expect, Field, Language, Mailbox, Pattern, Queue,
    Roles, Rule, RuleTest, Rules, Threading, Unmatched,
};
pub use settings::{
    read_secret_file, Archive, ImapOptions, Limits, Login, SecretSource, Server, Settings, Since,
    Start, TlsMode, DEFAULT_SMTP_CONNECTIONS, MAX_SMTP_CONNECTIONS,
};
pub use templates::{
    FlagLine, HistoryLine, IncidentLine, PromiseLine, RuleLine, TemplateContext, Templates,
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
