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
    Category, Company, Expect, Field, FieldMatcher, Language, Mailbox, Matchers, Pattern, Queue,
    Rule, RuleTest, Rules, Templates, Unmatched,
};
pub use settings::{ImapOptions, Login, SecretSource, Server, Settings, TlsMode};

/// Default locations, documented in the README and `--help`.
pub const DEFAULT_RULES: &str = "/etc/mailtriage/rules.toml";
pub const DEFAULT_CONFIG: &str = "/etc/mailtriage/mailtriage.toml";
