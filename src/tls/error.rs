//! Why a TLS setting cannot be used: what `fxprelay check` and a reload report.

use std::io;
use std::path::PathBuf;

/// Why a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than {} MiB, the most fxprelay reads of a PEM file (a certificate, key or CA bundle): is it the right file?", .max / (1024 * 1024))]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate file: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("{path} holds no usable PEM private key: {why}")]
    BadKey { path: PathBuf, why: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("`tls.client.mode: {mode}` needs `tls.client.cert` and `tls.client.key`")]
    MissingCertificate { mode: &'static str },
    #[error("no trust roots: the system has none and `tls.upstream.ca` is not set")]
    NoRoots,
    #[error("{0} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}
