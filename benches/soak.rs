//! Soak, run by hand: `SOAK_MINUTES=120 cargo bench --bench soak`.
//!
//! Issue 23's mixed load against the release binary for as long as one
//! likes (`soak/load.rs`: 4 targets × 2 routes probed every second through
//! a real Squid and direct, the app opening ~10 TLS tunnels a second, a
//! 4 MiB download every 20 s). A row a minute: `VmRSS`, `RssAnon`,
//! descriptors, live tokio tasks, threads, CPU and the app's counts. At
//! the end it judges itself and exits 1 when memory is not flat:
//! - the least-squares slopes of `VmRSS` and `RssAnon` past the first
//!   5 minutes are at most 1 KiB/min;
//! - no rise of 1 MiB or more within a minute past the first 2 minutes;
//! - descriptors and tasks at rest end where they began;
//! - no tunnel or download failed.
//!
//! `SOAK_BINARY` runs another build of the sidecar (default: the release
//! binary cargo built for this bench); `SOAK_ENV="K=V K=V"` adds to its
//! environment (`MALLOC_ARENA_MAX=2`, `LD_PRELOAD=...`: the allocator
//! comparison in benches/README.md). Without `SOAK_MINUTES` it only says
//! how to run it, so a plain `cargo bench` does not start a 2-hour run.
//! Nothing leaves 127.0.0.0/8.

use std::path::PathBuf;
use std::time::Duration;

#[path = "soak/load.rs"]
mod load;

/// Past this, memory must be flat.
const SETTLE_SECS: f64 = 300.0;
/// Past this, no step.
const WARM_SECS: f64 = 120.0;
/// The most a slope may be, KiB per minute.
const MAX_SLOPE: f64 = 1.0;
/// A rise this large within a minute is a step, KiB.
const STEP: u64 = 1024;

fn main() {
    let Some(minutes) = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    else {
        println!(
            "soak: not run. SOAK_MINUTES=120 cargo bench --bench soak (benches/README.md, \"Soak\")"
        );
        return;
    };
    let binary = std::env::var_os("SOAK_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_egress-sentinel")));
    let mut opts = load::Opts::new(binary, Duration::from_secs_f64(minutes * 60.0));
    if let Ok(env) = std::env::var("SOAK_ENV") {
        opts.env = env
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    if !opts.env.is_empty() {
        println!("soak: sidecar environment {:?}", opts.env);
    }
    let report = load::run(&opts, &mut |line| println!("{line}"));
    println!("{}", report.summary(SETTLE_SECS, WARM_SECS));
    for w in &report.warnings {
        println!("sidecar: {w}");
    }
    let mut failed = Vec::new();
    for (what, slope) in [
        ("RSS", report.slope(|s| s.rss, SETTLE_SECS)),
        ("RssAnon", report.slope(|s| s.anon, SETTLE_SECS)),
    ] {
        match slope {
            Some(v) if v <= MAX_SLOPE => {}
            Some(v) => failed.push(format!("{what} slope {v:+.2} KiB/min > {MAX_SLOPE}")),
            None => failed.push(format!("{what}: too short for a slope past 5 minutes")),
        }
    }
    for (what, step) in [
        ("RSS", report.max_step(|s| s.rss, WARM_SECS)),
        ("RssAnon", report.max_step(|s| s.anon, WARM_SECS)),
    ] {
        if step >= STEP {
            failed.push(format!("{what} rose {step} KiB within a minute"));
        }
    }
    if report.end != report.baseline {
        failed.push(format!(
            "at rest: {:?} at the end, {:?} before",
            report.end, report.baseline
        ));
    }
    if report.tunnels_failed + report.downloads_failed > 0 {
        failed.push("the app saw failures".to_string());
    }
    if failed.is_empty() {
        println!("soak: FLAT");
    } else {
        println!("soak: NOT FLAT: {}", failed.join("; "));
        std::process::exit(1);
    }
}
