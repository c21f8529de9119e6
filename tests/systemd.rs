//! The shipped unit file, checked offline by systemd's own tools: `systemd-analyze
//! verify` finds nothing, and `systemd-analyze security` rates its exposure 2.0 or
//! better (the figure the README gives).

mod support;

use std::path::Path;
use std::process::Command;

use support::cli::Run;
use support::root;

/// The unit with ExecStart pointing at the binary under test: verify checks that the
/// commands exist.
fn unit(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("systemd/mailtriage.service")).unwrap();
    assert!(text.contains("/usr/local/bin/mailtriage"));
    let path = dir.join("mailtriage.service");
    std::fs::write(
        &path,
        text.replace(
            "/usr/local/bin/mailtriage",
            env!("CARGO_BIN_EXE_mailtriage"),
        ),
    )
    .unwrap();
    path
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let o = Run::of(Command::new("systemd-analyze").args(args).arg(unit)).unwrap_or_else(|e| {
        panic!("systemd-analyze: {e}; install the systemd package (bash scripts/test does)")
    });
    (o.status.success(), o.text())
}

#[test]
fn unit_file_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = analyze(&["verify"], &unit(dir.path()));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
}

#[test]
fn unit_file_security_exposure_is_two_or_better() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = analyze(&["security", "--offline=true"], &unit(dir.path()));
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for mailtriage.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 2.0, "exposure {level}:\n{out}");
}
