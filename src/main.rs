//! The `fxprelay` binary: command line, logging, signals.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
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
    /// Configuration file (YAML) for `run`, the command when none is given. See
    /// config/fxprelay.yaml for a commented example.
    #[arg(
        short,
        long,
        env = "FXPRELAY_CONFIG",
        default_value = "/etc/fxprelay/fxprelay.yaml"
    )]
    config: PathBuf,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "FXPRELAY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug`, `fxprelay=debug`. RUST_LOG overrides it.
    #[arg(long, env = "FXPRELAY_LOG", default_value = "info")]
    log: String,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The log options of the commands that log (`run`, `check`, `config`, `fxp`): only they
/// offer them; written before the command they apply too.
#[derive(Debug, Args)]
struct LogOptions {
    /// Log format: human-readable text or one JSON object per line [default: before the
    /// command, else $FXPRELAY_LOG_FORMAT, else text].
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info`, `debug`, `fxprelay=debug`; RUST_LOG overrides it
    /// [default: before the command, else $FXPRELAY_LOG, else info].
    #[arg(long)]
    log: Option<String>,
}

/// `-c` of the commands that read the configuration. Only they take it, so the others'
/// `--help` does not offer it; written before the command (`fxprelay -c F check`) it
/// applies too.
#[derive(Debug, Args)]
struct ConfigFile {
    /// Configuration file (YAML) [default: -c before the command, else $FXPRELAY_CONFIG,
    /// else /etc/fxprelay/fxprelay.yaml].
    #[arg(short, long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run {
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        log: LogOptions,
    },
    /// Validate the configuration file and exit: 0 when valid (warnings printed), 1 with
    /// the error otherwise.
    Check {
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        log: LogOptions,
        /// Also try to bind every listener and the admin endpoint (then release them):
        /// catches addresses this host lacks, ports in use and missing privileges.
        #[arg(long)]
        bind: bool,
        /// Also connect to every reverse listener's servers as its sessions would (PROXY
        /// header, implicit TLS or AUTH TLS), ask FEAT, and report what each offers and
        /// which setting stands in the way (exit 1 when something does).
        #[arg(long)]
        probe: bool,
    },
    /// Print the effective configuration (every default filled in, `${VAR}`s expanded)
    /// as YAML.
    Config {
        #[command(flatten)]
        file: ConfigFile,
        #[command(flatten)]
        log: LogOptions,
    },
    /// Ask a running proxy's admin endpoint whether it is healthy (`GET /healthz`): exit
    /// 0 when it answers 200, 1 otherwise. For container health checks.
    Healthcheck {
        #[command(flatten)]
        file: ConfigFile,
        /// The admin endpoint, `ip:port`; default: `admin.bind` of the config file (a
        /// wildcard address is asked on loopback), else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print what a running proxy is doing (what its console shows): listeners, pools,
    /// sessions with their transfers, FXP jobs. Asks its admin API.
    Status {
        #[command(flatten)]
        file: ConfigFile,
        /// The admin endpoint, `ip:port`; default: `admin.bind` of the config file (a
        /// wildcard address is asked on loopback), else 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// The API's bearer token; default: `admin.token` of the config file.
        #[arg(long, env = "FXPRELAY_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// How long to wait for the answers.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff) to stdout: `fxprelay man | man -l -`; with `--dir`,
    /// write it and one page per command (fxprelay-run.1, fxprelay-fxp.1, ...) there.
    Man {
        /// Directory to write every page into, instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run as an agent beside FTP servers that accept no inbound connection: dial out to
    /// the edge fxprelay (its `agents:` listener) and carry the sessions and transfers it
    /// asks for to the servers inside `agent.allow`. Listens on no fixed port (only, per
    /// active-mode transfer, on one ephemeral port for that server).
    Agent {
        /// The agent's configuration file (YAML, an `agent:` block).
        #[arg(short, long, default_value = "/etc/fxprelay/agent.yaml")]
        config: PathBuf,
        #[command(flatten)]
        log: LogOptions,
    },
    /// Copy a file (or, with --recursive, a tree) from one FTP server to another by FXP,
    /// falling back to reverse FXP and then to relaying the bytes. Needs no config file.
    Fxp {
        #[command(flatten)]
        log: LogOptions,
        #[command(flatten)]
        args: Box<fxprelay::fxp::cli::FxpArgs>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take().unwrap_or(Command::Run {
        file: ConfigFile { config: None },
        log: LogOptions {
            log_format: None,
            log: None,
        },
    });
    // A command's own `-c` and log options win over those written before it.
    if let Command::Run { file, .. }
    | Command::Check { file, .. }
    | Command::Config { file, .. }
    | Command::Healthcheck { file, .. }
    | Command::Status { file, .. } = &command
        && let Some(path) = &file.config
    {
        cli.config = path.clone();
    }
    if let Command::Run { log, .. }
    | Command::Check { log, .. }
    | Command::Config { log, .. }
    | Command::Agent { log, .. }
    | Command::Fxp { log, .. } = &command
    {
        if let Some(format) = log.log_format {
            cli.log_format = format;
        }
        if let Some(filter) = &log.log {
            cli.log = filter.clone();
        }
    }
    match command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "fxprelay", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => return man(dir),
        Command::Healthcheck { admin, timeout, .. } => return healthcheck(&cli, admin, timeout),
        Command::Status {
            admin,
            token,
            timeout,
            ..
        } => return status(&cli, admin, token, timeout),
        _ => {}
    }
    init_logging(&cli);
    let probe = matches!(command, Command::Check { probe: true, .. });
    let (check_only, try_binds) = match command {
        // `fxp` runs for its own user with URLs on the command line: no config file.
        Command::Fxp { args, .. } => return fxprelay::fxp::cli::run(*args),
        Command::Agent { config, .. } => return fxprelay::agent::run::main(&config),
        Command::Check { bind, .. } => (true, bind),
        Command::Config { .. } => (true, false),
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
    if matches!(command, Command::Config { .. }) {
        print!("{}", config.effective_yaml());
        return ExitCode::SUCCESS;
    }
    match check_only {
        true => {
            for w in &config.warnings {
                eprintln!("fxprelay: {}: warning: {w}", cli.config.display());
            }
            let held = if try_binds { try_bind(config) } else { Ok(0) };
            let held = match held {
                Ok(held) => held,
                Err(e) => {
                    eprintln!("fxprelay: {}: {e}", cli.config.display());
                    return ExitCode::FAILURE;
                }
            };
            if probe && !probe_servers(&loaded) {
                eprintln!(
                    "fxprelay: {}: --probe found problems (above)",
                    cli.config.display()
                );
                return ExitCode::FAILURE;
            }
            println!(
                "{}: OK ({} listener{}{}{}{})",
                cli.config.display(),
                config.listeners.len(),
                if config.listeners.len() == 1 { "" } else { "s" },
                match config.warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".into(),
                    n => format!(", {n} warnings"),
                },
                match (try_binds, held) {
                    (false, _) => String::new(),
                    (true, 0) => ", every bind works".into(),
                    (true, n) => format!(", every bind works ({n} held by the running instance)"),
                },
                if probe { ", every server fits" } else { "" },
            );
            ExitCode::SUCCESS
        }
        false => {
            tracing::info!(
                version = %VERSION,
                config = %cli.config.display(),
                listeners = config.listeners.len(),
                "fxprelay starting"
            );
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
                    // Once: the log is on stderr already (text or JSON).
                    error!("{e:#}");
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

/// Binds (and releases) the admin endpoint and every listener, as `run` would: how many
/// binds the running instance holds (a bind in use counts as working when the proxy
/// answering at this config's admin address holds it: `check --bind` before a reload).
/// The error is the line `check --bind` prints.
fn try_bind(config: &Config) -> Result<usize, String> {
    let binds = std::iter::once(("admin.bind".to_owned(), config.admin.bind)).chain(
        config
            .listeners
            .iter()
            .map(|l| (format!("listener `{}`", l.name), l.bind)),
    );
    let mut running: Option<Result<Vec<std::net::SocketAddr>, String>> = None;
    let mut held = 0;
    for (what, addr) in binds {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let running = running.get_or_insert_with(|| running_binds(config));
                let admin = fxprelay::admin::reachable(config.admin.bind);
                match running {
                    Ok(b)
                        if b.contains(&addr)
                            || (addr == config.admin.bind && b.contains(&admin)) =>
                    {
                        held += 1;
                    }
                    Ok(_) => {
                        return Err(format!(
                            "cannot bind {what} to {addr}: {e} (not by the fxprelay answering at {admin})"
                        ));
                    }
                    Err(why) => {
                        return Err(format!(
                            "cannot bind {what} to {addr}: {e} (and no fxprelay of this config answers at {admin}: {why})"
                        ));
                    }
                }
            }
            Err(e) => return Err(format!("cannot bind {what} to {addr}: {e}")),
        }
    }
    Ok(held)
}

/// A one-thread runtime for the commands that are clients of something (`status`,
/// `check --probe`, `check --bind` next to a running proxy).
fn client_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// What the proxy running with this config's admin address holds.
fn running_binds(config: &Config) -> Result<Vec<std::net::SocketAddr>, String> {
    let admin = fxprelay::admin::reachable(config.admin.bind);
    let runtime = client_runtime()?;
    let token = config.admin.token.as_deref();
    runtime
        .block_on(fxprelay::admin::status::held_binds(
            admin,
            token,
            std::time::Duration::from_secs(3),
        ))
        .map_err(|e| e.to_string())
}

/// README, for the configuration reference's manual page: the table there is the one
/// reference, so the page cannot drift from it.
const README: &str = include_str!("../README.md");

/// `fxprelay.yaml(5)` in roff: README's "Configuration reference" section, its
/// paragraphs and one entry per key of its table (key, default, meaning).
fn config_reference_page(readme: &str) -> String {
    let section = readme
        .split("\n## Configuration reference\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_default();
    // roff: backslashes doubled, a leading `.` or `'` guarded, markdown's code quotes
    // in bold.
    let text = |s: &str| {
        let mut out = String::new();
        for (i, part) in s
            .replace('\\', "\\e")
            .replace("***", "\u{0}")
            .replace("**", "")
            .replace('\u{0}', "***")
            .split('`')
            .enumerate()
        {
            if i % 2 == 1 {
                out.push_str(&format!("\\fB{part}\\fR"));
            } else {
                out.push_str(part);
            }
        }
        if out.starts_with(['.', '\'']) {
            out.insert_str(0, "\\&");
        }
        out
    };
    let mut page = format!(
        ".TH fxprelay.yaml 5 \"\" \"fxprelay {}\"\n.SH NAME\nfxprelay.yaml \\- configuration of the fxprelay FTP proxy\n.SH DESCRIPTION\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut keys = String::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
        match cells.as_slice() {
            [key, default, meaning] if line.starts_with("| `") => {
                keys.push_str(&format!(
                    ".TP\n{}\nDefault: {}. {}\n",
                    text(key.trim()),
                    text(default.trim()),
                    text(meaning.trim())
                ));
            }
            _ if line.starts_with('|') => {}
            _ if line.trim().is_empty() => page.push_str(".PP\n"),
            _ => match line.strip_prefix("- ") {
                Some(item) => page.push_str(&format!(".IP \\(bu 2\n{}\n", text(item.trim()))),
                None => page.push_str(&format!("{}\n", text(line.trim()))),
            },
        }
    }
    page.push_str(".SH KEYS\n");
    page.push_str(&keys);
    page.push_str(".SH SEE ALSO\nfxprelay(1), fxprelay\\-check(1), fxprelay\\-config(1)\n");
    page
}

/// `check --probe`: every reverse listener's servers, one report each on stdout. Whether
/// none had a problem.
fn probe_servers(loaded: &Loaded) -> bool {
    let runtime = match client_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fxprelay: {e}");
            return false;
        }
    };
    let reports = runtime.block_on(async {
        let listeners = loaded
            .config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| async move {
                let tls = loaded.tls.listener(i);
                fxprelay::probe::listener(l, tls.as_ref()).await
            });
        futures_util::future::join_all(listeners).await
    });
    let mut fits = true;
    for report in reports.into_iter().flatten() {
        println!("{report}");
        fits &= report.problems().is_empty();
    }
    fits
}

/// `fxprelay man`: the main page on stdout, or every page into `dir` (a page per
/// command and `fxprelay.yaml.5`, the configuration reference).
fn man(dir: Option<PathBuf>) -> ExitCode {
    let written = match &dir {
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .and_then(|()| {
                std::fs::write(dir.join("fxprelay.yaml.5"), config_reference_page(README))
            }),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let to = dir.map_or_else(|| "stdout".into(), |d| d.display().to_string());
            eprintln!("fxprelay: cannot write the manual pages to {to}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fxprelay status`: the console's tables, from the running proxy's API.
fn status(
    cli: &Cli,
    admin: Option<std::net::SocketAddr>,
    token: Option<String>,
    timeout: std::time::Duration,
) -> ExitCode {
    let config = Config::load(&cli.config).ok();
    let addr = admin.unwrap_or_else(|| admin_address(config.as_ref()));
    let token = token.or_else(|| config.and_then(|c| c.admin.token));
    let runtime = match client_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fxprelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fxprelay::admin::status::fetch(
        addr,
        token.as_deref(),
        timeout,
    )) {
        Ok(s) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            print!("{}", fxprelay::admin::status::render(&s, now));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fxprelay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The admin endpoint of `config` (a wildcard bind asked on loopback), else the default.
fn admin_address(config: Option<&Config>) -> std::net::SocketAddr {
    let bind = config.map_or_else(
        || {
            fxprelay::config::DEFAULT_ADMIN_BIND
                .parse()
                .expect("valid default")
        },
        |c| c.admin.bind,
    );
    fxprelay::admin::reachable(bind)
}

/// `fxprelay healthcheck`: `GET /healthz` on the admin endpoint.
fn healthcheck(
    cli: &Cli,
    admin: Option<std::net::SocketAddr>,
    timeout: std::time::Duration,
) -> ExitCode {
    let addr = admin.unwrap_or_else(|| admin_address(Config::load(&cli.config).ok().as_ref()));
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
