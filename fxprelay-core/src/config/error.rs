//! What goes wrong with a configuration, with the place in the file it comes from: every
//! error the operator sees names the line (and the key, once validation has one), and an
//! error in a file quotes the lines around it.

use std::path::Path;

/// A configuration problem, with the place in the file it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML layer's own message (made plainer, with a suggestion for a misspelt key).
    #[error("line {line} column {column}: {message}")]
    Yaml {
        line: u64,
        column: u64,
        message: String,
    },
    /// A value that parsed but breaks a rule: validation's, or a TLS file read after it.
    #[error("line {line}: `{key}`: {message}")]
    Invalid {
        key: String,
        line: u64,
        message: String,
    },
    /// A `${VAR}` that cannot be expanded.
    #[error("line {line}: {message}")]
    Env { line: u64, message: String },
    /// One of the above in a file: its name and the lines around the problem.
    #[error("{file}: {error}\n{snippet}")]
    InFile {
        file: String,
        error: Box<ConfigError>,
        snippet: String,
    },
}

impl ConfigError {
    /// A rule about `key`, written on `line`, is broken.
    pub(super) fn invalid(
        key: impl Into<String>,
        line: u64,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            line,
            message: message.into(),
        }
    }

    /// The line (and column, if known) the problem is on.
    fn position(&self) -> Option<(u64, Option<u64>)> {
        match self {
            ConfigError::Yaml { line, column, .. } => Some((*line, Some(*column))),
            ConfigError::Invalid { line, .. } | ConfigError::Env { line, .. } => {
                Some((*line, None))
            }
            _ => None,
        }
        .filter(|(line, _)| *line > 0)
    }

    /// Names `file` and quotes the lines of `text` around the problem.
    pub(super) fn in_file(self, file: &Path, text: &str) -> ConfigError {
        let Some((line, column)) = self.position() else {
            return self;
        };
        ConfigError::InFile {
            file: file.display().to_string(),
            snippet: snippet(file, text, line, column),
            error: Box::new(self),
        }
    }
}

/// The line `line` of `text` and the one before it, with a caret under `column`:
///
/// ```text
///  --> /etc/fxprelay/fxprelay.yaml:5:5
///   |
/// 4 |     upstream: h:21
/// 5 |     upstream_dat: active
///   |     ^
/// ```
fn snippet(file: &Path, text: &str, line: u64, column: Option<u64>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = line as usize;
    let width = at.to_string().len();
    let pad = " ".repeat(width);
    let mut out = match column {
        Some(c) => format!("{pad}--> {}:{line}:{c}\n", file.display()),
        None => format!("{pad}--> {}:{line}\n", file.display()),
    };
    out.push_str(&format!("{pad} |\n"));
    for n in at.saturating_sub(1).max(1)..=at {
        if let Some(l) = lines.get(n - 1) {
            out.push_str(&format!("{n:>width$} | {l}\n"));
        }
    }
    if let Some(c) = column {
        let caret = " ".repeat(c.saturating_sub(1) as usize);
        out.push_str(&format!("{pad} | {caret}^\n"));
    }
    out.trim_end().to_owned()
}
