//! The outbound-only agent, pure: what the edge and an agent say to each other, what an
//! agent agrees to reach, and when it dials again after losing the edge.
//!
//! An agent runs beside servers that accept no inbound connection. It dials out to the
//! edge and keeps one TLS *link* up, on which the edge asks for connections
//! ([`ToAgent::Open`]); for each one the agent connects to the target inside, then dials
//! the edge once more and names the request on that new connection ([`Hello::Stream`]),
//! which from then on carries the bytes both ways. One connection per stream, as the
//! commercial DMZ gateways do: no head-of-line blocking between a session's control
//! connection and its transfers, and the kernel's flow control per transfer.
//!
//! - [`wire`]: the messages, one JSON object per line, bounded in length;
//! - [`Backoff`]: the delay before the agent dials again, growing, with full jitter;
//! - [`Reach`]: the agent's own rule for what the edge may ask it to reach;
//! - [`listen`]: active mode toward a server inside ([`ToAgent::Listen`]): where the
//!   agent listens for the server's data connection, and who may connect.

mod backoff;
pub mod listen;
mod reach;
pub mod wire;

pub use backoff::Backoff;
pub use reach::{Reach, Refusal};
pub use wire::{FromAgent, Hello, Refused, ToAgent, WireError};

/// Whether `name` may name an agent (`agents.tokens`, `agent.name`, a listener's `via`,
/// an FXP URL's `?via=`): 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
