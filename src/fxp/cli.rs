//! `fxprelay fxp SRC DST`: the engine for a person or a script. A progress bar on a
//! terminal, plain lines otherwise, one summary line on stdout, the server's text on
//! stderr and a non-zero exit code on failure. Needs no configuration file.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::client::TlsPolicy;
use super::engine::{self, Event, FxpError, Options, Progress};
use super::tree;
use super::url::FtpUrl;

#[derive(Debug, clap::Args)]
pub struct FxpArgs {
    /// Source: ftp://user:pass@host:port/path (password optional; no user = anonymous);
    /// ftpes:// for explicit TLS (AUTH TLS), ftps:// for implicit TLS (default port 990).
    pub src: FtpUrl,
    /// Destination: a file path, or a directory ending in `/` to keep the source's name.
    pub dst: FtpUrl,
    /// Reverse FXP first: PASV on the destination, PORT on the source.
    #[arg(long)]
    pub reverse: bool,
    /// Copy a directory tree (MLSD, or LIST parsed as `ls -l`).
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
    #[arg(long, default_value_t = engine::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Continue a partial destination file from an earlier run (REST).
    #[arg(long)]
    pub resume: bool,
    /// Never relay the bytes through fxprelay: fail when neither FXP direction works.
    #[arg(long)]
    pub no_relay: bool,
    /// Trust TLS servers whose certificate this CA (a PEM file) signed, besides the
    /// system's trust roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Do not check TLS servers' certificates (anyone in the path can then read and
    /// change the transfer, passwords included).
    #[arg(long)]
    pub insecure: bool,
    /// Between TLS servers that cannot encrypt between themselves (no SSCN or CPSV),
    /// try FXP with clear data (PROT C) before relaying through fxprelay.
    #[arg(long)]
    pub allow_clear_data: bool,
}

pub fn run(args: FxpArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fxprelay fxp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let display = Display::new();
    if args.insecure {
        eprintln!("fxprelay fxp: warning: --insecure: TLS certificates are not checked");
    }
    let opts = Options {
        reverse: args.reverse,
        retries: args.retries,
        timeout: Duration::from_secs(args.timeout.max(1)),
        relay_fallback: !args.no_relay,
        resume: args.resume,
        concurrency: args.concurrency.max(1),
        progress: Some(display.callback()),
        tls: TlsPolicy::new(!args.insecure, args.ca.clone()),
        allow_clear_data: args.allow_clear_data,
        ..Options::default()
    };
    if args.recursive {
        let r = runtime.block_on(tree::copy_tree(&args.src, &args.dst, &opts));
        display.finish();
        match r {
            Ok(report) => {
                println!("{}", report.summary());
                if report.failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    for (path, e) in &report.failed {
                        eprintln!("fxprelay fxp: {path}: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("fxprelay fxp: {e}");
                hint(&e);
                ExitCode::FAILURE
            }
        }
    } else {
        let dst = engine::destination_path(&args.src, &args.dst);
        let r = runtime.block_on(engine::transfer(&args.src, &dst, &opts));
        display.finish();
        match r {
            Ok(report) => {
                println!("{}", summary(&args.src, &dst, &report));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fxprelay fxp: {} -> {dst}: {e}", args.src);
                hint(&e);
                ExitCode::FAILURE
            }
        }
    }
}

/// What the operator can do about a failure, when there is something.
fn hint(e: &FxpError) {
    if e.untrusted_certificate() {
        eprintln!(
            "fxprelay fxp: the server's TLS certificate is not signed by a trusted CA: \
             give that CA's certificate with --ca FILE (or skip the check with --insecure)"
        );
    }
}

/// `copied SRC -> DST: method fxp, 8388608 bytes, 0.052 s, 161.30 MB/s`.
pub fn summary(src: &FtpUrl, dst: &FtpUrl, r: &engine::Report) -> String {
    let secs = r.duration.as_secs_f64();
    format!(
        "copied {src} -> {dst}: method {}, {} bytes, {secs:.3} s, {:.2} MB/s{}{}",
        r.method,
        r.bytes,
        // The rate of what moved in this run, not of a prefix resumed from earlier.
        tree::rate_mb(r.bytes.saturating_sub(r.resumed_from), secs),
        if r.resumed_from > 0 {
            format!(", resumed at {}", r.resumed_from)
        } else {
            String::new()
        },
        if r.verified {
            ""
        } else {
            ", size not verified"
        },
    )
}

/// A progress bar on a terminal, plain lines on stderr otherwise.
struct Display {
    bar: Option<ProgressBar>,
}

impl Display {
    fn new() -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::no_length();
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display { bar }
    }

    fn callback(&self) -> Progress {
        let bar = self.bar.clone();
        // Plain mode prints at most one byte-count line every few seconds.
        let last_line = Mutex::new(std::time::Instant::now());
        Arc::new(move |e: &Event| match &bar {
            Some(bar) => match e {
                Event::Started { src, size, .. } => {
                    bar.set_message(src.clone());
                    if let Some(n) = size {
                        bar.set_length(*n);
                    }
                    bar.set_position(0);
                }
                Event::Bytes { done, .. } => bar.set_position(*done),
                other => bar.println(line(other)),
            },
            None => match e {
                Event::Bytes { .. } => {
                    let mut last = last_line.lock().unwrap_or_else(|p| p.into_inner());
                    if last.elapsed() >= Duration::from_secs(5) {
                        *last = std::time::Instant::now();
                        eprintln!("{}", line(e));
                    }
                }
                other => eprintln!("{}", line(other)),
            },
        })
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn line(e: &Event) -> String {
    match e {
        Event::Started { src, dst, size } => match size {
            Some(n) => format!("fxp: {src} -> {dst} ({n} bytes)"),
            None => format!("fxp: {src} -> {dst}"),
        },
        Event::Trying { method, offset: 0 } => format!("fxp: trying {method}"),
        Event::Trying { method, offset } => format!("fxp: trying {method}, resuming at {offset}"),
        Event::MethodFailed { method, error } => format!("fxp: {method} failed: {error}"),
        Event::Bytes { done, total } => match total {
            Some(t) => format!("fxp: {done}/{t} bytes"),
            None => format!("fxp: {done} bytes"),
        },
        Event::Retrying {
            attempt,
            delay,
            error,
        } => format!("fxp: attempt {attempt} failed ({error}); retrying in {delay:?}"),
    }
}
