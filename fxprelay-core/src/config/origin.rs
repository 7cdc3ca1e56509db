//! Where the file wrote the keys that a step after validation may still find wrong.
//!
//! Validation reads no file besides the configuration itself: the certificates, keys
//! and CA bundles a configuration names are read by whoever puts it to use (`app`, at
//! start, on `SIGHUP` and for `fxprelay check`). Their errors must still name the key,
//! the line and the file, as validation's do; [`Origin`] keeps what that takes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::ConfigError;

/// The file a configuration came from and the lines of the keys that name files.
#[derive(Clone, Default)]
pub struct Origin {
    /// `None` for text parsed without a file ([`super::Config::parse`]).
    file: Option<PathBuf>,
    /// The file as read, for the lines an error quotes.
    text: Arc<str>,
    /// Key path (`listeners[0].tls`, `fxp.ca_bundles.corp`) to line.
    lines: BTreeMap<String, u64>,
}

impl Origin {
    pub(super) fn new(text: &str) -> Origin {
        Origin {
            file: None,
            text: Arc::from(text),
            lines: BTreeMap::new(),
        }
    }

    pub(super) fn in_file(self, file: &Path) -> Origin {
        Origin {
            file: Some(file.to_path_buf()),
            ..self
        }
    }

    /// Remembers that `key` was written on `line`.
    pub(super) fn record(&mut self, key: String, line: u64) {
        self.lines.insert(key, line);
    }

    /// The file the configuration was read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The error `message` about `key`, placed as validation places its own: the key's
    /// line, and in a file, its name and the lines around it.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let line = self.lines.get(key).copied().unwrap_or(0);
        let error = ConfigError::invalid(key, line, message);
        match &self.file {
            Some(file) => error.in_file(file, &self.text),
            None => error,
        }
    }
}

impl Origin {
    /// The error `message` about the file `path` that the block `block` names as
    /// `field` (`client.key` of `listeners[0].tls`): placed on the line that writes the
    /// path, at or after the block's own, so the operator sees the `key:` line, not the
    /// block's first.
    pub fn file_error(
        &self,
        block: &str,
        field: &str,
        path: &Path,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = self.lines.get(block).copied().unwrap_or(0);
        // The path as written, else its file name: the text is the file before `${VAR}`
        // expansion (`${CREDENTIALS_DIRECTORY}/proxy.key`).
        let whole = path.to_string_lossy();
        let name = path.file_name().map(|n| n.to_string_lossy());
        let find = |needle: &str| {
            self.text
                .lines()
                .enumerate()
                .skip(start.saturating_sub(1) as usize)
                .find(|(_, l)| l.contains(needle))
                .map(|(i, _)| i as u64 + 1)
        };
        let line = find(&whole)
            .or_else(|| name.and_then(|n| find(&n)))
            .unwrap_or(start);
        let error = ConfigError::invalid(format!("{block}.{field}"), line, message);
        match &self.file {
            Some(file) => error.in_file(file, &self.text),
            None => error,
        }
    }
}

/// Without the text: a configuration's debug view shows settings, not the file.
impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("file", &self.file)
            .field("keys", &self.lines.len())
            .finish()
    }
}

/// The key path of `field` of the listener at `index`, as errors and warnings name it.
pub fn listener_key(index: usize, field: &str) -> String {
    format!("listeners[{index}].{field}")
}

/// The key path of the CA bundle `name` of `fxp.ca_bundles`.
pub fn ca_bundle_key(name: &str) -> String {
    format!("fxp.ca_bundles.{name}")
}
