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
    },
    /// Parse and validate the configuration; exit 0 when valid, 2 when not.
    CheckConfig {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    egress_sentinel::dial::tls::install_default_provider();
    let code = match cli.command {
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
        } => run_verify(config, format, baseline, record_baseline),
    };
    ExitCode::from(code)
}

fn run_verify(
    config: PathBuf,
    format: Format,
    baseline: Option<PathBuf>,
    record: Option<PathBuf>,
) -> u8 {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return verify::EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return verify::EXIT_USAGE;
        }
    };
    let prober = verify::prober_for(&config);
    let results = runtime.block_on(verify::run_checks(&config, &prober));
    let mut out = std::io::stdout().lock();
    let report = match format {
        Format::Table => verify::render_table(&results),
        Format::Json => verify::render_json(&results) + "\n",
    };
    let _ = out.write_all(report.as_bytes());
    if let Some(path) = baseline {
        match verify::compare_baseline(&path, &results) {
            Ok(lines) if lines.is_empty() => {
                eprintln!("no change since the baseline {}", path.display())
            }
            Ok(lines) => {
                eprintln!("changes since the baseline {}:", path.display());
                for l in lines {
                    eprintln!("  {l}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return verify::EXIT_USAGE;
            }
        }
    }
    if let Some(path) = record {
        if let Err(e) = std::fs::write(&path, verify::render_json(&results)) {
            eprintln!("error: cannot write the baseline {}: {e}", path.display());
            return verify::EXIT_USAGE;
        }
    }
    verify::exit_code(&results)
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
