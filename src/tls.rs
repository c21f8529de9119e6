//! TLS: one client configuration for the IMAP source and the SMTP sender, so both trust
//! the same roots (the public ones, plus a server's `ca_file`) and speak the same
//! protocol versions.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

use crate::config::Server;

/// A server's `ca_file` could not be used, or no TLS configuration could be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// TLS settings for a server: the public roots, plus `ca_file` when given.
pub fn connector(server: &Server) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &server.ca_file {
        let bad = |e: &dyn std::fmt::Display| TlsError(format!("ca_file {}: {e}", ca.display()));
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
            roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
