//! TLS for both legs with rustls on the `aws-lc-rs` provider: the proxy's server side toward
//! clients (its certificate from PEM files) and its client side toward servers (system
//! roots plus an optional CA file, verification on unless the operator says otherwise).
//!
//! - [`settings`]: the `tls:` block as written, which is also the listener's typed
//!   setting (plain data: modes and paths).
//! - [`pem`]: reading certificates, keys and CA files, each at most 1 MiB.
//! - [`bundles`]: `fxp.ca_bundles`, the CA files API callers may name.
//! - [`diagnose`]: why a handshake with a server failed, and the setting that fixes it.
//! - `names`: a certificate per name, chosen by the client's TLS SNI as the listener's
//!   routes choose its server.
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
mod names;
pub mod pem;

pub use fxprelay_core::tls::{MissingCertificate, advice, settings};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::route::HostPattern;
pub use bundles::CaBundles;
pub use error::TlsError;
pub use pem::{CaCerts, CertificateInfo, MAX_PEM_BYTES};
pub use settings::{
    ClientTlsMode, DataProtection, TlsSettings, UpstreamPlan, UpstreamTls, UpstreamTlsMode,
};

/// TLS sessions a proxy session keeps for its data connections to resume. TLS 1.3
/// tickets are single-use; servers hand out new ones on each resumption, so a few are
/// plenty even over hundreds of transfers.
const SESSIONS_PER_PROXY_SESSION: usize = 8;

/// The TLS side of one listener, ready to use.
#[derive(Clone)]
pub struct ListenerTls {
    pub settings: TlsSettings,
    /// Toward clients' control connections, when `tls.client.mode` is not `off`: the
    /// listener's certificate, or a route's for a client that asks for its name (SNI).
    pub client: Option<TlsAcceptor>,
    /// Toward clients' data connections: the same certificates and session cache (data
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
    /// The listener's routes, in order (empty without routes).
    pub routes: Vec<RouteTls>,
    /// The certificates by name, when a route has one.
    names: Option<Arc<names::ByName>>,
}

/// What a route adds to its listener's TLS ([`ListenerTls::load_routed`]).
#[derive(Debug, Clone, Default)]
pub struct RouteTlsSpec {
    /// A name route's pattern: clients asking for a name it matches get `cert`.
    pub name: Option<HostPattern>,
    /// The certificate and key of the route's name.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The route's own TLS settings (its `tls.upstream`), when it has them.
    pub settings: Option<TlsSettings>,
}

/// One route's TLS material.
#[derive(Clone, Default)]
pub struct RouteTls {
    /// Toward the route's servers: its own client side when it has its own
    /// `tls.upstream`, else the listener's.
    pub upstream: Option<Upstream>,
    pub upstream_ca: Option<CaCerts>,
    /// Toward the control connections of clients the route was chosen for before their
    /// handshake (RFC 7151 `HOST`): its certificate when they name nothing themselves.
    client: Option<TlsAcceptor>,
    /// Toward the data connections of clients whose control connection got this route's
    /// certificate.
    client_data: Option<TlsAcceptor>,
    /// The route's own certificate, summarized (its expiry metric), when it has one.
    pub certificate: Option<CertificateInfo>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("settings", &self.settings)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RouteTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTls")
            .field("upstream", &self.upstream.is_some())
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads the certificates and roots `settings` names.
    pub fn load(settings: &TlsSettings) -> Result<ListenerTls, TlsError> {
        Self::load_routed(settings, &[]).map_err(|(_, e)| e)
    }

    /// Loads the certificates and roots `settings` and the listener's `routes` name; an
    /// error says which route's (`Some(index)`) or the listener's own (`None`).
    pub fn load_routed(
        settings: &TlsSettings,
        routes: &[RouteTlsSpec],
    ) -> Result<ListenerTls, (Option<usize>, TlsError)> {
        let own = |e| (None, e);
        let mut names = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let Some(pattern) = &r.name else { continue };
            let cert = match &r.cert {
                Some((cert, key)) => Some(certified_key(cert, key).map_err(|e| (Some(i), e))?),
                None => None,
            };
            names.push((i, pattern.clone(), cert));
        }
        let with_certs = names.iter().any(|(_, _, c)| c.is_some());
        let (client, client_data, by_name, certificate) = match settings.client.mode {
            ClientTlsMode::Off => (None, None, None, None),
            mode => {
                let (Some(cert), Some(key)) = (&settings.client.cert, &settings.client.key) else {
                    return Err(own(MissingCertificate {
                        mode: mode.as_str(),
                    }
                    .into()));
                };
                let default = certified_key(cert, key).map_err(own)?;
                let certificate = CertificateInfo::of(&default.cert);
                let by_name = with_certs
                    .then(|| Arc::new(names::ByName::new(names.clone(), default.clone())));
                let resolver: Arc<dyn ResolvesServerCert> = match &by_name {
                    Some(n) => n.clone(),
                    None => Arc::new(rustls::sign::SingleCertAndKey::from(default)),
                };
                let control = server_config_with(resolver).map_err(own)?;
                let data = without_tickets(&control);
                (
                    Some(TlsAcceptor::from(control)),
                    Some(TlsAcceptor::from(data)),
                    by_name,
                    certificate,
                )
            }
        };
        let upstream_ca = settings
            .upstream
            .ca
            .as_deref()
            .map(CaCerts::load)
            .transpose()
            .map_err(own)?;
        let upstream = upstream_side(settings, upstream_ca.as_ref()).map_err(own)?;
        let mut route_tls = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let (upstream, upstream_ca) = match &r.settings {
                Some(s) if s.upstream != settings.upstream => {
                    let ca = s.upstream.ca.as_deref().map(CaCerts::load).transpose();
                    let ca = ca.map_err(|e| (Some(i), e))?;
                    let side = upstream_side(s, ca.as_ref()).map_err(|e| (Some(i), e))?;
                    (side, ca)
                }
                _ => (upstream.clone(), upstream_ca.clone()),
            };
            // Only a route with a certificate of its own needs acceptors of its own (the
            // same names, its certificate for a client that names none); the others
            // share the listener's.
            let (route_client, client_data) =
                match (&by_name, &client, names.iter().find(|n| n.0 == i)) {
                    (Some(by_name), Some(control), Some((_, _, Some(cert)))) => {
                        let mut config = ServerConfig::clone(control.config());
                        config.cert_resolver = Arc::new(by_name.with_default(cert.clone()));
                        let config = Arc::new(config);
                        let data = without_tickets(&config);
                        (
                            Some(TlsAcceptor::from(config)),
                            Some(TlsAcceptor::from(data)),
                        )
                    }
                    _ => (None, None),
                };
            let certificate = names
                .iter()
                .find(|n| n.0 == i)
                .and_then(|n| n.2.as_ref())
                .and_then(|c| CertificateInfo::of(&c.cert));
            route_tls.push(RouteTls {
                upstream,
                upstream_ca,
                client: route_client,
                client_data,
                certificate,
            });
        }
        Ok(ListenerTls {
            settings: settings.clone(),
            client,
            client_data,
            upstream,
            upstream_ca,
            certificate,
            routes: route_tls,
            names: by_name,
        })
    }

    /// The upstream leg's client side and CA of `route` (`None`: the listener's own).
    pub fn upstream_of(&self, route: Option<usize>) -> (Option<&Upstream>, Option<&CaCerts>) {
        match route.and_then(|i| self.routes.get(i)) {
            Some(r) => (r.upstream.as_ref(), r.upstream_ca.as_ref()),
            None => (self.upstream.as_ref(), self.upstream_ca.as_ref()),
        }
    }

    /// The acceptor for the control connection of a session on `route` (`None`: no
    /// route yet, or the default): the route's certificate for a client that names
    /// nothing in its handshake (it chose the route with `HOST`), the certificate of the
    /// name it asks for otherwise.
    pub fn client_for(&self, route: Option<usize>) -> Option<TlsAcceptor> {
        route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.client.clone())
            .or_else(|| self.client.clone())
    }

    /// The acceptor for the data connections of a session on `route` whose client asked
    /// for `name` in its control connection's handshake: they get the certificate it got
    /// there when they name nothing themselves.
    pub fn client_data_for(&self, name: Option<&str>, route: Option<usize>) -> Option<TlsAcceptor> {
        let by_name = self
            .names
            .as_ref()
            .zip(name)
            .and_then(|(n, name)| n.select(name));
        by_name
            .or(route)
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.client_data.clone())
            .or_else(|| self.client_data.clone())
    }
}

/// The proxy's client side toward servers for `settings`, when its upstream leg may use
/// TLS (reads the system's certificates: blocking).
fn upstream_side(
    settings: &TlsSettings,
    ca: Option<&CaCerts>,
) -> Result<Option<Upstream>, TlsError> {
    match settings.upstream_plan() {
        UpstreamPlan::Plain => Ok(None),
        _ => Upstream::new(settings.upstream.verify, ca).map(Some),
    }
}

/// A data connections' config from a control connections' one: the same certificates
/// and session cache, no session tickets.
fn without_tickets(control: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut data = (**control).clone();
    data.send_tls13_tickets = 0;
    Arc::new(data)
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
        Upstream::with_provider(verify, ca, provider())
    }

    /// [`Upstream::new`] on `crypto` (the agent's link prefers another cipher suite).
    pub fn with_provider(
        verify: bool,
        ca: Option<&CaCerts>,
        crypto: Arc<CryptoProvider>,
    ) -> Result<Upstream, TlsError> {
        let builder =
            ClientConfig::builder_with_provider(crypto).with_safe_default_protocol_versions()?;
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

/// [`provider`], AES-128-GCM first: what an agent offers the edge. Every byte of a
/// session through an agent is encrypted by the agent and decrypted by the edge (on top
/// of any FTPS), and AES-128 costs fewer rounds than AES-256 for the same protection in
/// practice; the edge takes the client's order.
pub fn agent_provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

/// A server config from a PEM chain and key, checking that they belong together.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certified = certified_key(cert, key)?;
    server_config_with(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
}

/// A PEM chain and its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem::certificates(cert)?;
    let key_der = pem::private_key(key)?;
    let signing = provider()
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
    Ok(Arc::new(certified))
}

/// A server config whose certificates come from `resolver`.
fn server_config_with(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
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

    /// A self-signed certificate for `name` and its key, written into `dir`.
    fn named(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, c.cert.der().to_vec())
    }

    /// The certificate a client sending `sni` (or none) gets from `acceptor`, after a
    /// handshake in memory.
    fn shown(acceptor: &TlsAcceptor, sni: Option<&str>) -> Vec<u8> {
        let mut client_config = (*Upstream::new(false, None).unwrap().config).clone();
        client_config.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("no.sni.test").to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(acceptor.config().clone()).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() {
                break;
            }
        }
        client.peer_certificates().unwrap()[0].to_vec()
    }

    /// Clients get the certificate of the name they ask for (SNI), the listener's
    /// without a name or with one no route has; data connections without a name get
    /// what their session's control connection got.
    #[test]
    fn a_certificate_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let (edge, edge_key, edge_der) = named(dir.path(), "edge.test");
        let (alpha, alpha_key, alpha_der) = named(dir.path(), "alpha.test");
        let (gamma, gamma_key, gamma_der) = named(dir.path(), "x.gamma.test");
        let mut s = TlsSettings::default();
        s.client.mode = ClientTlsMode::Explicit;
        s.client.cert = Some(edge);
        s.client.key = Some(edge_key);
        let route = |name: &str, cert: Option<(&PathBuf, &PathBuf)>| RouteTlsSpec {
            name: Some(HostPattern::parse(name).unwrap()),
            cert: cert.map(|(c, k)| (c.clone(), k.clone())),
            settings: None,
        };
        let routes = [
            route("alpha.test", Some((&alpha, &alpha_key))),
            RouteTlsSpec::default(),
            route("beta.test", None),
            route("*.gamma.test", Some((&gamma, &gamma_key))),
        ];
        let l = ListenerTls::load_routed(&s, &routes).unwrap();
        let control = l.client.as_ref().unwrap();
        assert_eq!(shown(control, Some("alpha.test")), alpha_der);
        assert_eq!(shown(control, Some("ftp.gamma.test")), gamma_der);
        assert_eq!(shown(control, Some("beta.test")), edge_der);
        assert_eq!(shown(control, Some("other.test")), edge_der);
        assert_eq!(shown(control, None), edge_der);
        let data = l.client_data_for(Some("alpha.test"), None).unwrap();
        assert_eq!(shown(&data, None), alpha_der);
        assert_eq!(shown(&data, Some("ftp.gamma.test")), gamma_der);
        assert_eq!(
            shown(&l.client_data_for(None, None).unwrap(), None),
            edge_der
        );
        let beta = l.client_data_for(Some("beta.test"), None).unwrap();
        assert_eq!(shown(&beta, None), edge_der);
        // A session routed to alpha by HOST, naming nothing in its handshakes: alpha's,
        // on its control and its data connections; a name it does ask for wins.
        let control = l.client_for(Some(0)).unwrap();
        assert_eq!(shown(&control, None), alpha_der);
        assert_eq!(shown(&control, Some("ftp.gamma.test")), gamma_der);
        assert_eq!(
            shown(&l.client_data_for(None, Some(0)).unwrap(), None),
            alpha_der
        );
        // A route without a certificate of its own: the listener's.
        assert_eq!(shown(&l.client_for(Some(2)).unwrap(), None), edge_der);
        assert_eq!(shown(&l.client_for(None).unwrap(), None), edge_der);
        // A route's file that does not read is named by the route's place.
        let bad = [RouteTlsSpec {
            cert: Some((alpha.clone(), edge_data_key(dir.path()))),
            ..route("alpha.test", None)
        }];
        let (route, e) = ListenerTls::load_routed(&s, &bad).err().unwrap();
        assert_eq!(route, Some(0));
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    }

    /// A key that belongs to no certificate of these tests.
    fn edge_data_key(dir: &Path) -> PathBuf {
        let path = dir.join("stray.key");
        std::fs::write(&path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        path
    }

    /// A route's own `tls.upstream` gets its own client side toward servers; the others
    /// share the listener's.
    #[test]
    fn a_routes_upstream_leg() {
        let mut own = TlsSettings::default();
        own.upstream.mode = UpstreamTlsMode::Explicit;
        own.upstream.verify = false;
        let routes = [
            RouteTlsSpec {
                settings: Some(own),
                ..RouteTlsSpec::default()
            },
            RouteTlsSpec::default(),
        ];
        let l = ListenerTls::load_routed(&TlsSettings::default(), &routes).unwrap();
        assert!(l.upstream_of(None).0.is_none());
        assert!(l.upstream_of(Some(0)).0.is_some_and(|u| !u.verify));
        assert!(l.upstream_of(Some(1)).0.is_none());
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
