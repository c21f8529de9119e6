//! `oauth` tables of mailtriage.toml: how a login gets an OAuth2 access token instead of
//! using a password (Microsoft 365 and Google Workspace accept nothing else). Checked
//! here at load, offline; the tokens themselves are fetched by [`crate::auth`] when a
//! connection logs in.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::Collector;

/// The SASL mechanism that carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaslMechanism {
    /// Google's and Microsoft's mechanism (`user=...^Aauth=Bearer ...^A^A`).
    Xoauth2,
    /// The standard one, RFC 7628.
    Oauthbearer,
}

impl SaslMechanism {
    /// The name in `AUTHENTICATE` / `AUTH` and in CAPABILITY's `AUTH=`.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Xoauth2 => "XOAUTH2",
            SaslMechanism::Oauthbearer => "OAUTHBEARER",
        }
    }
}

/// The OAuth2 grant the daemon runs itself against a token endpoint (RFC 6749).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// An app-only token for the application itself (section 4.4): what Microsoft
    /// recommends for a daemon, with the app granted the mailboxes.
    ClientCredentials,
    /// A long-lived refresh token, given once by a person, traded for access tokens
    /// (section 6); a new refresh token the endpoint returns replaces the old one.
    RefreshToken,
}

/// A token endpoint whose URL and scopes are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The Microsoft identity platform (Exchange Online).
    Microsoft,
    /// Google (Gmail, Google Workspace).
    Google,
}

/// `[mailboxes.NAME.oauth]`, `[imap.oauth]`, `[smtp.oauth]` or
/// `[mailboxes.NAME.smtp.oauth]`: where the access token comes from. Exactly one of
/// `token_command` and `grant`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct OAuth {
    /// The mechanism; when not given, IMAP takes what the server offers (OAUTHBEARER
    /// before XOAUTH2) and SMTP takes XOAUTH2.
    #[serde(default)]
    pub mechanism: Option<SaslMechanism>,
    /// A command (run by `sh -c`) that prints an access token, as isync's PassCmd: the
    /// daemon runs it for every login.
    #[serde(default)]
    pub token_command: Option<String>,
    #[serde(default)]
    pub grant: Option<Grant>,
    #[serde(default)]
    pub provider: Option<Provider>,
    /// The token endpoint; given, it replaces the provider's.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The Entra ID tenant (its ID or a domain of it); Microsoft only.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// A file holding the client secret (mode 0600, owned by the daemon's user or root).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// A file holding the refresh token; the daemon writes a rotated one back there.
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    /// Space-separated scopes; given, they replace the provider's.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Exchange Online: app-only tokens ask for the resource's `.default`; a user's
/// delegated token for the IMAP and SMTP permissions, and `offline_access` for the
/// refresh token that keeps it going.
const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
const MICROSOFT_USER_SCOPE: &str =
    "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";
/// Gmail's one scope for IMAP, POP and SMTP.
const GOOGLE_SCOPE: &str = "https://mail.google.com/";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

impl OAuth {
    /// The token endpoint: `token_url`, or the provider's (`None` when neither is
    /// known, which the check at load reports).
    pub fn endpoint(&self) -> Option<String> {
        if let Some(url) = &self.token_url {
            return Some(url.clone());
        }
        match self.provider? {
            Provider::Microsoft => Some(format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                self.tenant.as_deref()?
            )),
            Provider::Google => Some(GOOGLE_TOKEN_URL.to_string()),
        }
    }

    /// The scopes asked for: `scope`, or the provider's for the grant; none for an
    /// endpoint of no provider that was given none (the endpoint's default, RFC 6749 3.3).
    pub fn scopes(&self) -> Option<String> {
        if let Some(s) = &self.scope {
            return Some(s.clone());
        }
        match (self.provider?, self.grant?) {
            (Provider::Microsoft, Grant::ClientCredentials) => Some(MICROSOFT_APP_SCOPE.into()),
            (Provider::Microsoft, Grant::RefreshToken) => Some(MICROSOFT_USER_SCOPE.into()),
            (Provider::Google, _) => Some(GOOGLE_SCOPE.into()),
        }
    }

    /// The secret files this source reads, with their keys, for the offline check.
    pub fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let secret = self.client_secret_file.clone();
        let refresh = self.refresh_token_file.clone();
        [
            secret.map(|p| ("client_secret_file", p)),
            refresh.map(|p| ("refresh_token_file", p)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The keys that only a grant uses, as written.
    fn grant_keys(&self) -> Vec<&'static str> {
        [
            ("provider", self.provider.is_some()),
            ("token_url", self.token_url.is_some()),
            ("tenant", self.tenant.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
            ("refresh_token_file", self.refresh_token_file.is_some()),
            ("scope", self.scope.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, given)| given.then_some(k))
        .collect()
    }
}

/// One `oauth` table at `key` (e.g. `mailboxes.billing.oauth`), offline: one token
/// source, and for a grant everything it needs to run.
pub(super) fn check_oauth(c: &mut Collector, key: &str, o: &OAuth) {
    match (&o.token_command, o.grant) {
        (None, None) => c.at_key(
            key,
            "needs token_command or grant (\"client_credentials\" or \"refresh_token\")",
        ),
        (Some(_), Some(_)) => c.at_key(key, "give token_command or grant, not both"),
        (Some(cmd), None) => {
            if cmd.trim().is_empty() {
                c.at_key(format!("{key}.token_command"), "is empty");
            }
            if let Some(k) = o.grant_keys().first() {
                c.at_key(
                    format!("{key}.{k}"),
                    "belongs to a grant; with token_command the command makes the token",
                );
            }
        }
        (None, Some(grant)) => check_grant(c, key, o, grant),
    }
}

fn check_grant(c: &mut Collector, key: &str, o: &OAuth, grant: Grant) {
    if o.client_id.as_deref().is_none_or(|s| s.trim().is_empty()) {
        c.at_key(
            format!("{key}.client_id"),
            "is missing: the grant needs the application's client ID",
        );
    }
    match grant {
        Grant::ClientCredentials if o.client_secret_file.is_none() => c.at_key(
            format!("{key}.client_secret_file"),
            "is missing: the client credentials grant needs the client secret (from a file)",
        ),
        Grant::RefreshToken if o.refresh_token_file.is_none() => c.at_key(
            format!("{key}.refresh_token_file"),
            "is missing: the refresh token grant needs the file holding the refresh token",
        ),
        _ => {}
    }
    if o.provider == Some(Provider::Google) && grant == Grant::ClientCredentials {
        c.at_key(
            format!("{key}.grant"),
            "Google has no client credentials grant for Gmail; use \"refresh_token\" (or an app password)",
        );
    }
    if o.provider == Some(Provider::Microsoft) && o.tenant.is_none() && o.token_url.is_none() {
        c.at_key(
            format!("{key}.tenant"),
            "is missing: the Microsoft token endpoint is per tenant (its ID or one of its domains)",
        );
    }
    match o.endpoint() {
        None if o.provider.is_none() => c.at_key(
            key,
            "needs provider (\"microsoft\" or \"google\") or token_url",
        ),
        None => {}
        Some(url) => {
            if let Some(why) = bad_token_url(&url) {
                c.at_key(format!("{key}.token_url"), why);
            }
        }
    }
}

/// Why `url` cannot be a token endpoint: the client secret and the refresh token go
/// there, so only HTTPS, or plain HTTP to this machine.
pub fn bad_token_url(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return None;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some(format!("{url:?} is not an https:// URL"));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!("{url:?}: plain http only to this machine (localhost); the secrets sent there need https")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(toml_text: &str) -> OAuth {
        toml::from_str(toml_text).unwrap()
    }

    fn errors(o: &OAuth) -> Vec<String> {
        let text = "";
        let path = std::path::Path::new("m.toml");
        let mut c = Collector::new(path, text);
        check_oauth(&mut c, "mailboxes.billing.oauth", o);
        c.errors
            .iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect()
    }

    #[test]
    fn the_presets_give_the_endpoint_and_scopes() {
        let m = oauth("grant = \"client_credentials\"\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"x\"\nclient_secret_file = \"/s\"");
        assert_eq!(
            m.endpoint().unwrap(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            m.scopes().unwrap(),
            "https://outlook.office365.com/.default"
        );
        assert!(errors(&m).is_empty(), "{:?}", errors(&m));
        let g = oauth("grant = \"refresh_token\"\nprovider = \"google\"\nclient_id = \"x\"\nrefresh_token_file = \"/r\"");
        assert_eq!(g.endpoint().unwrap(), "https://oauth2.googleapis.com/token");
        assert_eq!(g.scopes().unwrap(), "https://mail.google.com/");
        let mr = oauth("grant = \"refresh_token\"\nprovider = \"microsoft\"\ntenant = \"t\"\nclient_id = \"x\"\nrefresh_token_file = \"/r\"");
        assert!(mr.scopes().unwrap().contains("IMAP.AccessAsUser.All"));
        assert!(mr.scopes().unwrap().contains("offline_access"));
    }

    #[test]
    fn one_token_source_with_what_it_needs() {
        let e = errors(&oauth("mechanism = \"xoauth2\""));
        assert!(e[0].contains("needs token_command or grant"), "{e:?}");
        let e = errors(&oauth("token_command = \"x\"\ngrant = \"refresh_token\""));
        assert!(e[0].contains("not both"), "{e:?}");
        let e = errors(&oauth("token_command = \"x\"\nclient_id = \"c\""));
        assert!(
            e[0].starts_with("mailboxes.billing.oauth.client_id: belongs to a grant"),
            "{e:?}"
        );
        let e = errors(&oauth(
            "grant = \"client_credentials\"\nprovider = \"microsoft\"\nclient_id = \"c\"",
        ));
        assert!(
            e.iter()
                .any(|e| e.contains("client_secret_file: is missing")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.contains("tenant: is missing")), "{e:?}");
        let e = errors(&oauth(
            "grant = \"refresh_token\"\nclient_id = \"c\"\nrefresh_token_file = \"/r\"",
        ));
        assert!(e.iter().any(|e| e.contains("needs provider")), "{e:?}");
        let e = errors(&oauth("grant = \"client_credentials\"\nprovider = \"google\"\nclient_id = \"c\"\nclient_secret_file = \"/s\""));
        assert!(
            e.iter().any(|e| e.contains("no client credentials grant")),
            "{e:?}"
        );
    }

    #[test]
    fn secrets_go_to_https_or_to_this_machine() {
        assert_eq!(bad_token_url("https://idp.example/token"), None);
        assert_eq!(bad_token_url("http://127.0.0.1:8080/token"), None);
        assert_eq!(bad_token_url("http://localhost/token"), None);
        assert_eq!(bad_token_url("http://[::1]:9/token"), None);
        assert!(bad_token_url("http://idp.example/token").is_some());
        assert!(bad_token_url("ftp://x").is_some());
    }
}
