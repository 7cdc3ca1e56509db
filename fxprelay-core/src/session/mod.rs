//! One client session's decisions, sans I/O. The binary's `session` module runs it: its
//! shell owns the sockets, the listener's shared services and the tasks, and feeds the
//! [`machine`] events.
//!
//! - [`machine`] decides everything: [`machine::Event`]s in through one `handle`,
//!   [`machine::Action`]s out, time passed in; it holds only the listener's [`policy`],
//!   immutable;
//! - [`view`] is what the admin API shows of a session ([`view::Snapshot`]), which the
//!   machine produces and the binary's registry stores;
//! - [`replies`] is the catalogue of the proxy's own replies.
//!
//! Imports run one way: `machine` -> {`policy`, `view`, `replies`}.

pub mod machine;
pub mod policy;
pub mod replies;
pub mod view;

pub use policy::Policy;
