//! Hot reload of rules.toml. On SIGHUP, and when the file changes (its folder is
//! watched, because editors save by writing a new file and renaming it over the old
//! one), a whole new [`Rules`] is loaded and checked aside, its rule tests run, and only
//! then is it swapped into the `ArcSwap` the mailbox tasks read per batch. A file with
//! any error leaves the rules in force untouched. mailtriage.toml is not reloaded: a
//! change to it is logged as needing a restart.
//!
//! Only a change is a reason: the watcher ignores opening and reading (an admin's `cat`,
//! `mailtriage check`, and the reload's own reading of the file, which would otherwise
//! start the next reload), and a file whose text is the one last handled, applied or
//! refused, is neither reloaded nor logged again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::{version_of, version_with, Rule, Rules};
use crate::runtime::runner::Shared;
use crate::runtime::status::Board;
use crate::runtime::systemd;

/// Editors write a file in several steps; changes closer together than this are one.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// A file the daemon watches changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Rules,
    Settings,
}

/// What a new version of the rules changes, in words for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Other sections that differ (queues, mailboxes, templates...).
    pub sections: Vec<&'static str>,
}

fn rule_key(r: &Rule) -> String {
    let pats: Vec<String> = r
        .patterns
        .iter()
        .map(|p| format!("{}={}", p.field, p.source))
        .collect();
    let mode = if r.all { "all" } else { "any" };
    format!("{}|{}|{mode}|{}", r.category, r.priority, pats.join("|"))
}

/// Rules and flags added, removed and changed between two versions, by name.
pub fn diff(old: &Rules, new: &Rules) -> Diff {
    let mut d = Diff::default();
    for (what, o, n) in [
        ("rule", &old.rules, &new.rules),
        ("flag", &old.flags, &new.flags),
    ] {
        for r in n {
            match o.iter().find(|x| x.name == r.name) {
                None => d.added.push(format!("{what} {}", r.name)),
                Some(x) if rule_key(x) != rule_key(r) => {
                    d.changed.push(format!("{what} {}", r.name))
                }
                Some(_) => {}
            }
        }
        for r in o {
            if !n.iter().any(|x| x.name == r.name) {
                d.removed.push(format!("{what} {}", r.name));
            }
        }
    }
    let dbg = |v: &dyn std::fmt::Debug| format!("{v:?}");
    // Without their place in the file, which moves with any edit above them.
    let tests = |r: &Rules| {
        let v: Vec<_> = r
            .tests
            .iter()
            .map(|t| {
                (
                    &t.name, &t.mailbox, &t.subject, &t.body, &t.sender, &t.headers, &t.expect,
                )
            })
            .collect();
        format!("{v:?}")
    };
    for (name, a, b) in [
        ("company", dbg(&old.company), dbg(&new.company)),
        ("queues", dbg(&old.queues), dbg(&new.queues)),
        ("categories", dbg(&old.categories), dbg(&new.categories)),
        ("mailboxes", dbg(&old.mailboxes), dbg(&new.mailboxes)),
        ("languages", dbg(&old.languages), dbg(&new.languages)),
        ("escalation", dbg(&old.escalation), dbg(&new.escalation)),
        ("threading", dbg(&old.threading), dbg(&new.threading)),
        ("incidents", dbg(&old.incidents), dbg(&new.incidents)),
        ("tests", tests(old), tests(new)),
    ] {
        if a != b {
            d.sections.push(name);
        }
    }
    d
}

/// Loads `path` aside and swaps it in when it is valid, its tests pass and it watches
/// the same mailboxes. Returns whether the new rules are in force.
pub fn reload(path: &Path, rules: &ArcSwap<Rules>, board: &Board, cause: &str) -> bool {
    let new = match crate::pipeline::ruletest::load(path) {
        Ok(r) => r,
        Err(e) => {
            // One line, so journald keeps it as one entry.
            let errors: Vec<String> =
                e.0.iter()
                    .map(|e| e.to_string().replace('\n', " "))
                    .collect();
            tracing::error!(file = %path.display(), cause, count = e.0.len(), errors = %errors.join(" | "), "Rules not reloaded; the rules in force stay.");
            board.reload_failed(&format!(
                "{} error(s) in {}: {}",
                e.0.len(),
                path.display(),
                e.0[0]
            ));
            return false;
        }
    };
    let old = rules.load_full();
    if new.version == old.version {
        board.reloaded(&new.version);
        tracing::info!(file = %path.display(), cause, version = %new.version, "Rules reloaded; nothing changed.");
        return true;
    }
    // The mailbox tasks and their logins come from mailtriage.toml at start: a mailbox
    // added or removed here needs a restart, and a half-applied set is worse than none.
    let (a, b): (Vec<_>, Vec<_>) = (
        old.mailboxes.keys().collect(),
        new.mailboxes.keys().collect(),
    );
    if a != b {
        let why = format!(
            "the set of mailboxes changed ({} -> {}); restart the daemon to watch a different set",
            a.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            b.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
        tracing::error!(file = %path.display(), cause, "Rules not reloaded; the rules in force stay: {why}.");
        board.reload_failed(&why);
        return false;
    }
    for w in &new.warnings {
        tracing::warn!(warning = %w, "Rules warning.");
    }
    let d = diff(&old, &new);
    let version = new.version.clone();
    rules.store(Arc::new(new));
    board.reloaded(&version);
    tracing::info!(
        file = %path.display(),
        cause,
        version = %version,
        old_version = %old.version,
        added = %d.added.join(", "),
        removed = %d.removed.join(", "),
        changed = %d.changed.join(", "),
        sections = %d.sections.join(", "),
        "Rules reloaded."
    );
    true
}

/// Whether a watcher event can change a file's text: written and closed, created,
/// renamed, removed. Opening, reading and metadata cannot.
fn changes_text(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // A backend that cannot say what happened: the text digest decides.
        EventKind::Any => true,
        EventKind::Other => false,
    }
}

/// Watches the folders of the rules file, of the files the rules read (`others`:
/// holidays calendars) and of the settings file; changes to their text are sent on
/// `tx`. Keep the returned watcher alive as long as it should run.
pub fn watch(
    rules: &Path,
    others: &[PathBuf],
    settings: &Path,
    tx: mpsc::UnboundedSender<Changed>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher as _;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let rules: Vec<PathBuf> = std::iter::once(rules)
        .chain(others.iter().map(PathBuf::as_path))
        .map(abs)
        .collect();
    let settings = abs(settings);
    let (r, s) = (rules.clone(), settings.clone());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if !changes_text(&event.kind) {
            return;
        }
        if event.paths.iter().any(|p| r.contains(p)) {
            let _ = tx.send(Changed::Rules);
        }
        if event.paths.contains(&s) {
            let _ = tx.send(Changed::Settings);
        }
    })?;
    let mut dirs: Vec<PathBuf> = rules
        .iter()
        .chain(std::iter::once(&settings))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        watcher.watch(&d, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// An editor saves in several steps: the changes that come within [`DEBOUNCE`] of the
/// first are one change.
async fn settle(first: Changed, rx: &mut mpsc::UnboundedReceiver<Changed>) -> (bool, bool) {
    tokio::time::sleep(DEBOUNCE).await;
    let mut seen = (first == Changed::Rules, first == Changed::Settings);
    while let Ok(c) = rx.try_recv() {
        seen.0 |= c == Changed::Rules;
        seen.1 |= c == Changed::Settings;
    }
    seen
}

/// The digest of a file's text, `None` when it cannot be read (a reload then says why).
fn digest(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|t| version_of(&t))
}

/// The version the rules file and the files the rules in force read would have now.
fn rules_digest(path: &Path, others: &[PathBuf]) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| version_with(&t, others))
}

/// The reload task: reloads the rules on SIGHUP and when rules.toml changes; says that
/// a change to mailtriage.toml needs a restart.
pub async fn run(
    rules_path: PathBuf,
    config_path: PathBuf,
    shared: Shared,
    mut hup: tokio::signal::unix::Signal,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The files the rules in force read besides rules.toml; watched as well, and watched
    // anew when a reload changes them.
    let mut others = shared.rules.load().files.clone();
    // Kept alive for as long as this task runs.
    let mut watcher = watch_or_warn(&rules_path, &others, &config_path, &tx);
    // The texts last handled: a file event with the same text is no change.
    let mut rules_seen = Some(shared.rules.load().version.clone());
    let mut settings_seen = digest(&config_path);
    loop {
        let (rules_event, settings_event) = tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = hup.recv() => {
                rules_seen = rules_digest(&rules_path, &others);
                reload_now(&rules_path, &shared, "SIGHUP").await;
                (false, false)
            }
            c = rx.recv() => match c {
                Some(c) => settle(c, &mut rx).await,
                None => std::future::pending().await,
            },
        };
        if settings_event && changed(&config_path, &mut settings_seen) {
            tracing::warn!(file = %config_path.display(), "Settings file changed; settings are not reloaded, restart the daemon to apply them.");
        }
        if rules_event {
            let now = rules_digest(&rules_path, &others);
            // An unreadable file is a change each time: the reload says what is wrong.
            if now.is_none() || now != rules_seen {
                rules_seen = now;
                reload_now(&rules_path, &shared, "file changed").await;
            }
        }
        let files = shared.rules.load().files.clone();
        if files != others {
            others = files;
            rules_seen = Some(shared.rules.load().version.clone());
            drop(watcher);
            watcher = watch_or_warn(&rules_path, &others, &config_path, &tx);
        }
    }
    drop(watcher);
}

/// [`watch`], or a warning that only SIGHUP reloads.
fn watch_or_warn(
    rules: &Path,
    others: &[PathBuf],
    settings: &Path,
    tx: &mpsc::UnboundedSender<Changed>,
) -> Option<notify::RecommendedWatcher> {
    match watch(rules, others, settings, tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(file = %rules.display(), error = %e, "Cannot watch the rules file; reload with SIGHUP.");
            None
        }
    }
}

/// Whether the file's text differs from the one last handled; remembers the new one.
fn changed(path: &Path, seen: &mut Option<String>) -> bool {
    let now = digest(path);
    // An unreadable file is a change each time: the reload says what is wrong with it.
    let same = now.is_some() && now == *seen;
    *seen = now;
    !same
}

/// Reloads on a blocking thread, telling systemd around it.
async fn reload_now(path: &Path, shared: &Shared, cause: &'static str) {
    systemd::notify_reloading();
    let (path, rules, board) = (
        path.to_path_buf(),
        shared.rules.clone(),
        shared.board.clone(),
    );
    let _ = tokio::task::spawn_blocking(move || reload(&path, &rules, &board, cause)).await;
    systemd::notify_reloaded();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_can_change_the_text_count() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, EventKind, MetadataKind, ModifyKind,
            RemoveKind, RenameMode,
        };
        let reads = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ];
        let writes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ];
        assert!(reads.iter().all(|k| !changes_text(k)));
        assert!(writes.iter().all(changes_text));
    }

    fn shipped() -> String {
        crate::config::testing::shipped_text()
    }

    #[test]
    fn diff_names_rules_added_removed_and_changed() {
        let old = Rules::parse(Path::new("rules.toml"), &shipped()).unwrap();
        let text = shipped()
            .replacen("name = \"sales-en\"", "name = \"sales-english\"", 1)
            .replacen("priority = 20", "priority = 25", 1)
            .replacen("response_time = \"4h\"", "response_time = \"3h\"", 1);
        let new = Rules::parse(Path::new("rules.toml"), &text).unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.added, vec!["rule sales-english"]);
        assert_eq!(d.removed, vec!["rule sales-en"]);
        assert_eq!(d.changed, vec!["rule http-5xx"]);
        assert_eq!(d.sections, vec!["queues"]);
    }

    #[test]
    fn a_broken_file_keeps_the_rules_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.toml");
        std::fs::write(&path, shipped()).unwrap();
        let first = Rules::load(&path).unwrap();
        let version = first.version.clone();
        let swap = ArcSwap::from_pointee(first);
        let board = Board::new("rules.toml", &version, false);
        std::fs::write(
            &path,
            shipped().replacen(
                "queue = \"billing\"\n[categories.sales]",
                "queue = \"nobody\"\n[categories.sales]",
                1,
            ),
        )
        .unwrap();
        assert!(!reload(&path, &swap, &board, "test"));
        assert_eq!(swap.load().version, version);
        let st = board.snapshot(crate::runtime::status::Depths::default());
        assert_eq!(st.reloads_failed, 1);
        assert!(
            st.last_errors[0].contains("unknown queue \"nobody\""),
            "{:?}",
            st.last_errors
        );
        // A good edit goes in.
        std::fs::write(
            &path,
            shipped().replacen("response_time = \"4h\"", "response_time = \"3h\"", 1),
        )
        .unwrap();
        assert!(reload(&path, &swap, &board, "test"));
        assert_ne!(swap.load().version, version);
        assert_eq!(
            board
                .snapshot(crate::runtime::status::Depths::default())
                .reloads_ok,
            1
        );
    }
}
