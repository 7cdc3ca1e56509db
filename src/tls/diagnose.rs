//! Why a TLS handshake with an FTP server failed, in an operator's words, with the
//! setting that fixes it: the sessions' log lines and `fxprelay check --probe` say the
//! same. The usual causes are a plain FTP server behind a TLS setting (it answers the
//! ClientHello with a `220` in clear) and a certificate the proxy does not trust.

use std::io;

/// The sentence for a failed handshake as the client of a server's control connection.
pub fn server_handshake(e: &io::Error) -> String {
    let rustls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            format!("{PLAINTEXT} ({e}); {PLAINTEXT_FIX}")
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("the server's certificate is not trusted ({why:?}); {UNTRUSTED_FIX}")
        }
        _ if e.kind() == io::ErrorKind::UnexpectedEof => format!(
            "the server closed the connection during the TLS handshake ({e}): it may speak no TLS on this port, or refuse the proxy's TLS versions or ciphers"
        ),
        _ => format!("TLS handshake with the server failed: {e}"),
    }
}

/// What a plain FTP server does with a ClientHello: answers with its greeting in clear.
pub const PLAINTEXT: &str = "the server answered plaintext FTP to a TLS handshake";

/// The fix when the server speaks plain FTP where implicit TLS was expected.
pub const PLAINTEXT_FIX: &str = "it speaks no implicit TLS on this port: set `tls.upstream.mode: explicit` if its FEAT lists AUTH TLS, else `tls.upstream.mode: off` (clients keep TLS with the proxy)";

/// The fix for a certificate the proxy does not trust.
pub const UNTRUSTED_FIX: &str = "set `tls.upstream.ca` to the CA file that signed it, or `tls.upstream.verify: false` to skip the check";

/// The fix when the server refuses `AUTH TLS`.
pub const NO_AUTH_TLS_FIX: &str = "the server offers no TLS: set `tls.upstream.mode: off` for this listener to speak plain FTP to it (clients keep TLS with the proxy)";

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn each_cause_gets_its_fix() {
        let plain = server_handshake(&wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        )));
        assert!(
            plain.starts_with(PLAINTEXT) && plain.contains("tls.upstream.mode: off"),
            "{plain}"
        );
        let untrusted = server_handshake(&wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(
            untrusted.contains("UnknownIssuer") && untrusted.contains("tls.upstream.ca"),
            "{untrusted}"
        );
        let eof = server_handshake(&io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(
            eof.contains("closed the connection during the TLS handshake"),
            "{eof}"
        );
        let other = server_handshake(&io::Error::other("boom"));
        assert_eq!(other, "TLS handshake with the server failed: boom");
    }
}
