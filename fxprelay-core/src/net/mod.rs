//! Network names, address lists and port lists shared by the configuration, the sessions,
//! the data relay and the FXP engine:
//!
//! - [`HostName`] and [`HostPort`]: hosts and `host:port` targets as written;
//! - [`AllowList`]: where the proxy may connect on someone's behalf (a listener's
//!   `allow`, `fxp.allow`), refusing with a [`Denied`] that names the list;
//! - [`PortSpec`]: the operator's data port list (`data.ports`);
//! - [`OwnSockets`]: the proxy's own listeners, admin endpoint and data ports, which
//!   nothing it connects to on someone's behalf may be ([`SelfTarget`]);
//! - [`ConnectError`] and [`LeaseError`]: why a connection or a data port lease failed,
//!   in the words every layer logs.
//!
//! Pure types with their parsers: nothing here does I/O or imports anything else from the
//! crate, so every layer above can use them (the bottom of the graph, next to `proto`).

mod allow;
mod connect;
mod host;
mod own;
mod ports;

pub use allow::{AllowEntry, AllowList, Denied};
pub use connect::ConnectError;
pub use host::{HostName, HostPort};
pub use own::{OwnSocket, OwnSockets, SelfTarget};
pub use ports::{LeaseError, PortSpec, PortSpecError};
