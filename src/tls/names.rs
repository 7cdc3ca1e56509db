//! A certificate per name: the certificate a client gets is chosen by the name it asks
//! for in its ClientHello (TLS SNI), as the listener's routes choose the session's
//! server: the first `match: {host: ...}` route whose pattern matches the name, with its
//! own certificate if it has one. A client that sends no name, a name no route has, or
//! a name whose route has no certificate of its own gets the listener's certificate.

use std::fmt;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::route::{HostPattern, normalize};

/// A name route: its place among the listener's routes, its pattern, its certificate if
/// it has one.
pub(super) type Name = (usize, HostPattern, Option<Arc<CertifiedKey>>);

/// The certificates of one listener, by name.
pub(super) struct ByName {
    /// The name routes in order.
    names: Arc<[Name]>,
    /// For a client without a (matching) name.
    default: Arc<CertifiedKey>,
}

impl ByName {
    pub(super) fn new(names: Vec<Name>, default: Arc<CertifiedKey>) -> ByName {
        ByName {
            names: names.into(),
            default,
        }
    }

    /// The same names with another default: for the data connections of a session whose
    /// control connection got `default` (a client that sends no name there still gets
    /// the certificate it checked before).
    pub(super) fn with_default(&self, default: Arc<CertifiedKey>) -> ByName {
        ByName {
            names: self.names.clone(),
            default,
        }
    }

    /// The name route `name` selects, if any.
    fn find(&self, name: &str) -> Option<&Name> {
        let name = normalize(name)?;
        self.names.iter().find(|(_, p, _)| p.matches(&name))
    }

    /// The route `name` selects (its place among the listener's routes), if any.
    pub(super) fn select(&self, name: &str) -> Option<usize> {
        self.find(name).map(|n| n.0)
    }

    fn certificate(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        name.and_then(|n| self.find(n))
            .and_then(|n| n.2.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate(hello.server_name()))
    }
}

impl fmt::Debug for ByName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByName")
            .field(
                "names",
                &self
                    .names
                    .iter()
                    .map(|(i, p, c)| (i, p.to_string(), c.is_some()))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        let der =
            rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der()).unwrap();
        let signing = super::super::provider()
            .key_provider
            .load_private_key(der)
            .unwrap();
        Arc::new(CertifiedKey::new(vec![c.cert.der().clone()], signing))
    }

    #[test]
    fn the_first_name_route_that_matches_decides() {
        let (alpha, wild, default) = (key("alpha.test"), key("x.gamma.test"), key("edge"));
        let names = ByName::new(
            vec![
                (
                    0,
                    HostPattern::parse("alpha.test").unwrap(),
                    Some(alpha.clone()),
                ),
                (2, HostPattern::parse("beta.test").unwrap(), None),
                (
                    3,
                    HostPattern::parse("*.gamma.test").unwrap(),
                    Some(wild.clone()),
                ),
            ],
            default.clone(),
        );
        let same = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| Arc::ptr_eq(a, b);
        assert!(same(&names.certificate(Some("alpha.test")), &alpha));
        assert!(same(&names.certificate(Some("ALPHA.test.")), &alpha));
        assert!(same(&names.certificate(Some("ftp.gamma.test")), &wild));
        // A route without a certificate of its own, an unknown name, no name at all.
        assert!(same(&names.certificate(Some("beta.test")), &default));
        assert!(same(&names.certificate(Some("other.test")), &default));
        assert!(same(&names.certificate(None), &default));
        assert_eq!(names.select("ftp.gamma.test"), Some(3));
        assert_eq!(names.select("other.test"), None);
        // Data connections of a session that got alpha's certificate: alpha's without a name.
        let data = names.with_default(alpha.clone());
        assert!(same(&data.certificate(None), &alpha));
        assert!(same(&data.certificate(Some("ftp.gamma.test")), &wild));
    }
}
