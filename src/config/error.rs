//! Configuration errors: each one names the file, the key path and the line, so an admin
//! can go straight to the mistake. Loading collects every error it can find before it
//! gives up, so one run of `mailtriage check` shows all of them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the mistake is in.
    pub file: PathBuf,
    /// Dotted key path, e.g. `rules[3].subject` or `queues.billing.address`.
    pub key: String,
    /// 1-based line, when the position is known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

/// All the mistakes found in one load; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads a configuration file; a file that cannot be read is an error like any other.
pub(crate) fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        }])
    })
}

/// Collects errors against one source text, turning byte spans into line numbers.
pub(crate) struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    pub errors: Vec<ConfigError>,
    /// Design mistakes that do not stop loading (a queue nothing routes to, a regex
    /// that matches the empty string): `check` prints them, the daemon logs them.
    pub warnings: Vec<ConfigError>,
    /// Other files the text names and that were read (holidays calendars).
    pub read: Vec<PathBuf>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
            read: Vec::new(),
        }
    }

    /// Records a warning at a span of the source.
    pub fn warn_at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(&s));
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            line,
            message: message.into(),
        });
    }

    /// Records a warning on a key, found by its path (`queues.sales`, `categories.x`).
    pub fn warn_key(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let e = self.on_key(key.into(), message.into());
        self.warnings.push(e);
    }

    /// Records an error on a key, found by its path (`smtp.connections`): serde's spans
    /// of a table point at its header, not at the key that is wrong.
    pub fn at_key(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let e = self.on_key(key.into(), message.into());
        self.errors.push(e);
    }

    fn on_key(&self, key: String, message: String) -> ConfigError {
        let header = format!("[{key}]");
        // A table's line is its header; `line_of_key` finds keys inside tables.
        let line = self
            .text
            .lines()
            .position(|l| l.trim() == header)
            .map(|i| i + 1)
            .or_else(|| line_of_key(self.text, &key));
        ConfigError {
            file: self.file.to_path_buf(),
            key,
            line,
            message,
        }
    }

    /// The file being read (another file it names is found beside it).
    pub fn file(&self) -> &Path {
        self.file
    }

    /// Records an error or a warning found in another file that `key` names (a holidays
    /// calendar): that file and its line.
    pub fn in_file(&mut self, e: ConfigError, warning: bool) {
        if warning {
            self.warnings.push(e);
        } else {
            self.errors.push(e);
        }
    }

    pub fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// Records an error at a span of the source.
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(&s));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            line,
            message: message.into(),
        });
    }

    /// Records an error of the TOML/serde layer, which carries its own span.
    pub fn toml(&mut self, err: &toml::de::Error) {
        let key = err
            .span()
            .map(|s| key_path_at(self.text, s.start))
            .unwrap_or_default();
        let message = err.message().trim().to_string();
        self.at(err.span(), key, message);
    }

    /// Parses TOML into `T`, recording every unknown key (with its line) instead of
    /// stopping at the first, so one `check` lists all of them. Other mistakes (a wrong
    /// type, a missing key) stop the parse and are recorded too.
    pub fn parse<T: serde::de::DeserializeOwned>(&mut self, text: &str) -> Option<T> {
        let mut unknown = Vec::new();
        let de = match toml::Deserializer::parse(text) {
            Ok(d) => d,
            Err(e) => {
                self.toml(&e);
                return None;
            }
        };
        let r = serde_ignored::deserialize(de, |path| unknown.push(dotted(&path.to_string())));
        for key in unknown {
            let line = line_of_key(text, &key);
            let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", &key));
            self.errors.push(ConfigError {
                file: self.file.to_path_buf(),
                key: key.clone(),
                line,
                message: if parent.is_empty() {
                    format!("unknown key `{leaf}`")
                } else {
                    format!("unknown key `{leaf}` in {parent}")
                },
            });
        }
        match r {
            // Unknown keys are recorded; the rest of the file is still checked, so one
            // `check` shows them beside every other mistake.
            Ok(v) => Some(v),
            Err(e) => {
                self.toml(&e);
                None
            }
        }
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// The dotted key path at a byte offset, worked out from the table headers above it and
/// the key on its line: serde reports the position of a mistake, not its path.
pub(crate) fn key_path_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    for line in text[..offset].split_inclusive('\n') {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = arrays
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            table = format!("{name}[{n}]");
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
        }
    }
    // The line the offset is on, from its start.
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let rest = &text[start..];
    let line = rest.lines().next().unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) if !line.trim_start().starts_with('[') => {
            k.trim().trim_matches('"').to_string()
        }
        _ => String::new(),
    };
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// serde_ignored writes array indices as path segments (`rules.3.subjct`); the rest of
/// the program writes `rules[3].subjct`.
fn dotted(path: &str) -> String {
    let mut out = String::new();
    // Spanned<T> values show up as a private segment of their own, and an Option's
    // value as `?`.
    for seg in path
        .split('.')
        .filter(|s| !s.starts_with("$__serde_spanned") && *s != "?")
    {
        if !out.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// The line where a dotted key is written: the first line whose key path is `key`, or
/// for a table the line of its header.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        let is_key = !t.starts_with('#') && (t.contains('=') || t.starts_with('['));
        if is_key {
            let at = offset + (line.len() - t.len());
            let p = key_path_at(text, at);
            if p == key {
                return Some(i + 1);
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_follows_tables_and_arrays() {
        let text =
            "a = 1\n[queues.billing]\nadress = 2\n[[rules]]\nx = 1\n[[rules]]\nsubject = 3\n";
        assert_eq!(key_path_at(text, 1), "a");
        let at = text.find("adress").unwrap();
        assert_eq!(key_path_at(text, at), "queues.billing.adress");
        let at = text.find("subject").unwrap();
        assert_eq!(key_path_at(text, at + 3), "rules[1].subject");
        assert_eq!(line_of_key(text, "rules[1].subject"), Some(7));
        assert_eq!(line_of_key(text, "queues.billing.adress"), Some(3));
        assert_eq!(dotted("rules.1.subjct"), "rules[1].subjct");
        assert_eq!(dotted("archive.?.pasword"), "archive.pasword");
    }
}
