//! `mailtriage check`: loads rules.toml (and mailtriage.toml when there is one), and
//! prints every error and warning, so an admin sees all the mistakes in one run.

use super::{render, Cli, CliError};
use crate::config::{ConfigError, ConfigErrors, Rules, Settings};

pub fn check(cli: &Cli) -> Result<(), CliError> {
    let mut errors = Vec::new();
    let rules = kept(crate::pipeline::ruletest::load(&cli.rules), &mut errors);
    let settings = load_settings(cli, &mut errors);
    if let (Some(r), Some(s)) = (&rules, &settings) {
        errors.extend(s.check_against(r));
        for w in s.blind_queues(r) {
            eprintln!("warning: {w}");
        }
    }
    if let Some(s) = &settings {
        errors.extend(s.secret_errors());
    }
    // Warnings are printed even when there are errors: they are often the cause.
    if let Some(r) = &rules {
        print_warnings(r);
    }
    if !errors.is_empty() {
        return Err(CliError::Check(errors));
    }
    let rules = rules.expect("no errors means rules loaded");
    println!("{}", render::rules_ok(&cli.rules, &rules));
    if let Some(s) = settings {
        println!("{}", render::settings_ok(&s));
    }
    Ok(())
}

/// The settings, when a settings file was named or exists at its default place.
fn load_settings(cli: &Cli, errors: &mut Vec<ConfigError>) -> Option<Settings> {
    let config_given = std::env::args().any(|a| a == "--config" || a.starts_with("--config="))
        || std::env::var_os("MAILTRIAGE_CONFIG").is_some();
    if !config_given && !cli.config.exists() {
        return None;
    }
    kept(Settings::load(&cli.config), errors)
}

/// The loaded file, or `None` with its errors added to the others.
fn kept<T>(loaded: Result<T, ConfigErrors>, errors: &mut Vec<ConfigError>) -> Option<T> {
    loaded.map_err(|e| errors.extend(e.0)).ok()
}

fn print_warnings(rules: &Rules) {
    for w in &rules.warnings {
        eprintln!("warning: {w}");
    }
    if !rules.warnings.is_empty() {
        eprintln!("{} warning(s)", rules.warnings.len());
    }
}
