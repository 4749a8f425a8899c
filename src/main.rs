//! The `egress-sentinel` binary: parses the command line and hands off to
//! the library. Nothing here knows how a probe works.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use egress_sentinel::config::Config;
use egress_sentinel::verify;

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
        /// Write this run's results as a baseline file.
        #[arg(long)]
        record_baseline: Option<PathBuf>,
        /// Also show file descriptors: this process's and the [watch] ones, by kind, TCP state and remote endpoint.
        #[arg(long)]
        fds: bool,
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
            init_logs("info", log_format);
            run_sidecar(config)
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
            format,
            baseline,
            record_baseline,
            fds,
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
    let prober = verify::prober_for(&config);
    let now = verify::now_unix();
    let mut report = runtime.block_on(verify::run_report(&config, &prober, now));
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
    let _ = out.write_all(text.as_bytes());
    if let Some(drift) = &report.drift {
        eprint!("{}", drift.render());
    }
    if let Some(path) = record {
        let baseline = verify::Baseline::record(&report, now);
        if let Err(e) = std::fs::write(&path, baseline.to_json()) {
            eprintln!("error: cannot write the baseline {}: {e}", path.display());
            return verify::EXIT_USAGE;
        }
    }
    report.exit_code()
}

/// Logs to stderr; the level from `RUST_LOG` (else `default`); text on a
/// terminal, JSON lines otherwise, unless `format` says.
fn init_logs(default: &str, format: Option<LogFormat>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Loads the config and starts the async runtime; on failure, says why and
/// returns the exit code (2 for a config error).
fn load_and_start(path: &std::path::Path) -> Result<(Config, tokio::runtime::Runtime), u8> {
    let config = Config::load(path).map_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
        eprintln!("error: {e}");
        verify::EXIT_USAGE
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            verify::EXIT_FAILED
        })?;
    Ok((config, runtime))
}

fn run_demo() -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
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

fn run_sidecar(path: PathBuf) -> u8 {
    let (config, runtime) = match load_and_start(&path) {
        Ok(both) => both,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listeners = match egress_sentinel::sidecar::Listeners::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot bind");
                eprintln!("error: {e}");
                return verify::EXIT_FAILED;
            }
        };
        match egress_sentinel::sidecar::run(config, listeners, shutdown_signal()).await {
            Ok(()) => verify::EXIT_OK,
            Err(e) => {
                tracing::error!(error = %e, "cannot run");
                eprintln!("error: {e}");
                verify::EXIT_FAILED
            }
        }
    })
}

/// SIGTERM or SIGINT. As PID 1 in a container, SIGTERM is ignored unless a
/// handler is installed: this is that handler.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
