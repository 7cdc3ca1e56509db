//! `fxp.ca_bundles`: CA files the operator names, so that API callers can ask to trust
//! one by its name (`options.ca`) without naming any file on the proxy's host. Every
//! bundle is read and checked with the rest of the TLS material (`app::material`: at
//! start, on every reload, by `fxprelay check`); a job only picks one.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::TlsError;
use super::pem::CaCerts;

pub use fxprelay_core::tls::{
    BadBundleName, MAX_BUNDLE_NAME as MAX_NAME, is_bundle_name as is_name,
};

/// The operator's CA bundles by name, read.
#[derive(Debug, Clone, Default)]
pub struct CaBundles(BTreeMap<String, CaCerts>);

/// Why a bundle cannot be used: its name, or its file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    BadName(#[from] BadBundleName),
    #[error(transparent)]
    File(#[from] TlsError),
}

impl CaBundles {
    /// Reads every bundle (blocking); the first that fails is the error, with its name.
    pub fn load<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a Path)>,
    ) -> Result<CaBundles, (String, BundleError)> {
        let mut read = BTreeMap::new();
        for (name, path) in files {
            let fail = |e: BundleError| (name.to_owned(), e);
            if !is_name(name) {
                return Err(fail(BadBundleName(name.to_owned()).into()));
            }
            let certs = CaCerts::load(path).map_err(|e| fail(e.into()))?;
            read.insert(name.to_owned(), certs);
        }
        Ok(CaBundles(read))
    }

    pub fn get(&self, name: &str) -> Option<&CaCerts> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &CaCerts)> {
        self.0.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// The names, comma-separated, for messages (`none` when there are none).
    pub fn names(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_load_by_name_and_bad_ones_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, c.cert.pem()).unwrap();
        let b = CaBundles::load([("corp", ca.as_path()), ("partner-2", ca.as_path())]).unwrap();
        assert_eq!(b.get("corp").map(|c| c.certs().len()), Some(1));
        assert!(b.get("/dev/zero").is_none());
        assert_eq!(b.names(), "corp, partner-2");
        assert_eq!(CaBundles::default().names(), "none");
        for bad in ["", "/etc/ssl/ca.pem", "../x", ".hidden", "a b"] {
            let (name, e) = CaBundles::load([(bad, ca.as_path())]).unwrap_err();
            assert!(matches!(e, BundleError::BadName(_)), "{bad}: {e}");
            assert_eq!(name, bad);
        }
        let (name, e) = CaBundles::load([("zero", Path::new("/dev/zero"))]).unwrap_err();
        assert_eq!(name, "zero");
        assert!(e.to_string().contains("1 MiB"), "{e}");
    }
}
