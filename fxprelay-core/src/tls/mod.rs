//! TLS as settings, without any TLS library: the `tls:` block of a listener
//! ([`settings`]), the rules for naming an `fxp.ca_bundles` entry, and the fixes an
//! operator is told ([`advice`]). Loading certificates and running handshakes is the
//! binary's `tls` module.

pub mod advice;
pub mod settings;

pub use settings::{
    ClientTlsMode, DataProtection, TlsSettings, UpstreamPlan, UpstreamTls, UpstreamTlsMode,
};

/// Longest `fxp.ca_bundles` name.
pub const MAX_BUNDLE_NAME: usize = 64;

/// A name that [`is_bundle_name`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a bundle name: 1 to {MAX_BUNDLE_NAME} letters, digits, `.`, `_` or `-`, starting with a letter or digit"
)]
pub struct BadBundleName(pub String);

/// What a caller may write in `options.ca` to name a CA bundle: short, and nothing a path
/// would need (`/`), so a path is never mistaken for a name.
pub fn is_bundle_name(name: &str) -> bool {
    (1..=MAX_BUNDLE_NAME).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A `tls.client.mode` that serves TLS without the certificate and key it needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`tls.client.mode: {mode}` needs `tls.client.cert` and `tls.client.key`")]
pub struct MissingCertificate {
    pub mode: &'static str,
}
