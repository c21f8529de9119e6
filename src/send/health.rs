//! Send, how the SMTP side fares, for operators: every mail handed over moves it, `status`
//! shows it (state, since when, the server's last answer, what was sent, deferred and
//! refused) and the same events move the metrics. A wrong password or a relay that is
//! down otherwise only shows as mails waiting in the outbox.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::SmtpError;

/// Whether the SMTP side works, as the last mail handed over found it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SmtpState {
    /// No mail handed over since the start.
    #[default]
    Unused,
    /// The last mail reached the server, which answered it (accepted or refused it).
    Ok,
    /// The last mail did not get through: connection, TLS, login or a temporary answer.
    Failing,
}

/// The SMTP side in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpStatus {
    pub state: SmtpState,
    /// Since when it is in this state (RFC 3339); `None` while unused.
    pub since: Option<String>,
    /// The server's last answer (first line), or why no answer came.
    pub last_answer: Option<String>,
    /// Mails accepted, put off for a retry, refused for good, since the start.
    pub sent: u64,
    pub deferred: u64,
    pub refused: u64,
}

/// Shared by the SMTP side, which notes every attempt, and the status board.
#[derive(Debug, Default)]
pub struct SmtpHealth {
    inner: Mutex<SmtpStatus>,
}

impl SmtpHealth {
    /// Notes what became of one mail handed over: `Ok` with the server's answer.
    pub fn note(&self, outcome: &Result<String, SmtpError>) {
        let (state, answer, result) = match outcome {
            Ok(answer) => (SmtpState::Ok, answer.clone(), "sent"),
            // The server answered and refused this mail: the side itself works.
            Err(e) if !e.is_temporary() => (SmtpState::Ok, e.to_string(), "refused"),
            Err(e) => (SmtpState::Failing, e.to_string(), "deferred"),
        };
        metrics::counter!("mailtriage_mails_total", "result" => result).increment(1);
        metrics::gauge!("mailtriage_smtp_failing").set(f64::from(state == SmtpState::Failing));
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.state != state {
            s.state = state;
            s.since = Some(crate::when::stamp(SystemTime::now()));
        }
        s.last_answer = Some(answer);
        match result {
            "sent" => s.sent += 1,
            "refused" => s.refused += 1,
            _ => s.deferred += 1,
        }
    }

    pub fn snapshot(&self) -> SmtpStatus {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_moves_only_when_the_state_changes() {
        let h = SmtpHealth::default();
        assert_eq!(h.snapshot().state, SmtpState::Unused);
        let failure = || Err(SmtpError::Secret("unreadable".into()));
        h.note(&failure());
        let first = h.snapshot();
        assert_eq!(first.state, SmtpState::Failing);
        assert_eq!(
            first.last_answer.as_deref(),
            Some("SMTP password: unreadable")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.note(&failure());
        let second = h.snapshot();
        assert_eq!(second.since, first.since, "failing since the first failure");
        assert_eq!(second.deferred, 2);
        h.note(&Ok("250 2.0.0 Ok: queued as 4XyZ".into()));
        let ok = h.snapshot();
        assert_eq!(ok.state, SmtpState::Ok);
        assert_ne!(ok.since, first.since);
        assert_eq!((ok.sent, ok.deferred, ok.refused), (1, 2, 0));
        assert_eq!(
            ok.last_answer.as_deref(),
            Some("250 2.0.0 Ok: queued as 4XyZ")
        );
    }

    #[test]
    fn a_mail_refused_for_good_leaves_the_side_working() {
        let h = SmtpHealth::default();
        h.note(&Err(SmtpError::Settings("bad".into())));
        let s = h.snapshot();
        assert_eq!((s.state, s.refused), (SmtpState::Ok, 1));
    }
}
