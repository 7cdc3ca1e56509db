//! Why a TLS setting cannot be used: what `fxprelay check` and a reload report.

use std::io;
use std::path::PathBuf;

use fxprelay_core::tls::MissingCertificate;

/// Why a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {}", explain_read(.path, .source))]
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
    #[error(transparent)]
    MissingCertificate(#[from] MissingCertificate),
    #[error("no trust roots: the system has none and `tls.upstream.ca` is not set")]
    NoRoots,
    #[error("{0} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            TlsError::Read { path, .. }
            | TlsError::TooLarge { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::BadKey { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// What the OS said, in words that say what to do: a key a service user may not read is
/// the usual trap (a key made by root is `0600 root`, and systemd's `DynamicUser` runs
/// the proxy as a user of its own).
fn explain_read(path: &std::path::Path, e: &io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            let file = std::fs::metadata(path).map_or_else(
                |_| "a file in a directory it may not enter".to_string(),
                |m| format!("owned by uid {} with mode {:o}", m.uid(), m.mode() & 0o7777),
            );
            format!(
                "permission denied: the proxy runs as uid {uid}, and the file is {file}; let that user read it, or under systemd pass it with LoadCredential= (README \"Keys and systemd\")"
            )
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_error_says_what_the_os_said_in_words() {
        let missing = TlsError::Read {
            path: "/nonexistent/k.pem".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        assert_eq!(
            missing.to_string(),
            "cannot read /nonexistent/k.pem: no such file"
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let denied = TlsError::Read {
            path: key.clone(),
            source: io::ErrorKind::PermissionDenied.into(),
        };
        let text = denied.to_string();
        assert!(
            text.contains("permission denied: the proxy runs as uid")
                && text.contains("mode 600")
                && text.contains("LoadCredential="),
            "{text}"
        );
        assert_eq!(denied.path(), Some(key.as_path()));
    }
}
