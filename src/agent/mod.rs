//! Servers that accept no inbound connection, reached through an agent beside them that
//! dials out (the pure protocol and rules are `fxprelay_core::agent`):
//!
//! - [`hub`] is the edge's side: the agents listener, each link's credential, the links
//!   by name, and [`hub::Hub::dial`], which opens a stream to a target inside;
//! - [`run`] is `fxprelay agent`, the side beside the servers;
//! - [`dial`] is the one place that decides "straight, or through the agent" for every
//!   connection toward a server ([`Dialer`]).

pub mod dial;
pub mod hub;
pub mod run;

pub use dial::{Conn, DialFailure, Dialer};
pub use hub::{AgentStream, DialError, Hub, Inside, InsideError, LinkView};
pub use run::Agent;

#[cfg(test)]
mod tests;
