//! `${VAR}` expansion, before the YAML is parsed: one file serves many nodes
//! (`public_address: ${NODE_IP}`).

use super::error::ConfigError;

/// Replaces `${VAR}` with the variable's value and `${VAR:-default}` with the value, or
/// `default` when the variable is unset or empty (the shell's rules). `$${` writes a
/// literal `${`. Comments are left alone: a commented-out line may name variables nobody
/// sets. Expansion never adds or removes a line, so YAML errors keep the file's lines.
pub fn expand_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let line = n as u64 + 1;
            let Some(end) = rest[i..].find('}') else {
                return Err(ConfigError::Env {
                    line,
                    message: "`${` without a closing `}`; write `$${` for a literal `${`".into(),
                });
            };
            let inner = &rest[i + 2..i + end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::Env {
                    line,
                    message: format!(
                        "`${{{inner}}}`: `{name}` is not a variable name (letters, digits, `_`)"
                    ),
                });
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ConfigError::Env {
                        line,
                        message: format!(
                            "`${{{name}}}`: the environment variable {name} is not set (or empty); set it, or write `${{{name}:-default}}`"
                        ),
                    });
                }
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment starts in `line` (its length if none): a `#` at the start or
/// after whitespace, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return i,
            _ => {}
        }
        prev = c;
    }
    line.len()
}
