//! From a file to a [`Config`]: read it, expand `${VAR}`s ([`super::env`]), parse the
//! YAML into the file's shape ([`super::schema`]), validate ([`super::validate`]). An
//! error in a file names it and quotes the lines around the problem.

use std::path::Path;

use super::Config;
use super::env::expand_env;
use super::error::ConfigError;
use super::origin::Origin;
use super::schema::FileConfig;
use super::validate::validate;
use super::yaml::yaml_error;

impl Config {
    /// Reads and validates a config file. Reads no other file: the TLS material it
    /// names is loaded by whoever runs it (see [`Config::origin`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|e| e.in_file(path, &text))?;
        config.origin = config.origin.in_file(path);
        Ok(config)
    }

    /// Expands `${VAR}` references from the environment, then parses and validates YAML
    /// text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, |name| std::env::var(name).ok())
    }

    /// Like [`Config::parse`], with `env` in place of the process environment.
    pub fn parse_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded = expand_env(text, env)?;
        let file: FileConfig = serde_saphyr::from_str(&expanded).map_err(yaml_error)?;
        validate(file, Origin::new(text))
    }
}
