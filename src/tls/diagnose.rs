//! Why a TLS handshake with an FTP server failed, in an operator's words, with the
//! setting that fixes it: the sessions' log lines and `fxprelay check --probe` say the
//! same. The usual causes are a plain FTP server behind a TLS setting (it answers the
//! ClientHello with a `220` in clear) and a certificate the proxy does not trust.

use std::io;

pub use fxprelay_core::tls::advice::{NO_AUTH_TLS_FIX, PLAINTEXT, PLAINTEXT_FIX, UNTRUSTED_FIX};

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
