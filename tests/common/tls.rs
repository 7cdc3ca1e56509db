//! Test certificates for the FTPS tests, generated at test time with rcgen (ECDSA P-256,
//! fast to make): a process-wide test CA that every TLS client in the tests trusts
//! ([`test_ca`]), leaf certificates it signs for one server's loopback address, and
//! certificates from a CA nobody trusts ([`untrusted_identity`]) for the refusal tests.
//!
//! Nothing here touches the disk by itself: [`Ca::write_cert`] and [`Identity::write`]
//! put PEM files into a directory the test owns (its temp dir, or the server's).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    name: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh self-signed CA whose subject is `CN=<name>`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            name: name.to_string(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `ips` (each an `IP:` subjectAltName) and `dns` names,
    /// signed by this CA.
    pub fn issue(&self, ips: &[IpAddr], dns: &[&str]) -> Identity {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = ips
            .first()
            .map(|ip| ip.to_string())
            .or_else(|| dns.first().map(|d| d.to_string()))
            .expect("a certificate needs at least one name");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().expect("DNS name")));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Server and client: with SSCN a server is the TLS client of the data connection.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        }
    }

    /// Writes the CA certificate to `dir/<name>.pem` (spaces as `-`) and returns the path:
    /// what a client takes as `--cacert` / `ssl:ca-file` / `cafile=`.
    pub fn write_cert(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.pem", self.name.replace(' ', "-")));
        fs::write(&path, &self.cert_pem).expect("write CA certificate");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// The CA certificate as a rustls trust store.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .expect("parse CA PEM");
        roots.add(der).expect("add CA root");
        roots
    }
}

/// The CA the tests' TLS clients trust (one per test process).
pub fn test_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::new("fxprelay test CA"))
}

/// A leaf for `ip` from [`test_ca`].
pub fn identity_for(ip: IpAddr) -> Identity {
    test_ca().issue(&[ip], &[])
}

/// A leaf for `ip` from a fresh CA that no client trusts: for "unknown CA refused" tests.
pub fn untrusted_identity(ip: IpAddr) -> Identity {
    Ca::new("unknown test CA").issue(&[ip], &[])
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    /// The issuing CA's certificate (not part of the chain the server sends).
    pub ca_pem: String,
}

/// Where [`Identity::write`] put the PEM files.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one file (pure-ftpd's `--certfile`).
    pub combined: PathBuf,
}

impl Identity {
    /// Writes `<stem>.crt`, `<stem>.key` and `<stem>.pem` (both) into `dir`, root-only
    /// readable (servers refuse world-readable keys, and the proxy runs as root).
    pub fn write(&self, dir: &Path, stem: &str) -> IdentityFiles {
        let files = IdentityFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            combined: dir.join(format!("{stem}.pem")),
        };
        let both = format!("{}{}", self.cert_pem, self.key_pem);
        for (p, data) in [
            (&files.cert, &self.cert_pem),
            (&files.key, &self.key_pem),
            (&files.combined, &both),
        ] {
            fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
        }
        files
    }
}

/// A rustls client configuration trusting only `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The first reply line of an implicit-TLS server: TLS from the first byte, trusting
/// `roots`, the server named by its IP address.
pub fn implicit_greeting(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut line = String::new();
    BufReader::new(rustls::StreamOwned::new(conn, tcp)).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}
