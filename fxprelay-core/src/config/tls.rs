//! A listener's `tls:` block: the rules about its settings. The files it names (the
//! certificate, its key, the upstream CA) are read after validation, with the rest of
//! the TLS material ([`super::Origin`] keeps the block's line for their errors).

use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::schema::DataMode;
use crate::tls::{ClientTlsMode, MissingCertificate, TlsSettings, UpstreamPlan};

/// The block of listener `key` (`listeners[0].tls`) as validated: `None` when neither leg
/// uses TLS. `warn` receives what works but is likely not meant.
pub(super) fn validate(
    key: &str,
    tls: Option<&Spanned<TlsSettings>>,
    data: DataMode,
    mut warn: impl FnMut(u64, String),
) -> Result<Option<TlsSettings>, ConfigError> {
    let Some(t) = tls.filter(|t| t.value.enabled()) else {
        return Ok(None);
    };
    let (settings, line) = (&t.value, t.referenced.line());
    if data == DataMode::Passthrough {
        return Err(ConfigError::invalid(
            key,
            line,
            "TLS needs `data: relay`: in passthrough the client's data connections would have to resume a TLS session that the server shares with the proxy, which cannot work",
        ));
    }
    let client = &settings.client;
    if client.mode != ClientTlsMode::Off && (client.cert.is_none() || client.key.is_none()) {
        let why = MissingCertificate {
            mode: client.mode.as_str(),
        };
        return Err(ConfigError::invalid(key, line, why.to_string()));
    }
    if settings.upstream_plan() != UpstreamPlan::Plain && !settings.upstream.verify {
        warn(
            line,
            "tls.upstream.verify is false: any server certificate is accepted, so anyone on the path to the server can read and change the session".into(),
        );
    }
    Ok(Some(settings.clone()))
}
