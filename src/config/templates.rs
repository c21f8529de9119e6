//! What templates in `rules.toml` may use, and how they are compiled. The context is
//! the schema admins write against (documented in rules.toml and the README): compose
//! fills it in for each mail, and loading renders every template once with
//! [`TemplateContext::sample`], so a template that fails shows up in `check`, not when
//! the first customer writes.

use std::collections::BTreeMap;

use serde::Serialize;
use toml::Spanned;

use super::error::Collector;
use super::rules::raw;
use super::rules::span;

/// One rule that fired, as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleLine {
    pub name: String,
    pub field: String,
    pub matched: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    pub at: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagLine {
    pub name: String,
    pub reason: String,
    pub matched: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentLine {
    pub id: String,
    pub text: String,
    pub since: String,
    /// "" when no next update is announced.
    pub next_update: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromiseLine {
    pub at: String,
    pub by: String,
    pub text: String,
}

/// Everything a template can use; documented in rules.toml and the README.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub ticket: String,
    pub tag: String,
    pub queue_name: String,
    pub queue_address: String,
    pub response_time: String,
    /// When the queue's answer is due, on its working-time clock and in its zone:
    /// "Monday 30 November, 13:00 (MSK)"; "" while the clock is stopped.
    pub answer_by: String,
    pub mailbox: String,
    pub mailbox_address: String,
    pub category: String,
    pub reason: String,
    pub rules: Vec<RuleLine>,
    pub customer: String,
    pub customer_name: String,
    /// Who wrote this message when not the ticket's customer, with their role:
    /// "petr@client.example (customer-side: the same organisation as ...)"; "" otherwise.
    pub writer: String,
    pub subject: String,
    pub received: String,
    pub history: Vec<HistoryLine>,
    pub acked: bool,
    pub ack_reason: String,
    pub forwarded: bool,
    pub company: String,
    pub follow_up: bool,
    pub follow_up_number: u32,
    pub owner_since: String,
    /// "" or "billing, support and billing": the queues a bounced ticket went between.
    pub bounced: String,
    pub flags: Vec<FlagLine>,
    pub incident: Option<IncidentLine>,
    pub promises: Vec<PromiseLine>,
    /// For reminders and status mails: how long the customer has waited past the promise.
    pub overdue: String,
    pub escalated: bool,
    pub escalation_name: String,
}

impl TemplateContext {
    /// A filled-in example, used to try every template when rules are loaded so a
    /// template that fails shows up in `check`, not in the middle of the night.
    pub fn sample() -> TemplateContext {
        TemplateContext {
            ticket: "T-1042".into(),
            tag: "[#T-1042]".into(),
            queue_name: "Technical support".into(),
            queue_address: "support@example.com".into(),
            response_time: "4 hours".into(),
            answer_by: "Monday 30 November, 13:00 (MSK)".into(),
            mailbox: "billing".into(),
            mailbox_address: "billing@example.com".into(),
            category: "technical".into(),
            reason: "the rules recognised a technical request".into(),
            rules: vec![RuleLine {
                name: "outage".into(),
                field: "subject".into(),
                matched: "down".into(),
            }],
            customer: "customer@example.org".into(),
            customer_name: "A Customer".into(),
            writer: "colleague@example.org (customer-side: the same organisation)".into(),
            subject: "Site is down".into(),
            received: "2026-01-01 10:00 UTC".into(),
            history: vec![HistoryLine {
                at: "2026-01-01 10:00 UTC".into(),
                text: "message arrived".into(),
            }],
            acked: true,
            ack_reason: String::new(),
            forwarded: true,
            company: "Example".into(),
            follow_up: true,
            follow_up_number: 2,
            owner_since: "2026-01-01 10:00 UTC".into(),
            bounced: "billing and support".into(),
            flags: vec![FlagLine {
                name: "profanity".into(),
                reason: "profanity".into(),
                matched: "idiots".into(),
            }],
            incident: Some(IncidentLine {
                id: "INC-1".into(),
                text: "The site is down.".into(),
                since: "2026-01-01 09:40 UTC".into(),
                next_update: "2026-01-01 12:00 UTC".into(),
            }),
            promises: vec![PromiseLine {
                at: "2026-01-01 11:00 UTC".into(),
                by: "billing".into(),
                text: "payment moved".into(),
            }],
            overdue: "2 hours".into(),
            escalated: true,
            escalation_name: "Supervisor".into(),
        }
    }
}

/// Templates compiled into one minijinja environment; names are `LANG/note`,
/// `LANG/ack_subject`, `LANG/ack`.
pub struct Templates {
    pub env: minijinja::Environment<'static>,
    pub languages: Vec<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("languages", &self.languages)
            .finish()
    }
}

/// Compiles the `[templates.LANG]` tables; the default language must have one.
pub(super) fn compile_templates(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Templates>>,
    default_language: &str,
) -> Templates {
    let mut env = environment();
    if !raw.contains_key(default_language) {
        c.at(
            None,
            "templates",
            format!("no [templates.{default_language}] for company.default_language"),
        );
    }
    let sample = TemplateContext::sample();
    let mut languages = Vec::new();
    for (lang, t) in raw {
        for (which, src) in sources(t.into_inner()) {
            add_template(c, &mut env, &sample, &lang, which, src);
        }
        languages.push(lang);
    }
    Templates { env, languages }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Mail text is plain text: no HTML escaping of the customer's words.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// The templates of one language, by the name compose asks for.
fn sources(t: raw::Templates) -> [(&'static str, Spanned<String>); 9] {
    [
        ("note", t.note),
        ("ack_subject", t.ack_subject),
        ("ack", t.ack),
        ("added_subject", t.added_subject),
        ("added", t.added),
        ("reminder_subject", t.reminder_subject),
        ("reminder", t.reminder),
        ("status_subject", t.status_subject),
        ("status", t.status),
    ]
}

/// Adds `LANG/which` to `env` and renders it once with sample values: an unknown
/// variable or a bad filter is found now, not when the first customer writes.
fn add_template(
    c: &mut Collector<'_>,
    env: &mut minijinja::Environment<'static>,
    sample: &TemplateContext,
    lang: &str,
    which: &str,
    src: Spanned<String>,
) {
    let s = span(&src);
    let name = format!("{lang}/{which}");
    let rendered = env
        .add_template_owned(name.clone(), src.into_inner())
        .and_then(|()| env.get_template(&name)?.render(sample));
    if let Err(e) = rendered {
        c.at(
            s,
            format!("templates.{lang}.{which}"),
            format!("template error: {e}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Rules;
    use std::path::Path;

    #[test]
    fn template_with_unknown_variable_is_a_load_error() {
        let text =
            crate::config::testing::shipped_text().replacen("{{ ticket }}", "{{ tikcet }}", 1);
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|e| e.key == "templates.en.note" && e.message.contains("template error")),
            "{err}"
        );
    }
}
