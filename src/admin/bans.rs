//! `/api/v1/bans`: the edge defense's bans, for an operator (behind the same bearer token
//! as the transfer API). `GET` lists them, `POST {"address": "...", "duration": "1h"}`
//! bans an address in every ban table, `DELETE /api/v1/bans/{address}` lets it in again
//! at once (an IPv6 network: any of its addresses, or `2001:db8:1:2::/64` URL-encoded).

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminState, ErrorCode, error, error_body, json_body};
use crate::bans::BanError;

/// The longest ban an operator may set: a year (a lasting block belongs in a firewall).
const MAX_API_BAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// `POST /api/v1/bans`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    /// An address; an IPv6 one bans its network (`ipv6_prefix`).
    address: String,
    /// `1h`, `30m`; each table's `ban` when absent.
    duration: Option<String>,
}

/// An address, or an IPv6 network written `addr/len` (its first address stands for it).
fn address(text: &str) -> Result<IpAddr, String> {
    let text = text.trim();
    let ip = text.split_once('/').map_or(text, |(ip, _)| ip);
    ip.parse()
        .map_err(|_| format!("`{text}` is not an IP address"))
}

pub(super) async fn list(State(state): State<AdminState>) -> Response {
    Json(json!({"bans": state.bans.list()})).into_response()
}

pub(super) async fn ban(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: BanRequest = match json_body(&headers, body) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let ip = match address(&req.address) {
        Ok(ip) => ip,
        Err(why) => return error_body(ErrorCode::InvalidField, why, Some("address")),
    };
    let length = match req.duration.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() && d <= MAX_API_BAN => Some(d),
        Some(_) => {
            let why = "duration: a duration above 0s and at most a year, e.g. `1h`, `30m`";
            return error_body(ErrorCode::InvalidField, why.into(), Some("duration"));
        }
    };
    match state.bans.ban(ip, length) {
        Ok(bans) => (StatusCode::CREATED, Json(json!({"bans": bans}))).into_response(),
        Err(e @ BanError::NoDefense) => error(ErrorCode::DefenseOff, e.to_string()),
        Err(e @ BanError::Exempt) => error(ErrorCode::AddressExempt, e.to_string()),
        Err(e @ BanError::Full) => error(ErrorCode::BanTableFull, e.to_string()),
    }
}

pub(super) async fn unban(
    State(state): State<AdminState>,
    text: Result<Path<String>, PathRejection>,
) -> Response {
    let ip = match text
        .map_err(|e| e.body_text())
        .and_then(|Path(t)| address(&t))
    {
        Ok(ip) => ip,
        Err(why) => return error(ErrorCode::InvalidAddress, why),
    };
    let lifted = state.bans.unban(ip);
    if lifted.is_empty() {
        return error(ErrorCode::BanNotFound, format!("{ip} is not banned"));
    }
    Json(json!({"lifted": lifted})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks() {
        assert_eq!(address("192.0.2.7"), Ok("192.0.2.7".parse().unwrap()));
        assert_eq!(
            address("2001:db8:1:2::/64"),
            Ok("2001:db8:1:2::".parse().unwrap())
        );
        assert!(address("example.org").is_err());
        assert!(address("").is_err());
    }
}
