//! TLS: the one rustls crypto provider of the process, server configs from PEM files, and
//! the root certificates HTTP clients trust.
//!
//! reqwest and rustls are built without a default provider (ring instead of aws-lc-rs, which
//! builds C), so [`install_crypto_provider`] must run before the first reqwest client or
//! rustls config is built; every function here calls it, and so does each daemon at start.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// rustls refused the certificate and key (for example a key that does not match).
    #[error("the certificate {} and key {} do not form a usable TLS identity", cert.display(), key.display())]
    Config {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// Installs rustls's ring provider as the process default, once; later calls do nothing.
///
/// Safe to call from anywhere and any thread. Without it, building a reqwest client panics
/// ("No rustls crypto provider is configured").
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first (by a library or test); that one is
        // used, which is fine: any provider serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A TLS server config serving the PEM certificate chain `cert` with the PEM private key
/// `key` (PKCS#8, PKCS#1 or SEC1), offering HTTP/1.1 only (the listener speaks HTTP/1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let pem_err = |path: &Path, what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|source| TlsError::Config {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in a PEM file (for example a private CA or a self-signed certificate
/// that clients should trust).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The root certificates an HTTP client should trust: the system's (when it has any; a slim
/// container image may have none, and then only `extra` is trusted) plus those in `extra`.
///
/// A system store that is missing or partly unreadable is not an error: plain `http://`
/// endpoints work without it, and an `https://` endpoint then fails with an unknown-issuer
/// error that names the problem.
pub fn client_roots(extra: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    install_crypto_provider();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system CA certificate could not be loaded");
    }
    let mut roots = native.certs;
    if let Some(path) = extra {
        roots.extend(load_certificates(path)?);
    }
    Ok(roots)
}
