//! `fxprelay status`: what the console shows, in a terminal. It asks a running proxy's
//! API (`/api/v1/listeners`, `/sessions`, `/upstreams`, `/transfers`) with the admin
//! token and prints one table each.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Largest answer read: a page of 1000 transfers is well under this.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why `status` has nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach the admin endpoint {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {0}", path = .1)]
    Http(String, String),
    #[error(
        "{path}: 401: the API needs admin.token (--token, FXPRELAY_ADMIN_TOKEN, or -c with the proxy's config file)"
    )]
    Unauthorized { path: String },
    #[error("no answer from {addr} within {within:?}")]
    Timeout { addr: SocketAddr, within: Duration },
}

/// Everything the console shows, as the API answered it.
pub struct Status {
    pub admin: SocketAddr,
    pub listeners: Value,
    pub pools: Value,
    pub sessions: Value,
    pub transfers: Value,
    pub bans: Value,
}

/// Asks the proxy at `admin` (with `token`, if any) within `within`.
pub async fn fetch(
    admin: SocketAddr,
    token: Option<&str>,
    within: Duration,
) -> Result<Status, StatusError> {
    let all = async {
        Ok(Status {
            admin,
            listeners: get(admin, token, "/api/v1/listeners").await?,
            pools: get(admin, token, "/api/v1/upstreams").await?,
            sessions: get(admin, token, "/api/v1/sessions").await?,
            transfers: get(admin, token, "/api/v1/transfers?limit=1000").await?,
            bans: get(admin, token, "/api/v1/bans").await?,
        })
    };
    tokio::time::timeout(within, all)
        .await
        .unwrap_or(Err(StatusError::Timeout {
            addr: admin,
            within,
        }))
}

/// The sockets the proxy answering at `admin` holds: its admin endpoint and its
/// listeners' binds (`GET /api/v1/listeners`), for `check --bind` next to it.
pub async fn held_binds(
    admin: SocketAddr,
    token: Option<&str>,
    within: Duration,
) -> Result<Vec<SocketAddr>, StatusError> {
    let listeners = tokio::time::timeout(within, get(admin, token, "/api/v1/listeners"))
        .await
        .unwrap_or(Err(StatusError::Timeout {
            addr: admin,
            within,
        }))?;
    let binds = list(&listeners["listeners"]).filter_map(|l| l["bind"].as_str()?.parse().ok());
    Ok(std::iter::once(admin).chain(binds).collect())
}

async fn get(addr: SocketAddr, token: Option<&str>, path: &str) -> Result<Value, StatusError> {
    let http = |e: &dyn std::fmt::Display| StatusError::Http(e.to_string(), path.to_owned());
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| StatusError::Connect { addr, source })?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header(header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Body::empty()).map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status();
    let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_BODY)
        .await
        .map_err(|e| http(&e))?;
    if status == StatusCode::UNAUTHORIZED {
        return Err(StatusError::Unauthorized {
            path: path.to_owned(),
        });
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| http(&e))?;
    if !status.is_success() {
        let why = value["error"].as_str().unwrap_or("");
        return Err(http(&format!("{status}: {why}")));
    }
    Ok(value)
}

/// The tables, for a terminal.
pub fn render(s: &Status, now_unix: f64) -> String {
    let mut out = String::new();
    let l = &s.listeners;
    let serving = if l["draining"].as_bool() == Some(true) {
        "draining (shutting down)"
    } else {
        "serving"
    };
    let _ = writeln!(
        out,
        "fxprelay {} (commit {}) at {}: {serving}",
        text(&l["version"]),
        text(&l["commit"]),
        s.admin
    );
    let rows = list(&l["listeners"]).map(|l| {
        let tls = match l["tls"].as_object() {
            None => "off".to_string(),
            Some(t) => {
                let mut tls = format!("{}/{}", text(&t["client"]), text(&t["upstream"]));
                if let Some(after) = t["certificate"]["not_after"].as_f64() {
                    let days = ((after - now_unix) / 86400.0).floor();
                    let _ = write!(tls, ", cert {days} days");
                }
                tls
            }
        };
        vec![
            text(&l["name"]),
            text(&l["bind"]),
            text(&l["mode"]),
            text(&l["data"]),
            text(&l["upstream"]),
            tls,
            text(&l["sessions"]),
        ]
    });
    table(
        &mut out,
        "LISTENERS",
        &[
            "NAME", "BIND", "MODE", "DATA", "UPSTREAM", "TLS", "SESSIONS",
        ],
        rows.collect(),
    );
    let rows = list(&s.pools["pools"]).flat_map(|p| {
        list(&p["backends"]).map(move |b| {
            vec![
                text(&p["listener"]),
                text(&b["address"]),
                text(&b["state"]),
                text(&b["sessions"]),
                text(&b["last_error"]),
            ]
        })
    });
    let pools: Vec<_> = rows.collect();
    if !pools.is_empty() {
        table(
            &mut out,
            "POOLS",
            &["LISTENER", "BACKEND", "STATE", "SESSIONS", "LAST ERROR"],
            pools,
        );
    }
    let rows = list(&s.sessions["sessions"]).map(|x| {
        let t = &x["transfer"];
        let transfer = if t.is_object() {
            let bytes = t["bytes"].as_f64().unwrap_or(0.0);
            let secs = t["seconds"].as_f64().unwrap_or(0.0);
            let rate = if secs > 0.0 {
                format!(" {}/s", size(bytes / secs))
            } else {
                String::new()
            };
            format!(
                "{} {} {}{rate}",
                text(&t["verb"]),
                text(&t["path"]),
                size(bytes)
            )
        } else {
            "idle".into()
        };
        vec![
            text(&x["id"]),
            text(&x["listener"]),
            text(&x["client"]),
            text(&x["user"]),
            text(&x["upstream"]),
            if x["tls"].as_bool() == Some(true) {
                "TLS"
            } else {
                "plain"
            }
            .into(),
            transfer,
        ]
    });
    table(
        &mut out,
        "SESSIONS",
        &[
            "ID", "LISTENER", "CLIENT", "USER", "UPSTREAM", "TLS", "TRANSFER",
        ],
        rows.collect(),
    );
    let rows = list(&s.transfers["transfers"]).map(|t| {
        let done = t["bytes_done"].as_f64().unwrap_or(0.0);
        let progress = match t["bytes_total"].as_f64() {
            Some(total) if total > 0.0 => {
                format!(
                    "{} of {} ({:.0}%)",
                    size(done),
                    size(total),
                    100.0 * done / total
                )
            }
            _ => size(done),
        };
        vec![
            text(&t["id"]),
            text(&t["state"]),
            text(&t["source"]),
            text(&t["destination"]),
            progress,
        ]
    });
    table(
        &mut out,
        "FXP TRANSFERS",
        &["ID", "STATE", "SOURCE", "DESTINATION", "PROGRESS"],
        rows.collect(),
    );
    let rows = list(&s.bans["bans"]).map(|b| {
        let events: Vec<String> = b["events"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {}", text(v)))
            .collect();
        vec![
            text(&b["address"]),
            text(&b["source"]),
            text(&b["until"]),
            events.join(", "),
        ]
    });
    table(
        &mut out,
        "BANS",
        &["ADDRESS", "BY", "UNTIL", "EVENTS"],
        rows.collect(),
    );
    out
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A value as a cell: strings without quotes, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn size(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut n, mut unit) = (n, 0);
    while n >= 1024.0 && unit < UNITS.len() - 1 {
        n /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n:.0} B"),
        _ => format!("{n:.1} {}", UNITS[unit]),
    }
}

/// `title (n)` and the rows in columns as wide as their widest cell.
fn table(out: &mut String, title: &str, head: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "\n{title} ({})", rows.len());
    if rows.is_empty() {
        return;
    }
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(
        out,
        "{}",
        line(head.iter().map(|h| h.to_string()).collect())
    );
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_tables_show_what_the_api_says() {
        let s = Status {
            admin: "127.0.0.1:9464".parse().unwrap(),
            listeners: json!({"version": "0.1.0", "commit": "abc", "draining": false, "listeners": [
                {"name": "edge", "bind": "0.0.0.0:21", "mode": "reverse", "data": "relay",
                 "upstream": "10.0.0.1:21", "sessions": 1,
                 "tls": {"client": "explicit", "upstream": "mirror",
                         "certificate": {"subject": "CN=x", "names": [], "not_after": 86400 * 10}}}]}),
            pools: json!({"pools": []}),
            sessions: json!({"sessions": [{"id": 7, "listener": "edge", "client": "192.0.2.1:5000",
                "user": "alice", "upstream": "10.0.0.1:21", "tls": true,
                "transfer": {"verb": "RETR", "path": "big.bin", "bytes": 2097152, "seconds": 2.0}}]}),
            transfers: json!({"transfers": [{"id": "0193", "state": "running", "source": "ftp://a/f",
                "destination": "ftp://b/f", "bytes_done": 512, "bytes_total": 1024}]}),
            bans: json!({"bans": [{"address": "192.0.2.9", "source": "defense",
                "until": "2026-12-05T20:00:00Z", "events": {"login_failed": 10}}]}),
        };
        let text = render(&s, 0.0);
        assert!(
            text.starts_with("fxprelay 0.1.0 (commit abc) at 127.0.0.1:9464: serving"),
            "{text}"
        );
        assert!(text.contains("explicit/mirror, cert 10 days"), "{text}");
        assert!(text.contains("RETR big.bin 2.0 MiB 1.0 MiB/s"), "{text}");
        assert!(text.contains("512 B of 1.0 KiB (50%)"), "{text}");
        assert!(!text.contains("POOLS"), "{text}");
        assert!(text.contains("SESSIONS (1)\nID  LISTENER"), "{text}");
        assert!(
            text.contains("192.0.2.9  defense  2026-12-05T20:00:00Z  login_failed 10"),
            "{text}"
        );
    }
}
