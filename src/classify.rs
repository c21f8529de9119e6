//! Classify (pure): a parsed [`Mail`] and the compiled [`Rules`] -> which category the
//! request is about, which rules fired and on what text, and the customer's language.
//! No I/O and no clock: the same message and rules always give the same answer, which
//! is what lets `explain` show exactly what the daemon will do.

use serde::Serialize;

use crate::config::{Field, Rules};
use crate::message::Mail;

/// Matched text longer than this is cut in notes and explanations.
const MAX_MATCHED: usize = 120;
/// Language detection looks at this many bytes of subject and text; enough to tell
/// Cyrillic from Latin, and bounded whatever the size of the message.
const LANGUAGE_SAMPLE: usize = 4096;

/// One pattern of one rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub rule: String,
    pub category: String,
    pub priority: i32,
    pub field: String,
    pub matched: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

pub fn classify(rules: &Rules, mail: &Mail) -> Classification {
    let sender = mail.from.as_ref().map(|a| a.display()).unwrap_or_default();
    // (rule index, pattern index, matched text)
    let mut hits: Vec<(usize, usize, String)> = Vec::new();
    for m in &rules.matchers.by_field {
        let owned;
        let text: &str = match &m.field {
            Field::Subject => &mail.subject,
            Field::Body => &mail.text,
            Field::Sender => &sender,
            Field::Header(h) => {
                owned = mail
                    .headers
                    .iter()
                    .filter(|(n, _)| n == h)
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                &owned
            }
        };
        if text.is_empty() {
            continue;
        }
        for i in m.set.matches(text).iter() {
            let (ri, pi) = m.owners[i];
            let found = rules.rules[ri].patterns[pi]
                .regex
                .find(text)
                .map(|f| cut(f.as_str()))
                .unwrap_or_default();
            hits.push((ri, pi, found));
        }
    }
    hits.sort_by_key(|(ri, pi, _)| (*ri, *pi));

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
    rules
        .languages
        .iter()
        .map(|l| (l.detect.find_iter(&sample).count(), &l.code))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| rules.company.default_language.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;
    use std::path::Path;

    fn rules() -> Rules {
        Rules::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.toml")).unwrap()
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
