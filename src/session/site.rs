//! `SITE FXP` inside a proxied session: a client logged in to server A through the proxy
//! orders a server-to-server copy to or from server B with a raw command, which any
//! client can send:
//!
//! - `SITE FXP TO ftp://user:pass@B/dir/` chooses B (it must pass `fxp.allow`);
//! - `SITE FXP PUT <path-on-A> [<path-on-B>]` copies A to B, `SITE FXP GET <path-on-B>
//!   [<path-on-A>]` B to A (paths relative to the login directories);
//! - `SITE FXP STATUS` shows the destination and the last result.
//!
//! The proxy logs in to A again with the credentials the client used (kept in memory for
//! the session only, never logged), and runs the same engine as the CLI and the API.

use std::sync::Arc;

use tracing::{info, warn};

use super::Session;
use crate::fxp::engine::{self, Options};
use crate::fxp::url::FtpUrl;
use crate::net::AllowList;
use crate::proto::line::trim_eol;
use crate::proto::reply::reply_line;

/// Whether `SITE` arguments are the proxy's own `SITE FXP` (which carry passwords in URLs).
pub(super) fn is_site_fxp(args: &[u8]) -> bool {
    let args = args.trim_ascii_start();
    args.get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"FXP"))
        && args.get(3).is_none_or(|b| b.is_ascii_whitespace())
}

/// The `SITE FXP` state of one session.
#[derive(Default)]
pub(super) struct SiteFxp {
    /// The user name and password the client logged in to A with.
    pub user: Option<String>,
    pub pass: Option<String>,
    destination: Option<FtpUrl>,
    last: Option<String>,
}

/// The lines `HELP` and `FEAT` gain, so clients can discover the commands.
pub(super) const HELP_LINE: &str =
    "SITE FXP TO <ftp-url> | PUT <path> [<dest-path>] | GET <path> [<dest-path>] | STATUS";

impl Session<'_> {
    /// Handles `SITE FXP ...` (`args` after `SITE`); `false` if it is another SITE command.
    pub(super) async fn on_site(&mut self, args: &[u8]) -> anyhow::Result<bool> {
        if !is_site_fxp(args) {
            return Ok(false);
        }
        let args = String::from_utf8_lossy(trim_eol(args)).trim().to_string();
        let mut words = args.split_whitespace().skip(1);
        let sub = words.next().unwrap_or("").to_ascii_uppercase();
        let rest: Vec<&str> = words.collect();
        let reply = match (sub.as_str(), rest.as_slice()) {
            ("TO", [url]) => self.site_to(url),
            ("PUT", [a, b @ ..]) if b.len() <= 1 => {
                self.site_copy(true, a, b.first().copied()).await
            }
            ("GET", [b, a @ ..]) if a.len() <= 1 => {
                self.site_copy(false, b, a.first().copied()).await
            }
            ("STATUS", []) => self.site_status(),
            _ => reply_line(501, &format!("Usage: {HELP_LINE}")),
        };
        self.client_w.write_all(&reply).await?;
        Ok(true)
    }

    fn site_to(&mut self, url: &str) -> Vec<u8> {
        match FtpUrl::parse(url) {
            Ok(u) => {
                let text = format!("FXP destination set to {u}.");
                self.site.destination = Some(u);
                reply_line(200, &text)
            }
            Err(e) => reply_line(501, &format!("Not an FTP URL: {e}.")),
        }
    }

    fn site_status(&self) -> Vec<u8> {
        let dest = self
            .site
            .destination
            .as_ref()
            .map_or("none (SITE FXP TO <url>)".to_string(), |d| d.to_string());
        let last = self
            .site
            .last
            .clone()
            .unwrap_or_else(|| "no copy yet".into());
        format!("211-FXP status\r\n Destination: {dest}\r\n Last copy: {last}\r\n211 End\r\n")
            .into_bytes()
    }

    /// Runs one copy: `put` is A to B, else B to A.
    async fn site_copy(&mut self, put: bool, from: &str, to: Option<&str>) -> Vec<u8> {
        let Some(b) = self.site.destination.clone() else {
            return reply_line(
                503,
                "Choose the other server first: SITE FXP TO ftp://user:pass@host/dir/",
            );
        };
        let (Some(user), Some(pass)) = (self.site.user.clone(), self.site.pass.clone()) else {
            return reply_line(530, "Log in first.");
        };
        let a = FtpUrl {
            user,
            password: Some(pass),
            host: self.addrs.upstream.to_string(),
            port: self.upstream_port,
            path: Vec::new(),
        };
        let (src_base, dst_base) = if put { (&a, &b) } else { (&b, &a) };
        let src = src_base.join(from.as_bytes());
        let dst = match to {
            Some(p) => dst_base.join(p.as_bytes()),
            None => dst_base.clone(),
        };
        let opts = Options {
            allow: Some(self.fxp_allow()),
            ..Options::default()
        };
        let _ = self
            .client_w
            .write_all(&reply_line(150, &format!("Copying {src} to {dst}.")))
            .await;
        info!(source = %src, destination = %dst, "SITE FXP copy");
        let (reply, last) = match engine::transfer(&src, &dst, &opts).await {
            Ok(r) => {
                let text = format!(
                    "FXP copy done: {} bytes by {} in {:.2} s.",
                    r.bytes,
                    r.method.as_str(),
                    r.duration.as_secs_f64()
                );
                (reply_line(226, &text), text)
            }
            Err(e) => {
                warn!(error = %e, "SITE FXP copy failed");
                // The servers' own codes (in the text) describe their sessions, not the
                // client's: a 421 or 530 from B would make the client think it lost A.
                let code = match e.code() {
                    Some(500..=599) => 550,
                    _ => 451,
                };
                let text = format!("FXP copy failed: {e}");
                (reply_line(code, &text), text)
            }
        };
        self.site.last = Some(last);
        reply
    }

    /// The engine may reach the session's own server A and what `fxp.allow` lists (a
    /// host named there may resolve anywhere, for its own connection).
    fn fxp_allow(&self) -> Arc<AllowList> {
        Arc::new(self.ctx.fxp_allow.with_address(self.addrs.upstream))
    }
}

/// Adds `line` to a (possibly single-line) reply, before its last line, so `FEAT` and
/// `HELP` answers list the proxy's own commands.
pub(super) fn augment(raw: &[u8], code: u16, line: &str) -> Vec<u8> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(raw.len() + line.len() + 8);
    if last_start == 0 {
        out.extend_from_slice(format!("{code}-{line}\r\n").as_bytes());
    } else {
        out.extend_from_slice(&raw[..last_start]);
        out.extend_from_slice(format!(" {line}\r\n").as_bytes());
    }
    out.extend_from_slice(&raw[last_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::{augment, is_site_fxp};

    #[test]
    fn augments_single_and_multi_line_replies() {
        assert_eq!(
            augment(b"214 Help OK.\r\n", 214, "SITE FXP"),
            b"214-SITE FXP\r\n214 Help OK.\r\n"
        );
        assert_eq!(
            augment(b"211-Features:\r\n EPSV\r\n211 End\r\n", 211, "SITE FXP"),
            b"211-Features:\r\n EPSV\r\n SITE FXP\r\n211 End\r\n"
        );
    }

    #[test]
    fn site_fxp_is_recognised_by_its_first_word() {
        assert!(is_site_fxp(b"FXP TO ftp://u:p@h/\r\n"));
        assert!(is_site_fxp(b" fxp status"));
        assert!(is_site_fxp(b"FXP"));
        assert!(!is_site_fxp(b"FXPX TO x"));
        assert!(!is_site_fxp(b"CHMOD 644 FXP"));
        assert!(!is_site_fxp(b""));
    }
}
