//! `fxp:`, what FXP transfers ordered over the admin API (and, for `allow`, with
//! `SITE FXP`) may do, and the section's rules: CA bundles are named so callers can ask
//! for one (the files themselves are read after validation, with the TLS material), and
//! letting callers skip certificate checks is worth a warning.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::error::ConfigError;
use super::origin::{Origin, ca_bundle_key};
use super::schema::{FXP_ALLOW, FileFxp};
use crate::net::AllowList;
use crate::tls::{BadBundleName, is_bundle_name};

/// The top-level `fxp:` block, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FxpConfig {
    /// Servers the API may order transfers between (CIDRs, addresses, host names);
    /// empty: none. The `fxprelay fxp` command line runs for its own user and needs none.
    pub allow: AllowList,
    /// Transfers run at once; more wait in the queue.
    pub concurrency: usize,
    /// Between two TLS servers that offer neither `SSCN` nor `CPSV`, FXP with `PROT C`
    /// (the file crosses the network between them unencrypted) may be asked for by an
    /// API job (`options.allow_clear_data`); off: such a job is refused, the proxy relays.
    pub allow_clear_data: bool,
    /// An API job may turn off the check of TLS servers' certificates
    /// (`options.insecure`); off: such a job is refused.
    pub allow_insecure: bool,
    /// CA files an API job may name in `options.ca` (by name: callers name no file),
    /// by name. Read with the rest of the TLS material, after validation.
    pub ca_bundles: BTreeMap<String, PathBuf>,
}

/// What a file without `fxp:` gets.
impl Default for FxpConfig {
    fn default() -> Self {
        let file = FileFxp::default();
        FxpConfig {
            allow: file.allow,
            concurrency: file.concurrency,
            allow_clear_data: file.allow_clear_data,
            allow_insecure: file.allow_insecure,
            ca_bundles: BTreeMap::new(),
        }
    }
}

/// The `fxp:` block as validated: every bundle name one a caller can write (its line
/// kept, for the error if its file turns out bad when read), a warning for
/// `allow_insecure`.
pub(super) fn validate(
    file: FileFxp,
    origin: &mut Origin,
    warnings: &mut Vec<String>,
) -> Result<FxpConfig, ConfigError> {
    let mut ca_bundles = BTreeMap::new();
    for (name, path) in file.ca_bundles {
        let key = ca_bundle_key(&name);
        let line = path.referenced.line();
        if !is_bundle_name(&name) {
            let why = BadBundleName(name);
            return Err(ConfigError::invalid(key, line, why.to_string()));
        }
        origin.record(key, line);
        ca_bundles.insert(name, path.value);
    }
    if file.allow_insecure {
        warnings.push(
            "fxp.allow_insecure is true: API callers may turn off the check of TLS servers' certificates (options.insecure), so anyone on the path to those servers can read and change the transfer, passwords included".into(),
        );
    }
    Ok(FxpConfig {
        allow: file.allow.named(FXP_ALLOW),
        concurrency: file.concurrency,
        allow_clear_data: file.allow_clear_data,
        allow_insecure: file.allow_insecure,
        ca_bundles,
    })
}
