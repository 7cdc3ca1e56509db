//! The TLS material a configuration names, read: each listener's certificate, key and
//! upstream CA turned into rustls configs, and the CA bundles of `fxp.ca_bundles`.
//!
//! The configuration itself is plain data and validating it reads no file; the files it
//! names are read here, when it is put to use: at start, on every `SIGHUP` (off the
//! async runtime; a file that does not read keeps the running configuration) and by
//! `fxprelay check`. A bad file is reported as validation reports a bad value: the key
//! that names it, its line, and the lines of the file around it.

use std::path::Path;

use crate::config::{
    Config, ConfigError, FxpConfig, ListenerConfig, ca_bundle_key, listener_key, route_key,
};
use crate::fxp::jobs::Permits;
use crate::route::Match;
use crate::tls::{CaBundles, ListenerTls, RouteTlsSpec, TlsSettings};

/// A configuration together with the TLS material it names, read: what `run` starts
/// from and what a reload replaces, always both at once.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub tls: TlsMaterial,
}

impl Loaded {
    /// Reads and validates the file at `path`, then the files it names. Blocking.
    pub fn read(path: &Path) -> Result<Loaded, ConfigError> {
        Loaded::new(Config::load(path)?)
    }

    /// Reads the files `config` names. Blocking.
    pub fn new(config: Config) -> Result<Loaded, ConfigError> {
        let tls = TlsMaterial::load(&config)?;
        Ok(Loaded { config, tls })
    }
}

/// Certificates, keys and CA files of one configuration, read and checked.
#[derive(Debug, Clone, Default)]
pub struct TlsMaterial {
    /// By listener, in the configuration's order: `None` for a listener without TLS.
    listeners: Vec<Option<ListenerTls>>,
    /// `fxp.ca_bundles`, which API jobs may name.
    pub ca_bundles: CaBundles,
    /// The certificate agents dial in to (`agents.cert`, `agents.key`).
    pub agents: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl TlsMaterial {
    /// Reads every file `config` names (blocking); the first that fails is the error,
    /// naming the key that names it.
    pub fn load(config: &Config) -> Result<TlsMaterial, ConfigError> {
        let origin = &config.origin;
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                listener_tls(l).map_err(|(route, e)| {
                    let block = match route {
                        Some(j) => route_key(i, j, "tls"),
                        None => listener_key(i, "tls"),
                    };
                    // The listener's own files are named by their key and line.
                    let field = match (route, &l.tls) {
                        (None, Some(settings)) => {
                            e.path().and_then(|p| Some((p, field_naming(settings, p)?)))
                        }
                        _ => None,
                    };
                    match field {
                        Some((path, field)) => {
                            origin.file_error(&block, field, path, e.to_string())
                        }
                        None => origin.error(&block, e.to_string()),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bundles = config
            .fxp
            .ca_bundles
            .iter()
            .map(|(name, path)| (name.as_str(), path.as_path()));
        let ca_bundles = CaBundles::load(bundles)
            .map_err(|(name, e)| origin.error(&ca_bundle_key(&name), e.to_string()))?;
        let agents = match &config.agents {
            None => None,
            Some(a) => {
                let c = crate::tls::server_config(&a.cert, &a.key).map_err(|e| {
                    let field = if e.path() == Some(a.key.as_path()) {
                        "key"
                    } else {
                        "cert"
                    };
                    match e.path() {
                        Some(path) => origin.file_error("agents", field, path, e.to_string()),
                        None => origin.error(crate::config::AGENTS_TLS_KEY, e.to_string()),
                    }
                })?;
                Some(c)
            }
        };
        Ok(TlsMaterial {
            listeners,
            ca_bundles,
            agents,
        })
    }

    /// The material of the listener at `index` of the configuration it was read for.
    /// A listener has some when its `tls:` or one of its routes' says TLS.
    pub fn listener(&self, index: usize) -> Option<ListenerTls> {
        self.listeners.get(index).cloned().flatten()
    }

    /// What FXP API jobs may ask for under `fxp`, with these bundles to name.
    pub fn permits(&self, fxp: &FxpConfig) -> Permits {
        Permits {
            allow_clear_data: fxp.allow_clear_data,
            allow_insecure: fxp.allow_insecure,
            ca_bundles: self.ca_bundles.clone(),
        }
    }
}

/// The key of a `tls:` block that names `path`.
fn field_naming(settings: &TlsSettings, path: &Path) -> Option<&'static str> {
    let is = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(path);
    if is(&settings.client.key) {
        Some("client.key")
    } else if is(&settings.client.cert) {
        Some("client.cert")
    } else if is(&settings.upstream.ca) {
        Some("upstream.ca")
    } else {
        None
    }
}

/// The TLS material of listener `l`: its `tls:` block and its routes' (certificates by
/// name, their own upstream legs); `None` when none of them says TLS. An error names the
/// route whose file it is (`Some(index)`), or the listener's own block.
fn listener_tls(
    l: &ListenerConfig,
) -> Result<Option<ListenerTls>, (Option<usize>, crate::tls::TlsError)> {
    if l.tls.is_none() && l.routes.iter().all(|r| r.tls.is_none()) {
        return Ok(None);
    }
    let routes: Vec<RouteTlsSpec> = l
        .routes
        .iter()
        .map(|r| RouteTlsSpec {
            name: match &r.matches {
                Match::Host(p) => Some(p.clone()),
                Match::User(_) => None,
            },
            cert: r
                .certificate()
                .map(|(c, k)| (c.to_path_buf(), k.to_path_buf())),
            settings: r
                .tls
                .as_ref()
                .filter(|t| t.upstream.is_some())
                .and_then(|_| r.tls_settings(l.tls.as_ref())),
        })
        .collect();
    let settings = l.tls.clone().unwrap_or_default();
    ListenerTls::load_routed(&settings, &routes).map(Some)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const ONE: &str = "listeners:\n  - name: a\n    bind: 127.0.0.1:2121\n    upstream: h:21\n";

    /// The configuration in `text`, with its material read: what `fxprelay check` does.
    fn load(text: &str) -> Result<Loaded, ConfigError> {
        Loaded::new(Config::parse(text)?)
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    /// A self-signed certificate and its key in `dir`.
    fn files(dir: &Path) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let (cert, key) = (dir.join("ca.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    /// `fxp.ca_bundles` are read with the TLS material: a bad one is an error naming its
    /// key and line, and `fxp.allow_insecure` is warned about.
    #[test]
    fn ca_bundles_are_read_at_load_and_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, key) = files(dir.path());
        let with = |bundles: &str| format!("fxp:\n  ca_bundles:\n{bundles}{ONE}");
        let loaded = load(&with(&format!("    corp: {}\n", ca.display()))).unwrap();
        let corp = loaded.tls.ca_bundles.get("corp").expect("the bundle");
        assert_eq!(corp.certs().len(), 1);
        assert!(
            loaded.config.warnings.is_empty(),
            "{:?}",
            loaded.config.warnings
        );
        for (file, says) in [
            (key.display().to_string(), "holds no PEM certificate"),
            ("/nonexistent/ca.pem".into(), "cannot read"),
            ("/dev/zero".into(), "larger than 1 MiB"),
        ] {
            let text = with(&format!("    corp: {}\n    other: {file}\n", ca.display()));
            let e = err(&text);
            assert!(
                e.contains("`fxp.ca_bundles.other`") && e.contains("line 4") && e.contains(says),
                "{e}"
            );
        }
        let e = err(&with(&format!("    \"/etc/ca\": {}\n", ca.display())));
        assert!(e.contains("not a bundle name"), "{e}");
        let loaded = load(&format!("fxp:\n  allow_insecure: true\n{ONE}")).unwrap();
        assert!(loaded.config.fxp.allow_insecure);
        assert!(
            loaded.config.warnings[0].contains("fxp.allow_insecure is true"),
            "{:?}",
            loaded.config.warnings
        );
        assert!(loaded.tls.permits(&loaded.config.fxp).allow_insecure);
    }

    /// A listener's certificate, key or CA that does not read is reported as validation
    /// reports a bad value: the key that names it (`tls.client.key`), the line that
    /// writes the path, and in a file the file's name and the lines around it. The
    /// material is the listener's own.
    #[test]
    fn a_listeners_tls_files_are_read_and_bad_ones_named_with_key_line_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = files(dir.path());
        let tls = |key: &Path| {
            format!(
                "  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n    tls:\n      client: {{mode: explicit, cert: {}, key: {}}}\n",
                cert.display(),
                key.display()
            )
        };
        let loaded = load(&format!("{ONE}{}", tls(&key))).unwrap();
        assert!(loaded.tls.listener(0).is_none());
        let b = loaded.tls.listener(1).expect("listener b's material");
        assert!(b.client.is_some() && b.client_data.is_some());

        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, format!("{ONE}{}", tls(Path::new("/dev/zero")))).unwrap();
        let e = Loaded::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("`listeners[1].tls.client.key`")
                && e.contains("line 9")
                && e.contains("1 MiB"),
            "{e}"
        );
        // The line that writes the path (here the block's own, a flow mapping).
        assert!(e.contains(&format!("{}:9", path.display())), "{e}");
        assert!(
            e.contains("8 |     tls:") && e.contains("9 |       client:"),
            "{e}"
        );
        // Written as a block mapping, the error points at the `key:` line itself, and a
        // missing file says so.
        let block = format!(
            "{ONE}  - name: b\n    bind: 127.0.0.1:2122\n    upstream: h:21\n    tls:\n      client:\n        mode: explicit\n        cert: {}\n        key: /nonexistent/proxy.key\n",
            cert.display()
        );
        std::fs::write(&path, block).unwrap();
        let e = Loaded::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 12: `listeners[1].tls.client.key`: cannot read /nonexistent/proxy.key: no such file"),
            "{e}"
        );
        // Validation itself reads nothing: the configuration loads, the material does not.
        Config::load(&path).unwrap();
    }

    /// A route's certificate is read with its listener's; one that does not read is
    /// named by the route's `tls` key and line. A route's own `tls.upstream` makes
    /// material for a listener that has no `tls:` of its own.
    #[test]
    fn route_certificates_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = files(dir.path());
        let text = |route_key: &Path| {
            format!(
                "listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    tls:\n      client: {{mode: explicit, cert: {c}, key: {k}}}\n    routes:\n      - match: {{host: a.test}}\n        upstream: a:21\n      - match: {{host: b.test}}\n        upstream: b:21\n        tls: {{cert: {c}, key: {rk}}}\n",
                c = cert.display(),
                k = key.display(),
                rk = route_key.display()
            )
        };
        let loaded = load(&text(&key)).unwrap();
        let l = loaded.tls.listener(0).unwrap();
        assert_eq!(l.routes.len(), 2);
        let e = err(&text(Path::new("/dev/zero")));
        assert!(
            e.contains("`listeners[0].routes[1].tls`")
                && e.contains("line 12")
                && e.contains("1 MiB"),
            "{e}"
        );
        let plain = load("listeners:\n  - name: edge\n    bind: 127.0.0.1:2121\n    upstream: h:21\n    routes:\n      - match: {user: '@tls$'}\n        upstream: a:21\n        tls: {upstream: {mode: explicit, verify: false}}\n").unwrap();
        let l = plain.tls.listener(0).expect("a route's upstream TLS");
        assert!(l.client.is_none() && l.upstream_of(None).0.is_none());
        assert!(l.upstream_of(Some(0)).0.is_some());
    }
}
