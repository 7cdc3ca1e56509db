//! fxprelay's pure core: everything the proxy decides, as functions and state machines
//! over bytes, events and a clock passed in. No async runtime, no socket, no TLS library
//! (the crate's dependencies say so); the `fxprelay` crate runs it.
//!
//! - [`proto`]: commands, replies (incremental, multi-line), directory listings and the
//!   address codecs of `227`/`228`/`229`/`PORT`/`EPRT`/`LPRT`.
//! - [`net`]: host names, `host:port` targets, the data port list, the allow lists and
//!   the self-target guard, and why a connection or a port lease failed.
//! - [`rewrite`]: the NAT policy (`never`/`always`/`auto`) over parsed messages.
//! - [`defense`]: the edge defense's scoring, bans and tarpit, time passed in.
//! - [`route`]: routes by `HOST`/SNI name patterns, user-name regexes, templates, and
//!   which routes can never be reached.
//! - [`tls`]: the `tls:` settings as data, and the fixes an operator is told.
//! - [`config`]: the YAML file into a typed, validated, printable [`config::Config`].
//! - [`rejection`]: why the proxy refused something ([`rejection::Rejection`]).
//! - [`session`]: one client session's [`session::machine::Machine`] over its listener's
//!   [`session::Policy`], the proxy's own replies and the session's admin view.
//! - [`fxp`]: an FXP job's plan, events and state, URLs, methods, digests and rendering.
//! - [`agent`]: the outbound-only agent's messages, its reach rule and its redial
//!   backoff.
//!
//! Imports run one way: `session` -> {`config`, `fxp`, `rejection`}, `config` ->
//! {`route`, `rewrite`, `tls`, `defense`}, `rewrite` -> {`net`, `proto`}, `fxp` ->
//! `proto`; `net`, `proto`, `route`, `tls`, `defense` and `rejection` import nothing
//! from the crate. The compiler holds the crate's edge (nothing here can reach the
//! binary), `scripts/module-cycles.py fxprelay-core/src` the modules inside.

pub mod agent;
pub mod config;
pub mod defense;
pub mod fxp;
pub mod net;
pub mod proto;
pub mod rejection;
pub mod rewrite;
pub mod route;
pub mod session;
pub mod tls;
