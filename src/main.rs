//! The `fxprelay` binary: command line, logging, signals.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::error;
use tracing_subscriber::EnvFilter;

use fxprelay::app::{self, Loaded};
use fxprelay::{config::Config, metrics};

/// `--version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FXPRELAY_COMMIT"),
    ")"
);

/// fxprelay: an FTP proxy that fixes the addresses in FTP control traffic so transfers
/// work across NAT and firewalls, with Prometheus metrics.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, long_about = None, args_conflicts_with_subcommands = false)]
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
    /// Validate the configuration file and exit: 0 when valid (warnings printed), 1 with
    /// the error otherwise.
    Check {
        /// Also try to bind every listener and the admin endpoint (then release them):
        /// catches addresses this host lacks, ports in use and missing privileges.
        #[arg(long)]
        bind: bool,
    },
    /// Print the effective configuration (every default filled in, `${VAR}`s expanded)
    /// as YAML.
    Config,
    /// Ask a running proxy's admin endpoint whether it is healthy (`GET /healthz`): exit
    /// 0 when it answers 200, 1 otherwise. For container health checks.
    Healthcheck {
        /// The admin endpoint, `ip:port`; default: `admin.bind` of the config file (a
        /// wildcard address is asked on loopback), else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) to stdout: `fxprelay man | man -l -`.
    Man,
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
    let command = cli.command.take().unwrap_or(Command::Run);
    match command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "fxprelay", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fxprelay: cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Healthcheck { admin, timeout } => return healthcheck(&cli, admin, timeout),
        _ => {}
    }
    init_logging(&cli);
    let (check_only, try_binds) = match command {
        // `fxp` runs for its own user with URLs on the command line: no config file.
        Command::Fxp(args) => return fxprelay::fxp::cli::run(*args),
        Command::Check { bind } => (true, bind),
        Command::Config => (true, false),
        _ => (false, false),
    };
    // The file, then the TLS files it names: `check` and `config` read them all too, so
    // a configuration they accept is one `run` starts with.
    let loaded = match Loaded::read(&cli.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("fxprelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = &loaded.config;
    if matches!(command, Command::Config) {
        print!("{}", config.effective_yaml());
        return ExitCode::SUCCESS;
    }
    match check_only {
        true => {
            for w in &config.warnings {
                eprintln!("fxprelay: {}: warning: {w}", cli.config.display());
            }
            let bound = if try_binds { try_bind(config) } else { Ok(()) };
            if let Err(e) = bound {
                eprintln!("fxprelay: {}: {e}", cli.config.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: OK ({} listener{}{}{})",
                cli.config.display(),
                config.listeners.len(),
                if config.listeners.len() == 1 { "" } else { "s" },
                match config.warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".into(),
                    n => format!(", {n} warnings"),
                },
                if try_binds { ", every bind works" } else { "" },
            );
            ExitCode::SUCCESS
        }
        false => {
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fxprelay: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(&loaded, cli.config.clone())) {
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

async fn run(loaded: &Loaded, path: PathBuf) -> anyhow::Result<()> {
    let bound = app::bind(loaded).await?;
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

/// Binds (and releases) the admin endpoint and every listener, as `run` would. The error
/// is the line `check --bind` prints.
fn try_bind(config: &Config) -> Result<(), String> {
    let binds = std::iter::once(("admin.bind".to_owned(), config.admin.bind)).chain(
        config
            .listeners
            .iter()
            .map(|l| (format!("listener `{}`", l.name), l.bind)),
    );
    for (what, addr) in binds {
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot bind {what} to {addr}: {e}"))?;
    }
    Ok(())
}

/// `fxprelay healthcheck`: `GET /healthz` on the admin endpoint.
fn healthcheck(
    cli: &Cli,
    admin: Option<std::net::SocketAddr>,
    timeout: std::time::Duration,
) -> ExitCode {
    let addr = admin.unwrap_or_else(|| {
        let bind = Config::load(&cli.config).map_or_else(
            |_| {
                fxprelay::config::DEFAULT_ADMIN_BIND
                    .parse()
                    .expect("valid default")
            },
            |c| c.admin.bind,
        );
        fxprelay::admin::reachable(bind)
    });
    match fxprelay::admin::probe_health(addr, timeout) {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("fxprelay: {addr}/healthz answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fxprelay: cannot ask {addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // rustls warns about peers' harmless quirks (lftp sends an IP address as SNI) on
    // every connection; its errors reach our own log lines anyway.
    let directives = if cli.log.contains("rustls") {
        cli.log.clone()
    } else {
        format!("{},rustls=error", cli.log)
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Control characters in fields (a client's USER, a path) are escaped.
            .fmt_fields(fxprelay::logging::EscapedFields)
            // Above `fxprelay fxp`'s progress bars while they are shown; stderr otherwise.
            .with_writer(fxprelay::fxp::progress::LogWriter::make)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            // One flat object per line: the event's fields and those of its spans (the
            // session's listener and client) at the top level, each once.
            let mut json = json_subscriber::JsonLayer::stderr();
            json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .with_top_level_flattened_span_list();
            tracing_subscriber::registry()
                .with(filter)
                .with(json)
                .init();
        }
    }
}
