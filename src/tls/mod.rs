//! TLS for both legs with rustls on the `aws-lc-rs` provider: the proxy's server side toward
//! clients (its certificate from PEM files) and its client side toward servers (system
//! roots plus an optional CA file, verification on unless the operator says otherwise).
//!
//! - [`settings`]: the `tls:` block as written, which is also the listener's typed
//!   setting (plain data: modes and paths).
//! - [`pem`]: reading certificates, keys and CA files, each at most 1 MiB.
//! - [`bundles`]: `fxp.ca_bundles`, the CA files API callers may name.
//! - [`diagnose`]: why a handshake with a server failed, and the setting that fixes it.
//! - this file: turning it into rustls configs. `app::material` does that for every
//!   listener at start, on every reload and for `fxprelay check` (files readable, PEM
//!   valid, key matching certificate), after the configuration validated.
//!
//! FTPS data connections resume the control connection's TLS session (vsftpd's
//! `require_ssl_reuse`, FileZilla Server): every proxy session gets its own client
//! session cache ([`Upstream::for_session`]), so its data connections resume its own
//! control session and no other.

pub mod bundles;
pub mod diagnose;
mod error;
pub mod pem;
pub mod settings;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use bundles::CaBundles;
pub use error::TlsError;
pub use pem::{CaCerts, CertificateInfo, MAX_PEM_BYTES};
pub use settings::{ClientTlsMode, DataProtection, TlsSettings, UpstreamPlan, UpstreamTlsMode};

/// TLS sessions a proxy session keeps for its data connections to resume. TLS 1.3
/// tickets are single-use; servers hand out new ones on each resumption, so a few are
/// plenty even over hundreds of transfers.
const SESSIONS_PER_PROXY_SESSION: usize = 8;

/// The TLS side of one listener, ready to use.
#[derive(Clone)]
pub struct ListenerTls {
    pub settings: TlsSettings,
    /// Toward clients' control connections, when `tls.client.mode` is not `off`.
    pub client: Option<TlsAcceptor>,
    /// Toward clients' data connections: the same certificate and session cache (data
    /// connections resume the control session), but no TLS 1.3 session tickets. A client
    /// that only writes (an upload) never reads them, and closing with them unread makes
    /// its kernel reset the connection, losing the file's tail in flight.
    pub client_data: Option<TlsAcceptor>,
    /// Toward the server, when the upstream leg may use TLS.
    pub upstream: Option<Upstream>,
    /// `tls.upstream.ca`, read at load: also what `SITE FXP` trusts for TLS servers.
    pub upstream_ca: Option<CaCerts>,
    /// The certificate clients are shown, summarized (the console, the expiry metric).
    pub certificate: Option<CertificateInfo>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads the certificates and roots `settings` names.
    pub fn load(settings: &TlsSettings) -> Result<ListenerTls, TlsError> {
        let (client, client_data, certificate) = match settings.client.mode {
            ClientTlsMode::Off => (None, None, None),
            mode => {
                let (Some(cert), Some(key)) = (&settings.client.cert, &settings.client.key) else {
                    return Err(TlsError::MissingCertificate {
                        mode: mode.as_str(),
                    });
                };
                let control = server_config(cert, key)?;
                let mut data = (*control).clone();
                data.send_tls13_tickets = 0;
                (
                    Some(TlsAcceptor::from(control)),
                    Some(TlsAcceptor::from(Arc::new(data))),
                    CertificateInfo::of(&pem::certificates(cert)?),
                )
            }
        };
        let upstream_ca = settings
            .upstream
            .ca
            .as_deref()
            .map(CaCerts::load)
            .transpose()?;
        let upstream = match settings.upstream_plan() {
            UpstreamPlan::Plain => None,
            _ => Some(Upstream::new(
                settings.upstream.verify,
                upstream_ca.as_ref(),
            )?),
        };
        Ok(ListenerTls {
            settings: settings.clone(),
            client,
            client_data,
            upstream,
            upstream_ca,
            certificate,
        })
    }
}

/// The proxy as a TLS client of FTP servers.
#[derive(Clone)]
pub struct Upstream {
    config: Arc<ClientConfig>,
    pub verify: bool,
}

impl Upstream {
    /// System roots plus `ca`; `verify: false` accepts any certificate. Reads the
    /// system's certificates: blocking.
    pub fn new(verify: bool, ca: Option<&CaCerts>) -> Result<Upstream, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = if verify {
            let pinned = ca.map(|c| c.certs().to_vec()).unwrap_or_default();
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    webpki: Some(webpki),
                    pinned,
                    provider: provider(),
                }))
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    webpki: None,
                    pinned: Vec::new(),
                    provider: provider(),
                }))
                .with_no_client_auth()
        };
        Ok(Upstream {
            config: Arc::new(config),
            verify,
        })
    }

    /// A connector with a session cache of its own, for one proxy session's control
    /// connection and the data connections that must resume it.
    pub fn for_session(&self) -> TlsConnector {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(SESSIONS_PER_PROXY_SESSION);
        TlsConnector::from(Arc::new(config))
    }
}

/// The name to verify the server's certificate against: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// The one crypto provider of the binary (see README "FTPS" for why `aws-lc-rs`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server config from a PEM chain and key, checking that they belong together.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = pem::certificates(cert)?;
    let key_der = pem::private_key(key)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::BadKey {
            path: key.to_path_buf(),
            why: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    Ok(Arc::new(config))
}

fn roots(ca: Option<&CaCerts>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: the operator's own CA may be all
    // that is needed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        for cert in ca.certs() {
            // Checked when the file was read (`CaCerts::load`).
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::BadCertificate {
                    path: ca.path().to_path_buf(),
                    why: e.to_string(),
                })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// The usual checks (chain to a trusted root, name, dates), with one addition: a
/// certificate listed itself in `tls.upstream.ca` is trusted as it is. Self-signed server
/// certificates made with `openssl req -x509` carry `CA:TRUE`, which the usual checks
/// refuse as a server's own certificate; listing that exact certificate is how an operator
/// pins it. Without `webpki` (`tls.upstream.verify: false`) any certificate is taken;
/// the handshake signatures are checked either way, so the session keys are the server's.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(v) => Ok(v),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A self-signed certificate and its key in `dir`, plus an unrelated key.
    fn files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let (cert, key, wrong) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("w.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        std::fs::write(&wrong, other.serialize_pem()).unwrap();
        (cert, key, wrong)
    }

    #[test]
    fn server_configs_load_and_check_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, wrong) = files(dir.path());
        server_config(&cert, &key).unwrap();
        let e = server_config(&cert, &wrong).err().unwrap();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        let e = server_config(&dir.path().join("none.pem"), &key)
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot read"), "{e}");
        let e = server_config(&key, &key).err().unwrap();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    }

    #[test]
    fn a_client_mode_needs_a_certificate() {
        let mut s = TlsSettings::default();
        s.client.mode = ClientTlsMode::Explicit;
        let e = ListenerTls::load(&s).err().unwrap();
        assert!(e.to_string().contains("needs `tls.client.cert`"), "{e}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("ftp.example.net").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn extra_roots_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _, _) = files(dir.path());
        Upstream::new(true, Some(&CaCerts::load(&cert).unwrap())).unwrap();
        assert!(CaCerts::load(&dir.path().join("nope")).is_err());
        Upstream::new(false, None).unwrap();
    }

    #[test]
    fn a_listeners_files_are_read_with_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = files(dir.path());
        let mut s = TlsSettings::default();
        s.upstream.ca = Some("/dev/zero".into());
        let e = ListenerTls::load(&s).err().unwrap();
        assert!(matches!(e, TlsError::TooLarge { .. }), "{e}");
        s.upstream.ca = None;
        s.client.mode = ClientTlsMode::Explicit;
        s.client.cert = Some(cert);
        s.client.key = Some("/dev/zero".into());
        let e = ListenerTls::load(&s).err().unwrap();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        s.client.key = Some(key);
        ListenerTls::load(&s).unwrap();
    }
}
