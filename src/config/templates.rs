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
/// `LANG/ack_subject`, `LANG/ack`. A mailbox's own (`[mailboxes.NAME.templates.LANG]`)
/// are in an environment of their own, under the same names.
pub struct Templates {
    pub env: minijinja::Environment<'static>,
    pub languages: Vec<String>,
    /// Each mailbox's own templates, by mailbox name; only the ones it names.
    pub own: BTreeMap<String, minijinja::Environment<'static>>,
}

impl Templates {
    /// The template `name` (`LANG/which`) for the mail of `mailbox`: the mailbox's own
    /// when it has one, else the one of `[templates.LANG]`.
    pub fn get(
        &self,
        mailbox: &str,
        name: &str,
    ) -> Result<minijinja::Template<'_, '_>, minijinja::Error> {
        match self.own.get(mailbox).map(|env| env.get_template(name)) {
            Some(Ok(t)) => Ok(t),
            _ => self.env.get_template(name),
        }
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("languages", &self.languages)
            .field("own", &self.own.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The templates a language has, by the name compose asks for.
pub const NAMES: [&str; 9] = [
    "note",
    "ack_subject",
    "ack",
    "added_subject",
    "added",
    "reminder_subject",
    "reminder",
    "status_subject",
    "status",
];

/// A mailbox's own templates as written: by language, by name.
pub(super) type OwnTemplates = BTreeMap<String, Spanned<BTreeMap<String, Spanned<String>>>>;

/// Compiles the `[templates.LANG]` tables (the default language must have one), and
/// each mailbox's own, which may only replace templates of a language given there.
pub(super) fn compile_templates(
    c: &mut Collector<'_>,
    raw: BTreeMap<String, Spanned<raw::Templates>>,
    own: Vec<(String, OwnTemplates)>,
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
            let key = format!("templates.{lang}.{which}");
            add_template(c, &mut env, &sample, key, &format!("{lang}/{which}"), src);
        }
        languages.push(lang);
    }
    let own = own
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(mailbox, t)| {
            let env = compile_own(c, &sample, &languages, &mailbox, t);
            (mailbox, env)
        })
        .collect();
    Templates {
        env,
        languages,
        own,
    }
}

/// One mailbox's own templates: each a known name, of a language `[templates]` has.
fn compile_own(
    c: &mut Collector<'_>,
    sample: &TemplateContext,
    languages: &[String],
    mailbox: &str,
    own: OwnTemplates,
) -> minijinja::Environment<'static> {
    let mut env = environment();
    for (lang, table) in own {
        let base = format!("mailboxes.{mailbox}.templates.{lang}");
        if !languages.contains(&lang) {
            let known = languages.join(", ");
            let why =
                format!("no [templates.{lang}] whose texts these replace (languages: {known})");
            c.at(span(&table), base.clone(), why);
        }
        for (which, src) in table.into_inner() {
            let key = format!("{base}.{which}");
            if NAMES.contains(&which.as_str()) {
                add_template(c, &mut env, sample, key, &format!("{lang}/{which}"), src);
            } else {
                let why = format!(
                    "unknown key `{which}` in {base}; a template is one of {}",
                    NAMES.join(", ")
                );
                c.at(span(&src), key, why);
            }
        }
    }
    env
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

/// Adds `name` to `env` and renders it once with sample values: an unknown variable or
/// a bad filter is found now, not when the first customer writes. `key`: where it is
/// written, for the error.
fn add_template(
    c: &mut Collector<'_>,
    env: &mut minijinja::Environment<'static>,
    sample: &TemplateContext,
    key: String,
    name: &str,
    src: Spanned<String>,
) {
    let s = span(&src);
    let rendered = env
        .add_template_owned(name.to_string(), src.into_inner())
        .and_then(|()| env.get_template(name)?.render(sample));
    if let Err(e) = rendered {
        c.at(s, key, format!("template error: {e}"));
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

    /// The shipped rules with `own` added at their end.
    fn with_own(own: &str) -> (String, Result<Rules, crate::config::ConfigErrors>) {
        let text = crate::config::testing::shipped_text() + own;
        let r = Rules::parse(Path::new("rules.toml"), &text);
        (text, r)
    }

    #[test]
    fn a_mailbox_s_own_templates_replace_those_it_names_for_its_mail() {
        let own = "\n[mailboxes.billing.templates.en]\nack = \"Acme Billing thanks you, {{ customer_name }}.\"\n";
        let r = with_own(own).1.unwrap();
        let ctx = crate::config::TemplateContext::sample();
        let render = |mailbox: &str, name: &str| {
            r.templates
                .get(mailbox, name)
                .unwrap()
                .render(&ctx)
                .unwrap()
        };
        assert_eq!(
            render("billing", "en/ack"),
            "Acme Billing thanks you, A Customer."
        );
        assert!(render("sales", "en/ack").contains("thank you for your message"));
        // What billing does not name is the company's; so is another language.
        assert_eq!(render("billing", "en/added"), render("sales", "en/added"));
        assert_eq!(render("billing", "ru/ack"), render("sales", "ru/ack"));
    }

    #[test]
    fn the_shipped_example_of_a_mailbox_s_own_templates_compiles() {
        let text = crate::config::testing::shipped_text();
        let start = text
            .find("# [mailboxes.billing.templates.en]")
            .expect("rules.toml shows a mailbox's own templates");
        let end = start + text[start..].find("# \"\"\"\n").unwrap() + 6;
        let example: String = text[start..end]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .map(|l| format!("{l}\n"))
            .collect();
        let uncommented = format!("{}{example}{}", &text[..start], &text[end..]);
        let r = Rules::parse(Path::new("rules.toml"), &uncommented).unwrap();
        let ctx = crate::config::TemplateContext::sample();
        let added = r.templates.get("billing", "en/added").unwrap();
        assert!(added
            .render(&ctx)
            .unwrap()
            .contains("now part of your request [#T-1042]"));
    }

    #[test]
    fn a_mailbox_s_own_template_errors_name_its_key_and_line() {
        let own = "\n[mailboxes.billing.templates.en]\nack = \"{{ tikcet }}\"\nadded = \"{% if %}\"\nakc = \"x\"\n\n[mailboxes.billing.templates.de]\nack = \"Hallo\"\n";
        let (text, r) = with_own(own);
        let err = r.unwrap_err();
        let at = |key: &str, says: &str, line_starts: &str| {
            let e = err
                .0
                .iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| panic!("no error at {key}: {err}"));
            assert!(e.message.contains(says), "{e}");
            let line = text
                .lines()
                .position(|l| l.starts_with(line_starts))
                .unwrap()
                + 1;
            assert_eq!(e.line, Some(line), "{e}");
            assert_eq!(e.file, Path::new("rules.toml"));
        };
        at(
            "mailboxes.billing.templates.en.ack",
            "template error",
            "ack = \"{{ tikcet",
        );
        at(
            "mailboxes.billing.templates.en.added",
            "template error",
            "added = \"{% if",
        );
        at(
            "mailboxes.billing.templates.en.akc",
            "unknown key `akc`",
            "akc =",
        );
        at(
            "mailboxes.billing.templates.de",
            "no [templates.de]",
            "[mailboxes.billing.templates.de]",
        );
        assert_eq!(err.0.len(), 4, "{err}");
    }
}
