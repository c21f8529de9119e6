//! A minimal blocking SMTP client: one message in, as an MTA would hand it over.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::connect;

/// Sends `raw` to `host:port` with the given envelope; see [`super::Stack::send`].
pub(super) fn send(host: &str, port: u16, mail_from: &str, rcpt_to: &[&str], raw: &[u8]) {
    assert!(!rcpt_to.is_empty(), "send: no recipients");
    let mut smtp = Smtp::connect(host, port);
    smtp.expect("greeting", &[220]);
    let ehlo = smtp.command("EHLO client.test", &[250]);
    let eight_bit = raw.iter().any(|&b| b >= 0x80) && ehlo.contains("8BITMIME");
    let body_param = if eight_bit { " BODY=8BITMIME" } else { "" };
    smtp.command(&format!("MAIL FROM:<{mail_from}>{body_param}"), &[250]);
    for rcpt in rcpt_to {
        smtp.command(&format!("RCPT TO:<{rcpt}>"), &[250, 251]);
    }
    smtp.command("DATA", &[354]);
    smtp.write(&smtp_data(raw));
    smtp.expect("end of DATA", &[250]);
    smtp.command("QUIT", &[221]);
}

/// The DATA payload: CRLF line ends, dot-stuffed, ending in CRLF `.` CRLF.
fn smtp_data(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    peer: String,
}

impl Smtp {
    fn connect(host: &str, port: u16) -> Smtp {
        let stream = connect(host, port).unwrap_or_else(|e| panic!("SMTP: {e}"));
        let writer = stream.try_clone().expect("clone TcpStream");
        Smtp {
            reader: BufReader::new(stream),
            writer,
            peer: format!("{host}:{port}"),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .unwrap_or_else(|e| panic!("SMTP {}: write failed: {e}", self.peer));
    }

    /// Reads one (possibly multi-line) reply; panics unless its code is in `ok`.
    fn expect(&mut self, what: &str, ok: &[u16]) -> String {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => panic!(
                    "SMTP {}: connection closed waiting for the reply to {what}; so far: {text}",
                    self.peer
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "SMTP {}: reading the reply to {what}: {e}; so far: {text}",
                    self.peer
                ),
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            text.push_str(&line);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| {
                    panic!("SMTP {}: malformed reply to {what}: {line:?}", self.peer)
                });
            if line.as_bytes().get(3) != Some(&b'-') {
                if !ok.contains(&code) {
                    panic!(
                        "SMTP {}: {what} was answered {}",
                        self.peer,
                        text.trim_end()
                    );
                }
                return text;
            }
        }
    }

    fn command(&mut self, cmd: &str, ok: &[u16]) -> String {
        self.write(format!("{cmd}\r\n").as_bytes());
        self.expect(cmd, ok)
    }
}
