//! `fxprelay config`: the configuration as the proxy runs it, printed as YAML in the
//! file's own keys. The typed configuration serializes to exactly that (every default
//! filled in, `${VAR}`s expanded, secrets as `***`), so what is printed loads back to the
//! same configuration.

use super::Config;

impl Config {
    /// The effective configuration as YAML.
    pub fn effective_yaml(&self) -> String {
        match serde_saphyr::to_string(self) {
            Ok(yaml) if yaml.ends_with('\n') => yaml,
            Ok(yaml) => yaml + "\n",
            Err(e) => format!("# cannot print the configuration: {e}\n"),
        }
    }
}
