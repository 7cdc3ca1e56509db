//! fxprelay: an FTP control-channel proxy that rewrites the addresses FTP carries so
//! transfers work across NAT, firewalls and mismatched networks.
//!
//! The pure core is a crate of its own, `fxprelay_core`: the protocol ([`proto`]), the
//! network types ([`net`]), the NAT policy ([`rewrite`]), the configuration ([`config`]),
//! the edge defense's scoring ([`defense`]), route choice ([`route`]), the session
//! machine ([`session::machine`], [`session::Policy`]) and the FXP job's plan and state
//! ([`fxp::job`]). It depends on no async runtime, socket or TLS library; this crate
//! re-exports its modules at the paths below and runs them.
//!
//! How data flows through the modules:
//!
//! - [`config`] loads and validates the YAML file into a typed [`config::Config`]: plain
//!   data (addresses, durations, paths, enums), one validator per section, printed back
//!   by `fxprelay config`; it reads no file but the configuration.
//! - [`app`] reads the TLS material the configuration names ([`app::material`]: the
//!   listeners' certificates and keys, CA files, `fxp.ca_bundles`), binds every socket,
//!   runs one accept loop per listener ([`server`]) and the admin endpoint ([`admin`]),
//!   drives the two-phase shutdown, and applies `SIGHUP` reloads (configuration and
//!   material together; either failing keeps the running one).
//! - [`server`] accepts clients, enforces the session limits, reads PROXY headers from
//!   trusted balancers ([`proxy_protocol`]) and spawns one task per client running
//!   [`session`]; SIGHUP reloads reach new sessions through it.
//! - [`session`] is one client session, in two halves: [`session::machine`] makes every
//!   decision sans I/O (which upstream, in forward mode `USER user@host`; what each
//!   command and reply means, using [`proto`]; NAT fixes from [`rewrite`]; relay-mode data
//!   set-up, bounce and limit rules; `SITE FXP` and what its engine may reach and trust),
//!   taking one [`session::machine::Event`] at a time through `handle(event, now)` and
//!   returning [`session::machine::Action`]s. It holds only the listener's immutable
//!   [`session::Policy`]; whatever is shared and changes (the [`data::PortPool`], a
//!   [`pool::Pool`]'s choice and health, the passive-refusal memo, the session registry)
//!   is a request it makes and an event that answers it. The shell around it owns the
//!   sockets ([`codec`] frames them, [`upstream`] connects) and those services
//!   ([`session::Services`]), runs [`data`] transfers and FXP copies as tasks whose news
//!   come back as events, and counts in [`metrics`]; it decides nothing.
//! - [`net`] holds the network types every layer shares: [`net::HostName`],
//!   [`net::HostPort`], the data port list [`net::PortSpec`], the [`net::AllowList`]
//!   that decides where the proxy may connect on someone's behalf (forward and transparent
//!   `allow`, `fxp.allow`) and [`net::OwnSockets`], the self-target guard that keeps every
//!   such connection off the proxy's own listeners, admin endpoint and data ports. Pure, and like [`proto`] it imports nothing from the crate.
//! - [`proto`] is pure: commands, replies (incremental, multi-line) and the address
//!   codecs of `227`/`228`/`229`/`PORT`/`EPRT`/`LPRT`. It never imports tokio.
//! - [`proxy_protocol`] reads PROXY v1/v2 headers from trusted load balancers (on control
//!   connections, and on relay data ports via [`data::peer`]), so the real client address
//!   drives checks, limits and logs.
//! - [`rewrite`] is pure too: the NAT policy (`never`/`always`/`auto`) over parsed
//!   messages.
//! - [`data`] owns relay-mode data connections; [`data::ports`] leases every data port from
//!   the operator's port spec, and [`data::copy`] is the one copy loop, shared with the
//!   FXP engine's relay.
//! - [`tls`] turns a listener's `tls:` settings into rustls configs for both legs (FTPS
//!   is terminated on each leg so the proxy can still read and fix addresses).
//! - [`pool`] runs a reverse listener's pool ([`config::PoolConfig`]): picks each
//!   session's backend (pure selection and health counting) and checks the backends the
//!   way an FTP client would, reading replies with [`codec`] and [`proto`] as the
//!   sessions do.
//! - [`probe`] is `fxprelay check --probe`: it reaches each reverse listener's servers as
//!   the sessions would (with [`codec`], [`tls`], [`proxy_protocol`]) and says what they
//!   offer and which setting stands in the way ([`probe::advice`], pure).
//! - [`fxp`] is the FXP engine: it drives two servers as a client so they copy files
//!   between themselves (standard or reverse FXP), or relays the bytes when they refuse.
//!   A job (a file, a list, a tree) is planned and run by [`fxp::runner`] (`plan`,
//!   `run`: a stream of [`fxp::JobEvent`]s); [`fxp::JobState`] folds those events, and
//!   the three front ends (the CLI, the admin API's jobs, `SITE FXP` in the session
//!   machine) only render it.
//!
//! - [`defense`] is the edge defense's pure core: it scores what clients do per key (an
//!   address, an IPv6 client's network) with time passed in, decides bans (growing for
//!   repeats, bounded in keys) and the tarpit's delay; like [`proto`] it imports nothing
//!   from the crate. [`bans`] is its running side: one [`defense::Defender`] per ban
//!   table behind a mutex, asked by [`server`] at accept (before the upstream connect
//!   and any TLS handshake), by relay data ports and told by the session shells what
//!   their machines report; the INFO lines per ban and unban, the ban metrics, and what
//!   [`admin`]'s `/api/v1/bans` lists and changes.
//!
//! - [`state`] is the state store: what outlives the process and is shared by a fleet
//!   (the FXP API's jobs, with their URLs' passwords sealed), behind one small trait with
//!   a SQLite backend (the default, one file or memory) and a PostgreSQL one (for N
//!   instances); the lease, retention and migration decisions are pure. [`fxp::jobs`]
//!   keeps its jobs there and claims them to run.
//! - [`agent`] reaches servers that accept no inbound connection: [`agent::Hub`] is the
//!   edge's side (the agents listener, each link's token, [`agent::Hub::dial`] for a
//!   session's or a transfer's connection), [`agent::Agent`] the `fxprelay agent` role
//!   beside the servers; [`agent::Dialer`] is the one "straight, or through the agent"
//!   of every connection toward a server (a session's, a health check's, the FXP
//!   engine's, for a URL naming `?via=`); the session shell and [`data`] take its streams
//!   as connections.
//!
//! - [`logging`] is the text log's field formatter: control characters a client or a
//!   server sent are escaped, so a log read in a terminal shows them instead of obeying.
//!
//! Imports run one way. The core cannot import this crate (the compiler holds that
//! line); inside this crate, without cycles among siblings at any level
//! (`scripts/module-cycles.py src`, run by `.ci/run`): `app` -> {`server`, `admin`} ->
//! `session` -> {`fxp`, `pool`, `upstream`} -> {`data`, `codec`, `tls`} ->
//! {`proxy_protocol`, `bans`} -> `state`, each layer using any below it and the core; [`metrics`] is used
//! from anywhere. Inside [`session`]: `shell` -> `machine` (the core's), `context` ->
//! `registry`: the machine never sees the context, the registry or the shell. Inside
//! [`fxp`]: the front ends {`cli` -> `progress`, `jobs`} -> `runner` -> `engine` ->
//! {`logins`, `options`, `error`} -> `job` (the core's: plan, events, state); the
//! session machine uses `job` and `render`, never the runner.

// The library's few unsafe blocks (pipes and splice(2) in `data::splice`) each say why
// they are sound. (Tests call libc freely: the rule is the library's, not Cargo.toml's.)
#![deny(clippy::undocumented_unsafe_blocks)]

// The pure core, at the paths the rest of the crate has always used.
pub use fxprelay_core::{config, defense, net, proto, rewrite, route};

pub mod admin;
pub mod agent;
pub mod app;
pub mod bans;
pub mod codec;
pub mod data;
pub mod fxp;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod proxy_protocol;
pub mod server;
pub mod session;
pub mod state;
pub mod tls;
pub mod upstream;
