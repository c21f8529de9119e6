//! A minimal blocking IMAP client (LOGIN, CREATE, APPEND, EXAMINE, UID FETCH, LOGOUT) and
//! the little of the response grammar it needs to read a folder back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use super::{connect, FetchedMail};

/// Every message of `folder` as `user`, read-only; `Ok(None)` if the folder does not exist.
/// See [`super::Stack::fetch_all`].
pub(super) fn fetch_folder(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    folder: &str,
) -> Result<Option<Vec<FetchedMail>>, String> {
    let mut imap = Imap::connect(host, port)?;
    let result = imap.fetch_all(user, password, folder);
    imap.logout();
    result
}

/// Stores each message of `mails` in `folder` of `user` (created if missing) on one
/// connection, as a mail client files what it sent or a migration copies old mail: with
/// its INTERNALDATE when one is given (IMAP `date-time`, "23-Nov-2026 10:00:00 +0000").
/// See [`super::Stack::append`] and [`super::Stack::append_dated`].
pub(super) fn append(
    host: &str,
    port: u16,
    (user, password): (&str, &str),
    folder: &str,
    mails: &[(&[u8], Option<&str>)],
) -> Result<(), String> {
    let mut imap = Imap::connect(host, port)?;
    let result = imap.login(user, password).and_then(|()| {
        let _ = imap.command(&format!("CREATE {}", imap_quote(folder)))?;
        mails
            .iter()
            .try_for_each(|(raw, date)| imap.append(folder, raw, *date))
    });
    imap.logout();
    result
}

fn imap_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// Tagged completion of a command.
struct Done {
    ok: bool,
    text: String,
}

impl Imap {
    fn connect(host: &str, port: u16) -> Result<Imap, String> {
        let stream = connect(host, port).map_err(|e| format!("IMAP: {e}"))?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
        };
        let greeting = imap.read_response()?;
        if !greeting.starts_with(b"* OK") {
            return Err(format!(
                "IMAP greeting: {}",
                String::from_utf8_lossy(&greeting).trim_end()
            ));
        }
        Ok(imap)
    }

    fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        let (_, done) = self.command(&format!(
            "LOGIN {} {}",
            imap_quote(user),
            imap_quote(password)
        ))?;
        if !done.ok {
            return Err(format!("login as {user} failed: {}", done.text));
        }
        Ok(())
    }

    /// APPEND with a non-synchronising literal (LITERAL+, which Dovecot offers), so no
    /// continuation request is awaited; `date` becomes the message's INTERNALDATE.
    fn append(&mut self, folder: &str, raw: &[u8], date: Option<&str>) -> Result<(), String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let date = date
            .map(|d| format!("{} ", imap_quote(d)))
            .unwrap_or_default();
        let mut cmd = format!(
            "{tag} APPEND {} {date}{{{}+}}\r\n",
            imap_quote(folder),
            raw.len()
        )
        .into_bytes();
        cmd.extend_from_slice(raw);
        cmd.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&cmd)
            .and_then(|()| self.writer.flush())
            .map_err(|e| format!("IMAP write: {e}"))?;
        loop {
            let response = self.read_response()?;
            if let Some(rest) = response.strip_prefix(format!("{tag} ").as_bytes()) {
                let text = String::from_utf8_lossy(rest).trim_end().to_string();
                return match text.starts_with("OK") {
                    true => Ok(()),
                    false => Err(format!("APPEND to {folder} failed: {text}")),
                };
            }
        }
    }

    fn fetch_all(
        &mut self,
        user: &str,
        password: &str,
        folder: &str,
    ) -> Result<Option<Vec<FetchedMail>>, String> {
        self.login(user, password)?;
        if !folder.is_ascii() {
            return Err("folder names must be ASCII (modified UTF-7 for others)".into());
        }
        let (untagged, done) = self.command(&format!("EXAMINE {}", imap_quote(folder)))?;
        if !done.ok {
            if done.text.contains("NONEXISTENT") || done.text.contains("doesn't exist") {
                return Ok(None);
            }
            return Err(format!("EXAMINE {folder} failed: {}", done.text));
        }
        let exists = untagged.iter().find_map(|r| {
            let line = std::str::from_utf8(r).ok()?;
            let n = line
                .strip_prefix("* ")?
                .trim_end()
                .strip_suffix(" EXISTS")?;
            n.parse::<u32>().ok()
        });
        if exists == Some(0) {
            return Ok(Some(Vec::new()));
        }
        let (untagged, done) = self.command("UID FETCH 1:* (UID FLAGS BODY.PEEK[])")?;
        if !done.ok {
            return Err(format!("UID FETCH in {folder} failed: {}", done.text));
        }
        let mut by_seq: BTreeMap<u32, Partial> = BTreeMap::new();
        for response in &untagged {
            if let Some((seq, items)) = parse_fetch(response)? {
                let entry = by_seq.entry(seq).or_default();
                for (key, value) in items {
                    match (key.to_ascii_uppercase().as_str(), value) {
                        ("UID", Token::Atom(n)) => {
                            entry.uid = String::from_utf8_lossy(&n).parse().ok();
                        }
                        ("FLAGS", Token::List(flags)) => {
                            entry.flags = flags
                                .into_iter()
                                .filter_map(|f| match f {
                                    Token::Atom(a) => {
                                        Some(String::from_utf8_lossy(&a).into_owned())
                                    }
                                    _ => None,
                                })
                                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                                .collect();
                        }
                        ("BODY[]" | "RFC822", Token::Str(body)) => entry.raw = Some(body),
                        _ => {}
                    }
                }
            }
        }
        let mut mails: Vec<FetchedMail> = by_seq
            .into_values()
            .filter_map(|p| {
                Some(FetchedMail {
                    uid: p.uid?,
                    flags: p.flags,
                    raw: p.raw?,
                })
            })
            .collect();
        mails.sort_by_key(|m| m.uid);
        Ok(Some(mails))
    }

    fn logout(&mut self) {
        let _ = self.command("LOGOUT");
    }

    /// Sends `cmd` with a new tag; returns the untagged responses and the tagged completion.
    fn command(&mut self, cmd: &str) -> Result<(Vec<Vec<u8>>, Done), String> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|e| format!("IMAP write: {e}"))?;
        let verb = cmd.split(' ').next().unwrap_or(cmd);
        let mut untagged = Vec::new();
        loop {
            let response = self
                .read_response()
                .map_err(|e| format!("{e} (during {verb})"))?;
            if let Some(rest) = response.strip_prefix(format!("{tag} ").as_bytes()) {
                let text = String::from_utf8_lossy(rest).trim_end().to_string();
                return Ok((
                    untagged,
                    Done {
                        ok: text.starts_with("OK"),
                        text,
                    },
                ));
            }
            if response.starts_with(b"+") {
                return Err(format!(
                    "IMAP: unexpected continuation request during {verb}"
                ));
            }
            untagged.push(response);
        }
    }

    /// One whole response: a line, plus any literals `{N}` it announces and the lines after them.
    fn read_response(&mut self) -> Result<Vec<u8>, String> {
        let mut response = Vec::new();
        loop {
            let start = response.len();
            match self.reader.read_until(b'\n', &mut response) {
                Ok(0) => return Err("IMAP: connection closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("IMAP read: {e}")),
            }
            let line = &response[start..];
            match literal_len(line) {
                Some(n) => {
                    let from = response.len();
                    response.resize(from + n, 0);
                    self.reader
                        .read_exact(&mut response[from..])
                        .map_err(|e| format!("IMAP read of a {n}-byte literal: {e}"))?;
                }
                None => return Ok(response),
            }
        }
    }
}

/// N if `line` ends with a literal announcement `{N}` or `{N+}` and CRLF.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

/// What the FETCH responses for one sequence number said so far.
#[derive(Default)]
struct Partial {
    uid: Option<u32>,
    flags: Vec<String>,
    raw: Option<Vec<u8>>,
}

/// The `KEY VALUE` pairs of one FETCH response.
type FetchItems = Vec<(String, Token)>;

#[derive(Debug)]
enum Token {
    Atom(Vec<u8>),
    /// Quoted string or literal.
    Str(Vec<u8>),
    List(Vec<Token>),
    Nil,
}

/// `* SEQ FETCH (KEY VALUE ...)` into SEQ and the pairs; `Ok(None)` for other responses.
fn parse_fetch(response: &[u8]) -> Result<Option<(u32, FetchItems)>, String> {
    let Some(rest) = response.strip_prefix(b"* ") else {
        return Ok(None);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let Some(after) = rest[digits..].strip_prefix(b" FETCH ") else {
        return Ok(None);
    };
    if digits == 0 {
        return Ok(None);
    }
    let seq: u32 = std::str::from_utf8(&rest[..digits])
        .unwrap()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut parser = Parser { b: after, i: 0 };
    let bad = |e: String| {
        let shown = &response[..response.len().min(200)];
        format!(
            "cannot parse FETCH response ({e}): {}",
            String::from_utf8_lossy(shown)
        )
    };
    let Token::List(items) = parser.value().map_err(bad)? else {
        return Err(bad("not a list".into()));
    };
    let mut pairs = Vec::new();
    let mut it = items.into_iter();
    while let Some(key) = it.next() {
        let Token::Atom(key) = key else {
            return Err(bad("item name is not an atom".into()));
        };
        let value = it.next().ok_or_else(|| bad("item without value".into()))?;
        pairs.push((String::from_utf8_lossy(&key).into_owned(), value));
    }
    Ok(Some((seq, pairs)))
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn value(&mut self) -> Result<Token, String> {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        match self.peek() {
            None => Err("unexpected end".into()),
            Some(b'(') => {
                self.i += 1;
                let mut list = Vec::new();
                loop {
                    while self.peek() == Some(b' ') {
                        self.i += 1;
                    }
                    match self.peek() {
                        Some(b')') => {
                            self.i += 1;
                            return Ok(Token::List(list));
                        }
                        None => return Err("unterminated list".into()),
                        _ => list.push(self.value()?),
                    }
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err("unterminated quoted string".into()),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Token::Str(s));
                        }
                        Some(b'\\') => {
                            s.push(*self.b.get(self.i + 1).ok_or("bad escape")?);
                            self.i += 2;
                        }
                        Some(c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(b'{') => {
                let close = self.b[self.i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("bad literal")?
                    + self.i;
                let spec =
                    std::str::from_utf8(&self.b[self.i + 1..close]).map_err(|e| e.to_string())?;
                let n: usize = spec
                    .trim_end_matches('+')
                    .parse()
                    .map_err(|_| format!("bad literal {{{spec}}}"))?;
                let start = close
                    + 1
                    + if self.b[close + 1..].starts_with(b"\r\n") {
                        2
                    } else {
                        1
                    };
                let end = start + n;
                if end > self.b.len() {
                    return Err("literal runs past the response".into());
                }
                self.i = end;
                Ok(Token::Str(self.b[start..end].to_vec()))
            }
            Some(_) => {
                let start = self.i;
                let mut depth = 0usize; // inside [...] anything goes: BODY[HEADER.FIELDS (A B)]
                while let Some(c) = self.peek() {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let atom = self.b[start..self.i].to_vec();
                if atom.is_empty() {
                    return Err(format!("unexpected byte {:?}", self.peek().map(char::from)));
                }
                Ok(if atom.eq_ignore_ascii_case(b"NIL") {
                    Token::Nil
                } else {
                    Token::Atom(atom)
                })
            }
        }
    }
}
