//! The admin HTTP listener: `GET /` (the console: a live page for people), `GET /metrics`
//! (Prometheus text format), `GET /healthz`, the open sessions (`GET /api/v1/sessions`)
//! and the FXP API: `POST`/`GET /api/v1/transfers`, `GET`/`DELETE /api/v1/transfers/{id}`;
//! the edge defense's bans: `GET`/`POST /api/v1/bans`, `DELETE /api/v1/bans/{address}`.
//!
//! - [`bans`]: the ban endpoints.
//!
//! - [`console`]: the page at `/`, which polls the API below.
//! - [`conns`]: the connection slots; idle connections make room, so `/healthz` and
//!   `/metrics` stay reachable however many sockets someone holds open.
//! - [`origin`]: which API requests a browser may make (pages of this endpoint only).
//! - [`status`]: `fxprelay status`, the console's tables in a terminal (a client of this
//!   API).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

mod bans;
pub mod conns;
mod console;
pub mod origin;
pub mod status;

use crate::config::AdminLimits;
use crate::config::{DataMode, ListenerConfig, Mode};
use crate::fxp::jobs::{self, JobId, Jobs, SubmitError};
use crate::metrics::AdminRejection;

/// The OpenAPI 3.1 description of `/api/v1/...`, served at `/api/v1/openapi.json`; a test
/// checks the real responses against its schemas.
pub const OPENAPI: &str = include_str!("../openapi.json");
use crate::session::registry::Sessions;

/// Largest API request body: two URLs of at most [`jobs::MAX_URL`] and the options.
pub const API_BODY_LIMIT: usize = 3 * jobs::MAX_URL;

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
    /// The open sessions of every listener.
    pub sessions: Sessions,
    /// The edge defense's ban tables (`/api/v1/bans`).
    pub bans: crate::bans::Bans,
    /// The listeners as configured now (`GET /api/v1/listeners`, the console); a reload
    /// replaces the entries of the listeners it changes.
    pub listeners: Listeners,
    /// The pools of upstreams, per listener (`GET /api/v1/upstreams`); a reload replaces
    /// them.
    pub pools: Pools,
    /// The edge's agent links (`GET /api/v1/agents`), when `agents:` is configured.
    pub agents: Option<Arc<crate::agent::Hub>>,
}

/// The running pools by listener name.
pub type Pools = Arc<RwLock<std::collections::BTreeMap<String, Arc<crate::pool::Pool>>>>;

/// The listeners as the API shows them, in the configuration's order.
pub type Listeners = Arc<RwLock<Vec<ListenerSummary>>>;

/// One listener as the API and the console show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerSummary {
    pub name: String,
    pub bind: String,
    pub mode: &'static str,
    pub data: &'static str,
    pub upstream: String,
    /// The `tls:` modes of both legs and the certificate clients are shown.
    pub tls: Option<TlsSummary>,
}

/// A listener's TLS as the console shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsSummary {
    pub client: crate::tls::ClientTlsMode,
    pub upstream: crate::tls::UpstreamTlsMode,
    pub certificate: Option<crate::tls::CertificateInfo>,
}

impl ListenerSummary {
    /// `bound` is the address the socket got (the config may say port 0); `tls` the
    /// listener's material as read.
    pub fn of(
        cfg: &ListenerConfig,
        bound: Option<std::net::SocketAddr>,
        tls: Option<&crate::tls::ListenerTls>,
    ) -> Self {
        ListenerSummary {
            name: cfg.name.clone(),
            bind: bound.unwrap_or(cfg.bind).to_string(),
            mode: match cfg.mode {
                Mode::Reverse => "reverse",
                Mode::Forward => "forward",
                Mode::Transparent => "transparent",
            },
            data: match cfg.data {
                DataMode::Relay => "relay",
                DataMode::Passthrough => "passthrough",
            },
            upstream: cfg.upstream_description(),
            tls: cfg.tls.as_ref().map(|t| TlsSummary {
                client: t.client.mode,
                upstream: t.upstream.mode,
                certificate: tls.and_then(|m| m.certificate.clone()),
            }),
        }
    }
}

/// Serves the admin endpoints until `stop` is cancelled, within `limits`: at most
/// `max_connections` open (`max_connections_per_ip` from one address; idle ones make
/// room, see [`conns`]), each request's headers within `header_read_timeout` (which also
/// closes idle keep-alive connections), each request within `request_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    limits: AdminLimits,
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
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", axum::routing::delete(end_session))
        .route("/api/v1/listeners", get(list_listeners))
        .route("/api/v1/upstreams", get(list_upstreams))
        .route("/api/v1/agents", get(list_agents))
        .route("/api/v1/bans", get(bans::list).post(bans::ban))
        .route("/api/v1/bans/{address}", delete(bans::unban))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Outside the token check: a web page's request is refused before anything else.
        .route_layer(middleware::from_fn(same_origin))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    let app = Router::new()
        .route("/", get(console::page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        // Open like /metrics: it describes the API, it reveals nothing of this proxy.
        .route("/api/v1/openapi.json", get(openapi))
        .merge(api)
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            bounded,
        ));
    serve_bounded(listener, app, limits, stop).await;
    Ok(())
}

/// The local address a request came in on (what [`origin`] compares `Host` with).
#[derive(Debug, Clone, Copy)]
struct LocalAddr(std::net::SocketAddr);

/// The address a request came from (the job lines name who ordered a transfer).
#[derive(Debug, Clone, Copy)]
struct PeerAddr(std::net::SocketAddr);

/// The accept loop: one task per connection, a slot each (see [`conns`]), closed on
/// `stop` (gracefully: a request in flight is answered first), or at once when an idle
/// connection must make room.
async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    stop: CancellationToken,
) {
    use hyper::service::Service as _;
    let slots = Arc::new(Mutex::new(conns::Slots::new(
        limits.max_connections,
        limits.max_connections_per_ip,
    )));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of fds, most likely: give the connections in flight a moment.
                    warn!(%error, "admin listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some((id, close)) = admit(&slots, peer, &limits) else {
            continue;
        };
        let local = stream.local_addr().ok();
        let inner = TowerToHyperService::new(app.clone());
        let busy_slots = slots.clone();
        // Marks the connection busy while a request is served, so it is not closed to
        // make room in the middle of one.
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            if let Some(local) = local {
                req.extensions_mut().insert(LocalAddr(local));
            }
            req.extensions_mut().insert(PeerAddr(peer));
            let busy = Busy::start(&busy_slots, id);
            let answer = inner.call(req);
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        });
        let stop = stop.clone();
        let released = Release(slots.clone(), id);
        connections.spawn(async move {
            let _slot = released;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // Idle by construction: dropping it closes the socket.
                _ = close.cancelled() => return,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "admin connection ended");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// A slot for a new connection from `peer` and what closes it, or `None` when every
/// connection it could replace is serving a request. Refusals and the idle connections
/// closed to make room are counted and logged.
fn admit(
    slots: &Mutex<conns::Slots>,
    peer: std::net::SocketAddr,
    limits: &AdminLimits,
) -> Option<(conns::Id, CancellationToken)> {
    let close = CancellationToken::new();
    let admitted = slots
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(peer.ip(), close.clone());
    let name = |full| match full {
        conns::Full::All => "admin.max_connections",
        conns::Full::Address => "admin.max_connections_per_ip",
    };
    match admitted {
        Ok((id, evicted)) => {
            if let Some(gone) = evicted {
                crate::metrics::admin_rejected(AdminRejection::IdleEvicted);
                warn!(peer = %gone.ip, limit = name(gone.limit), newcomer = %peer, "admin connection closed to make room: it was idle (no request being served)");
            }
            Some((id, close))
        }
        Err(full) => {
            let (reason, max) = match full {
                conns::Full::All => (AdminRejection::MaxConnections, limits.max_connections),
                conns::Full::Address => (
                    AdminRejection::MaxConnectionsPerIp,
                    limits.max_connections_per_ip,
                ),
            };
            crate::metrics::admin_rejected(reason);
            warn!(%peer, limit = name(full), max, "admin connection refused: every connection it could replace is serving a request");
            None
        }
    }
}

/// A connection's request being served; dropped when the answer is ready.
struct Busy(Arc<Mutex<conns::Slots>>, conns::Id);

impl Busy {
    fn start(slots: &Arc<Mutex<conns::Slots>>, id: conns::Id) -> Busy {
        slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_busy(id, true);
        Busy(slots.clone(), id)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_busy(self.1, false);
    }
}

/// A connection's slot, given back when its task ends.
struct Release(Arc<Mutex<conns::Slots>>, conns::Id);

impl Drop for Release {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.1);
    }
}

/// Refuses API requests a web page of another origin sent (see [`origin`]).
async fn same_origin(req: Request, next: Next) -> Response {
    // Without the connection's address (never, in practice) no browser request passes.
    let local = req
        .extensions()
        .get::<LocalAddr>()
        .map_or(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.0);
    match origin::check(req.headers(), local) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            crate::metrics::admin_rejected(AdminRejection::CrossOrigin);
            warn!(path = %req.uri().path(), method = %req.method(), reason = %why, "admin API request refused: sent by a web page");
            error(ErrorCode::CrossOrigin, format!("refused: {why}"))
        }
    }
}

/// `admin.request_timeout` over a whole request, body included.
async fn bounded(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error(
            ErrorCode::RequestTimeout,
            format!(
                "the request did not complete within admin.request_timeout ({})",
                humantime::format_duration(limit)
            ),
        ),
    }
}

/// Every pool's backends: state, sessions, last check and last error.
async fn list_upstreams(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let pools = state.pools.read().unwrap_or_else(PoisonError::into_inner);
    let list: Vec<crate::pool::PoolStatus> = pools.values().map(|p| p.status()).collect();
    Json(json!({ "pools": list }))
}

/// The connected agent links: name, address, since, version, streams opened.
async fn list_agents(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let links = state.agents.as_ref().map(|h| h.links()).unwrap_or_default();
    Json(json!({ "agents": links }))
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

async fn list_sessions(State(state): State<AdminState>) -> Response {
    Json(json!({"sessions": state.sessions.list()})).into_response()
}

/// `DELETE /api/v1/sessions/{id}`: the session's client gets `421` and both control
/// connections close; a transfer it runs is cut.
async fn end_session(
    State(state): State<AdminState>,
    id: Result<Path<u64>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(
            ErrorCode::InvalidId,
            "a session id is a number (see GET /api/v1/sessions)",
        );
    };
    if state.sessions.end(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(ErrorCode::SessionNotFound, format!("no open session {id}"))
    }
}

/// `GET /api/v1/listeners`: each listener as configured now, with its open sessions.
async fn list_listeners(State(state): State<AdminState>) -> Response {
    let open = state.sessions.count_by_listener();
    let listeners: Vec<serde_json::Value> = state
        .listeners
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|l| {
            let mut v = json!(l);
            v["sessions"] = json!(open.get(&l.name).copied().unwrap_or(0));
            v
        })
        .collect();
    Json(json!({
        "version": crate::metrics::VERSION,
        "commit": crate::metrics::COMMIT,
        "draining": state.draining.load(Ordering::Relaxed),
        "listeners": listeners,
    }))
    .into_response()
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
    } else if let Some(why) = state.jobs.store().health.down() {
        // Still 200: FTP sessions never depend on the store, so a balancer keeps
        // sending clients; the detail is for the operator.
        (
            StatusCode::OK,
            format!("ok\nstate store unreachable: {why}\n"),
        )
    } else {
        (StatusCode::OK, "ok\n".to_owned())
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
    // Constant time: how much of a guess matched must not show in the answer's timing.
    let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
    if matches {
        next.run(req).await
    } else {
        let mut response = error(
            ErrorCode::Unauthorized,
            "missing or wrong bearer token (admin.token)",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
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

/// The `code` of every API error (`{"code": ..., "error": ..., "field": ...}`): stable
/// names a program can match on; `error` is the text for a person and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not the JSON asked for (syntax, a missing or unknown field).
    InvalidJson,
    /// 400: a value is refused; `field` names it (`source`, `options.retries`, ...).
    InvalidField,
    /// 400: the query string is not understood (`limit`, `cursor`).
    InvalidQuery,
    /// 400: a transfer id that is not one (ids are UUIDs).
    InvalidId,
    /// 400: the `{address}` of `/api/v1/bans/{address}` is not an IP address.
    InvalidAddress,
    /// 401: `admin.token` is set and the request's bearer token is missing or wrong.
    Unauthorized,
    /// 403: a server outside `fxp.allow`, or the proxy itself.
    NotAllowed,
    /// 403: an option this proxy's configuration does not permit.
    OptionNotPermitted,
    /// 403: a web page of another origin sent the request (`Origin`, `Sec-Fetch-Site`).
    CrossOrigin,
    /// 403: the address is in `defense.exempt` of every listener that runs the defense.
    AddressExempt,
    /// 404: no such transfer (or it finished long ago and was forgotten).
    TransferNotFound,
    /// 404: no open session with this id (it may have ended).
    SessionNotFound,
    /// 404: no such endpoint.
    NoSuchEndpoint,
    /// 404: the address is not banned.
    BanNotFound,
    /// 405: the endpoint does not take this method.
    MethodNotAllowed,
    /// 408: the request took longer than `admin.request_timeout`.
    RequestTimeout,
    /// 409: no listener runs the edge defense, so there is no ban table to ban in.
    DefenseOff,
    /// 413: the body is larger than the API takes.
    BodyTooLarge,
    /// 415: a `Content-Type` other than `application/json`.
    UnsupportedMediaType,
    /// 429: too many transfers queued or running.
    TooManyTransfers,
    /// 503: the proxy is shutting down and starts no new transfer.
    ShuttingDown,
    /// 503: the ban table is full of bans that have not ended.
    BanTableFull,
    /// 503: the state store (`state.url`) does not answer; FTP sessions go on, and
    /// running transfers write back once it is back.
    StoreUnavailable,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode as C;
        match self {
            C::InvalidJson
            | C::InvalidField
            | C::InvalidQuery
            | C::InvalidId
            | C::InvalidAddress => StatusCode::BAD_REQUEST,
            C::Unauthorized => StatusCode::UNAUTHORIZED,
            C::NotAllowed | C::OptionNotPermitted | C::CrossOrigin | C::AddressExempt => {
                StatusCode::FORBIDDEN
            }
            C::TransferNotFound | C::SessionNotFound | C::NoSuchEndpoint | C::BanNotFound => {
                StatusCode::NOT_FOUND
            }
            C::DefenseOff => StatusCode::CONFLICT,
            C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            C::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            C::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            C::TooManyTransfers => StatusCode::TOO_MANY_REQUESTS,
            C::ShuttingDown | C::BanTableFull | C::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    error_body(code, message.into(), None)
}

fn error_body(code: ErrorCode, message: String, field: Option<&str>) -> Response {
    let mut body = json!({"code": code, "error": message});
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (code.status(), Json(body)).into_response()
}

async fn no_such_endpoint(req: Request) -> Response {
    error(
        ErrorCode::NoSuchEndpoint,
        format!(
            "no endpoint {} (see /api/v1/openapi.json)",
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {}", req.uri().path(), req.method()),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A body is JSON when it says so (`application/json`, `...+json`) or says nothing:
/// `curl -d` without `-H` would say `application/x-www-form-urlencoded`. Nothing is what
/// a web page's `fetch` with a `Blob` body says too: such requests were refused before
/// this, by their `Origin` and `Sec-Fetch-Site` ([`origin`]).
fn says_json(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let mime = text.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
    {
        return Ok(());
    }
    Err(format!(
        "Content-Type {text:?} is not JSON: send application/json (curl --json '{{...}}', \
         or -H 'Content-Type: application/json'), or no Content-Type at all"
    ))
}

/// An API request's JSON body as `T`, or the error answer: a type that is not JSON
/// (`415`), a body over the limit (`413`), JSON that does not fit `T` (`400`).
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Box<Response>> {
    let refuse = |r: Response| Box::new(r);
    says_json(headers).map_err(|why| refuse(error(ErrorCode::UnsupportedMediaType, why)))?;
    let body = body.map_err(|e| {
        refuse(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let why = format!("the request body is larger than {API_BODY_LIMIT} bytes");
            error(ErrorCode::BodyTooLarge, why)
        } else {
            error(ErrorCode::InvalidJson, e.body_text())
        })
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| refuse(error(ErrorCode::InvalidJson, format!("the body: {e}"))))
}

async fn submit_transfer(
    State(state): State<AdminState>,
    peer: Option<axum::Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: jobs::Request = match json_body(&headers, body) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    match state.jobs.submit_from(req, peer.map(|p| p.0.0)).await {
        Ok(view) => {
            let location = format!("/api/v1/transfers/{}", view.id);
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(view),
            )
                .into_response()
        }
        Err(SubmitError::BadRequest { field, message }) => error_body(
            ErrorCode::InvalidField,
            format!("{field}: {message}"),
            Some(field),
        ),
        Err(e @ SubmitError::Forbidden(_)) => error(ErrorCode::NotAllowed, e.to_string()),
        Err(e @ SubmitError::NotPermitted(_)) => {
            error(ErrorCode::OptionNotPermitted, e.to_string())
        }
        Err(e @ SubmitError::TooMany(_)) => error(ErrorCode::TooManyTransfers, e.to_string()),
        Err(e @ SubmitError::ShuttingDown(_)) => error(ErrorCode::ShuttingDown, e.to_string()),
        Err(e @ SubmitError::Unavailable(_)) => error(ErrorCode::StoreUnavailable, e.to_string()),
    }
}

/// `?limit=&cursor=`: a page of jobs, oldest first; `next_cursor` fetches the next page.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_transfers(
    State(state): State<AdminState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Response {
    let Query(page) = match page {
        Ok(p) => p,
        Err(e) => return error(ErrorCode::InvalidQuery, e.body_text()),
    };
    let limit = page.limit.unwrap_or(jobs::PAGE_DEFAULT);
    if !(1..=jobs::PAGE_MAX).contains(&limit) {
        let max = jobs::PAGE_MAX;
        return error(
            ErrorCode::InvalidQuery,
            format!("limit: from 1 to {max}, not {limit}"),
        );
    }
    let after = match page.cursor.as_deref().map(str::parse::<JobId>).transpose() {
        Ok(after) => after,
        Err(e) => return error(ErrorCode::InvalidQuery, format!("cursor: {e}")),
    };
    let (transfers, next) = match state.jobs.list(after, limit).await {
        Ok(page) => page,
        Err(e) => return store_down(&e),
    };
    Json(json!({"transfers": transfers, "next_cursor": next})).into_response()
}

/// The `{id}` of `/api/v1/transfers/{id}`, or why it is not one.
fn transfer_id(id: Result<Path<String>, PathRejection>) -> Result<JobId, String> {
    let Path(text) = id.map_err(|e| format!("transfer id: {}", e.body_text()))?;
    text.parse().map_err(|e: jobs::BadJobId| e.to_string())
}

async fn get_transfer(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match transfer_id(id) {
        Ok(id) => id,
        Err(why) => return error(ErrorCode::InvalidId, why),
    };
    match state.jobs.get(id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(ErrorCode::TransferNotFound, format!("no transfer {id}")),
        Err(e) => store_down(&e),
    }
}

async fn cancel_transfer(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match transfer_id(id) {
        Ok(id) => id,
        Err(why) => return error(ErrorCode::InvalidId, why),
    };
    match state.jobs.cancel(id).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => error(ErrorCode::TransferNotFound, format!("no transfer {id}")),
        Err(e) => store_down(&e),
    }
}

/// The state store did not answer a read or a cancel.
fn store_down(e: &crate::state::StoreError) -> Response {
    warn!(error = %e, "the state store did not answer an API request");
    error(ErrorCode::StoreUnavailable, e.to_string())
}
