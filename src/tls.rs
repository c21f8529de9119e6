//! TLS: one client configuration for the IMAP source and the SMTP sender, so both trust
//! the same roots (the public ones, plus a server's `ca_file`) and speak the same
//! protocol versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

use crate::config::Server;

/// A server's `ca_file` could not be used, or no TLS configuration could be built.
/// Permanent: the settings must change.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: ca_file {}: {source}", .path.display())]
    CaFile { path: PathBuf, source: pem::Error },
    #[error("TLS: ca_file {}: {source}", .path.display())]
    CaCertificate {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    /// Never: a bad `ca_file` or setting stays bad until an operator changes it.
    pub fn is_temporary(&self) -> bool {
        false
    }
}

/// The connector for `server`, or `None` when it is configured without TLS.
pub fn for_server(server: &Server) -> Result<Option<TlsConnector>, TlsError> {
    match server.tls {
        crate::config::TlsMode::Plaintext => Ok(None),
        _ => connector(server).map(Some),
    }
}

/// The IMAP connectors: `[imap]`'s, and those of the mailboxes with a server of their
/// own (`[mailboxes.NAME.imap]`), made once at start so a bad `ca_file` stops it.
#[derive(Clone)]
pub struct ImapTls {
    global: Option<TlsConnector>,
    own: std::collections::BTreeMap<String, Option<TlsConnector>>,
}

impl ImapTls {
    pub fn new(settings: &crate::config::Settings) -> Result<ImapTls, TlsError> {
        let own = settings
            .mailboxes
            .iter()
            .filter(|(_, l)| l.imap.is_some())
            .map(|(name, _)| Ok((name.clone(), for_server(&settings.imap_of(name))?)))
            .collect::<Result<_, TlsError>>()?;
        Ok(ImapTls {
            global: for_server(&settings.imap)?,
            own,
        })
    }

    /// The connector for `mailbox`'s IMAP server.
    pub fn of(&self, mailbox: &str) -> Option<TlsConnector> {
        self.own.get(mailbox).unwrap_or(&self.global).clone()
    }
}

/// TLS settings for a server: the public roots, plus `ca_file` when given.
pub fn connector(server: &Server) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &server.ca_file {
        add_ca_file(&mut roots, ca)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Config)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn add_ca_file(roots: &mut rustls::RootCertStore, ca: &Path) -> Result<(), TlsError> {
    let path = || ca.to_path_buf();
    let pem_error = |source| TlsError::CaFile {
        path: path(),
        source,
    };
    for c in CertificateDer::pem_file_iter(ca).map_err(pem_error)? {
        roots
            .add(c.map_err(pem_error)?)
            .map_err(|source| TlsError::CaCertificate {
                path: path(),
                source,
            })?;
    }
    Ok(())
}
