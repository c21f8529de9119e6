//! A year of a busy desk, through the library: 60,000 tickets and 200,000 messages
//! triaged into a state by `pipeline::triage` on a clock that runs over the past year
//! (requests to support@, billing@ and sales@, staff answers through the watched
//! mailboxes, the customers' replies, staff's `Resolved:` lines; the rest resolve
//! themselves after `resolve_after`), with the follow-up clock and the retention pass
//! (which shelves quiet resolved tickets) run every simulated hour and the outbox
//! emptied as a server would. Then the retention sweep runs to the end,
//! and criterion measures one follow-up scan (`followup::run_once`) of that state.
//!
//! `cargo bench --bench year` prints and writes (`target/year-bench.json`): the raw mail
//! triaged, the state's size on disk after retention, the open and all tickets, the time
//! to open the state as the daemon does (open + migration check). The state is made
//! afresh on every run, in `target/year-state` or the directory `YEAR_STATE` names, and
//! left there: `bench/e2e.py --only year` starts the daemon on it for READY and idle RSS
//! (`YEAR_TICKETS` sets a smaller desk, for a quick look; `cargo test --benches` makes
//! 300 tickets).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use mailtriage::config::Rules;
use mailtriage::pipeline::{self, Incoming};
use mailtriage::record::{Listing, Store};
use mailtriage::runtime::{followup, retention};

const SHIPPED: &str = include_str!("../rules.toml");
const DAY: u64 = 86400;

/// A small deterministic generator (xorshift64*): the same desk every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "account",
    "page",
    "server",
    "yesterday",
    "please",
    "customer",
    "order",
    "thanks",
    "error",
    "again",
    "browser",
    "colleague",
    "contract",
    "number",
    "attached",
    "screen",
    "страница",
    "счёт",
    "оплата",
    "договор",
    "пожалуйста",
    "снова",
    "вчера",
    "ошибка",
];

/// Text of `bytes` or so, in lines of ordinary words.
fn filler(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 80);
    while s.len() < bytes {
        for _ in 0..12 {
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            s.push(' ');
        }
        s.push_str("\r\n");
    }
    s
}

/// A request: what it is about picks the rules' category, where it is sent picks
/// whether it is forwarded.
fn request(rng: &mut Rng, n: u64, customer: &str, mailbox: &str) -> (String, Vec<u8>) {
    let (subject, first) = match rng.below(3) {
        0 => (
            "Website is down",
            "Error 500 on every page since this morning.",
        ),
        1 => (
            "Refund for invoice",
            "I was charged twice, please refund the invoice.",
        ),
        _ => (
            "Pricing for 50 seats",
            "How much for 50 seats? We want to buy licences.",
        ),
    };
    let id = format!("req-{n}@client.example");
    let size = 1500 + rng.below(5000) as usize;
    let body = filler(rng, size);
    let raw = format!(
        "From: Customer {n} <{customer}>\r\nTo: {mailbox}\r\nSubject: {subject} #{n}\r\nMessage-ID: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{first}\r\n\r\n{body}"
    );
    (id, raw.into_bytes())
}

fn reply(from: &str, to: &str, cc: &str, ticket: &str, id: &str, text: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nCc: {cc}\r\nSubject: Re: [#{ticket}] your request\r\nMessage-ID: <{id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

/// What the year leaves behind.
struct Year {
    dir: PathBuf,
    raw_bytes: u64,
    messages: u64,
    tickets: u64,
}

/// Where the year's state is made and left for the end-to-end bench; a test run's small
/// desk goes elsewhere, so that it never stands in for the year.
fn state_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    match std::env::var_os("YEAR_STATE") {
        _ if !benching() => target.join("year-state-test"),
        Some(d) => PathBuf::from(d),
        None => target.join("year-state"),
    }
}

/// `cargo bench` passes `--bench`; `cargo test --benches` runs each bench once without it.
fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// One message through the pipeline at `at`; the outbox is emptied as the server would.
fn triage(
    rules: &Rules,
    store: &Store,
    mailbox: &str,
    raw: &[u8],
    at: SystemTime,
) -> Option<String> {
    let inc = Incoming {
        mailbox: &rules.mailboxes[mailbox],
        raw,
        source: None,
        folder: None,
    };
    let rep = pipeline::triage(rules, store, inc, at).expect("triage");
    for (k, _) in store.outbox().unwrap() {
        store.outbox_done(k).unwrap();
    }
    rep.ticket
}

/// The year: ticket `n` opens at an even pace over the last 365 days; staff answer
/// within hours; two customers in three reply, and staff answer again; 70 % of the last
/// answers carry a `Resolved:` line.
fn make_year(rules: &Rules, tickets: u64) -> Year {
    let dir = state_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).unwrap();
    store.migrate_lifecycle().unwrap();
    let start = SystemTime::now() - Duration::from_secs(365 * DAY);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mailboxes = [
        ("support", "support@example.test"),
        ("billing", "billing@example.test"),
        ("sales", "sales@example.test"),
    ];
    let (mut raw_bytes, mut messages) = (0u64, 0u64);
    let mut next_hour = 0;
    for n in 0..tickets {
        let t0 = n * 365 * DAY / tickets;
        let at = |s: u64| start + Duration::from_secs(s);
        while next_hour * 3600 <= t0 {
            let now = at(next_hour * 3600);
            followup::run_once(rules, &store, UNIX_EPOCH, now).unwrap();
            // The daemon's retention pass, hourly, sooner while it has more to do.
            while retention::sweep_once(&store, retention::keep(&rules.threading), now)
                .unwrap()
                .more
            {}
            next_hour += 1;
        }
        let (mb, address) = mailboxes[rng.below(3) as usize];
        let customer = format!("customer{}@client{}.example", n % 9000, n % 700);
        let (_, raw) = request(&mut rng, n, &customer, address);
        let Some(ticket) = triage(rules, &store, mb, &raw, at(t0)) else {
            continue;
        };
        let owner = store.ticket(&ticket).unwrap().unwrap().queue;
        let queue = &rules.queues[&owner].address;
        let replies = if rng.below(3) < 2 { 2 } else { 1 };
        let mut sent: Vec<(&str, Vec<u8>)> = vec![(mb, raw)];
        for r in 0..replies {
            let t = t0 + 3600 * (1 + 20 * r) + rng.below(7200);
            let last = r + 1 == replies;
            let resolved = if last && rng.below(10) < 7 {
                "Resolved: done\r\n"
            } else {
                ""
            };
            let text = format!(
                "Hello,\r\n\r\n{}\r\n{resolved}Regards, the team",
                filler(&mut rng, 600)
            );
            let answer = reply(
                queue,
                &customer,
                queue,
                &ticket,
                &format!("ans-{n}-{r}@example.test"),
                &text,
            );
            // The owning queue's own mailbox (the shipped rules name them alike).
            let own = if rules.mailboxes.contains_key(&owner) {
                owner.as_str()
            } else {
                mb
            };
            triage(rules, &store, own, &answer, at(t));
            sent.push((own, answer));
            if !last {
                let back = reply(
                    &customer,
                    address,
                    address,
                    &ticket,
                    &format!("back-{n}@client.example"),
                    &filler(&mut rng, 800),
                );
                triage(rules, &store, mb, &back, at(t + 7200));
                sent.push((mb, back));
            }
        }
        messages += sent.len() as u64;
        raw_bytes += sent.iter().map(|(_, r)| r.len() as u64).sum::<u64>();
    }
    store.flush().unwrap();
    Year {
        dir,
        raw_bytes,
        messages,
        tickets,
    }
}

fn year(c: &mut Criterion) {
    let rules = Rules::parse(Path::new("rules.toml"), SHIPPED).expect("shipped rules load");
    // `cargo test --benches` runs each bench once without `--bench`: a small desk there,
    // so the test run checks the bench works without generating a year in a debug build.
    let benching = benching();
    let tickets = std::env::var("YEAR_TICKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 60_000 } else { 300 });
    let made = Instant::now();
    let y = make_year(&rules, tickets);
    let made = made.elapsed();
    let before = dir_size(&y.dir);
    let store = Store::open(&y.dir).unwrap();
    let mut swept = (0, 0);
    loop {
        let s = retention::sweep_once(&store, retention::keep(&rules.threading), SystemTime::now())
            .unwrap();
        swept = (swept.0 + s.tickets, swept.1 + s.entries);
        if !s.more {
            break;
        }
    }
    store.flush().unwrap();
    let (open, all) = (
        store.open_len(),
        store.listing(Listing::All, 0).unwrap().more,
    );
    drop(store);
    std::thread::sleep(Duration::from_millis(500));
    let opened = Instant::now();
    let store = Store::open(&y.dir).unwrap();
    store.migrate_lifecycle().unwrap();
    let open_time = opened.elapsed();
    let after = dir_size(&y.dir);
    let now = SystemTime::now();
    let (first_scan_ms, scan_ms, read) = median_scan_ms(&rules, &store, now);
    // What the live data is, tree by tree, against the files on disk.
    let trees: Vec<serde_json::Value> = store
        .sizes()
        .unwrap()
        .into_iter()
        .map(|(name, n, bytes)| serde_json::json!({"tree": name, "entries": n, "bytes": bytes}))
        .collect();
    let live: u64 = store.sizes().unwrap().iter().map(|(_, _, b)| b).sum();
    let figures = serde_json::json!({
        "tickets": y.tickets, "messages": y.messages, "raw_mail_bytes": y.raw_bytes,
        "state_bytes_before_sweep": before, "state_bytes_after_retention": after,
        "state_over_raw": after as f64 / y.raw_bytes as f64,
        "swept_tickets": swept.0, "swept_entries": swept.1,
        "tickets_kept": all, "tickets_open": open,
        "open_state_ms": open_time.as_secs_f64() * 1000.0,
        "generation_s": made.as_secs_f64(),
        "followup_scan_ms": scan_ms, "followup_scan_read": read,
        "followup_first_scan_ms": first_scan_ms,
        "live_bytes": live, "trees": trees,
    });
    println!("year figures: {figures}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/year-bench.json");
    if benching {
        std::fs::write(out, figures.to_string()).unwrap();
    }
    // The daemon's clock keeps what it saw between scans (`followup::Looks`): a scan
    // reads the tickets that changed or whose moment came. Measured both ways: every
    // minute's scan, and the first after a start, which reads every open ticket.
    let mut looks = followup::Looks::default();
    followup::run_with(&rules, &store, &mut looks, UNIX_EPOCH, now).unwrap();
    c.bench_function("follow-up scan, a year of state", |b| {
        b.iter(|| {
            followup::run_with(&rules, &store, &mut looks, UNIX_EPOCH, black_box(now)).unwrap()
        })
    });
    c.bench_function("first follow-up scan after a start, a year of state", |b| {
        b.iter(|| followup::run_once(&rules, &store, UNIX_EPOCH, black_box(now)).unwrap())
    });
}

/// The medians of 21 follow-up scans at `now`, for the figures file (criterion prints
/// its own estimates of the same): first scans after a start (every open ticket read),
/// and the clock's scans, which keep what they saw; with how many records one of those
/// read. The very first scan resolves what is quiet and queues what is due, like the
/// daemon's first after a start, and is left out.
fn median_scan_ms(rules: &Rules, store: &Store, now: SystemTime) -> (f64, f64, usize) {
    followup::run_once(rules, store, UNIX_EPOCH, now).unwrap();
    let median = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    };
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1000.0
    };
    let first = median(
        (0..21)
            .map(|_| {
                timed(&mut || {
                    followup::run_once(rules, store, UNIX_EPOCH, black_box(now)).unwrap();
                })
            })
            .collect(),
    );
    let mut looks = followup::Looks::default();
    followup::run_with(rules, store, &mut looks, UNIX_EPOCH, now).unwrap();
    let steady = median(
        (0..21)
            .map(|_| {
                timed(&mut || {
                    followup::run_with(rules, store, &mut looks, UNIX_EPOCH, black_box(now))
                        .unwrap();
                })
            })
            .collect(),
    );
    (first, steady, looks.read())
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = year
}
criterion_main!(benches);
