//! Data connections the proxy owns itself (relay mode).
//!
//! - [`ports`]: the pool that leases ports from the operator's port spec
//!   ([`crate::net::PortSpec`]), so every port the proxy listens on for data stays inside
//!   that spec.
//! - [`relay`]: one transfer: open both legs (accepting only the expected peer), copy
//!   the bytes with half-close preserved, count them.
//! - [`peer`]: who a connection on a leased port is (its address, or the one a trusted
//!   balancer's PROXY header names) and the port-theft verdict, as pure decisions.
//! - [`copy`]: the one user-space copy loop (also the FXP engine's relay), and
//!   [`socket`]: data socket tuning and the TCP copy that may use `splice(2)`.
//!
//! Imports run one way: `relay` -> `peer`, `ports` -> `socket` -> `splice` -> `copy`.

pub mod copy;
pub mod peer;
pub mod ports;
pub mod relay;
pub mod secure;
pub mod socket;
#[cfg(target_os = "linux")]
mod splice;

pub use ports::{LeaseError, LeasedListener, PortLease, PortPool};
