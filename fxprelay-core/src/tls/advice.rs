//! What to set when a server's TLS is not what the listener expects: the words the
//! session machine, `fxprelay check --probe` and the handshake diagnosis (in the binary's
//! `tls::diagnose`) share, so an operator reads one fix for one cause.

/// What a plain FTP server does with a ClientHello: answers with its greeting in clear.
pub const PLAINTEXT: &str = "the server answered plaintext FTP to a TLS handshake";

/// The fix when the server speaks plain FTP where implicit TLS was expected.
pub const PLAINTEXT_FIX: &str = "it speaks no implicit TLS on this port: set `tls.upstream.mode: explicit` if its FEAT lists AUTH TLS, else `tls.upstream.mode: off` (clients keep TLS with the proxy)";

/// The fix for a certificate the proxy does not trust.
pub const UNTRUSTED_FIX: &str = "set `tls.upstream.ca` to the CA file that signed it, or `tls.upstream.verify: false` to skip the check";

/// The fix when the server refuses `AUTH TLS`.
pub const NO_AUTH_TLS_FIX: &str = "the server offers no TLS: set `tls.upstream.mode: off` for this listener to speak plain FTP to it (clients keep TLS with the proxy)";
