//! The console at `GET /`: one HTML page, rendered with what runs now (so it says
//! something without JavaScript too), whose script (`console/console.js`, no library, no
//! build step) polls the API once a second: listeners after reloads, pools and their
//! health, sessions with their running transfer (and a button to end one), FXP jobs
//! with live progress (and cancel), a form to order a copy, the edge defense's bans (and
//! a button to lift one). The API's token rules hold:
//! the page asks for `admin.token` when the API answers 401 and keeps it for the tab.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AdminState;

const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// `GET /`.
pub(super) async fn page(State(state): State<AdminState>) -> impl IntoResponse {
    let open = state.sessions.count_by_listener();
    let rows: String = state
        .listeners
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|l| {
            let tls = l.tls.as_ref().map_or("off".to_string(), |t| {
                format!("client {}, server {}", t.client.as_str(), t.upstream.as_str())
            });
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>\n",
                html(&l.name),
                html(&l.bind),
                l.mode,
                l.data,
                html(&l.upstream),
                html(&tls),
                open.get(&l.name).copied().unwrap_or(0),
            )
        })
        .collect();
    let status = if state.draining.load(Ordering::Relaxed) {
        "draining (shutting down)"
    } else {
        "serving"
    };
    let body = format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>fxprelay console</title>
<style>{STYLE}</style></head>
<body>
<span id="status" class="muted">loading</span>
<h1>fxprelay {version}</h1>
<p class="muted">commit {commit}; <span id="serving">{status}</span>.
<a href="/metrics">/metrics</a> (Prometheus), <a href="/healthz">/healthz</a> (200 ok, 503 while draining),
<a href="/api/v1/openapi.json">the API</a>: <a href="/api/v1/listeners">/api/v1/listeners</a>,
<a href="/api/v1/sessions">/api/v1/sessions</a>, <a href="/api/v1/upstreams">/api/v1/upstreams</a>,
<a href="/api/v1/transfers">/api/v1/transfers</a>, <a href="/api/v1/bans">/api/v1/bans</a> (bearer token if admin.token is set).</p>
<div id="auth" hidden><form class="inline">The API needs the admin token (<code>admin.token</code>):
<input id="token" type="password" autocomplete="off"> <button>Use</button></form></div>
<h2>Listeners</h2>
<table id="listeners"><thead><tr><th>name</th><th>bind</th><th>mode</th><th>data</th><th>upstream</th><th>TLS</th><th>sessions</th></tr></thead>
<tbody>{rows}</tbody></table>
<table id="pools" hidden><thead><tr><th>pool of</th><th>balance</th><th>backend</th><th>state</th><th>sessions</th><th>last check</th></tr></thead><tbody></tbody></table>
<h2>Sessions</h2>
<table id="sessions"><thead><tr><th>id</th><th>listener</th><th>client</th><th>user</th><th>upstream</th><th>TLS</th><th>transfer now</th><th>finished transfers</th><th></th></tr></thead><tbody></tbody></table>
<h2>FXP transfers</h2>
<table id="transfers"><thead><tr><th>id</th><th>state</th><th>source</th><th>destination</th><th>progress</th><th>error</th><th></th></tr></thead><tbody></tbody></table>
<h2>Bans (edge defense)</h2>
<table id="bans"><thead><tr><th>address</th><th>by</th><th>left</th><th>events</th><th>listeners</th><th></th></tr></thead><tbody></tbody></table>
<form id="order" class="inline"><p>Order a copy:
<input id="source" type="text" placeholder="ftp://user:pass@source.example/path/file" required>
to <input id="destination" type="text" placeholder="ftp://user:pass@destination.example/dir/" required>
<label><input id="recursive" type="checkbox"> a tree</label> <button>Copy</button> <span id="order-result" class="muted"></span></p></form>
<script>{SCRIPT}</script>
</body></html>
"#,
        version = crate::metrics::VERSION,
        commit = crate::metrics::COMMIT,
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}

/// Escapes text for HTML (listener names and hosts come from the config file).
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
