//! The `fxprelay` binary: command line, logging, signals.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::error;
use tracing_subscriber::EnvFilter;

use fxprelay::{app, config::Config, metrics};

/// fxprelay: an FTP proxy that fixes the addresses in FTP control traffic so transfers
/// work across NAT and firewalls, with Prometheus metrics.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = false)]
struct Cli {
    /// Configuration file (YAML). See config/fxprelay.yaml for a commented example.
    #[arg(
        short,
        long,
        global = true,
        env = "FXPRELAY_CONFIG",
        default_value = "/etc/fxprelay/fxprelay.yaml"
    )]
    config: PathBuf,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "FXPRELAY_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug`, `fxprelay=debug`. RUST_LOG overrides it.
    #[arg(long, global = true, env = "FXPRELAY_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run,
    /// Validate the configuration file and exit: 0 when valid, 1 with the error otherwise.
    Check,
    /// Copy a file (or, with --recursive, a tree) from one FTP server to another by FXP,
    /// falling back to reverse FXP and then to relaying the bytes. Needs no config file.
    Fxp(Box<fxprelay::fxp::cli::FxpArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    init_logging(&cli);
    let check_only = match cli.command.take().unwrap_or(Command::Run) {
        // `fxp` runs for its own user with URLs on the command line: no config file.
        Command::Fxp(args) => return fxprelay::fxp::cli::run(*args),
        Command::Check => true,
        Command::Run => false,
    };
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fxprelay: {}: {e}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    for warning in config.warnings() {
        eprintln!("fxprelay: warning: {warning}");
    }
    match check_only {
        true => {
            println!(
                "{}: OK ({} listener{})",
                cli.config.display(),
                config.listeners.len(),
                if config.listeners.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        false => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fxprelay: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(config, cli.config.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    eprintln!("fxprelay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let bound = app::bind(&config).await?;
    let handle = metrics::install()?;
    let (stop_tx, stop_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if stop_tx.send(()).is_err() {
                break;
            }
        }
    });
    let (reload_tx, requests) = tokio::sync::mpsc::unbounded_channel();
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if reload_tx.send(()).is_err() {
                break;
            }
        }
    });
    let reload = app::Reload { path, requests };
    app::run(bound, Some(handle), stop_rx, Some(reload)).await
}

fn init_logging(cli: &Cli) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
