//! Malformed and hostile mail (issue 4, point 4): real-world broken-mail corpora and the
//! project's own broken fixtures go through `mailtriage triage`; each message comes out
//! triaged or quarantined, never as a panic.
//!
//! The crafted mail of `support::crafted` (megabytes each, built by the test) goes
//! with the broken fixtures.
//!
//! The corpora are found on the machine: mail-parser's `resources/eml` in the cargo
//! registry (the crate is a dependency, so its source is there after any build) and
//! CPython's `test/test_email/data`. A missing corpus fails the test with a message.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::cli::cli;
use support::root;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

fn mail_parser_corpus() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let registry = home.join("registry").join("src");
    let mut found = Vec::new();
    for index in std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("cargo registry {}: {e}", registry.display()))
    {
        let index = index.unwrap().path();
        for krate in std::fs::read_dir(&index).into_iter().flatten() {
            let p = krate.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("mail-parser-0.11.") && p.join("resources/eml").is_dir() {
                found.push(p.join("resources/eml"));
            }
        }
    }
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "mail-parser 0.11's resources/eml was not found under {}: run `cargo fetch` first",
            registry.display()
        )
    })
}

fn cpython_corpus() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import test.test_email, os; print(os.path.dirname(test.test_email.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for CPython's test_email corpus: {e}"));
    assert!(
        out.status.success(),
        "CPython's test.test_email package is missing (Debian: libpython3-stdlib / python3 with tests): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("data");
    assert!(dir.is_dir(), "{} is missing", dir.display());
    dir
}

/// Runs `triage` over `files` in one state and returns how many were triaged.
fn triage_all(files: &[PathBuf]) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mut triaged, mut quarantined) = (0, 0);
    // In slices: one process per file would take minutes, one for all would hide which
    // file a panic came from behind a long list.
    for chunk in files.chunks(40) {
        let out = cli(&["triage"])
            .shipped_rules()
            .args(["--mailbox", "billing", "--json"])
            .outbox(&dir.path().join("outbox"))
            .state(&dir.path().join("state"))
            .args(chunk)
            .run();
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code().is_some_and(|c| c <= 1),
            "triage failed ({}) on one of {chunk:?}:\n{stderr}",
            out.status
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON report per line"))
            .collect();
        assert_eq!(
            lines.len(),
            chunk.len(),
            "a report for every file of {chunk:?}"
        );
        for l in &lines {
            if l["action"] == "quarantine" {
                quarantined += 1;
            } else {
                triaged += 1;
            }
        }
        // Exit 1 exactly when something was quarantined: nothing is dropped silently.
        assert_eq!(
            out.status.code() == Some(1),
            lines.iter().any(|l| l["action"] == "quarantine"),
            "{stderr}"
        );
    }
    (triaged, quarantined)
}

/// Sorts a corpus of more than `more_than` files, runs it through triage and says how
/// it went.
fn triage_corpus(name: &str, mut files: Vec<PathBuf>, more_than: usize) {
    files.sort();
    assert!(
        files.len() > more_than,
        "{name} corpus too small: {}",
        files.len()
    );
    let (t, q) = triage_all(&files);
    eprintln!(
        "{name} corpus: {} files, {t} triaged, {q} quarantined, 0 panics",
        files.len()
    );
}

#[test]
fn mail_parser_corpus_goes_through_triage_without_a_panic() {
    let mut files = Vec::new();
    files_under(&mail_parser_corpus(), &mut files);
    triage_corpus("mail-parser", files, 100);
}

#[test]
fn cpython_test_email_corpus_goes_through_triage_without_a_panic() {
    let files: Vec<PathBuf> = std::fs::read_dir(cpython_corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("msg_"))
        .collect();
    triage_corpus("CPython", files, 40);
}

#[test]
fn broken_fixtures_are_triaged_or_quarantined_never_dropped() {
    let dir = root().join("tests/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    // The crafted mail too big to keep in git (tests/broken/README.md), built here.
    let crafted = tempfile::tempdir().unwrap();
    for c in support::crafted::built() {
        let file = crafted.path().join(c.name);
        std::fs::write(&file, &c.raw).unwrap();
        files.push(file);
    }
    let (t, q) = triage_all(&files);
    // An empty file and a body with no header cannot be read as mail (random bytes
    // can: mail-parser reads any line with a colon as a header).
    assert!(q >= 2, "{q} quarantined");
    assert_eq!(t + q, files.len());
}
