//! Multi-pattern search: the compiled form of the regexes of rules, flags and incidents
//! (built once when rules.toml is loaded, in config) and the scan classify runs on each
//! message. The admin's regexes decide; everything here only avoids running the ones that
//! cannot match, so the answer is exactly what running every regex would give.
//!
//! Per field, the literals every match of a pattern must start with go into one
//! Aho-Corasick automaton, so a message is scanned once per field whatever the number of
//! rules. Text and literals are compared case-folded ([`fold`]), so `(?i)` patterns give
//! one literal instead of one per case variant (the variants of a long word run into
//! the extractor's limits, which then cuts them to short, common prefixes). A pattern
//! with hits then runs from its first hit, where its leftmost match starts at the
//! earliest: first as a lazy DFA of the pattern with its Unicode word boundaries left
//! out (with Cyrillic text the real one falls back to the slow engines), then, where
//! that one matched, as the real pattern, compiled without DFAs (each DFA keeps a cache
//! of its own, and this one only runs where a match is likely). Each runs a bounded
//! number of times per field, never once per hit, so the cost is linear in the text:
//! see [`AtHit::find`]. Patterns with no usable literal are checked the same way over
//! the whole text. (A RegexSet cannot do this: with Unicode word boundaries and
//! Cyrillic text it falls back to its slowest engine, whose cost grows with every rule.)
//!
//! The texts are bounded before they get here: parse cuts the body, the subject and
//! each header value, and [`Haystack::header`] the values of one header together.

use std::cell::OnceCell;
use std::ops::Range;

use aho_corasick::AhoCorasick;
use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::nfa::thompson::{self, pikevm, pikevm::PikeVM, WhichCaptures, NFA};
use regex_automata::util::pool::Pool;
use regex_automata::{hybrid, meta, Anchored, Input};
use regex_syntax::hir::{self, Class, Hir, HirKind, Look};

use crate::parse::{truncate, Mail, MAX_TEXT};

/// Which part of a message a pattern looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Subject,
    Body,
    Sender,
    /// A named header, lower-cased.
    Header(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Subject => f.write_str("subject"),
            Field::Body => f.write_str("body"),
            Field::Sender => f.write_str("sender"),
            Field::Header(h) => write!(f, "header {h}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pattern {
    pub field: Field,
    /// The regex as written, checked by config when the file was loaded; compiled
    /// here into the form classify runs.
    pub source: String,
}

/// The compiled patterns of one list (rules, flags or incidents), grouped by field.
#[derive(Debug, Default)]
pub struct Matchers {
    by_field: Vec<FieldMatcher>,
}

/// The patterns of one field. Each pattern first runs as a lazy DFA of itself, or, when
/// it has Unicode word boundaries, of itself without them (that matches wherever the
/// pattern does, and more, and a DFA can run it on any text); the pattern itself then
/// runs only where that one matched, with an engine that keeps no DFA.
#[derive(Debug)]
struct FieldMatcher {
    field: Field,
    /// Patterns with literals, run from their first literal hits.
    at_hit: Vec<AtHit>,
    /// Folded literals of the `at_hit` patterns; `None` when there are none.
    prefilter: Option<AhoCorasick>,
    /// For each literal of `prefilter`: the patterns (indices into `at_hit`) it stands for.
    literal_patterns: Vec<Vec<usize>>,
    /// Patterns with no usable literal, searched over the whole text.
    whole: Vec<Whole>,
    /// For each `at_hit` pattern, where its hits are in a search's list of patterns with
    /// hits, when it is there (a sparse set: checked against the list, so it is never
    /// cleared, and a search costs nothing for the patterns without hits).
    slots: Caches<Vec<u32>>,
}

/// A pattern with no usable literal.
#[derive(Debug)]
struct Whole {
    /// (index in the list, index of the pattern in its entry).
    owner: (usize, usize),
    fast: meta::Regex,
    exact: Option<meta::Regex>,
}

impl Whole {
    /// The leftmost match in `text`.
    fn find(&self, text: &str) -> Option<Range<usize>> {
        let input = Input::new(text);
        match &self.exact {
            None => self.fast.find(input).map(|m| m.range()),
            Some(exact) => {
                if !self.fast.is_match(input.clone()) {
                    return None;
                }
                exact.find(input).map(|m| m.range())
            }
        }
    }
}

type Caches<T> = Pool<T, Box<dyn Fn() -> T + Send + Sync + UnwindSafe + RefUnwindSafe>>;

/// A pattern with literals: the start of a match is a literal hit, so a forward DFA is
/// enough (no reverse NFA, which for Unicode classes is as big as the forward one).
struct AtHit {
    /// (index in the list, index of the pattern in its entry).
    owner: (usize, usize),
    dfa: hybrid::dfa::DFA,
    dfa_caches: Caches<hybrid::dfa::Cache>,
    /// The DFA runs the pattern without its word boundaries: a match of it only says
    /// where `exact` must look.
    relaxed: bool,
    exact: PikeVM,
    exact_caches: Caches<pikevm::Cache>,
}

impl std::fmt::Debug for AtHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtHit")
            .field("owner", &self.owner)
            .field("relaxed", &self.relaxed)
            .finish_non_exhaustive()
    }
}

impl AtHit {
    fn new(
        owner: (usize, usize),
        hir: &Hir,
        nfa: impl Fn(&Hir) -> Result<NFA, String>,
    ) -> Result<AtHit, String> {
        let exact_nfa = nfa(hir)?;
        let relaxed = hir.properties().look_set().contains_word_unicode();
        let dfa_nfa = if relaxed {
            nfa(&relax(hir))?
        } else {
            exact_nfa.clone()
        };
        let dfa = hybrid::dfa::DFA::builder()
            .build_from_nfa(dfa_nfa)
            .map_err(|e| e.to_string())?;
        let exact = PikeVM::new_from_nfa(exact_nfa).map_err(|e| e.to_string())?;
        let (d, e) = (dfa.clone(), exact.clone());
        Ok(AtHit {
            owner,
            dfa_caches: Pool::new(Box::new(move || d.create_cache())),
            exact_caches: Pool::new(Box::new(move || e.create_cache())),
            dfa,
            relaxed,
            exact,
        })
    }

    /// The leftmost match in `text`, given its pattern's first literal hits in order:
    /// every match starts at a hit, so none starts before the first one.
    ///
    /// A match most often starts at one of the first hits, or there is none: the first
    /// [`TRIES`] hits are tried anchored, by the DFA and, where it ran the relaxed form
    /// and that matched, by the pattern itself, at most [`EXACT_TRIES`] times. Past them,
    /// one search over the rest of the text decides: a DFA scan (no match: done), then
    /// the pattern itself. So each engine runs a bounded number of times per field, and
    /// each run is linear: the whole is linear in the text, however many hits it has.
    /// (Trying the pattern at every hit made one with `\w*` after its literal,
    /// `сч[её]т\w*-фактур`, rescan a long word from each of its hits, quadratic in the
    /// word's length.) The whole text stays the haystack of every run, so look-behind
    /// (`\b`, `^`) sees what is before where it starts.
    fn find(&self, text: &str, hits: &FirstHits) -> Option<Range<usize>> {
        let input = Input::new(text);
        let mut dfa_cache = self.dfa_caches.get();
        let mut exact_cache = self.exact_caches.get();
        // Where the search over the rest starts when the tries do not decide: the first
        // hit not tried, if any (with every hit tried, there is nothing left).
        let mut rest = hits.next();
        let mut exact_tries = 0;
        for &at in hits.tried() {
            let here = input.clone().range(at..).anchored(Anchored::Yes);
            match self.dfa.try_search_fwd(&mut dfa_cache, &here) {
                Ok(None) => continue,
                Ok(Some(end)) if !self.relaxed => return Some(at..end.offset()),
                // The relaxed form matched here, or the DFA gave up: the pattern decides.
                _ if exact_tries == EXACT_TRIES => {
                    rest = Some(at);
                    break;
                }
                _ => exact_tries += 1,
            }
            if let Some(m) = self.exact.find(&mut exact_cache, here) {
                return Some(m.range());
            }
        }
        // No match starts at a hit before `from`, so none before it.
        let from = rest?;
        let input = input.range(from..);
        let end = match self.dfa.try_search_fwd(&mut dfa_cache, &input) {
            Ok(None) => return None,
            // The DFA ran the pattern itself: the leftmost match ends there, and starts
            // at a hit in between.
            Ok(Some(end)) if !self.relaxed => end.offset(),
            // The pattern itself may match anywhere from `from` on.
            _ => text.len(),
        };
        self.exact
            .find(&mut exact_cache, input.range(from..end))
            .map(|m| m.range())
    }
}

/// How many of a pattern's hits are tried anchored before one search over the rest of the
/// text decides. Ordinary mail rarely has more hits before a pattern's match; crafted
/// mail can have thousands, and each try may run to the end of the text.
const TRIES: usize = 8;

/// How many of those tries may run the pattern itself, after its relaxed form matched:
/// its engine is the slow one, and a try can run to the end of a long word.
const EXACT_TRIES: usize = 2;

/// The least [`TRIES`] + 1 starts of a pattern's literal hits, in order.
#[derive(Debug, Clone, Copy)]
struct FirstHits {
    starts: [usize; TRIES + 1],
    len: usize,
}

impl FirstHits {
    fn new() -> FirstHits {
        FirstHits {
            starts: [usize::MAX; TRIES + 1],
            len: 0,
        }
    }

    /// Adds a hit. Hits come in the order they end, so a later one may start earlier.
    fn add(&mut self, at: usize) {
        if self.len == self.starts.len() && at >= self.starts[self.len - 1] {
            return;
        }
        let i = self.starts[..self.len].partition_point(|&s| s < at);
        if self.starts.get(i) == Some(&at) && i < self.len {
            return;
        }
        self.len = (self.len + 1).min(self.starts.len());
        self.starts.copy_within(i..self.len - 1, i + 1);
        self.starts[i] = at;
    }

    /// The hits to try anchored.
    fn tried(&self) -> &[usize] {
        &self.starts[..self.len.min(TRIES)]
    }

    /// The first hit not tried, if there is one.
    fn next(&self) -> Option<usize> {
        (self.len > TRIES).then(|| self.starts[TRIES])
    }
}

/// One pattern that matched: its owner and the text of its leftmost match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub owner: (usize, usize),
    pub matched: String,
}

impl Matchers {
    /// Compiles `patterns`, each with its owner (index in the list, index in the entry).
    /// The patterns were already compiled once as regexes, so an error here is a size
    /// limit of the combined automaton.
    pub fn build<'p>(
        patterns: impl IntoIterator<Item = ((usize, usize), &'p Pattern)>,
        size_limit: usize,
    ) -> Result<Matchers, String> {
        type Owned<'p> = ((usize, usize), &'p Pattern);
        let mut groups: std::collections::BTreeMap<Field, Vec<Owned<'p>>> = Default::default();
        for (owner, p) in patterns {
            groups.entry(p.field.clone()).or_default().push((owner, p));
        }
        let build = |hir: &Hir, config: meta::Config| {
            meta::Regex::builder()
                .configure(
                    config
                        .nfa_size_limit(Some(size_limit))
                        .which_captures(WhichCaptures::Implicit)
                        .onepass(false),
                )
                .build_from_hir(hir)
                .map_err(|e| e.to_string())
        };
        let nfa = |hir: &Hir| {
            thompson::Compiler::new()
                .configure(
                    thompson::Config::new()
                        .nfa_size_limit(Some(size_limit))
                        .which_captures(WhichCaptures::Implicit),
                )
                .build_from_hir(hir)
                .map_err(|e| e.to_string())
        };
        // Without DFAs: the bounded backtracker and the PikeVM, which need no cache
        // of their own beyond a small one per search.
        let small = meta::Config::new()
            .hybrid(false)
            .dfa(false)
            .auto_prefilter(false);
        let mut by_field = Vec::new();
        for (field, list) in groups {
            let (mut at_hit, mut whole) = (Vec::new(), Vec::new());
            let mut literals: Vec<String> = Vec::new();
            let mut index: std::collections::HashMap<String, usize> = Default::default();
            let mut literal_patterns: Vec<Vec<usize>> = Vec::new();
            for (owner, p) in list {
                let err = |e: String| format!("{field} pattern {:?}: {e}", p.source);
                let hir = regex_syntax::ParserBuilder::new()
                    .build()
                    .parse(&p.source)
                    .map_err(|e| err(e.to_string()))?;
                match prefix_literals(&hir) {
                    Some(lits) => {
                        for l in lits {
                            let at = *index.entry(l.clone()).or_insert_with(|| {
                                literals.push(l);
                                literal_patterns.push(Vec::new());
                                literals.len() - 1
                            });
                            literal_patterns[at].push(at_hit.len());
                        }
                        at_hit.push(AtHit::new(owner, &hir, nfa).map_err(err)?);
                    }
                    None => {
                        let relaxed = hir.properties().look_set().contains_word_unicode();
                        let fast = if relaxed { relax(&hir) } else { hir.clone() };
                        whole.push(Whole {
                            owner,
                            fast: build(&fast, meta::Config::new()).map_err(err)?,
                            exact: relaxed
                                .then(|| build(&hir, small.clone()))
                                .transpose()
                                .map_err(err)?,
                        });
                    }
                }
            }
            let prefilter = if literals.is_empty() {
                None
            } else {
                Some(
                    AhoCorasick::new(&literals)
                        .map_err(|e| format!("the {field} patterns together are too large: {e}"))?,
                )
            };
            let patterns = at_hit.len();
            by_field.push(FieldMatcher {
                field,
                at_hit,
                prefilter,
                literal_patterns,
                whole,
                slots: Pool::new(Box::new(move || vec![0; patterns])),
            });
        }
        Ok(Matchers { by_field })
    }

    /// Every pattern that matches the message, with its leftmost match (the one
    /// `Regex::find` gives), in no particular order.
    pub fn find(&self, hay: &Haystack<'_>) -> Vec<Hit> {
        let mut hits = Vec::new();
        for m in &self.by_field {
            hay.with(&m.field, |text, folded| m.find(text, folded, &mut hits));
        }
        hits
    }
}

impl FieldMatcher {
    fn find(&self, text: &str, folded: &str, hits: &mut Vec<Hit>) {
        if text.is_empty() {
            return;
        }
        if let Some(ac) = &self.prefilter {
            // The first hits of each pattern that has any. Positions in the folded text are
            // positions in the text.
            let mut slots = self.slots.get();
            let mut firsts: Vec<(usize, FirstHits)> = Vec::new();
            for lit in ac.find_overlapping_iter(folded.as_bytes()) {
                for &i in &self.literal_patterns[lit.pattern().as_usize()] {
                    let slot = slots[i] as usize;
                    if let Some((_, first)) = firsts.get_mut(slot).filter(|(p, _)| *p == i) {
                        first.add(lit.start());
                    } else {
                        slots[i] = u32::try_from(firsts.len()).expect("fewer patterns than 2^32");
                        let mut first = FirstHits::new();
                        first.add(lit.start());
                        firsts.push((i, first));
                    }
                }
            }
            for (i, first) in &firsts {
                let p = &self.at_hit[*i];
                if let Some(m) = p.find(text, first) {
                    hits.push(Hit {
                        owner: p.owner,
                        matched: text[m].to_string(),
                    });
                }
            }
        }
        for p in &self.whole {
            if let Some(f) = p.find(text) {
                hits.push(Hit {
                    owner: p.owner,
                    matched: text[f].to_string(),
                });
            }
        }
    }
}

/// The texts of one message that patterns look at, each with its folded copy, made
/// once per message and shared by rules, flags and incidents.
pub struct Haystack<'m> {
    mail: &'m Mail,
    sender: &'m str,
    subject: OnceCell<String>,
    body: OnceCell<String>,
    sender_folded: OnceCell<String>,
}

impl<'m> Haystack<'m> {
    pub fn new(mail: &'m Mail, sender: &'m str) -> Haystack<'m> {
        Haystack {
            mail,
            sender,
            subject: OnceCell::new(),
            body: OnceCell::new(),
            sender_folded: OnceCell::new(),
        }
    }

    /// Calls `f` with the text of `field` and its folded copy.
    pub fn with<R>(&self, field: &Field, f: impl FnOnce(&str, &str) -> R) -> R {
        let (text, cell) = match field {
            Field::Subject => (self.mail.subject.as_str(), &self.subject),
            Field::Body => (self.mail.text.as_str(), &self.body),
            Field::Sender => (self.sender, &self.sender_folded),
            Field::Header(h) => {
                let text = self.header(h);
                return f(&text, &fold(&text));
            }
        };
        f(text, cell.get_or_init(|| fold(text)))
    }

    /// All values of a header, one per line, at most [`MAX_TEXT`] bytes in all: parse cuts
    /// each value, but a message can repeat a header many thousands of times.
    pub fn header(&self, name: &str) -> String {
        let mut out = String::new();
        for (_, v) in self.mail.headers.iter().filter(|(n, _)| n == name) {
            if out.len() >= MAX_TEXT {
                break;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(v);
        }
        truncate(&mut out, MAX_TEXT);
        out
    }
}

/// Lower case, letter by letter, but only where the lower-case letter is as long in
/// UTF-8 as the letter: a position in the folded text is the same position in the
/// text, so a literal found in the folded text tells where to run the pattern on the
/// real one. (The few letters whose lower case is longer or shorter, such as the Kelvin
/// sign, stay as they are; literals are folded the same way, so nothing is missed.)
pub fn fold(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x80 {
            b[i] = c.to_ascii_lowercase();
            i += 1;
        } else if c == 0xD1 && b[i + 1] <= 0x9F {
            // р-я, ѐ-џ: already lower case
            i += 2;
        } else if c == 0xD0 {
            // Cyrillic capitals, the common case of non-ASCII support mail, without
            // decoding: А-П (D0 90-9F) -> D0 B0-BF; Р-Я (D0 A0-AF) -> D1 80-8F;
            // Ѐ-Џ (D0 80-8F) -> D1 90-9F.
            match b[i + 1] {
                x @ 0x90..=0x9F => b[i + 1] = x + 0x20,
                x @ 0xA0..=0xAF => {
                    b[i] = 0xD1;
                    b[i + 1] = x - 0x20;
                }
                x @ 0x80..=0x8F => {
                    b[i] = 0xD1;
                    b[i + 1] = x + 0x10;
                }
                _ => {}
            }
            i += 2;
        } else {
            let width = match c {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let ch = s[i..i + width].chars().next().expect("a whole character");
            let low = fold_char(ch);
            if low != ch {
                low.encode_utf8(&mut b[i..i + width]);
            }
            i += width;
        }
    }
    String::from_utf8(b).expect("folding keeps UTF-8 valid")
}

/// [`fold`] of one character.
pub fn fold_char(c: char) -> char {
    let mut low = c.to_lowercase();
    match (low.next(), low.next()) {
        (Some(l), None) if l.len_utf8() == c.len_utf8() => l,
        _ => c,
    }
}

/// Folded literals that every match of `hir` starts with, when there is a finite set of
/// non-empty ones.
fn prefix_literals(hir: &Hir) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    // Higher limits than the regex crate's own prefilters use: Aho-Corasick takes
    // thousands of literals in its stride, while literals cut short (a few letters of a
    // Cyrillic word, whose `(?i)` classes also hold rare letters such as the narrow
    // "ᲂ") hit everywhere and each hit costs a regex run.
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_total(4096)
        .limit_literal_len(32)
        .extract(&fold_classes(hir));
    let mut out: Vec<String> = Vec::new();
    for l in seq.literals()? {
        // A literal cut to length may end inside a character; what is before stays a
        // prefix of every such match.
        let bytes = l.as_bytes();
        let valid = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix"),
        };
        if valid.is_empty() {
            return None;
        }
        out.push(fold(valid));
    }
    // A literal that starts with another one adds nothing: the shorter one is found
    // wherever the longer one is.
    out.sort_unstable_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    let mut kept: Vec<String> = Vec::new();
    for l in out {
        if !kept.iter().any(|k| l.starts_with(k.as_str())) {
            kept.push(l);
        }
    }
    (!kept.is_empty()).then_some(kept)
}

/// `h` with each leaf node `leaf` gives a replacement for replaced, all else kept.
fn rewrite(h: &Hir, leaf: &dyn Fn(&Hir) -> Option<Hir>) -> Hir {
    if let Some(new) = leaf(h) {
        return new;
    }
    match h.kind() {
        HirKind::Concat(xs) => Hir::concat(xs.iter().map(|x| rewrite(x, leaf)).collect()),
        HirKind::Alternation(xs) => Hir::alternation(xs.iter().map(|x| rewrite(x, leaf)).collect()),
        HirKind::Repetition(r) => Hir::repetition(hir::Repetition {
            sub: Box::new(rewrite(&r.sub, leaf)),
            ..r.clone()
        }),
        HirKind::Capture(c) => Hir::capture(hir::Capture {
            sub: Box::new(rewrite(&c.sub, leaf)),
            ..c.clone()
        }),
        _ => h.clone(),
    }
}

/// `hir` with each small class whose letters all fold to one letter (what `(?i)` makes
/// of a letter) replaced by that letter: the extractor then gives one folded literal
/// where it would give every case variant. Only used to find literals.
fn fold_classes(h: &Hir) -> Hir {
    rewrite(h, &|h| {
        let HirKind::Class(Class::Unicode(cls)) = h.kind() else {
            return None;
        };
        let mut one: Option<char> = None;
        let mut n = 0;
        for r in cls.ranges() {
            for c in r.start()..=r.end() {
                n += 1;
                let f = fold_char(c);
                if n > 4 || one.is_some_and(|o| o != f) {
                    return None;
                }
                one = Some(f);
            }
        }
        one.map(|c| Hir::literal(c.to_string().into_bytes()))
    })
}

/// `hir` with its Unicode word-boundary assertions left out: it matches everything
/// `hir` matches, at the same places.
fn relax(h: &Hir) -> Hir {
    rewrite(h, &|h| match h.kind() {
        HirKind::Look(
            Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode,
        ) => Some(Hir::empty()),
        _ => None,
    })
}

/// A character class as ranges, with its ASCII members also as bits: most of any text
/// is ASCII, and a bit test is cheaper than a walk through the ranges.
#[derive(Debug, Clone)]
pub struct CharClass {
    ranges: Vec<(char, char)>,
    ascii: u128,
}

impl CharClass {
    pub fn new(ranges: Vec<(char, char)>) -> CharClass {
        let mut class = CharClass { ranges, ascii: 0 };
        class.ascii = (0u8..128)
            .filter(|b| class.in_ranges(char::from(*b)))
            .fold(0u128, |bits, b| bits | 1 << b);
        class
    }

    pub fn contains(&self, c: char) -> bool {
        if c.is_ascii() {
            self.ascii >> (c as u32) & 1 == 1
        } else {
            self.in_ranges(c)
        }
    }

    fn in_ranges(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi)
    }
}

/// The character ranges of a pattern that is one character class (such as a language's
/// `detect = '[А-Яа-яЁё]'`): counting its matches is then counting characters, with no
/// regex search per match.
pub fn single_class(pattern: &str) -> Option<Vec<(char, char)>> {
    let hir = regex_syntax::parse(pattern).ok()?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => {
            Some(cls.ranges().iter().map(|r| (r.start(), r.end())).collect())
        }
        HirKind::Literal(hir::Literal(b)) => {
            let s = std::str::from_utf8(b).ok()?;
            let mut cs = s.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => Some(vec![(c, c)]),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_fold_char_of_every_character_and_keeps_lengths() {
        let mut all = String::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            all.push(c);
        }
        let folded = fold(&all);
        assert_eq!(folded.len(), all.len());
        for (c, f) in all.chars().zip(folded.chars()) {
            assert_eq!(f, fold_char(c), "{c:?} (U+{:04X})", c as u32);
        }
        assert_eq!(
            fold("Сайт НЕ Работает, ЁЖ, Error 500"),
            "сайт не работает, ёж, error 500"
        );
    }

    #[test]
    fn case_insensitive_words_give_one_folded_literal() {
        let hir = regex_syntax::parse(r"(?i)\b(product42|модуль42|feature-42)\b").unwrap();
        let lits = prefix_literals(&hir).unwrap();
        for want in ["feature-42", "product42", "модуль42"] {
            assert!(lits.contains(&want.to_string()), "{lits:?}");
        }
        // and the variants with the narrow Cyrillic о and д, which `(?i)` also matches
        assert_eq!(lits.len(), 6, "{lits:?}");
        // a letter whose case variants differ in length stays a class: still found
        let hir = regex_syntax::parse(r"(?i)kill").unwrap();
        let lits = prefix_literals(&hir).unwrap();
        assert!(lits.contains(&"kill".to_string()), "{lits:?}");
        // rare letters in a `(?i)` class (narrow о, т) add variants, not shorter literals
        let hir = regex_syntax::parse(r"(?i)роспотребнадзор").unwrap();
        let lits = prefix_literals(&hir).unwrap();
        assert!(lits.contains(&"роспотребнадзор".to_string()), "{lits:?}");
    }

    fn pattern(field: Field, re: &str) -> Pattern {
        Pattern {
            field,
            source: re.to_string(),
        }
    }

    /// What running each regex on its own gives: the reference the matcher must equal.
    fn by_regex(patterns: &[Pattern], hay: &Haystack<'_>) -> Vec<Hit> {
        let mut out = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            hay.with(&p.field, |text, _| {
                if let Some(m) = regex::Regex::new(&p.source).unwrap().find(text) {
                    out.push(Hit {
                        owner: (i, 0),
                        matched: m.as_str().to_string(),
                    });
                }
            });
        }
        out.sort_by_key(|h| h.owner);
        out
    }

    #[test]
    fn gives_exactly_what_each_regex_gives() {
        let patterns: Vec<Pattern> = [
            (Field::Subject, r"(?i)не\s+работает|\bупал"),
            (Field::Subject, r"(?i)\b(?:error|ошибк\w*)\s*5\d\d\b"),
            (Field::Body, r"(?i)\bsso\b|api[\s-]*(?:key|ключ)"),
            (
                Field::Body,
                r"\b[A-ZА-ЯЁ]{2,}(?:[\s,!?.]+[A-ZА-ЯЁ]{2,}){3,}",
            ),
            (Field::Body, r"(?i)\bKelvin\b"),
            (Field::Body, r"(?i)\bсч[её]т(?:а|у|ом|е|ы|ов)?\b"),
            (Field::Body, r"(?i)\bнет\b"),
            (Field::Body, r"ab|b"),
            (Field::Sender, r"(?i)^(?:[^<]*<)?(?:nagios|zabbix)@"),
            (Field::Header("x-priority".into()), r"^1"),
        ]
        .into_iter()
        .map(|(f, r)| pattern(f, r))
        .collect();
        let m = Matchers::build(
            patterns.iter().enumerate().map(|(i, p)| ((i, 0), p)),
            1 << 22,
        )
        .unwrap();
        let texts = [
            (
                "Сайт НЕ  работает",
                "ОНО УПАЛО СОВСЕМ И ВСЁ. Ошибка 503! SSO api-KEY",
            ),
            (
                "ERROR 502",
                "the \u{212A}elvin scale; Счёт и счета, нетто, НЕТ; xab",
            ),
            ("Выпал снег", "sso-like, vsso, ключ API ключ, ab"),
            ("", ""),
        ];
        for (subject, body) in texts {
            let raw = format!(
                "From: c@example.test\r\nX-Priority: 1 (Highest)\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            );
            let mail = crate::parse::parse(raw.as_bytes()).unwrap();
            for sender in ["Zabbix <ZABBIX@mon.test>", "customer@example.test"] {
                let hay = Haystack::new(&mail, sender);
                let mut got = m.find(&hay);
                got.sort_by_key(|h| h.owner);
                assert_eq!(got, by_regex(&patterns, &hay), "{subject:?} / {body:?}");
            }
        }
    }

    #[test]
    fn first_hits_keeps_the_least_starts_in_order_once_each() {
        let mut f = FirstHits::new();
        // in the order an overlapping scan reports them: by end, not by start
        for at in [40, 7, 7, 30, 3, 90, 12, 5, 60, 1, 50, 2, 8, 70, 4] {
            f.add(at);
        }
        assert_eq!(f.tried(), &[1, 2, 3, 4, 5, 7, 8, 12][..TRIES]);
        assert_eq!(f.next(), Some(30));
        let mut f = FirstHits::new();
        f.add(9);
        f.add(9);
        assert_eq!((f.tried(), f.next()), (&[9][..], None));
    }

    #[test]
    fn a_header_repeated_many_times_is_read_up_to_the_body_cap() {
        let mut raw = String::from("From: c@example.test\r\nSubject: x\r\n");
        for i in 0..20_000 {
            raw.push_str(&format!("X-Tag: tag-{i}\r\n"));
        }
        raw.push_str("\r\nbody\r\n");
        let mail = crate::parse::parse(raw.as_bytes()).unwrap();
        let text = Haystack::new(&mail, "").header("x-tag");
        assert!(text.starts_with("tag-0\ntag-1\n"), "{text:.20}");
        assert!(
            text.len() <= MAX_TEXT && text.len() > MAX_TEXT - 16,
            "{}",
            text.len()
        );
    }

    #[test]
    fn single_class_patterns_are_recognised() {
        assert_eq!(single_class("[A-Za-z]"), Some(vec![('A', 'Z'), ('a', 'z')]));
        assert_eq!(single_class("x"), Some(vec![('x', 'x')]));
        assert_eq!(single_class("[a-z]+"), None);
        assert_eq!(single_class(r"\bthe\b"), None);
    }

    #[test]
    fn a_char_class_holds_what_its_ranges_hold() {
        let ranges = single_class("[A-Za-zЁё0]").unwrap();
        let class = CharClass::new(ranges.clone());
        for c in (0u32..0x500).filter_map(char::from_u32) {
            let expected = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
            assert_eq!(class.contains(c), expected, "{c:?}");
        }
    }
}
