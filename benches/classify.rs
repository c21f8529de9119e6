//! Micro-benchmarks of the CPU stages of the flow (parse -> classify -> decide/compose), on
//! the golden fixtures of 2 to 4 KB (mean about 3 KB): mixed Russian/English, charsets,
//! HTML, attachments, quoted replies. Run with `cargo bench --bench classify`.
//!
//! classify is measured with 10, 100 and 1000 rules: the shipped rules.toml plus synthetic
//! rules shaped like real ones (a subject and a body pattern, case-insensitive alternations
//! with word boundaries, in both languages), built as rules.toml text and loaded through
//! `Rules::parse`, so they are compiled exactly as an admin's file would be.
//!
//! The worst cases: the crafted mail of `tests/support/crafted.rs` (a 128 KB one-word
//! subject, raw and as encoded words; dense literal hits; a 5 MB line; a 1 MB header),
//! each through classify and through `explain`; and classify per KB of text, from 1 KB
//! to 1 MB in both subject and body, put in place past the parser's caps, which must
//! stay flat: the matcher is linear in its input.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailtriage::classify::classify;
use mailtriage::compose::{self, ForwardInput};
use mailtriage::config::Rules;
use mailtriage::config::TemplateContext;
use mailtriage::parse::parse;
use mailtriage::pipeline;

#[path = "../tests/support/crafted.rs"]
mod crafted;

const SHIPPED: &str = include_str!("../rules.toml");

/// The fixtures between 2 and 4 KB.
const FIXTURES: [&[u8]; 6] = [
    include_bytes!("../tests/fixtures/reply-quoted-offer-new-outage-ru-sales.eml"),
    include_bytes!("../tests/fixtures/dsn-bounce-several-reasons-en-support.eml"),
    include_bytes!("../tests/fixtures/unmatched-forward-ru-monitoring.eml"),
    include_bytes!("../tests/fixtures/mixed-log-attachment-error500-en-support.eml"),
    include_bytes!("../tests/fixtures/cp1251-qp-refund-ru-support.eml"),
    include_bytes!("../tests/fixtures/ack-auto-submitted-outage-ru-billing.eml"),
];

/// The shipped rules plus synthetic ones, `total` rules in all.
fn rules_with(total: usize) -> Rules {
    let shipped = Rules::parse(Path::new("rules.toml"), SHIPPED).expect("shipped rules load");
    let categories = ["technical", "howto", "billing", "sales"];
    let mut text = SHIPPED.to_string();
    for i in shipped.rules.len()..total {
        text.push_str(&format!(
            "\n[[rules]]\nname = \"synthetic-{i}\"\ncategory = \"{cat}\"\npriority = {prio}\n\
             subject = '(?i)\\b(product{i}|модуль{i}|feature-{i})\\b'\n\
             body = '(?i)\\b(product{i} (fails|stopped)|модуль{i} (сломался|не отвечает)|order {i}\\d{{3}})\\b'\n",
            cat = categories[i % categories.len()],
            prio = 5 + i % 10,
        ));
    }
    let rules = Rules::parse(Path::new("rules.toml"), &text).expect("synthetic rules load");
    assert_eq!(rules.rules.len(), total.max(shipped.rules.len()));
    rules
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(FIXTURES.len() as u64));
    g.bench_function("6 messages of 2-4 KB", |b| {
        b.iter(|| {
            for raw in FIXTURES {
                black_box(parse(black_box(raw)).expect("fixture parses"));
            }
        })
    });
    g.finish();
}

fn bench_classify(c: &mut Criterion) {
    let mails: Vec<_> = FIXTURES.iter().map(|r| parse(r).unwrap()).collect();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(mails.len() as u64));
    for n in [10, 100, 1000] {
        let rules = rules_with(n);
        g.bench_function(format!("{n} rules"), |b| {
            b.iter(|| {
                for m in &mails {
                    black_box(classify(&rules, black_box(m)));
                }
            })
        });
    }
    g.finish();
}

fn bench_explain_and_compose(c: &mut Criterion) {
    let rules = rules_with(0);
    let mailbox = rules.mailboxes.get("monitoring").expect("shipped mailbox");
    let now = SystemTime::now();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(FIXTURES.len() as u64));
    // parse, classify, decide and the note, with no state: what `explain` does per message
    g.bench_function("explain, shipped rules", |b| {
        b.iter(|| {
            for raw in FIXTURES {
                black_box(pipeline::explain(&rules, None, mailbox, black_box(raw), now).unwrap());
            }
        })
    });
    let mails: Vec<_> = FIXTURES.iter().map(|r| parse(r).unwrap()).collect();
    let ctx = TemplateContext::sample();
    g.bench_function("compose forward", |b| {
        b.iter(|| {
            for (m, raw) in mails.iter().zip(FIXTURES) {
                let f = ForwardInput {
                    to: None,
                    escalated: None,
                    mail: m,
                    raw,
                    whole: true,
                    lang: "ru",
                    ctx: &ctx,
                    message_id: "T-1042.1.forward@mailtriage.example.test",
                    now,
                };
                black_box(compose::forward(&rules, f).unwrap());
            }
        })
    });
    g.finish();
}

fn bench_worst_case(c: &mut Criterion) {
    let rules = rules_with(0);
    let mailbox = rules.mailboxes.get("billing").expect("shipped mailbox");
    let now = SystemTime::now();
    let mut g = c.benchmark_group("worst case");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for m in crafted::all() {
        let mail = parse(&m.raw).expect("crafted mail parses");
        g.bench_function(format!("classify {}", m.name), |b| {
            b.iter(|| black_box(classify(&rules, black_box(&mail))))
        });
        g.bench_function(format!("explain {}", m.name), |b| {
            b.iter(|| {
                black_box(pipeline::explain(
                    &rules,
                    None,
                    mailbox,
                    black_box(&m.raw),
                    now,
                ))
            })
        });
    }
    g.finish();
}

fn bench_per_kb(c: &mut Criterion) {
    let rules = rules_with(0);
    let base = parse(FIXTURES[0]).expect("fixture parses");
    let mut g = c.benchmark_group("classify per KB");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for kb in [1, 4, 16, 64, 256, 1024] {
        // Set on the parsed mail, so that the parser's caps do not cut them.
        let mail = mailtriage::parse::Mail {
            subject: crafted::repeat_to(crafted::LONG_WORD_UNIT, kb * 1024),
            text: crafted::repeat_to(crafted::LITERAL_HITS_UNIT, kb * 1024),
            ..base.clone()
        };
        g.throughput(Throughput::Bytes(
            (mail.subject.len() + mail.text.len()) as u64,
        ));
        g.bench_function(format!("{kb} KB subject + {kb} KB body"), |b| {
            b.iter(|| black_box(classify(&rules, black_box(&mail))))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_classify,
    bench_explain_and_compose,
    bench_worst_case,
    bench_per_kb
);
criterion_main!(benches);
