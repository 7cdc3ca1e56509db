//! Which API requests a web browser may make: only those of pages served by the admin
//! endpoint itself. A page on another site can make the operator's browser send a
//! request to a local port without asking anyone (a form post, or `fetch` with
//! `mode: 'no-cors'` and no `Content-Type`: a CORS "simple request", no preflight); it
//! cannot read the answer, but the transfer it ordered would run.
//!
//! Browsers mark such requests: `Origin` (every cross-origin `POST`, and `DELETE`) and
//! `Sec-Fetch-Site` (every request of current browsers). A request with neither is a
//! program's (curl, scripts, Prometheus) and passes. One with either passes only when
//! the browser says it is same-origin (or typed by the user) and it names this endpoint
//! by its address (`Host`, and `Origin` equal to `http://` and that `Host`): a DNS name
//! is refused, since DNS rebinding can point another site's name at this address and
//! make its pages "same-origin". Pure: the headers and the connection's local address in,
//! a verdict out.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, header};

/// The header values quoted in refusals are cut to this many bytes.
const QUOTE_MAX: usize = 100;

/// Why a request is taken for another site's page's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossOrigin {
    #[error(
        "the browser says a page of another site sent this request (Sec-Fetch-Site: {0}); the API takes requests from programs such as curl, or from pages of this endpoint"
    )]
    FetchSite(String),
    #[error(
        "a browser sent this request with Host: {0}, not this endpoint's address; pages must reach the API by its IP address (or localhost), not by a name another site's DNS could point here"
    )]
    Host(String),
    #[error(
        "a page of another origin sent this request (Origin: {origin}, this endpoint is {own}); the API takes requests from programs such as curl, or from pages of this endpoint"
    )]
    Origin { origin: String, own: String },
}

/// `Ok` for a program's request or one from a page of this endpoint, reached on `local`
/// (the local address of the connection the request came on).
pub fn check(headers: &HeaderMap, local: SocketAddr) -> Result<(), CrossOrigin> {
    let origin = headers.get(header::ORIGIN);
    let site = headers.get("sec-fetch-site");
    if origin.is_none() && site.is_none() {
        return Ok(());
    }
    if let Some(site) = site {
        let site = quote(site);
        // `none`: the user typed the address or opened a bookmark.
        if !(site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none")) {
            return Err(CrossOrigin::FetchSite(site));
        }
    }
    let host = headers.get(header::HOST).map(quote).unwrap_or_default();
    if !names_this_endpoint(&host, local) {
        return Err(CrossOrigin::Host(host));
    }
    if let Some(origin) = origin {
        let (origin, own) = (quote(origin), format!("http://{host}"));
        if !origin.eq_ignore_ascii_case(&own) {
            return Err(CrossOrigin::Origin { origin, own });
        }
    }
    Ok(())
}

/// Whether `host` (`ip:port`, `[v6]:port`, `localhost:port`; port 80 may be left out)
/// names `local`.
fn names_this_endpoint(host: &str, local: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((name, port))
            if !port.contains(']') && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, Some(80)),
    };
    if port != Some(local.port()) {
        return false;
    }
    let ip = local.ip().to_canonical();
    if name.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback();
    }
    let literal = name.trim_start_matches('[').trim_end_matches(']');
    literal
        .parse::<IpAddr>()
        .is_ok_and(|named| named.to_canonical() == ip)
}

/// A header's text for comparing and quoting: bounded, and `?` for bytes that are not
/// visible ASCII.
fn quote(value: &HeaderValue) -> String {
    value
        .as_bytes()
        .iter()
        .take(QUOTE_MAX)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    axum::http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    const LOCAL: &str = "127.0.0.1:9464";

    fn verdict(pairs: &[(&'static str, &str)]) -> Result<(), CrossOrigin> {
        check(&headers(pairs), LOCAL.parse().unwrap())
    }

    #[test]
    fn programs_pass_whatever_host_they_name() {
        assert_eq!(verdict(&[]), Ok(()));
        assert_eq!(verdict(&[("host", "proxy.example:9464")]), Ok(()));
    }

    /// What `fetch(url, {method: 'POST', mode: 'no-cors', body})` on another site sends.
    #[test]
    fn another_sites_page_is_refused() {
        let e = verdict(&[
            ("host", LOCAL),
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ])
        .unwrap_err();
        assert_eq!(e, CrossOrigin::FetchSite("cross-site".into()));
        // A sibling subdomain is not this endpoint either; nor a page without the header
        // (older browsers) whose Origin is another's, or `null` (sandboxes, files).
        assert!(verdict(&[("host", LOCAL), ("sec-fetch-site", "same-site")]).is_err());
        for origin in ["http://evil.example", "null", "https://127.0.0.1:9464"] {
            let e = verdict(&[("host", LOCAL), ("origin", origin)]).unwrap_err();
            assert!(matches!(e, CrossOrigin::Origin { .. }), "{origin}: {e}");
        }
    }

    /// DNS rebinding: the browser thinks the page and the API share an origin.
    #[test]
    fn a_rebound_name_is_refused() {
        let e = verdict(&[
            ("host", "evil.example:9464"),
            ("origin", "http://evil.example:9464"),
            ("sec-fetch-site", "same-origin"),
        ])
        .unwrap_err();
        assert_eq!(e, CrossOrigin::Host("evil.example:9464".into()));
        assert!(e.to_string().contains("not this endpoint's address"), "{e}");
    }

    #[test]
    fn pages_of_this_endpoint_pass() {
        for (host, origin) in [
            (LOCAL, "http://127.0.0.1:9464"),
            ("localhost:9464", "http://LOCALHOST:9464"),
        ] {
            let same = [
                ("host", host),
                ("origin", origin),
                ("sec-fetch-site", "same-origin"),
            ];
            assert_eq!(verdict(&same), Ok(()), "{host}");
        }
        // Typed into the address bar: no Origin on a GET.
        assert_eq!(
            verdict(&[("host", LOCAL), ("sec-fetch-site", "none")]),
            Ok(())
        );
        // Another port of the same host is another origin.
        assert!(verdict(&[("host", "127.0.0.1:9465"), ("sec-fetch-site", "none")]).is_err());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let h = headers(&[("host", "[::1]"), ("origin", "http://[::1]")]);
        assert_eq!(check(&h, v6), Ok(()));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9464".parse().unwrap();
        let h = headers(&[("host", LOCAL), ("sec-fetch-site", "same-origin")]);
        assert_eq!(check(&h, mapped), Ok(()));
    }
}
