//! The admin HTTP listener: `GET /metrics` (Prometheus text format), `GET /healthz`, and
//! the FXP API: `POST`/`GET /api/v1/transfers`, `GET`/`DELETE /api/v1/transfers/{id}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fxp::jobs::{self, Jobs, SubmitError};

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Option<PrometheusHandle>,
    /// Set once shutdown starts, so load balancers stop sending new clients.
    pub draining: Arc<AtomicBool>,
    /// FXP transfers ordered over the API.
    pub jobs: Jobs,
    /// `admin.token`: required as `Authorization: Bearer ...` on `/api/...`. A reload
    /// replaces it.
    pub token: Arc<RwLock<Option<Arc<str>>>>,
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    if let Some(handle) = state.metrics.clone() {
        // Histograms and idle series need periodic upkeep when nothing scrapes.
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
    }
    let api = Router::new()
        .route(
            "/api/v1/transfers",
            get(list_transfers).post(submit_transfer),
        )
        .route(
            "/api/v1/transfers/{id}",
            get(get_transfer).delete(cancel_transfer),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(api)
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|h| {
            crate::metrics::collect_process();
            h.render()
        })
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Rejects API calls without the configured bearer token (none configured: open).
async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let token = state
        .token
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(token) = token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token.as_ref()) {
        next.run(req).await
    } else {
        let body = Json(json!({"error": "missing or wrong bearer token (admin.token)"}));
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            body,
        )
            .into_response()
    }
}

/// Where to reach an admin endpoint bound to `bind`: a wildcard address is asked on
/// loopback of the same family.
pub fn reachable(bind: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bind.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bind.port()).into(),
        _ => bind,
    }
}

/// `GET /healthz` on `addr`, blocking, within `timeout`: the HTTP status. For
/// `fxprelay healthcheck`, which a distroless image (no curl) runs as its health check;
/// one request line and a status line are all it needs of HTTP.
pub fn probe_health(addr: std::net::SocketAddr, timeout: Duration) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET /healthz HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: fxprelay-healthcheck\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn submit_transfer(
    State(state): State<AdminState>,
    body: Result<Json<jobs::Request>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match state.jobs.submit(req) {
        Ok(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Err(e @ SubmitError::BadRequest { .. }) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ SubmitError::Forbidden(_)) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e @ SubmitError::TooMany(_)) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
    }
}

async fn list_transfers(State(state): State<AdminState>) -> Response {
    Json(json!({"transfers": state.jobs.list()})).into_response()
}

async fn get_transfer(State(state): State<AdminState>, Path(id): Path<u64>) -> Response {
    match state.jobs.get(id) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no transfer {id}")),
    }
}

async fn cancel_transfer(State(state): State<AdminState>, Path(id): Path<u64>) -> Response {
    match state.jobs.cancel(id) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no transfer {id}")),
    }
}
