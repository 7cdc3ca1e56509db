//! What a probe saw of a server, and what it means for the listener in front of it: pure,
//! so every combination of a listener's TLS plan and a server's answers is unit-tested.

use std::fmt;

use crate::tls::UpstreamPlan;
use crate::tls::diagnose::{NO_AUTH_TLS_FIX, PLAINTEXT};

/// What one server answered the probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The greeting's first line, or why there was none (unreachable, closed, not FTP).
    /// Read over TLS when the listener's upstream leg is implicit TLS and that worked,
    /// else in clear.
    pub greeting: Option<Result<String, String>>,
    /// The features `FEAT` listed, one per line as the server wrote them (trimmed).
    pub features: Vec<String>,
    /// `AUTH TLS` and the handshake after it, tried when the listener's upstream leg may
    /// turn to TLS after the greeting.
    pub explicit: Option<Result<(), TlsRefusal>>,
    /// The handshake on connect, tried when the listener's upstream leg is implicit TLS:
    /// why it failed, worded by `tls::diagnose`.
    pub implicit: Option<Result<(), String>>,
}

/// Why `AUTH TLS` did not give a TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The server's reply to `AUTH TLS`, its first line.
    Refused(String),
    /// The handshake after `234` failed, worded by `tls::diagnose`.
    Handshake(String),
}

impl Observed {
    /// Whether `FEAT` listed `feature` (`AUTH TLS`, `EPSV`, `HOST`), case-insensitively.
    pub fn offers(&self, feature: &str) -> bool {
        self.features.iter().any(|f| {
            let mut words = f.split_ascii_whitespace();
            let name = words.next().unwrap_or("");
            match feature.split_once(' ') {
                // `AUTH TLS` is the command with its argument: vsftpd lists `AUTH TLS`,
                // others `AUTH TLS;SSL` or `AUTH SSL TLS`.
                Some((cmd, arg)) => {
                    name.eq_ignore_ascii_case(cmd)
                        && words.any(|w| w.split(';').any(|a| a.eq_ignore_ascii_case(arg)))
                }
                None => name.eq_ignore_ascii_case(feature),
            }
        })
    }
}

/// The features worth naming when they are there: what the proxy's settings depend on.
const NOTABLE: [&str; 9] = [
    "AUTH TLS",
    "EPSV",
    "EPRT",
    "HOST",
    "MLST",
    "REST STREAM",
    "SIZE",
    "MDTM",
    "HASH",
];

/// One line of what the server offers: its greeting and the notable features.
pub fn summary(o: &Observed) -> String {
    let greeting = match &o.greeting {
        Some(Ok(line)) => line.clone(),
        Some(Err(why)) => format!("no greeting ({why})"),
        None => "not asked".into(),
    };
    let offered: Vec<&str> = NOTABLE.into_iter().filter(|f| o.offers(f)).collect();
    let features = if o.features.is_empty() {
        "FEAT lists nothing".to_string()
    } else if offered.is_empty() {
        "FEAT lists none of AUTH TLS, EPSV, HOST, MLST, HASH".into()
    } else {
        format!("FEAT: {}", offered.join(", "))
    };
    let tls = match (&o.implicit, &o.explicit) {
        (Some(Ok(())), _) => "; implicit TLS: ok",
        (_, Some(Ok(()))) => "; TLS after AUTH TLS: ok",
        _ => "",
    };
    format!("{greeting}; {features}{tls}")
}

/// A problem the probe found: what happens to clients, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What stands between clients and this server, for a listener whose upstream leg
/// follows `plan`.
pub fn problems(plan: UpstreamPlan, o: &Observed) -> Vec<Problem> {
    let mut found = Vec::new();
    let mut say = |s: String| found.push(Problem(s));
    match &o.greeting {
        Some(Err(why)) if o.implicit.is_none() => say(format!("unreachable: {why}")),
        Some(Ok(line)) if !line.starts_with("220") => say(format!(
            "the server greets with `{line}`, not 220: sessions fail until it accepts them"
        )),
        _ => {}
    }
    if plan == UpstreamPlan::Implicit
        && let Some(Err(why)) = &o.implicit
    {
        // The plain greeting read after a failed handshake tells which setting fits.
        let fix = if !why.starts_with(PLAINTEXT) {
            String::new()
        } else if o.offers("AUTH TLS") {
            "; its FEAT lists AUTH TLS: set `tls.upstream.mode: explicit`".into()
        } else {
            "; it offers no AUTH TLS either: set `tls.upstream.mode: off` (clients keep TLS with the proxy)".into()
        };
        let mode =
            "implicit TLS (`tls.upstream.mode: implicit`, or `mirror` behind an implicit listener)";
        say(format!(
            "this listener connects with {mode}, and {why}{fix}"
        ));
    }
    match &o.explicit {
        Some(Err(TlsRefusal::Refused(reply))) => {
            let when = match plan {
                UpstreamPlan::WithClient => {
                    "clients that ask for TLS get 534 (`tls.upstream.mode: mirror` sends their AUTH TLS on)"
                }
                _ => "every session fails (`tls.upstream.mode: explicit` sends AUTH TLS first)",
            };
            say(format!(
                "the server refused AUTH TLS (`{reply}`), so {when}; {NO_AUTH_TLS_FIX}"
            ));
        }
        Some(Err(TlsRefusal::Handshake(why))) => {
            say(format!("AUTH TLS was accepted, then {why}"));
        }
        _ => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeted(features: &[&str]) -> Observed {
        Observed {
            greeting: Some(Ok("220 (vsFTPd 3.0.3)".into())),
            features: features.iter().map(|f| f.to_string()).collect(),
            ..Observed::default()
        }
    }

    #[test]
    fn features_are_matched_as_servers_write_them() {
        let o = greeted(&["AUTH TLS", "EPSV", "MLST type*;size*;", "HASH SHA-256*;MD5"]);
        assert!(o.offers("AUTH TLS") && o.offers("epsv") && o.offers("MLST") && o.offers("HASH"));
        assert!(!o.offers("HOST") && !o.offers("AUTH SSL"));
        assert!(greeted(&["AUTH TLS;SSL"]).offers("AUTH TLS"));
        assert!(greeted(&["AUTH SSL TLS"]).offers("AUTH TLS"));
        assert_eq!(
            summary(&o),
            "220 (vsFTPd 3.0.3); FEAT: AUTH TLS, EPSV, MLST, HASH"
        );
    }

    #[test]
    fn a_plain_server_behind_a_tls_listener_gets_mode_off() {
        // Explicit clients mirrored: the server refuses AUTH.
        let mut o = greeted(&["EPSV", "SIZE"]);
        o.explicit = Some(Err(TlsRefusal::Refused("500 Unknown command.".into())));
        let p = problems(UpstreamPlan::WithClient, &o);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].0.contains("clients that ask for TLS get 534"), "{p:?}");
        assert!(p[0].0.contains("set `tls.upstream.mode: off`"), "{p:?}");
        let p = problems(UpstreamPlan::AfterGreeting, &o);
        assert!(p[0].0.contains("every session fails"), "{p:?}");
        // Implicit: the ClientHello got a greeting in clear.
        let mut o = greeted(&["EPSV"]);
        o.implicit = Some(Err(format!("{PLAINTEXT} (corrupt message)")));
        let p = problems(UpstreamPlan::Implicit, &o);
        assert!(p[0].0.contains("set `tls.upstream.mode: off`"), "{p:?}");
        o.features.push("AUTH TLS".into());
        let p = problems(UpstreamPlan::Implicit, &o);
        assert!(
            p[0].0.contains("set `tls.upstream.mode: explicit`"),
            "{p:?}"
        );
    }

    #[test]
    fn a_server_that_fits_has_no_problem() {
        let mut o = greeted(&["AUTH TLS", "EPSV"]);
        assert!(problems(UpstreamPlan::Plain, &o).is_empty());
        o.explicit = Some(Ok(()));
        assert!(problems(UpstreamPlan::WithClient, &o).is_empty());
        assert!(summary(&o).ends_with("TLS after AUTH TLS: ok"));
    }

    #[test]
    fn unreachable_and_unwelcoming_servers_are_named() {
        let o = Observed {
            greeting: Some(Err("connect: Connection refused".into())),
            ..Observed::default()
        };
        let p = problems(UpstreamPlan::Plain, &o);
        assert_eq!(
            p,
            vec![Problem("unreachable: connect: Connection refused".into())]
        );
        let o = Observed {
            greeting: Some(Ok("421 Too many users".into())),
            ..Observed::default()
        };
        assert!(problems(UpstreamPlan::Plain, &o)[0].0.contains("not 220"));
        let mut o = greeted(&["AUTH TLS"]);
        o.explicit = Some(Err(TlsRefusal::Handshake(
            "the server's certificate is not trusted (UnknownIssuer); set `tls.upstream.ca`".into(),
        )));
        assert!(
            problems(UpstreamPlan::AfterGreeting, &o)[0]
                .0
                .contains("UnknownIssuer")
        );
    }
}
