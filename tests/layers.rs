//! The dependencies of `src/` point one way, down the layers the README's Architecture
//! section draws: a module may use the ones below it, never one above it or beside it.
//! Read from the sources (every `crate::NAME` outside test code), so a new import that
//! runs back up fails here rather than in review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use any module of an earlier layer, none of its own layer
/// (which keeps the pure stages free of each other's back-edges) unless it is listed
/// earlier in that layer.
const LAYERS: &[&[&str]] = &[
    &["ticket", "when", "parse", "clock", "memory"],
    &["classify::matcher"],
    &["config"],
    &["tls", "auth", "classify"],
    &["decide"],
    &["words"],
    &["compose", "record"],
    &["source", "send"],
    &["pipeline"],
    &["runtime"],
    &["cli"],
];

fn rank(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS and the README")
        })
}

/// The module a source file belongs to: its top-level folder or file under `src/`, the
/// matcher counted apart from the rest of classify.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.len() > 1 && parts[0] == "classify" && parts[1] == "matcher" {
        return "classify::matcher".into();
    }
    parts[0].clone()
}

/// The modules a file's non-test code names as `crate::NAME`.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "classify" && rest.starts_with("classify::matcher") {
                found.insert("classify::matcher".to_string());
            } else if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap();
        if name == "lib.rs" || name == "main.rs" {
            continue;
        }
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used == module || (module == "classify" && used == "classify::matcher") {
                continue;
            }
            let (own, theirs) = (rank(&module), rank(&used));
            let earlier_in_layer = own == theirs && {
                let layer = LAYERS[own];
                layer.iter().position(|m| *m == used) < layer.iter().position(|m| *m == module)
            };
            if theirs > own || (theirs == own && !earlier_in_layer) {
                upward.push(format!(
                    "{} ({module}) uses crate::{used}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up or across the layers:\n{}",
        upward.join("\n")
    );
}
