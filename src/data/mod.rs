//! Data connections the proxy owns itself (relay mode).
//!
//! - [`ports`]: the operator's port spec (`"21,80,50000-50100"`) and the pool that leases
//!   ports from it, so every port the proxy listens on for data stays inside that spec.
//! - [`relay`]: one transfer: open both legs (accepting only the expected peer), copy
//!   the bytes with half-close preserved, count them.

pub mod ports;
pub mod relay;
#[cfg(target_os = "linux")]
mod splice;

pub use ports::{LeaseError, LeasedListener, PortLease, PortPool, PortSpec, PortSpecError};
