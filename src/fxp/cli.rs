//! `fxprelay fxp SRC DST`: the engine for a person or a script. Progress bars on a
//! terminal (see [`super::progress`]), plain lines otherwise; a report on stdout (a line
//! per entry of a tree and a summary, or with `--json` one JSON object), the server's
//! text on stderr and a non-zero exit code on failure; Ctrl-C stops both servers' transfers
//! and says how to resume (exit 130). Passwords can come from the environment, a netrc
//! file or a prompt ([`super::credentials`]). Needs no configuration file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::credentials::{self, Lookup, Netrc};
use super::engine::EngineOptions;
use super::job::mirror::{Kind, Reason};
use super::job::plan::{Plan, destination_path};
use super::job::{EntryResult, Failure, FailureKind, FileRecord, JobState, Order, Report};
use super::options::TransferOptions;
use super::progress::{Left, Live};
use super::render::{self, bytes_iec, rate_iec};
use super::runner;
use super::url::FtpUrl;

/// The exit code after Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit codes: 0 copied (or nothing to do), 1 a failure (the server's reply on stderr), \
2 bad arguments, 130 interrupted.
Ctrl-C sends ABOR to both servers of every transfer in flight, says which files were \
left part way and how many bytes the destination holds, and how to resume: the same \
command with --resume (and --skip-existing for a tree).")]
pub struct FxpArgs {
    /// Source: ftp://user@host:port/path (no user: anonymous, or the netrc file's login);
    /// ftpes:// for explicit TLS (AUTH TLS), ftps:// for implicit TLS (default port 990).
    /// Passwords, first found wins: written in the URL (ftp://user:pass@host/; visible
    /// in `ps`), then FXPRELAY_SRC_PASSWORD / FXPRELAY_DST_PASSWORD, then the netrc file
    /// (the host's `machine` entry with that `login`, else `default`), then a prompt on
    /// the terminal; else none (an empty password). Never printed.
    pub src: FtpUrl,
    /// Destination: a file path, or a directory ending in `/` to keep the source's name.
    pub dst: FtpUrl,
    #[command(flatten)]
    pub opts: TransferOptions,
    /// Print one JSON object (counts, exact bytes, seconds, method, and a record per
    /// file) on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// The netrc file to read logins from (default: $NETRC, else ~/.netrc when it
    /// exists).
    #[arg(long, value_name = "PATH")]
    pub netrc_file: Option<PathBuf>,
}

pub fn run(mut args: FxpArgs) -> ExitCode {
    if args.opts.mirror().tree_only() && !args.opts.recursive {
        eprintln!(
            "fxprelay fxp: --dry-run, --include, --exclude and --delete apply to trees: \
             add --recursive"
        );
        return ExitCode::from(2);
    }
    // The CLI runs outside any proxy: it has no agent links.
    if let Some(url) = [&args.src, &args.dst].into_iter().find(|u| u.via.is_some()) {
        let e = EngineOptions::default().dialer(url).err();
        eprintln!(
            "fxprelay fxp: {}",
            e.map(|e| e.to_string()).unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    if let Err(e) = fill_credentials(&mut args) {
        eprintln!("fxprelay fxp: {e}");
        return ExitCode::FAILURE;
    }
    // One thread: the copy mostly waits on the two servers, and on a work-stealing
    // runtime each reply handed to another worker thread cost more than it saved
    // (scripts/bench-fxp.sh's tree: 0.209 s against 0.236 s, medians of 12 alternating
    // copies, with ~40% less CPU; README "FXP queue against lftp"). A relayed file's
    // bytes are spliced, or for TLS copied at over 1 GB/s on this one core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fxprelay fxp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.opts.insecure {
        eprintln!("fxprelay fxp: warning: --insecure: TLS certificates are not checked");
    }
    let mut live = Live::new(std::io::stderr().is_terminal(), args.opts.recursive);
    let cancel = CancellationToken::new();
    let opts = EngineOptions {
        cancel: Some(cancel.clone()),
        ..args.opts.engine(args.opts.ca_file())
    };
    let order = if args.opts.recursive {
        Order::Tree {
            src: args.src.clone(),
            dst: args.dst.clone(),
            mirror: args.opts.mirror(),
        }
    } else {
        Order::File {
            src: args.src.clone(),
            dst: args.dst.clone(),
            skip_existing: args.opts.skip_existing,
        }
    };
    let started = Instant::now();
    let (state, left) = runtime.block_on(async {
        let mut events = runner::run(order, opts.clone());
        let mut state = JobState::new();
        let mut left = None;
        let mut interrupt = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "Ctrl-C cannot be caught: it ends the copy at once");
                None
            }
        };
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(e) => {
                        state.apply(&e);
                        live.show(&e, &state);
                    }
                    None => break,
                },
                () = ctrl_c(&mut interrupt) => {
                    if left.is_some() {
                        std::process::exit(INTERRUPTED.into());
                    }
                    // What was in flight, before the aborts end it.
                    left = Some(Live::left(&state));
                    cancel.cancel();
                    live.println("fxprelay fxp: interrupted: aborting the transfers on both servers (ABOR); Ctrl-C again to quit at once");
                }
            }
        }
        (state, left)
    });
    live.finish();
    let seconds = started.elapsed().as_secs_f64();
    let job_error = state.finished.as_ref().and_then(|f| f.error.clone());
    let code = match job_error {
        Some(e) => {
            if args.json {
                print_json(&JsonResult::failed(&args, e.to_string(), seconds));
            }
            eprintln!("fxprelay fxp: {e}");
            hint(&e);
            ExitCode::FAILURE
        }
        None if args.opts.recursive => tree_result(&args, &state, seconds),
        None => file_result(&args, &state, seconds),
    };
    match left {
        Some(left) => {
            let root = args
                .opts
                .recursive
                .then(|| Plan::tree_root(&args.src, &args.dst));
            let dst = destination_path(&args.src, &args.dst);
            let left = runtime.block_on(written(left, &opts, root.as_ref(), &dst));
            interrupted(&args, &left);
            ExitCode::from(INTERRUPTED)
        }
        None => code,
    }
}

/// The next Ctrl-C (never, when it cannot be caught).
async fn ctrl_c(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Fills in passwords the URLs lack (see [`credentials`]); a prompt only on a terminal.
fn fill_credentials(args: &mut FxpArgs) -> Result<(), credentials::CredentialError> {
    let netrc = Netrc::load(args.netrc_file.as_deref())?;
    let ask = |prompt: &str| rpassword::prompt_password(prompt);
    let terminal = std::io::stdin().is_terminal();
    for (url, var, side) in [
        (&mut args.src, "FXPRELAY_SRC_PASSWORD", "source"),
        (&mut args.dst, "FXPRELAY_DST_PASSWORD", "destination"),
    ] {
        let with = Lookup {
            env: std::env::var(var).ok(),
            env_name: var,
            netrc: netrc.as_ref(),
            prompt: terminal.then_some(&ask as credentials::Prompt<'_>),
        };
        let from = credentials::fill(url, &with)?;
        tracing::debug!(side, user = %url.user, from = ?from, "credentials");
    }
    Ok(())
}

/// The report of a tree: a line per entry and the summary (or the JSON object).
fn tree_result(args: &FxpArgs, state: &JobState, seconds: f64) -> ExitCode {
    if args.json {
        print_json(&JsonResult::tree(args, state, seconds));
    } else {
        for rec in state.records() {
            println!("{}", record_line(&rec));
        }
        println!("{}", render::summary(state));
    }
    let mut failed = false;
    for e in state.failures() {
        failed = true;
        let why = e.error.as_ref().map_or("", |f| f.message.as_str());
        eprintln!("fxprelay fxp: {}: {why}", e.plan.path);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `copied   sub/a.bin (70000 bytes (68.36 KiB), fxp)`, `skipped  sub/b.bin (same size,
/// not older)`, `FAILED   sub/c.bin: the reason`.
pub fn record_line(r: &FileRecord) -> String {
    let what = r.result.as_str();
    let dir = if r.kind == Kind::Dir { "/" } else { "" };
    let detail = match (r.result, &r.error, r.method) {
        (_, Some(e), _) => format!(": {e}"),
        (EntryResult::Copied, _, Some(m)) => format!(" ({}, {m})", bytes_iec(r.bytes)),
        (EntryResult::WouldCopy, _, _) => {
            format!(" ({}, {})", bytes_iec(r.bytes), r.reason.as_str())
        }
        (EntryResult::Skipped | EntryResult::WouldDelete | EntryResult::Deleted, _, _) => {
            format!(" ({})", r.reason.as_str())
        }
        _ => String::new(),
    };
    format!("{what:<12} {}{dir}{detail}", r.path)
}

fn file_result(args: &FxpArgs, state: &JobState, seconds: f64) -> ExitCode {
    let dst = destination_path(&args.src, &args.dst);
    if state.skipped() {
        let reason = state.entries[0].plan.reason;
        if args.json {
            let mut out = JsonResult::file(args, &dst, None, reason, seconds);
            out.interrupted = false;
            out.files_skipped = 1;
            if let Some(rec) = out.files.first_mut() {
                rec.result = EntryResult::Skipped;
            }
            print_json(&out);
        } else {
            println!("{} -> {dst}: skipped ({})", args.src, reason.as_str());
        }
        return ExitCode::SUCCESS;
    }
    let outcome = state.outcome();
    if args.json {
        // New there or overwritten, as the plan found the destination.
        let reason = state
            .entries
            .first()
            .map_or(Reason::Overwrite, |e| e.plan.reason);
        print_json(&JsonResult::file(
            args,
            &dst,
            outcome.clone(),
            reason,
            seconds,
        ));
    }
    match outcome {
        Some(Ok(report)) => {
            if !args.json {
                println!("{}", summary(&args.src, &dst, report));
            }
            ExitCode::SUCCESS
        }
        Some(Err(e)) if e.kind == FailureKind::Cancelled => ExitCode::from(INTERRUPTED),
        Some(Err(e)) => {
            eprintln!("fxprelay fxp: {} -> {dst}: {e}", args.src);
            hint(&e);
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// The files left part way, each with the destination's `SIZE` now that its transfer
/// is aborted (the last polled count where the server does not tell): a tree's file
/// is `root` joined with its path, a single file's `file`.
async fn written(
    mut left: Vec<Left>,
    opts: &EngineOptions,
    root: Option<&FtpUrl>,
    file: &FtpUrl,
) -> Vec<Left> {
    for l in &mut left {
        let dst = match root {
            Some(root) => root.join(l.name.as_bytes()),
            None => file.clone(),
        };
        if let Ok(mut c) = opts.open(&dst).await {
            if let Ok(Some(n)) = c.size(&dst.path).await {
                l.done = n;
            }
            c.quit().await;
        }
    }
    left
}

/// After Ctrl-C: what was left part way, and how to go on.
fn interrupted(args: &FxpArgs, left: &[Left]) {
    eprintln!("fxprelay fxp: interrupted");
    for l in left {
        let of = l.total.map_or(String::new(), |t| {
            format!(" of {}", indicatif::HumanBytes(t))
        });
        eprintln!(
            "fxprelay fxp:   {} -> {}: {}{of} written when stopped (a partial file is left at the destination)",
            l.name,
            l.dst,
            bytes_iec(l.done)
        );
    }
    let again = if args.opts.recursive {
        "run the same command again with --resume --skip-existing (files already copied are skipped, partial ones continued with REST)"
    } else {
        "run the same command again with --resume (the partial file is continued with REST where both servers offer it)"
    };
    eprintln!("fxprelay fxp: to resume: {again}");
}

/// `--json`: the one object printed on stdout.
#[derive(Debug, serde::Serialize)]
struct JsonResult {
    /// The URLs as given (passwords shown as `***`), the destination completed with the
    /// source's name where it named a directory.
    source: String,
    destination: String,
    files_copied: usize,
    files_skipped: usize,
    files_failed: usize,
    dirs_created: usize,
    deleted: usize,
    /// Bytes of the copied files, exact.
    bytes: u64,
    /// Of those, bytes that went through fxprelay (the relay method).
    relayed_bytes: u64,
    seconds: f64,
    /// The method of the copy (a tree's most used one); `null` when nothing was copied.
    method: Option<String>,
    methods: std::collections::BTreeMap<String, usize>,
    dry_run: bool,
    interrupted: bool,
    /// A failure that ended the whole run (a source that cannot be listed, say).
    error: Option<String>,
    files: Vec<FileRecord>,
}

impl JsonResult {
    fn empty(args: &FxpArgs, seconds: f64) -> JsonResult {
        JsonResult {
            source: args.src.to_string(),
            destination: args.dst.to_string(),
            files_copied: 0,
            files_skipped: 0,
            files_failed: 0,
            dirs_created: 0,
            deleted: 0,
            bytes: 0,
            relayed_bytes: 0,
            seconds,
            method: None,
            methods: Default::default(),
            dry_run: false,
            interrupted: false,
            error: None,
            files: vec![],
        }
    }

    fn failed(args: &FxpArgs, error: String, seconds: f64) -> JsonResult {
        JsonResult {
            error: Some(error),
            ..JsonResult::empty(args, seconds)
        }
    }

    fn tree(args: &FxpArgs, state: &JobState, seconds: f64) -> JsonResult {
        let t = state.totals();
        JsonResult {
            files_copied: t.files_copied,
            files_skipped: t.skipped,
            files_failed: t.failed,
            dirs_created: t.created,
            deleted: t.deleted,
            bytes: t.bytes_copied,
            relayed_bytes: t.relayed_bytes,
            method: render::main_method(state).map(str::to_owned),
            methods: t.methods.iter().map(|(m, n)| (m.to_string(), *n)).collect(),
            dry_run: state.dry_run,
            interrupted: render::interrupted(state),
            files: state.records(),
            ..JsonResult::empty(args, seconds)
        }
    }

    fn file(
        args: &FxpArgs,
        dst: &FtpUrl,
        r: Option<Result<&Report, Failure>>,
        reason: Reason,
        seconds: f64,
    ) -> JsonResult {
        let mut rec = FileRecord {
            path: args.src.to_string(),
            kind: Kind::File,
            result: EntryResult::Copied,
            reason,
            bytes: 0,
            method: None,
            verified: None,
            error: None,
        };
        let mut out = JsonResult {
            destination: dst.to_string(),
            ..JsonResult::empty(args, seconds)
        };
        match r {
            Some(Ok(rep)) => {
                rec.bytes = rep.bytes;
                rec.method = Some(rep.method);
                rec.verified = Some(rep.verified);
                out.files_copied = 1;
                out.bytes = rep.bytes;
                out.relayed_bytes = rep.relayed_bytes;
                out.method = Some(rep.method.as_str().to_owned());
                out.methods.insert(rep.method.as_str().to_owned(), 1);
            }
            Some(Err(e)) if e.kind == FailureKind::Cancelled => {
                rec.result = EntryResult::Interrupted;
                out.interrupted = true;
            }
            Some(Err(e)) => {
                rec.result = EntryResult::Failed;
                rec.error = Some(e.message);
                out.files_failed = 1;
            }
            None => {
                rec.result = EntryResult::Interrupted;
                out.interrupted = true;
            }
        }
        out.files = vec![rec];
        out
    }
}

fn print_json(r: &JsonResult) {
    match serde_json::to_string_pretty(r) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("fxprelay fxp: cannot write the JSON result: {e}"),
    }
}

/// What the operator can do about a failure, when there is something.
fn hint(e: &Failure) {
    if e.kind == FailureKind::UntrustedCertificate {
        eprintln!(
            "fxprelay fxp: the server's TLS certificate is not signed by a trusted CA: \
             give that CA's certificate with --ca FILE (or skip the check with --insecure)"
        );
    }
}

/// `copied SRC -> DST: method fxp, 8388608 bytes (8.00 MiB), 0.052 s, 153.85 MiB/s, verified sha-256`.
pub fn summary(src: &FtpUrl, dst: &FtpUrl, r: &Report) -> String {
    let secs = r.duration.as_secs_f64();
    format!(
        "copied {src} -> {dst}: method {}, {}, {secs:.3} s, {}/s{}{}",
        r.method,
        bytes_iec(r.bytes),
        // The rate of what moved in this run, not of a prefix resumed from earlier.
        rate_iec(r.bytes.saturating_sub(r.resumed_from), secs),
        if r.resumed_from > 0 {
            format!(", resumed at {}", r.resumed_from)
        } else {
            String::new()
        },
        if r.verified.is_verified() {
            format!(", verified {}", r.verified)
        } else {
            ", not verified".to_owned()
        },
    )
}
