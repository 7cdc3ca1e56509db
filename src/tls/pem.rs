//! Reading the PEM files the proxy is given: listeners' certificates and keys, the
//! upstream leg's `ca`, the CA bundles of `fxp.ca_bundles`, `fxprelay fxp --ca`. Every
//! read stops at [`MAX_PEM_BYTES`]: a wrong path (`/dev/zero`, a disk image, a log file)
//! is an error naming the cap, never the process's memory. The reads block: callers on
//! the async runtime run them with `spawn_blocking`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::TlsError;

/// Largest PEM file read: Mozilla's whole CA bundle is about 220 KB, a certificate chain
/// a few KB.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The bytes of `path`, at most [`MAX_PEM_BYTES`] of them.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    // One byte past the cap tells "exactly the cap" from "more".
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_PEM_BYTES,
        });
    }
    Ok(bytes)
}

/// Every certificate in the PEM file `path` (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            why: pem_error(e),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// What an operator wants to know of a certificate the proxy shows: whose it is and
/// when it stops working (the console, `GET /api/v1/listeners`, the expiry metric).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The subject, as `CN=proxy.example.net` (RFC 4514).
    pub subject: String,
    /// The DNS names and addresses it is valid for.
    pub names: Vec<String>,
    /// The end of its validity, Unix time in seconds.
    pub not_after: i64,
}

impl CertificateInfo {
    /// Of the first certificate of a chain (the proxy's own); `None` when it does not
    /// parse (rustls, which loaded it, is the judge of validity, not this summary).
    pub fn of(chain: &[CertificateDer<'_>]) -> Option<CertificateInfo> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*ip)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(CertificateInfo {
            subject: cert.subject().to_string(),
            names,
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// The private key in the PEM file `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadKey {
        path: path.to_path_buf(),
        why: pem_error(e),
    })
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section found".into(),
        e => e.to_string(),
    }
}

/// Extra trust roots from one PEM file, read and checked once (each certificate must be
/// usable as a trust anchor), then shared by every session that trusts them.
#[derive(Clone)]
pub struct CaCerts {
    path: PathBuf,
    certs: Arc<[CertificateDer<'static>]>,
}

impl CaCerts {
    /// Reads `path`: blocking, see the module's comment.
    pub fn load(path: &Path) -> Result<CaCerts, TlsError> {
        let certs = certificates(path)?;
        let mut scratch = RootCertStore::empty();
        for cert in &certs {
            scratch
                .add(cert.clone())
                .map_err(|e| TlsError::BadCertificate {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })?;
        }
        Ok(CaCerts {
            path: path.to_path_buf(),
            certs: certs.into(),
        })
    }

    /// The file they were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

impl std::fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCerts")
            .field("path", &self.path)
            .field("certs", &self.certs.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_or_huge_file_is_refused_at_the_cap() {
        let e = read(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("1 MiB"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let e = certificates(&big).unwrap_err();
        assert!(matches!(e, TlsError::TooLarge { .. }), "{e}");
        let at_cap = dir.path().join("at-cap.pem");
        std::fs::write(&at_cap, vec![b'A'; MAX_PEM_BYTES as usize]).unwrap();
        assert_eq!(read(&at_cap).unwrap().len() as u64, MAX_PEM_BYTES);
    }

    #[test]
    fn ca_files_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, c.cert.pem()).unwrap();
        let ca = CaCerts::load(&good).unwrap();
        assert_eq!((ca.certs().len(), ca.path()), (1, good.as_path()));
        let key = dir.path().join("key.pem");
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let e = CaCerts::load(&key).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = CaCerts::load(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read"), "{e}");
    }
}
