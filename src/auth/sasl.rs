//! The SASL messages that carry a token: XOAUTH2 (Google's, also Microsoft's) and
//! OAUTHBEARER (RFC 7628), and what a server's error challenge says.

use crate::config::SaslMechanism;

/// The client's first (and only) message for `mechanism`. `host` and `port` are the
/// server's, which OAUTHBEARER names (RFC 7628, 3.1).
pub fn initial_response(
    mechanism: SaslMechanism,
    user: &str,
    token: &str,
    host: &str,
    port: u16,
) -> String {
    match mechanism {
        SaslMechanism::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        SaslMechanism::Oauthbearer => format!(
            "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01",
            saslname(user)
        ),
    }
}

/// The answer to a server's error challenge: XOAUTH2 takes an empty one, OAUTHBEARER
/// a lone ^A (RFC 7628, 3.2.3); the server then ends the exchange with its failure.
pub fn abort_response(mechanism: SaslMechanism) -> &'static str {
    match mechanism {
        SaslMechanism::Xoauth2 => "",
        SaslMechanism::Oauthbearer => "\x01",
    }
}

/// The user in a GS2 header: `,` and `=` written as `=2C` and `=3D` (RFC 5801).
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// What an error challenge (decoded from base64) says, in a few words: its JSON status
/// and scope, or the text itself, bounded.
pub fn challenge_words(challenge: &[u8]) -> String {
    let text = String::from_utf8_lossy(challenge);
    let text: String = text.chars().take(300).collect();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text.trim().to_string();
    };
    ["status", "scope", "schemes"]
        .iter()
        .filter_map(|k| Some(format!("{k} {}", v.get(*k)?.as_str()?)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_are_as_the_specifications_write_them() {
        assert_eq!(
            initial_response(SaslMechanism::Xoauth2, "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", "h", 1),
            "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
        );
        // RFC 7628, 4.1
        assert_eq!(
            initial_response(SaslMechanism::Oauthbearer, "user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "server.example.com", 143),
            "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        assert!(
            initial_response(SaslMechanism::Oauthbearer, "a,b=c", "t", "h", 1)
                .starts_with("n,a=a=2Cb=3Dc,")
        );
    }

    #[test]
    fn an_error_challenge_is_said_in_words() {
        assert_eq!(
            challenge_words(br#"{"status":"invalid_token","scope":"mail","schemes":"bearer"}"#),
            "status invalid_token, scope mail, schemes bearer"
        );
        assert_eq!(challenge_words(b"no json"), "no json");
    }
}
