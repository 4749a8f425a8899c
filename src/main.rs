//! The `egress-sentinel` binary: parses the command line and hands off to
//! the library. Nothing here knows how a probe works. `run` blocks the
//! process's signals before it reads the config (which sizes the runtime)
//! and binds the listeners; `sidecar::signals` installs the handlers and
//! `sidecar::run` answers them.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use egress_sentinel::config::Config;
use egress_sentinel::sidecar::{self, signals};
use egress_sentinel::verify;
use tokio::runtime::Runtime;

/// Keeps an application's outbound HTTPS path honest: probes every route
/// (forward proxy or direct) and names where it breaks.
#[derive(Debug, Parser)]
#[command(name = "egress-sentinel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar: scheduled probes, metrics, status, reload on SIGHUP, stop on SIGTERM/SIGINT.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Log format; default: text on a terminal, JSON otherwise.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check every target over every allowed route once, now; exit 0 when all pass, 1 when any fails.
    Verify {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Compare with a baseline written earlier by --record-baseline.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Write this run's results as a baseline file ("-": to standard output, the report then going to standard error).
        #[arg(long)]
        record_baseline: Option<PathBuf>,
        /// Also show file descriptors: this process's and the [watch] ones, by kind, TCP state and remote endpoint.
        #[arg(long)]
        fds: bool,
        /// Keep checking: a live view for a change window (redrawn on a
        /// terminal, one line per change otherwise); Ctrl-C prints a summary.
        #[arg(long, conflicts_with_all = ["baseline", "record_baseline"])]
        watch: bool,
        /// With --watch: how often each target × route is checked.
        #[arg(long, requires = "watch", value_parser = parse_interval, default_value = "2s")]
        interval: Duration,
    },
    /// Replay the outbound-proxy incident on loopback: the sidecar detects, fails over and back.
    Demo,
    /// Parse and validate the configuration; exit 0 when valid, 2 when not.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    egress_sentinel::dial::tls::install_default_provider();
    let code = match cli.command {
        Command::Run { config, log_format } => {
            // One malloc arena, no per-thread caches: memory flat for
            // weeks (re-executes once).
            if let Some(e) = egress_sentinel::sidecar::allocator::settle() {
                eprintln!(
                    "warning: cannot restart with MALLOC_ARENA_MAX=1 and glibc.malloc.tcache_count=0 ({e}); running with glibc's default malloc settings"
                );
            }
            run_sidecar(config, log_format)
        }
        Command::Demo => {
            init_logs("off", Some(LogFormat::Text));
            run_demo()
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} routes, {} targets)",
                    config.display(),
                    c.routes.len(),
                    c.targets.len()
                );
                verify::EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                verify::EXIT_USAGE
            }
        },
        Command::Verify {
            config,
            watch: true,
            interval,
            ..
        } => {
            // Only errors: a warning would land in the middle of the table.
            init_logs("error", Some(LogFormat::Text));
            run_watch(&config, interval)
        }
        Command::Verify {
            config,
            format,
            baseline,
            record_baseline,
            fds,
            ..
        } => {
            init_logs("warn", Some(LogFormat::Text));
            run_verify(config, format, baseline, record_baseline, fds)
        }
    };
    ExitCode::from(code)
}

fn run_verify(
    config: PathBuf,
    format: Format,
    baseline: Option<PathBuf>,
    record: Option<PathBuf>,
    fds: bool,
) -> u8 {
    let (config, runtime) = match load_and_start(&config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    // A baseline that cannot be used is a usage error, found before probing.
    let before = match &baseline {
        Some(path) => match verify::Baseline::load(path) {
            Ok(b) => Some((path, b)),
            Err(e) => {
                eprintln!("error: {e}");
                return verify::EXIT_USAGE;
            }
        },
        None => None,
    };
    let dialer = verify::dialer_for(&config);
    let prober = verify::prober_with(&config, &dialer);
    let now = verify::now_unix();
    let mut report = runtime.block_on(verify::run_full_report(&config, &prober, &dialer, now));
    if let Some((path, b)) = &before {
        report.drift = Some(verify::drift::compare(path, b, &report));
    }
    let sample = fds.then(|| egress_sentinel::watch::sample(&config.watch_processes));
    let mut out = std::io::stdout().lock();
    let text = match (format, &sample) {
        (Format::Table, None) => report.render_table(),
        (Format::Table, Some(s)) => format!(
            "{}\nFILE DESCRIPTORS\n{}",
            report.render_table(),
            egress_sentinel::watch::render(s)
        ),
        (Format::Json, None) => report.render_json() + "\n",
        (Format::Json, Some(s)) => {
            let checks: serde_json::Value =
                serde_json::from_str(&report.render_json()).unwrap_or_default();
            let doc = serde_json::json!({ "checks": checks, "fds": s });
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
    };
    // `--record-baseline -` (a container without a shell or a writable
    // folder): the baseline is the standard output, the report goes aside.
    let baseline_to_stdout = record.as_deref() == Some(std::path::Path::new("-"));
    if baseline_to_stdout {
        eprint!("{text}");
    } else {
        let _ = out.write_all(text.as_bytes());
    }
    if let Some(drift) = &report.drift {
        eprint!("{}", drift.render());
    }
    if let Some(path) = record {
        let baseline = verify::Baseline::record(&report, now).to_json() + "\n";
        let written = if baseline_to_stdout {
            out.write_all(baseline.as_bytes())
        } else {
            std::fs::write(&path, baseline)
        };
        if let Err(e) = written {
            eprintln!("error: cannot write the baseline {}: {e}", path.display());
            return verify::EXIT_USAGE;
        }
    }
    report.exit_code()
}

/// `--interval`: a duration above zero, at most an hour.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = egress_sentinel::config::parse_duration(s)?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!("`{s}` is not an interval between 1ms and 1h"));
    }
    Ok(d)
}

/// `verify --watch`: the live view until Ctrl-C (or SIGTERM); exit 0.
fn run_watch(config: &Path, interval: Duration) -> u8 {
    use std::io::IsTerminal;
    let (config, runtime) = match load_and_start(config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    let result = runtime.block_on(async {
        let stop = async {
            #[cfg(unix)]
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            let _ = tokio::signal::ctrl_c().await;
        };
        egress_sentinel::live::run(config, interval, &mut out, tty, stop).await
    });
    match result {
        Ok(_) => verify::EXIT_OK,
        // stdout closed (a pipe whose reader left): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => verify::EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            verify::EXIT_FAILED
        }
    }
}

/// Logs to stderr; the level from `RUST_LOG` (else `default`); text on a
/// terminal, JSON lines otherwise, unless `format` says. ANSI colours only
/// when stderr is a terminal (and `NO_COLOR` is not set): text logs sent
/// to a file or a collector stay plain.
fn init_logs(default: &str, format: Option<LogFormat>) {
    use egress_sentinel::telemetry::logs;
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let tty = std::io::stderr().is_terminal();
    let format = match format.unwrap_or(if tty {
        LogFormat::Text
    } else {
        LogFormat::Json
    }) {
        LogFormat::Text => logs::LogFormat::Text,
        LogFormat::Json => logs::LogFormat::Json,
    };
    let ansi = tty && std::env::var_os("NO_COLOR").is_none();
    let subscriber = logs::subscriber(filter, format, ansi, std::io::stderr);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("warning: logging was already set up");
    }
}

/// Loads the config and starts the async runtime; on failure, says why
/// (once, on stderr) and returns the exit code (2 for a config error).
fn load_and_start(path: &Path) -> Result<(Config, Runtime), u8> {
    let config = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        verify::EXIT_USAGE
    })?;
    let runtime = signals::async_runtime(config.runtime.workers()).map_err(|e| {
        eprintln!("error: {e}");
        verify::EXIT_FAILED
    })?;
    Ok((config, runtime))
}

/// Loads the sidecar's config; on failure, says why once, as a log line
/// (the sidecar's logs are set up by then), and returns exit code 2.
fn load_logged(path: &Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
        verify::EXIT_USAGE
    })
}

fn run_demo() -> u8 {
    let workers = egress_sentinel::config::RuntimeSettings {
        worker_threads: None,
    }
    .workers();
    let runtime = match signals::async_runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return verify::EXIT_FAILED;
        }
    };
    match runtime.block_on(egress_sentinel::demo::run(Box::new(std::io::stdout()))) {
        Ok(()) => verify::EXIT_OK,
        Err(e) => {
            eprintln!("DEMO FAILED: {e}");
            verify::EXIT_FAILED
        }
    }
}

/// `run`: the signals blocked first, then the config (it says how many
/// worker threads the runtime gets), the runtime and the signal handlers,
/// the listeners and the sidecar until SIGTERM or SIGINT.
fn run_sidecar(path: PathBuf, log_format: Option<LogFormat>) -> u8 {
    // Before anything else: from here on a SIGTERM or SIGINT is held until
    // the handlers exist and then stops the sidecar cleanly, whenever it
    // arrives (while the config is read, the runtime starts, ...).
    let blocked = match signals::block() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return verify::EXIT_FAILED;
        }
    };
    init_logs("info", log_format);
    egress_sentinel::sidecar::allocator::log_settings();
    let config = match load_logged(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = config.check_runnable() {
        eprintln!("error: {e}");
        return verify::EXIT_USAGE;
    }
    let (runtime, signals) = match blocked.install(config.runtime.workers()) {
        Ok(both) => both,
        Err(e) => {
            eprintln!("error: {e}");
            return verify::EXIT_FAILED;
        }
    };
    runtime.block_on(async move {
        let listeners = match sidecar::Listeners::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot bind");
                return verify::EXIT_FAILED;
            }
        };
        match sidecar::run(config, listeners, signals).await {
            Ok(()) => verify::EXIT_OK,
            Err(e) => {
                tracing::error!(error = %e, "cannot run");
                verify::EXIT_FAILED
            }
        }
    })
}
