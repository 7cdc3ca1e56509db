//! The options of one transfer as a person or a program gives them: the `options` object
//! of `POST /api/v1/transfers` (serde) and the flags of `fxprelay fxp` (clap) are this
//! one struct, so the two cannot drift apart.
//!
//! Adding an option is one field here, with its `#[arg]` (the flag, its default) and a
//! matching value in `Default` (the API's default); then its use in
//! [`TransferOptions::engine`] and, when some values are unsafe for a remote caller, its
//! bound in [`TransferOptions::check`]. A test checks that every `fxprelay fxp` flag has
//! its field here (`FxpArgs` should `#[command(flatten)]` this struct).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::client::{Client, ExtraRoots, FtpError, TlsPolicy};
use super::digest::{OnMismatch, Verify};
use super::job::event::FileEvent;
use super::job::mirror::MirrorOptions;
use super::url::{FtpUrl, VirtualHost};
use crate::agent::{Dialer, Hub};
use crate::net::{AllowList, OwnSockets};

/// Most retries the API accepts: each one logs in to both servers again.
pub const MAX_RETRIES: u32 = 10;
/// Longest `timeout` the API accepts, in seconds.
pub const MAX_TIMEOUT: u64 = 3600;
/// Most files at once the API accepts for one tree: each file holds two control
/// connections (three with the size poller).
pub const MAX_CONCURRENCY: usize = 16;
/// Longest `hash_timeout` the API accepts, in seconds (a day: hashing a very large file).
pub const MAX_HASH_TIMEOUT: u64 = 86_400;

/// What the engine does for one transfer (or each file of a list): built from
/// [`TransferOptions::engine`] by the front ends, which add the allow list, the proxy's
/// own sockets, progress, hooks and cancellation.
#[derive(Clone)]
pub struct EngineOptions {
    /// Try reverse FXP first (skip standard FXP).
    pub reverse: bool,
    /// Further attempts after a failed one (backoff 0.5 s, 1 s, 2 s, ...).
    pub retries: u32,
    /// Bound on every control step, and on a transfer making no progress.
    pub timeout: Duration,
    /// Relay the bytes when neither FXP direction works.
    pub relay_fallback: bool,
    /// Continue a partial destination file left by an earlier run (`REST`, when both
    /// servers offer `REST STREAM`); otherwise only this transfer's own retries resume.
    pub resume: bool,
    /// Files copied at once by a tree copy, each on its own pair of logged-in sessions
    /// (see [`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// How often the destination's `SIZE` is polled during an FXP copy.
    pub poll_interval: Duration,
    /// What the engine says of the file it copies (a job's runner passes each file's
    /// own; see `job::run`).
    pub progress: Option<Progress>,
    /// Which servers may be reached: `None` (the CLI) allows all; the API and SITE
    /// commands pass `fxp.allow`. Checked per connection with the URL's host as written
    /// and each resolved address, so a host-name entry admits that name's own connection
    /// only, not every server of a transfer that mentions it.
    pub allow: Option<Arc<AllowList>>,
    /// Which certificates TLS servers may show (default: the system's trust roots).
    pub tls: TlsPolicy,
    /// `fxp.allow_clear_data`: between TLS servers, FXP with `PROT C` (the file crosses
    /// the network between them unencrypted) may be tried before the relay.
    pub allow_clear_data: bool,
    /// The proxy's own sockets, which no server or data address may be: the API and
    /// SITE commands pass them (the CLI runs outside any proxy).
    pub own: Option<Arc<OwnSockets>>,
    /// How each copy is checked: a hash both servers compute, else `SIZE` (`auto`).
    pub verify: Verify,
    /// What becomes of a copy whose hash differs from the source's.
    pub on_mismatch: OnMismatch,
    /// How long a server may take to answer a hash command: it reads the whole file
    /// (a few hundred MB/s on a fast disk), so far longer than `timeout`.
    pub hash_timeout: Duration,
    /// Cancelled: the transfers in flight send `ABOR` to both servers and end with
    /// [`FxpError::Cancelled`]; those not begun end so at once.
    pub cancel: Option<CancellationToken>,
    /// A server to send `HOST` to before logging in (`SITE FXP` from a session whose
    /// server took the client's `HOST`).
    pub virtual_host: Option<VirtualHost>,
    /// The edge's agent links, through which a URL's `?via=AGENT` server is reached: the
    /// API and SITE commands pass the proxy's (the CLI runs outside any proxy).
    pub agents: Option<Arc<Hub>>,
}

/// Progress callback of one file's copy; must be cheap (it runs on the engine's task).
pub type Progress = Arc<dyn Fn(&FileEvent) + Send + Sync>;

/// Default [`EngineOptions::hash_timeout`]: a 100 GiB file at about 200 MB/s.
pub const HASH_TIMEOUT: Duration = Duration::from_secs(600);

/// Files a tree copy moves at once. Measured with `scripts/bench-fxp.sh` (200 files of
/// 100 KB, vsftpd to pyftpdlib on loopback, a busy 2-vCPU machine): rounds without a
/// lost transfer took ~0.70 s at 2 and 0.53 to 0.81 s at 4 (a file costs about ten
/// control round trips on reused sessions, mostly waiting on the servers); 4 is what
/// lftp `mirror --parallel=4` uses. More sessions per server cost each server a session
/// pair each and made pyftpdlib lose more transfers.
pub const DEFAULT_CONCURRENCY: usize = 4;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            reverse: false,
            retries: 2,
            timeout: Duration::from_secs(30),
            relay_fallback: true,
            resume: false,
            concurrency: DEFAULT_CONCURRENCY,
            poll_interval: Duration::from_millis(250),
            progress: None,
            allow: None,
            tls: TlsPolicy::default(),
            allow_clear_data: false,
            own: None,
            verify: Verify::Auto,
            on_mismatch: OnMismatch::Keep,
            hash_timeout: HASH_TIMEOUT,
            cancel: None,
            virtual_host: None,
            agents: None,
        }
    }
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("reverse", &self.reverse)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .field("relay_fallback", &self.relay_fallback)
            .field("resume", &self.resume)
            .field("concurrency", &self.concurrency)
            .field("tls", &self.tls)
            .field("allow_clear_data", &self.allow_clear_data)
            .field("verify", &self.verify)
            .field("on_mismatch", &self.on_mismatch)
            .field("hash_timeout", &self.hash_timeout)
            .finish_non_exhaustive()
    }
}

impl EngineOptions {
    /// A logged-in session to `url`, within the allow list, through the URL's agent
    /// when it names one.
    pub async fn open(&self, url: &FtpUrl) -> Result<Client, FtpError> {
        let host = self.virtual_host.as_ref().and_then(|v| v.name_for(url));
        let dialer = self.dialer(url)?;
        Client::open_checked(
            url,
            self.timeout,
            self.allow.as_deref(),
            &self.tls,
            self.own.as_ref(),
            host,
            &dialer,
        )
        .await
    }

    /// How `url`'s server is reached: straight, or through its `?via=` agent, which only
    /// a proxy with `agents:` has.
    pub fn dialer(&self, url: &FtpUrl) -> Result<Dialer, FtpError> {
        match (&url.via, &self.agents) {
            (None, _) => Ok(Dialer::direct()),
            (Some(agent), Some(hub)) => Ok(Dialer::via(hub.clone(), agent.clone())),
            (Some(agent), None) => Err(FtpError::Other(format!(
                "{} is reached through agent {agent} (?via=), which only a running proxy \
                 with `agents:` can do: order the copy from its API (POST /api/v1/transfers) or \
                 with SITE FXP",
                url.host_port()
            ))),
        }
    }

    pub(super) fn emit(&self, e: FileEvent) {
        match &e {
            FileEvent::MethodFailed { method, error } => {
                tracing::debug!(%method, %error, "fxp method failed");
            }
            FileEvent::Retrying { attempt, error, .. } => {
                tracing::debug!(attempt, %error, "fxp attempt failed, retrying");
            }
            _ => {}
        }
        if let Some(p) = &self.progress {
            p(&e);
        }
    }
}

/// The options of one transfer as a caller gives them (see the module's comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct TransferOptions {
    /// Reverse FXP first: PASV on the destination, PORT on the source.
    #[arg(long)]
    pub reverse: bool,
    /// Copy a directory tree (MLSD, or LIST parsed as `ls -l`): every missing directory
    /// is made (the destination's missing parents too, like `mkdir -p`), then the files;
    /// a line per entry is reported. See --skip-existing, --dry-run, --include, --exclude,
    /// --delete.
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Further attempts after a failure (with backoff and REST resume).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Seconds any control step may take, and a transfer may go without progress.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Files copied at once with --recursive, each on its own pair of logged-in sessions
    /// reused from file to file (4, as lftp mirror --parallel=4: on small files measured
    /// no slower than 2; more costs each server more sessions).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Continue a partial destination file from an earlier run (REST).
    #[arg(long)]
    pub resume: bool,
    /// Never relay the bytes through fxprelay: fail when neither FXP direction works.
    #[arg(long)]
    pub no_relay: bool,
    /// Trust TLS servers whose certificate this CA (a PEM file) signed, besides the
    /// system's trust roots.
    // Over the API this is the name of a bundle in the proxy's `fxp.ca_bundles`, never a
    // path: a remote caller names no file on the proxy's host (see `jobs`).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,
    /// Do not check TLS servers' certificates (anyone in the path can then read and
    /// change the transfer, passwords included).
    #[arg(long)]
    pub insecure: bool,
    /// Between TLS servers that cannot encrypt between themselves (no SSCN or CPSV),
    /// try FXP with clear data (PROT C) before relaying through fxprelay.
    #[arg(long)]
    pub allow_clear_data: bool,
    /// How each copy is checked once it ends (the servers compute the hashes; fxprelay
    /// reads no file data). The summary line says which check was made.
    #[arg(long, value_enum, default_value_t = Verify::Auto)]
    pub verify: Verify,
    /// What becomes of a copy whose hash differs from the source's (the file fails
    /// either way, without retries). Default keep: the evidence of which side went wrong
    /// stays, and the file's own name no longer holds a bad copy.
    #[arg(long, value_enum, default_value_t = OnMismatch::Keep)]
    pub on_mismatch: OnMismatch,
    /// Seconds a server may take to answer a hash command: it reads the whole file first
    /// (at disk speed, often 100-500 MB/s), so this is far longer than --timeout.
    #[arg(long, value_name = "SECS", default_value_t = HASH_TIMEOUT.as_secs())]
    pub hash_timeout: u64,
    /// Skip a file (or, with --recursive, each file) the destination already has, so a
    /// rerun copies only what is new or changed. A file is up to date when its size is the source's and it
    /// is not older (its modification time, in UTC to the second, from MLSD or MDTM,
    /// compared only where both servers tell it); otherwise it is copied again.
    #[arg(long)]
    pub skip_existing: bool,
    /// With --recursive: list what would be copied, skipped, created and deleted, and
    /// touch nothing on the destination.
    #[arg(long)]
    pub dry_run: bool,
    /// With --recursive: copy only files matching this glob (repeatable). Globs match the
    /// path relative to the tree's root (`sub/*.bin`; `*` stops at `/`, `**` does not);
    /// one without `/` matches the name at any depth (`*.iso`). Directories are always
    /// walked.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// With --recursive: leave out files and directories matching this glob (repeatable;
    /// matched like --include). An excluded directory is not entered; excluded entries
    /// are never deleted.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// With --recursive: delete destination files and directories, inside the tree only,
    /// that the source lacks. Done last, and only when every copy succeeded.
    #[arg(long)]
    pub delete: bool,
}

impl Default for TransferOptions {
    /// The `fxprelay fxp` defaults (a test holds the two together).
    fn default() -> Self {
        TransferOptions {
            reverse: false,
            recursive: false,
            retries: 2,
            timeout: 30,
            concurrency: DEFAULT_CONCURRENCY,
            resume: false,
            no_relay: false,
            ca: None,
            insecure: false,
            allow_clear_data: false,
            verify: Verify::Auto,
            on_mismatch: OnMismatch::Keep,
            hash_timeout: HASH_TIMEOUT.as_secs(),
            skip_existing: false,
            dry_run: false,
            include: vec![],
            exclude: vec![],
            delete: false,
        }
    }
}

/// An option outside what the API accepts: the field (as the JSON names it) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionError {
    pub field: &'static str,
    pub message: String,
}

impl TransferOptions {
    /// The bounds a remote caller is held to (the CLI's user may ask for anything).
    pub fn check(&self) -> Result<(), OptionError> {
        let bad = |field, message: String| Err(OptionError { field, message });
        if self.retries > MAX_RETRIES {
            return bad(
                "options.retries",
                format!("at most {MAX_RETRIES}, not {}", self.retries),
            );
        }
        if !(1..=MAX_TIMEOUT).contains(&self.timeout) {
            return bad(
                "options.timeout",
                format!("from 1 to {MAX_TIMEOUT} seconds, not {}", self.timeout),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return bad(
                "options.concurrency",
                format!("from 1 to {MAX_CONCURRENCY}, not {}", self.concurrency),
            );
        }
        let mirror = self.mirror();
        if mirror.tree_only() && !self.recursive {
            return bad(
                "options.recursive",
                "dry_run, include, exclude and delete apply to trees: set recursive".into(),
            );
        }
        if let Err(e) = super::job::mirror::Filter::new(&mirror) {
            let field = if self.include.is_empty() {
                "options.exclude"
            } else {
                "options.include"
            };
            return bad(field, e.to_string());
        }
        if !(1..=MAX_HASH_TIMEOUT).contains(&self.hash_timeout) {
            return bad(
                "options.hash_timeout",
                format!(
                    "from 1 to {MAX_HASH_TIMEOUT} seconds, not {}",
                    self.hash_timeout
                ),
            );
        }
        Ok(())
    }

    /// `ca` as the command line takes it: a PEM file of the local user's.
    pub fn ca_file(&self) -> ExtraRoots {
        self.ca.as_ref().map_or(ExtraRoots::None, |path| {
            ExtraRoots::File(PathBuf::from(path))
        })
    }

    /// The tree options (`skip_existing`, `dry_run`, `include`, `exclude`, `delete`).
    pub fn mirror(&self) -> MirrorOptions {
        MirrorOptions {
            skip_existing: self.skip_existing,
            dry_run: self.dry_run,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            delete: self.delete,
        }
    }

    /// The engine's options for these, trusting `ca` besides the system's roots: what
    /// `self.ca` names is the front end's to decide ([`TransferOptions::ca_file`] on the
    /// command line, a configured bundle over the API). Allow list, own sockets and
    /// progress are the front end's to add too.
    pub fn engine(&self, ca: ExtraRoots) -> EngineOptions {
        EngineOptions {
            reverse: self.reverse,
            retries: self.retries,
            timeout: Duration::from_secs(self.timeout.max(1)),
            relay_fallback: !self.no_relay,
            resume: self.resume,
            concurrency: self.concurrency.max(1),
            tls: TlsPolicy::new(!self.insecure, ca),
            allow_clear_data: self.allow_clear_data,
            verify: self.verify,
            on_mismatch: self.on_mismatch,
            hash_timeout: Duration::from_secs(self.hash_timeout.max(1)),
            ..EngineOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        opts: TransferOptions,
    }

    #[test]
    fn the_api_defaults_are_the_cli_defaults() {
        let parsed = Flags::try_parse_from(["fxp"]).unwrap().opts;
        assert_eq!(parsed, TransferOptions::default());
        let json: TransferOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(json, TransferOptions::default());
    }

    /// Every flag of `fxprelay fxp` (but the two URLs, `--json` and `--netrc-file`) is an option here, so the API
    /// takes it too. A flag added to the CLI alone fails this test: add its field above.
    #[test]
    fn every_cli_flag_is_an_api_option() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::fxp::cli::FxpArgs,
        }
        let ours: Vec<String> = Flags::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        // The command line's own: how it prints its report, where it finds passwords.
        let cli_only = ["json", "netrc-file"];
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if cli_only.contains(&long) {
                continue;
            }
            assert!(
                ours.iter().any(|o| o == long),
                "`fxprelay fxp --{long}` has no field in TransferOptions (src/fxp/options.rs)"
            );
            let json = serde_json::json!({ long.replace('-', "_"): null });
            let e = serde_json::from_value::<TransferOptions>(json).err();
            assert!(
                e.is_none_or(|e| !e.to_string().contains("unknown field")),
                "--{long} is not accepted in the API's options"
            );
        }
    }

    #[test]
    fn tree_options_need_a_tree_and_good_globs() {
        let o: TransferOptions = serde_json::from_str(
            r#"{"recursive": true, "skip_existing": true, "exclude": ["*.tmp"]}"#,
        )
        .unwrap();
        let m = o.mirror();
        assert!(m.skip_existing && !m.delete && !m.dry_run);
        assert_eq!(m.exclude, ["*.tmp"]);
        assert_eq!(o.check(), Ok(()));
        let flat: TransferOptions = serde_json::from_str(r#"{"dry_run": true}"#).unwrap();
        assert_eq!(flat.check().map_err(|e| e.field), Err("options.recursive"));
        let glob: TransferOptions =
            serde_json::from_str(r#"{"recursive": true, "include": ["a[b"]}"#).unwrap();
        assert_eq!(glob.check().map_err(|e| e.field), Err("options.include"));
    }

    #[test]
    fn remote_callers_are_held_to_bounds() {
        let with = |f: fn(&mut TransferOptions)| {
            let mut o = TransferOptions::default();
            f(&mut o);
            o.check().map_err(|e| e.field)
        };
        assert_eq!(with(|_| ()), Ok(()));
        assert_eq!(
            with(|o| o.retries = MAX_RETRIES + 1),
            Err("options.retries")
        );
        assert_eq!(with(|o| o.timeout = 0), Err("options.timeout"));
        assert_eq!(with(|o| o.concurrency = 0), Err("options.concurrency"));
        assert_eq!(
            with(|o| o.concurrency = MAX_CONCURRENCY + 1),
            Err("options.concurrency")
        );
        let e = serde_json::from_str::<TransferOptions>(r#"{"bogus": 1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
    }
}
