//! The YAML layer's errors, worded for an operator: one message with its line and
//! column, a suggestion for a misspelt key or value, no library jargon.

use super::error::ConfigError;

/// The YAML layer's error as a [`ConfigError::Yaml`] (the snippet naming the file is
/// added by [`super::Config::load`]).
pub(super) fn yaml_error(e: serde_saphyr::Error) -> ConfigError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let plain = e.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering ends with its own location; ours goes in front.
    let message = match plain.rfind(" at line ") {
        Some(i) => plain[..i].to_owned(),
        None => plain,
    };
    ConfigError::Yaml {
        line,
        column,
        message: reword(&message),
    }
}

/// Adds "did you mean" to unknown keys and values; rewords duplicate keys.
fn reword(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!(
            "`{key}` appears twice in the same block; keep one (the second would silently replace the first)"
        );
    }
    for what in ["unknown field `", "unknown variant `"] {
        let Some(rest) = message.strip_prefix(what) else {
            continue;
        };
        let Some((given, expected)) = rest.split_once('`') else {
            continue;
        };
        let choices: Vec<&str> = expected
            .trim_start_matches(',')
            .trim()
            .trim_start_matches("expected one of")
            .trim_start_matches("expected")
            .split(',')
            .map(|c| c.trim().trim_matches('`'))
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(best) = did_you_mean(given, &choices) {
            return format!("{message}; did you mean `{best}`?");
        }
    }
    message.to_owned()
}

/// The choice closest to `given`, if one is close enough to be a typo.
pub fn did_you_mean<'a>(given: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (strsim::jaro_winkler(given, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
