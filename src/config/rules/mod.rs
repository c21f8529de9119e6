//! `rules.toml`: the file admins edit. It is read into plain serde structs (`raw`),
//! then checked and compiled section by section into [`Rules`], the immutable value that
//! classify, decide and compose read. Every regex and template is compiled here, at
//! load, and every mistake is reported with its file, key path and line; one load
//! collects all of them. The rule tests are checked here but run by
//! `pipeline::ruletest`, which needs the pipeline this layer sits below.

mod calendar;
mod company;
mod matching;
mod patterns;
pub(super) mod raw;
mod roles;
mod routing;
mod rule_tests;
pub(super) mod values;
mod warnings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use sha2::Digest;

use super::error::{Collector, ConfigError, ConfigErrors};
use super::templates::{compile_templates, Templates};
use crate::classify::matcher::Matchers;

pub use company::{Company, Threading};
pub use matching::{Incident, Language, Rule};
pub use patterns::{Field, Pattern};
pub use roles::Roles;
pub use routing::{Category, Escalation, Mailbox, Queue, Unmatched};
pub use rule_tests::{Expect, RuleTest};
pub(super) use values::span;

/// The whole compiled rule set. Cheap to share (`Arc`) and never changed once built.
#[derive(Debug)]
pub struct Rules {
    pub company: Company,
    pub queues: BTreeMap<String, Queue>,
    pub categories: BTreeMap<String, Category>,
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub rules: Vec<Rule>,
    pub languages: Vec<Language>,
    pub templates: Templates,
    /// The patterns of `rules`, then `flags`, then `incidents`, compiled for classify's
    /// one scan per field: a hit's entry index counts through the three lists in turn.
    pub matchers: Matchers,
    /// Finds ticket tags such as `[#T-1042]` in subjects (also `[T-1042]`, `#T-1042`,
    /// `T1042`, any case).
    pub ticket_tag: Regex,
    /// Where bounced tickets and red flags go; `None` when not configured.
    pub escalation: Option<Escalation>,
    pub threading: Threading,
    /// Who is staff; which domains are free mail.
    pub roles: Roles,
    /// Red-flag rules: `category` holds the flag's name.
    pub flags: Vec<Rule>,
    /// Reason of each flag in words, by flag name then language.
    pub flag_reasons: BTreeMap<String, BTreeMap<String, String>>,
    pub incidents: Vec<Incident>,
    /// The rule tests of the file, checked against its names; run by
    /// `pipeline::ruletest` (with [`RuleTest::failure`] for the error of one that fails).
    pub tests: Vec<RuleTest>,
    /// Design mistakes that do not stop loading; `check` prints them.
    pub warnings: Vec<ConfigError>,
    /// Short digest of the file's text and of the files it names: tells which rules a
    /// running daemon uses.
    pub version: String,
    /// The other files the rules were read from (holidays calendars): a change to one
    /// is a change to the rules.
    pub files: Vec<PathBuf>,
}

impl Rules {
    /// Reads and compiles a rules file, without running its rule tests: see
    /// [`Rules::parse`].
    pub fn load(path: &Path) -> Result<Rules, ConfigErrors> {
        let text = super::error::read(path)?;
        Self::parse(path, &text)
    }

    /// Compiles rules from text; `path` is only used in error messages. The rule tests
    /// are checked against the names the file declares but not run: the daemon, `check`
    /// and every reload load through `pipeline::ruletest::load`, which compiles and then
    /// runs them, and refuses rules whose tests fail.
    pub fn parse(path: &Path, text: &str) -> Result<Rules, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let Some(file) = c.parse::<raw::File>(text) else {
            return Err(ConfigErrors(c.errors));
        };
        let mut rules = compile(&mut c, file);
        rules.files = std::mem::take(&mut c.read);
        rules.version = version_with(text, &rules.files);
        rules.warnings = std::mem::take(&mut c.warnings);
        c.finish(rules)
    }

    /// The queue a category routes to.
    pub fn queue_of_category(&self, category: &str) -> Option<&Queue> {
        self.categories
            .get(category)
            .and_then(|c| c.queue.as_ref())
            .and_then(|q| self.queues.get(q))
    }

    /// The From of acknowledgements to mail that reached `mailbox`: the mailbox's own
    /// `ack_from` (the address the customer wrote to), else `company.ack_from`.
    pub fn ack_from(&self, mailbox: &str) -> &str {
        self.mailboxes
            .get(mailbox)
            .and_then(|m| m.ack_from.as_deref())
            .unwrap_or(&self.company.ack_from)
    }

    /// The company name of `mailbox`'s brand, else `company.name`.
    pub fn company_name(&self, mailbox: &str) -> &str {
        self.mailboxes
            .get(mailbox)
            .and_then(|m| m.company_name.as_deref())
            .unwrap_or(&self.company.name)
    }

    /// The watched mailbox with this address, if any.
    pub fn mailbox_by_address(&self, address: &str) -> Option<&Mailbox> {
        self.mailboxes
            .values()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }
}

/// Short digest of the file's text: the rules' version, and how a reload tells a file
/// that changed from one that was only read.
pub fn version_of(text: &str) -> String {
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))[..12].to_string()
}

/// The version of rules whose text is `text` and that read `files`: the text's digest
/// when they name no other file, else the digest of all of them, so that an edited
/// calendar is a new version. A file that cannot be read counts as such.
pub fn version_with(text: &str, files: &[PathBuf]) -> String {
    if files.is_empty() {
        return version_of(text);
    }
    let mut h = sha2::Sha256::new();
    h.update(text.as_bytes());
    for f in files {
        h.update(b"\0");
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        match std::fs::read(f) {
            Ok(bytes) => h.update(&bytes),
            Err(_) => h.update(b"\0unreadable"),
        }
    }
    format!("{:x}", h.finalize())[..12].to_string()
}

/// Each section in the order errors are reported; a later section checks the names it
/// uses against those compiled before it.
fn compile(c: &mut Collector<'_>, mut f: raw::File) -> Rules {
    let company = company::compile_company(c, f.company.into_inner(), &f.languages);
    let holidays = calendar::compile_holidays(
        c,
        "calendar",
        &f.calendar.holidays,
        f.calendar.holidays_file.as_ref(),
    );
    let queues = routing::compile_queues(c, f.queues, &holidays);
    let categories = routing::compile_categories(c, f.categories, &queues);
    // A mailbox's own templates are compiled with the others, once they are known.
    let own_templates: Vec<_> = (f.mailboxes.iter_mut())
        .map(|(key, m)| (key.clone(), std::mem::take(&mut m.get_mut().templates)))
        .collect();
    let mailboxes = routing::compile_mailboxes(c, f.mailboxes, &queues, &categories);
    let rules = matching::compile_rules(c, f.rules, &categories);
    let languages = matching::compile_languages(c, f.languages);
    let templates = compile_templates(c, f.templates, own_templates, &company.default_language);
    let escalation = routing::compile_escalation(c, f.escalation, &queues);
    let threading = company::compile_threading(c, &f.threading);
    let roles = roles::compile_roles(c, &f.roles, &company.domain);
    let (flags, flag_reasons) = matching::compile_flags(c, f.flags, escalation.is_some());
    let incidents = matching::compile_incidents(c, f.incidents);
    let matchers = patterns::all_matchers(c, &rules, &flags, &incidents);
    let ticket_tag = matching::ticket_tag(&company.ticket_prefix);
    let declared = rule_tests::Declared {
        queues: &queues,
        categories: &categories,
        mailboxes: &mailboxes,
        flags: &flags,
    };
    let tests = rule_tests::compile_tests(c, f.tests, &declared);
    let rules = Rules {
        company,
        queues,
        categories,
        mailboxes,
        rules,
        languages,
        templates,
        matchers,
        ticket_tag,
        escalation,
        threading,
        roles,
        flags,
        flag_reasons,
        incidents,
        tests,
        warnings: Vec::new(),
        version: String::new(),
        files: Vec::new(),
    };
    warnings::design_warnings(c, &rules);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        crate::config::testing::shipped_text()
    }

    #[test]
    fn shipped_rules_compile() {
        let r = Rules::parse(Path::new("rules.toml"), &shipped()).unwrap();
        assert_eq!(r.mailboxes.len(), 4);
        assert_eq!(r.queues.len(), 4);
        assert_eq!(r.flags.len(), 5);
        assert_eq!(r.escalation.as_ref().unwrap().queue, "supervisor");
        assert!(r.rules.len() >= 8);
        assert_eq!(
            r.queue_of_category("technical").unwrap().address,
            "support@example.test"
        );
        // Every start of the daemon logs the warnings: the example everyone starts
        // from has none.
        assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    }

    #[test]
    fn a_mailbox_may_have_its_own_ack_from_and_company_name() {
        let own = "[mailboxes.billing]\nack_from = \"Acme Billing <billing@example.test>\"\ncompany_name = \"Acme\"\n";
        let r = crate::config::testing::shipped_with("[mailboxes.billing]\n", own);
        assert_eq!(r.ack_from("billing"), "Acme Billing <billing@example.test>");
        assert_eq!(r.company_name("billing"), "Acme");
        // The others keep the company's.
        assert_eq!(r.ack_from("sales"), r.company.ack_from);
        assert_eq!(r.company_name("sales"), r.company.name);
        assert_eq!(r.ack_from("no such mailbox"), r.company.ack_from);

        let bad = "[mailboxes.billing]\nack_from = \"Billing desk\"\n";
        let text = shipped().replacen("[mailboxes.billing]\n", bad, 1);
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        let e = err
            .0
            .iter()
            .find(|e| e.key == "mailboxes.billing.ack_from")
            .unwrap_or_else(|| panic!("{err}"));
        let line = text
            .lines()
            .position(|l| l.starts_with("ack_from = \"Billing"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("not an address"), "{e}");
    }

    #[test]
    fn a_mailbox_without_queue_is_warned_about_only_when_a_team_reads_it() {
        let warned = |mailbox: &str| {
            let text = format!("{}\n{mailbox}\n", shipped());
            let r = Rules::parse(Path::new("rules.toml"), &text).unwrap();
            r.warnings
                .into_iter()
                .filter(|w| w.key == "mailboxes.extra")
                .map(|w| w.message)
                .collect::<Vec<_>>()
        };
        let mailbox = |address: &str, handles: &str| {
            format!("[mailboxes.extra]\naddress = \"{address}\"\nhandles = [{handles}]\nunmatched = \"support\"")
        };
        // An alerts inbox, like the shipped monitoring@: no customer is answered there.
        assert!(warned(&mailbox("alerts@example.test", "\"alerts\"")).is_empty());
        assert!(warned(&mailbox("info@example.test", "")).is_empty());
        let w = warned(&mailbox("sales@example.test", ""));
        assert!(
            w.len() == 1 && w[0].contains("address of queue \"sales\""),
            "{w:?}"
        );
        let w = warned(&mailbox("accounts@example.test", "\"alerts\", \"billing\""));
        assert!(
            w.len() == 1 && w[0].contains("handles [\"billing\"]"),
            "{w:?}"
        );
    }

    #[test]
    fn all_semantic_errors_at_once_with_lines() {
        let text = shipped()
            .replace(
                "queue = \"billing\"\n[categories.sales]",
                "queue = \"nobody\"\n[categories.sales]",
            )
            .replacen("subject = '(?i)не", "subject = '(?i)(не", 1)
            .replace("response_time = \"1d\"", "response_time = \"soon\"");
        let err = Rules::parse(Path::new("x/rules.toml"), &text).unwrap_err();
        let msgs: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
        assert!(
            msgs.iter().any(|m| m.contains("categories.billing.queue")
                && m.contains("unknown queue \"nobody\"")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("rules[2].subject")
                    && m.contains("rule \"outage-ru\": bad regex")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("queues.billing.response_time")),
            "{msgs:#?}"
        );
        for e in &err.0 {
            assert!(e.to_string().starts_with("x/rules.toml"));
        }
        let bad_regex = err.0.iter().find(|e| e.key == "rules[2].subject").unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("subject = '(?i)(не"))
            .unwrap()
            + 1;
        assert_eq!(bad_regex.line, Some(line));
    }

    #[test]
    fn every_unknown_key_is_reported_with_the_semantic_errors() {
        let text = shipped()
            .replacen(
                "response_time = \"4h\"",
                "response_time = \"4h\"\nrespons_time = \"1h\"",
                1,
            )
            .replacen("priority = 30", "priority = 30\nprioirty = 5", 1)
            .replacen("[company]", "[company]\nnmae = \"x\"", 1);
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"queues.support.respons_time"), "{err}");
        assert!(keys.contains(&"rules[2].prioirty"), "{err}");
        assert!(keys.contains(&"company.nmae"), "{err}");
        for e in &err.0 {
            let line = e.line.expect("every unknown key has its line");
            let leaf = e.key.rsplit('.').next().unwrap();
            assert!(text.lines().nth(line - 1).unwrap().starts_with(leaf), "{e}");
        }
    }

    #[test]
    fn match_is_any_or_all_and_all_wants_two_patterns() {
        let rule = |mode: &str, patterns: &str| {
            let text = format!("{}\n[[rules]]\nname = \"x\"\ncategory = \"sales\"\nmatch = \"{mode}\"\n{patterns}\n", shipped());
            Rules::parse(Path::new("rules.toml"), &text)
        };
        let err = rule("both", "subject = 'a'\nbody = 'b'").unwrap_err();
        let e = err
            .0
            .iter()
            .find(|e| e.key.ends_with(".match"))
            .expect("an error at match");
        assert!(
            e.message.contains("\"any\"") && e.message.contains("\"both\" is neither"),
            "{e}"
        );
        assert!(e.line.is_some(), "{e}");
        let one = rule("all", "subject = 'a'").unwrap();
        assert!(
            one.warnings
                .iter()
                .any(|w| w.key.ends_with(".match") && w.message.contains("one pattern")),
            "{:?}",
            one.warnings
        );
        let two = rule("all", "subject = 'a'\nsender = 'b'").unwrap();
        assert!(two.rules.last().unwrap().all);
        assert!(!two.warnings.iter().any(|w| w.key.ends_with(".match")));
        assert!(
            !rule("any", "subject = 'a'")
                .unwrap()
                .rules
                .last()
                .unwrap()
                .all
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = shipped().replace("[queues.billing]\naddress", "[queues.billing]\nadress");
        let err = Rules::parse(Path::new("rules.toml"), &text).unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.key, "queues.billing.adress");
        assert!(e.message.contains("unknown key `adress`"), "{e}");
        let line = text.lines().position(|l| l.starts_with("adress")).unwrap() + 1;
        assert_eq!(e.line, Some(line));
    }
}
