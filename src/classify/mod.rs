//! Classify (pure): a parsed [`Mail`] and the compiled [`Rules`] -> which category the
//! request is about, which rules fired and on what text, and the customer's language.
//! No I/O and no clock: the same message and rules always give the same answer, which
//! is what lets `explain` show exactly what the daemon will do.

pub mod matcher;

use serde::{Deserialize, Serialize};

use crate::classify::matcher::Haystack;
use crate::config::Rules;
use crate::parse::Mail;

/// Matched text longer than this is cut in notes and explanations.
const MAX_MATCHED: usize = 120;
/// Language detection looks at this many bytes of subject and text; enough to tell
/// Cyrillic from Latin, and bounded whatever the size of the message.
const LANGUAGE_SAMPLE: usize = 1024;

/// One pattern of one rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub rule: String,
    pub category: String,
    pub priority: i32,
    pub field: String,
    pub matched: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub category: String,
    pub score: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The winning category, `None` when no rule fired.
    pub category: Option<String>,
    /// Every category that scored, best first.
    pub scores: Vec<Score>,
    /// Every pattern that matched, in rule order.
    pub fired: Vec<Fired>,
    /// Language code for the note and the acknowledgement.
    pub language: String,
    /// Red flags that fired (`rule` is the flag's name).
    pub flags: Vec<Fired>,
    /// Incidents whose patterns match, active or not (decide checks the time).
    pub incidents: Vec<String>,
}

/// Hits of one list: (entry index, pattern index, text that matched).
type Hits = Vec<(usize, usize, String)>;

/// What the one scan found, split by list: rule hits and flag hits, sorted; the
/// incidents whose patterns matched.
fn hits_of(rules: &Rules, hay: &Haystack<'_>) -> (Hits, Hits, Vec<usize>) {
    let (n_rules, n_flags) = (rules.rules.len(), rules.flags.len());
    let (mut hits, mut flag_hits, mut incidents) = (Vec::new(), Vec::new(), Vec::new());
    for h in rules.matchers.find(hay) {
        let (e, p) = h.owner;
        if e < n_rules {
            hits.push((e, p, cut(&h.matched)));
        } else if e < n_rules + n_flags {
            flag_hits.push((e - n_rules, p, cut(&h.matched)));
        } else {
            incidents.push(e - n_rules - n_flags);
        }
    }
    hits.sort_by_key(|(ri, pi, _)| (*ri, *pi));
    flag_hits.sort_by_key(|(ri, pi, _)| (*ri, *pi));
    incidents.sort_unstable();
    incidents.dedup();
    (complete(&rules.rules, hits), flag_hits, incidents)
}

/// The hits of rules that fire: a rule with `match = "all"` whose patterns matched only
/// in part (an alert subject from a customer) fires not at all, so its hits go. `hits`
/// is sorted by rule and has one hit per pattern at most.
fn complete(rules: &[crate::config::Rule], mut hits: Hits) -> Hits {
    let count = |ri: usize, hits: &Hits| hits.iter().filter(|h| h.0 == ri).count();
    let partial: Vec<usize> = rules
        .iter()
        .enumerate()
        .filter(|(ri, r)| r.all && (1..r.patterns.len()).contains(&count(*ri, &hits)))
        .map(|(ri, _)| ri)
        .collect();
    hits.retain(|h| !partial.contains(&h.0));
    hits
}

pub fn classify(rules: &Rules, mail: &Mail) -> Classification {
    let sender = mail.from.as_ref().map(|a| a.display()).unwrap_or_default();
    // Rules, flags and incidents look at the same texts: folded once, scanned once.
    let hay = Haystack::new(mail, &sender);
    let (hits, flag_hits, incidents) = hits_of(rules, &hay);
    let flags = flags(rules, flag_hits);
    let incidents = incidents
        .into_iter()
        .map(|i| rules.incidents[i].id.clone())
        .collect();
    classify_hits(rules, mail, hits, flags, incidents)
}

/// Red flags that fired: one entry per flag, with the first text that matched.
fn flags(rules: &Rules, flag_hits: Hits) -> Vec<Fired> {
    let mut out: Vec<Fired> = Vec::new();
    for (ri, pi, matched) in flag_hits {
        let r = &rules.flags[ri];
        if out.iter().any(|f| f.rule == r.name) {
            continue;
        }
        out.push(Fired {
            rule: r.name.clone(),
            category: r.category.clone(),
            priority: 0,
            field: r.patterns[pi].field.to_string(),
            matched,
        });
    }
    out
}

fn classify_hits(
    rules: &Rules,
    mail: &Mail,
    hits: Hits,
    flags: Vec<Fired>,
    incidents: Vec<String>,
) -> Classification {
    let fired: Vec<Fired> = hits
        .iter()
        .map(|(ri, pi, matched)| {
            let r = &rules.rules[*ri];
            Fired {
                rule: r.name.clone(),
                category: r.category.clone(),
                priority: r.priority,
                field: r.patterns[*pi].field.to_string(),
                matched: matched.clone(),
            }
        })
        .collect();

    // Each matching pattern adds its rule's priority: a request that names its topic in
    // both subject and body is surer than one that mentions it in passing.
    let mut scores: Vec<(String, i32, i32, usize)> = Vec::new(); // category, score, best priority, first rule
    for (ri, _, _) in &hits {
        let r = &rules.rules[*ri];
        match scores.iter_mut().find(|s| s.0 == r.category) {
            Some(s) => {
                s.1 += r.priority;
                s.2 = s.2.max(r.priority);
            }
            None => scores.push((r.category.clone(), r.priority, r.priority, *ri)),
        }
    }
    // Highest score wins; then the strongest single rule; then the rule written first.
    scores.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    let category = scores.first().filter(|s| s.1 > 0).map(|s| s.0.clone());

    Classification {
        category,
        scores: scores
            .into_iter()
            .map(|(category, score, _, _)| Score { category, score })
            .collect(),
        fired,
        language: language(rules, mail),
        flags,
        incidents,
    }
}

fn cut(s: &str) -> String {
    let s = s.replace(['\r', '\n'], " ");
    if s.len() <= MAX_MATCHED {
        return s;
    }
    let mut end = MAX_MATCHED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The declared language whose `detect` pattern matches most often in the subject and
/// the start of the text; the company default when none matches.
pub fn language(rules: &Rules, mail: &Mail) -> String {
    let mut sample = String::with_capacity(LANGUAGE_SAMPLE + mail.subject.len() + 1);
    sample.push_str(&mail.subject);
    sample.push('\n');
    let mut end = mail.text.len().min(LANGUAGE_SAMPLE);
    while !mail.text.is_char_boundary(end) {
        end -= 1;
    }
    sample.push_str(&mail.text[..end]);
    // Every language given as one character class is counted in a single pass; the
    // others by their regex.
    let mut counts = vec![0usize; rules.languages.len()];
    let classed: Vec<_> = rules
        .languages
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.class.as_ref().map(|class| (i, class)))
        .collect();
    if !classed.is_empty() {
        for c in sample.chars() {
            for (i, class) in &classed {
                counts[*i] += usize::from(class.contains(c));
            }
        }
    }
    for (i, l) in rules.languages.iter().enumerate() {
        if l.class.is_none() {
            counts[i] = l.detect.find_iter(&sample).count();
        }
    }
    rules
        .languages
        .iter()
        .zip(counts)
        .map(|(l, n)| (n, &l.code))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| rules.company.default_language.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn rules() -> Rules {
        crate::config::testing::shipped()
    }

    fn mail(subject: &str, body: &str) -> Mail {
        let raw = format!(
            "From: Customer <c@example.com>\r\nTo: billing@example.test\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn russian_outage_is_technical() {
        let r = rules();
        let c = classify(
            &r,
            &mail("Сайт не работает", "С утра ошибка 500 на всех страницах."),
        );
        assert_eq!(c.category.as_deref(), Some("technical"));
        assert_eq!(c.language, "ru");
        let f = c.fired.iter().find(|f| f.rule == "outage-ru").unwrap();
        assert_eq!(f.field, "subject");
        assert_eq!(f.matched, "не работает");
    }

    #[test]
    fn english_refund_is_billing() {
        let r = rules();
        let c = classify(
            &r,
            &mail(
                "Refund request",
                "My card was charged twice, please refund.",
            ),
        );
        assert_eq!(c.category.as_deref(), Some("billing"));
        assert_eq!(c.language, "en");
        assert!(c.scores[0].score >= 30);
    }

    #[test]
    fn nothing_matches_gives_no_category() {
        let r = rules();
        let c = classify(&r, &mail("Hello", "Just saying hi."));
        assert_eq!(c.category, None);
        assert!(c.fired.is_empty());
        assert_eq!(c.language, "en");
    }

    #[test]
    fn quoted_text_does_not_decide() {
        let r = rules();
        let c = classify(
            &r,
            &mail("Re: question", "Please send the invoice for March.\r\n\r\nOn Mon, Support wrote:\r\n> the site is down, error 500\r\n"),
        );
        assert_eq!(c.category.as_deref(), Some("billing"));
        assert!(
            c.fired.iter().all(|f| f.category == "billing"),
            "{:?}",
            c.fired
        );
    }

    #[test]
    fn a_rule_that_matches_all_fires_only_when_each_pattern_matches() {
        let extra = "\n[[rules]]\nname = \"fruit\"\ncategory = \"sales\"\npriority = 500\nmatch = \"all\"\nsubject = '(?i)\\bpineapple\\b'\nsender = '@grocer\\.example>'\n";
        let text = crate::config::testing::shipped_text() + extra;
        let r = Rules::parse(std::path::Path::new("rules.toml"), &text).unwrap();
        let from = |sender: &str| {
            let raw = format!("From: {sender}\r\nSubject: Pineapple\r\n\r\nHello\r\n");
            classify(&r, &parse(raw.as_bytes()).unwrap())
        };
        let both = from("Shop <shop@grocer.example>");
        assert_eq!(both.category.as_deref(), Some("sales"));
        assert_eq!(both.scores[0].score, 1000, "each pattern adds the priority");
        assert_eq!(both.fired.len(), 2, "{:?}", both.fired);
        // The subject alone, from anyone else: the rule does not fire, nor show.
        let one = from("Customer <c@example.com>");
        assert_eq!(one.category, None);
        assert!(one.fired.is_empty(), "{:?}", one.fired);
    }

    #[test]
    fn highest_score_wins_and_ties_are_stable() {
        let r = rules();
        // billing words in subject and body beat one technical word in the subject.
        let c = classify(
            &r,
            &mail(
                "Invoice error",
                "Please refund the invoice, you charged twice.",
            ),
        );
        assert_eq!(c.category.as_deref(), Some("billing"));
        let again = classify(
            &r,
            &mail(
                "Invoice error",
                "Please refund the invoice, you charged twice.",
            ),
        );
        assert_eq!(c, again);
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;
    use crate::parse::parse;

    fn mail(subject: &str, body: &str) -> Mail {
        let raw = format!("From: c@example.com\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n");
        parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn red_flags_in_both_languages() {
        let r = crate::config::testing::shipped();
        let names = |m: &Mail| {
            classify(&r, m)
                .flags
                .into_iter()
                .map(|f| f.rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&mail("Site down", "You idiots broke it again")),
            vec!["profanity"]
        );
        assert_eq!(
            names(&mail("Сайт", "Это уже третий раз, я пойду в суд")),
            vec!["threat", "repeated"]
        );
        assert_eq!(
            names(&mail("WHY IS NOTHING WORKING HERE", "")),
            vec!["shouting"]
        );
        assert_eq!(
            names(&mail("Refund", "I demand a full refund now")),
            vec!["refund-demand"]
        );
        assert!(names(&mail("Invoice question", "Could you send the invoice?")).is_empty());
    }
}

/// The crafted mail the integration tests and the benches also use.
#[cfg(test)]
#[path = "../../tests/support/crafted.rs"]
mod crafted;

#[cfg(test)]
mod prefilter_tests {
    use super::crafted;
    use super::*;
    use crate::config::Pattern;
    use crate::parse::{parse, Addr};
    use proptest::prelude::*;
    use proptest::sample::select;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    /// `source` compiled by the regex crate, once per test thread: the property test
    /// runs every pattern on hundreds of texts.
    fn regex_of(source: &str) -> regex::Regex {
        thread_local! {
            static COMPILED: RefCell<HashMap<String, regex::Regex>> = RefCell::default();
        }
        COMPILED.with_borrow_mut(|c| {
            c.entry(source.to_string())
                .or_insert_with(|| regex::Regex::new(source).unwrap())
                .clone()
        })
    }

    /// Each pattern of `entries` run on its own, without the prefilter: (name, field,
    /// matched) of each that matches, in order.
    fn naive<'r>(
        entries: impl Iterator<Item = (&'r String, &'r Vec<Pattern>)>,
        mail: &Mail,
    ) -> Vec<(String, String, String)> {
        let sender = mail.from.as_ref().map(|a| a.display()).unwrap_or_default();
        let hay = Haystack::new(mail, &sender);
        let mut out = Vec::new();
        for (name, patterns) in entries {
            for p in patterns {
                hay.with(&p.field, |text, _| {
                    if let Some(m) = regex_of(&p.source).find(text) {
                        out.push((name.clone(), p.field.to_string(), cut(m.as_str())));
                    }
                });
            }
        }
        out
    }

    /// What classify gives for `mail` against each rule, flag and incident pattern run
    /// alone on the same texts.
    fn assert_as_each_regex(rules: &Rules, mail: &Mail, what: &str) {
        let c = classify(rules, mail);
        let named = |f: Fired| (f.rule, f.field, f.matched);
        let got: Vec<_> = c.fired.into_iter().map(named).collect();
        let mut want = naive(rules.rules.iter().map(|r| (&r.name, &r.patterns)), mail);
        // A rule with match = "all" fires when each of its patterns matches.
        let fired = |name: &String, want: &[(String, String, String)]| {
            want.iter().filter(|w| &w.0 == name).count()
        };
        let whole: Vec<_> = rules
            .rules
            .iter()
            .filter(|r| !r.all || fired(&r.name, &want) == r.patterns.len())
            .map(|r| r.name.clone())
            .collect();
        want.retain(|w| whole.contains(&w.0));
        assert_eq!(got, want, "rules, {what}");
        // flags: the first pattern of each that matches
        let got: Vec<_> = c.flags.into_iter().map(named).collect();
        let mut want = naive(rules.flags.iter().map(|r| (&r.name, &r.patterns)), mail);
        want.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(got, want, "flags, {what}");
        let incidents = rules.incidents.iter().map(|i| (&i.id, &i.patterns));
        let mut want: Vec<String> = naive(incidents, mail).into_iter().map(|w| w.0).collect();
        want.dedup();
        assert_eq!(c.incidents, want, "incidents, {what}");
    }

    #[test]
    fn the_prefilter_never_changes_what_fires() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = Rules::load(&root.join("rules.toml")).unwrap();
        let mut seen = 0;
        // MAILTRIAGE_EQ_DIR adds a folder of .eml files, e.g. a corpus from bench/gen_mail.py.
        let extra = std::env::var("MAILTRIAGE_EQ_DIR").ok();
        for dir in ["tests/fixtures", "samples", "tests/broken"]
            .into_iter()
            .map(String::from)
            .chain(extra)
        {
            for e in std::fs::read_dir(root.join(&dir)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_none_or(|x| x != "eml") {
                    continue;
                }
                let Ok(mail) = parse(&std::fs::read(&p).unwrap()) else {
                    continue;
                };
                assert_as_each_regex(&rules, &mail, &p.display().to_string());
                seen += 1;
            }
        }
        assert!(seen > 30);
    }

    /// Runs `f` on a thread of its own and fails when it is not done within `limit`.
    fn within<T: Send + 'static>(
        limit: Duration,
        what: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("{what}: not classified within {limit:?}"))
    }

    /// Time allowed to classify one message in these tests. They run unoptimised, several
    /// times slower than the daemon's build; a matcher quadratic in a field's length takes
    /// minutes on the messages below.
    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_long_word_is_scanned_once_not_once_per_literal_hit() {
        let rules = Arc::new(crate::config::testing::shipped());
        let base = parse(b"From: c@example.com\r\nSubject: x\r\n\r\nx\r\n").unwrap();
        // 128 KB of "счёт" as the subject and 64 KB as the body, put in place past the
        // parser's caps: `сч[её]т\w*-фактур` runs to the end of the word from each of
        // its 16 000 hits unless the matcher scans once. With "-фактура" after the word
        // the pattern matches the whole of it.
        let word = crafted::repeat_to(crafted::LONG_WORD_UNIT, 128 * 1024);
        for (subject, text) in [
            (word.clone(), word[..64 * 1024].to_string()),
            (format!("{word}-фактура"), String::new()),
            (
                crafted::repeat_to(crafted::LITERAL_HITS_UNIT, 128 * 1024),
                crafted::repeat_to(crafted::LITERAL_HITS_UNIT, 64 * 1024),
            ),
        ] {
            let mail = Mail {
                subject,
                text,
                ..base.clone()
            };
            let what = format!("subject of {} bytes", mail.subject.len());
            let (r, m) = (Arc::clone(&rules), mail.clone());
            within(LIMIT, &what, move || classify(&r, &m));
            assert_as_each_regex(&rules, &mail, &what);
        }
    }

    #[test]
    fn crafted_mail_is_classified_in_bounded_time_and_as_each_regex_says() {
        let rules = Arc::new(crate::config::testing::shipped());
        for c in crafted::all() {
            let r = Arc::clone(&rules);
            let mail = within(LIMIT, c.name, move || {
                let mail = parse(&c.raw).unwrap();
                classify(&r, &mail);
                mail
            });
            assert_as_each_regex(&rules, &mail, c.name);
        }
    }

    /// The shipped rules.toml with its example incident declared and a header rule, so
    /// that every kind of list and field is there.
    fn shipped_and_more() -> Rules {
        let shipped = crate::cli::demo::RULES;
        let start = shipped
            .find("# [[incidents]]")
            .expect("the shipped example incident");
        let incident: String = shipped[start..]
            .lines()
            .map_while(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = format!(
            "{shipped}\n{incident}\n[[rules]]\nname = \"urgent-header\"\ncategory = \"technical\"\n\
             headers = {{ \"X-Priority\" = '^1|(?i)\\burgent\\b|сч[её]т\\w*-фактур' }}\n"
        );
        let rules = Rules::parse(Path::new("rules.toml"), &text).unwrap();
        assert!(!rules.incidents.is_empty());
        rules
    }

    /// What texts are made of: the literals the patterns start and end with (the extractor's,
    /// case variants and all), and letters that fold in odd ways.
    fn vocabulary(rules: &Rules) -> Vec<String> {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        let mut words: Vec<String> = [
            "счёт",
            "-фактура",
            "Ё",
            "ё",
            "\u{212A}",
            "ſ",
            "\u{1C82}",
            "İ",
            "ß",
            "_",
            "500",
            ", ",
            "! ",
            ". ",
            "<",
            ">",
            "@",
            "> ",
            "\n",
            "\r\n",
            " ",
            "  ",
            "\t",
        ]
        .map(String::from)
        .to_vec();
        let lists = rules.rules.iter().chain(&rules.flags);
        let patterns = lists
            .flat_map(|r| &r.patterns)
            .chain(rules.incidents.iter().flat_map(|i| &i.patterns));
        for p in patterns {
            let hir = regex_syntax::parse(&p.source).unwrap();
            for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
                let seq = Extractor::new().kind(kind).extract(&hir);
                for l in seq.literals().into_iter().flatten() {
                    if let Ok(w) = std::str::from_utf8(l.as_bytes()) {
                        words.push(w.to_string());
                    }
                }
            }
        }
        words.retain(|w| !w.is_empty());
        words.sort();
        words.dedup();
        words
    }

    /// Texts of vocabulary words, each as it is, in capitals or repeated into a long
    /// word, with words of mixed scripts between them.
    fn texts(words: Vec<String>) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => select(words.clone()),
            1 => select(words.clone()).prop_map(|w| w.to_uppercase()),
            1 => (select(words), 2..400usize).prop_map(|(w, n)| w.repeat(n)),
            1 => "[a-zA-Zа-яА-ЯёЁ0-9]{1,12}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// The matcher gives exactly what each regex alone gives, on texts made of what
        /// its literals, its anchors and its word boundaries are about.
        #[test]
        fn the_matcher_gives_what_each_regex_alone_gives(
            (subject, text, name, header) in {
                let words = vocabulary(&SHIPPED_AND_MORE.with(Clone::clone));
                (texts(words.clone()), texts(words.clone()), texts(words.clone()), texts(words))
            }
        ) {
            let rules = SHIPPED_AND_MORE.with(Clone::clone);
            let base = parse(b"From: c@example.com\r\nSubject: x\r\n\r\nx\r\n").unwrap();
            let mail = Mail {
                subject,
                text,
                from: Some(Addr { name: Some(name), address: "zabbix@mon.test".into() }),
                headers: vec![("x-priority".into(), header)],
                ..base
            };
            assert_as_each_regex(&rules, &mail, "generated");
        }
    }

    thread_local! {
        static SHIPPED_AND_MORE: std::rc::Rc<Rules> = std::rc::Rc::new(shipped_and_more());
    }
}
