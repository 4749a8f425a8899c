//! The compliance trail: every app connection that bypassed the proxy is
//! one JSON line in `state_dir/direct.jsonl` (when it started, the target,
//! the destination, why it went direct, bytes each way, how long it
//! lasted), so a direct fallback is never silent. With `[forward]
//! access_log = true`, every app connection, whatever its route, is also
//! one line of the same shape in `state_dir/access.jsonl`.
//!
//! Both files rotate by size (`direct.jsonl` → `direct.jsonl.1` → … →
//! `.N`, the oldest dropped), so the disk they take is bounded by
//! `trail_max_bytes × (trail_keep + 1)` each. Without a `state_dir` the
//! trail is off, and the start-up log says so once.
//!
//! The operational log only summarises: the first direct connection of a
//! target is logged at once, then one line per target per minute with the
//! count and the reason ([`Summary`], pure, fed the time). Thousands of
//! direct connections during a failover are thousands of trail lines and
//! a handful of log lines.
//!
//! With `[compliance] sink = "both"`, each trail line is also copied to
//! stdout, marked `"log":"compliance"`, so the record leaves the pod with
//! the container's log ([`stdout_copy`]). The file stays the record: the
//! copy is best effort and never holds a connection up.
//!
//! It never decides anything: the forward proxy reports, this writes.
//!
//! # Layout
//! - `mod.rs`: the [`Connection`] line, the settings, and the [`Trail`]
//!   the runtime holds.
//! - `rotating_file`: one JSON Lines file rotated by size.
//! - `summary`: the log's [`Summary`] of direct connections (pure).
//! - [`stdout_copy`]: the trail's bounded, never-blocking copy on stdout.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, Route, TrailSink};
use crate::telemetry::logs::rfc3339_millis;

mod rotating_file;
pub mod stdout_copy;
mod summary;

use rotating_file::RotatingFile;
pub use summary::Summary;
use summary::log_notice;

/// The trail of direct connections, inside `state_dir`.
pub const DIRECT_FILE: &str = "direct.jsonl";
/// The access log of every app connection, inside `state_dir`.
pub const ACCESS_FILE: &str = "access.jsonl";
/// After the first direct connection of a target, one summary line per
/// this long.
pub const SUMMARY_WINDOW: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === Connection ===

/// One app connection, as a trail or access-log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// When the tunnel stood (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The target's name (`_unmatched` for a destination of none).
    pub target: String,
    /// `host:port` the app asked for (never with userinfo: the parser
    /// refuses it).
    pub destination: String,
    /// The route it took.
    pub route: String,
    /// Why it went direct: the proxy routes' failures, or the state that
    /// kept traffic off them. Absent for connections through a proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes from the app to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the app.
    pub bytes_down: u64,
    /// From the tunnel standing to its end, seconds.
    pub duration_seconds: f64,
    /// How it ended: `closed`, or `closed_on_failback` when fail-back to
    /// the proxy cut it.
    pub end: &'static str,
}

/// A connection that stood, until it ends: the one builder of its trail
/// (and access-log) line, for tunnels and plain requests alike.
#[derive(Debug, Clone)]
pub struct Opened {
    /// When it stood, as the line says.
    at: SystemTime,
    /// When it stood, for its duration.
    stood: tokio::time::Instant,
    /// The target's name (`_unmatched` for a destination of none).
    target: String,
    /// `host:port` the app asked for.
    destination: String,
    /// The route it took.
    route: String,
    /// Why it went direct, for a direct connection.
    reason: Option<String>,
}

impl Opened {
    /// A connection standing now.
    pub fn now(target: &str, destination: &str, route: &str, reason: Option<String>) -> Self {
        Self {
            at: SystemTime::now(),
            stood: tokio::time::Instant::now(),
            target: target.to_string(),
            destination: destination.to_string(),
            route: route.to_string(),
            reason,
        }
    }

    /// Its line, now that it ended: `moved` (up, down) bytes, ended `end`.
    pub fn closed(self, moved: (u64, u64), end: &'static str) -> Connection {
        let lasted = self.stood.elapsed();
        Connection {
            time: rfc3339_millis(self.at),
            target: self.target,
            destination: self.destination,
            route: self.route,
            reason: self.reason,
            bytes_up: moved.0,
            bytes_down: moved.1,
            duration_seconds: (lasted.as_secs_f64() * 1000.0).round() / 1000.0,
            end,
        }
    }
}

impl Connection {
    /// True when it bypassed the proxy.
    pub fn is_direct(&self) -> bool {
        self.route == Route::DIRECT
    }
}

// === settings ===

/// What the trail writes, where, and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailSettings {
    /// `state_dir`, when the trail is on.
    pub dir: Option<PathBuf>,
    /// Every app connection also goes to the access log.
    pub access_log: bool,
    /// A file is rotated before it would pass this size.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` … `.N`).
    pub keep: u32,
    /// Where trail lines go besides the file.
    pub sink: TrailSink,
}

impl TrailSettings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        let f = &config.forward;
        Self {
            dir: config.state_dir.clone().filter(|_| f.trail),
            access_log: f.access_log,
            max_bytes: f.trail_max_bytes,
            keep: f.trail_keep,
            sink: config.compliance.sink,
        }
    }
}

// === Trail ===

/// The files of one settings value.
#[derive(Debug)]
struct Files {
    settings: TrailSettings,
    direct: Option<RotatingFile>,
    access: Option<RotatingFile>,
}

impl Files {
    fn new(settings: TrailSettings) -> Self {
        let file = |name: &str| {
            settings
                .dir
                .as_ref()
                .map(|d| RotatingFile::new(d.join(name), settings.max_bytes, settings.keep))
        };
        let direct = file(DIRECT_FILE);
        let access = if settings.access_log {
            file(ACCESS_FILE)
        } else {
            None
        };
        Self {
            settings,
            direct,
            access,
        }
    }
}

/// The runtime's handle on the trail, the access log and the summary.
#[derive(Debug)]
pub struct Trail {
    files: Mutex<Files>,
    summary: Mutex<Summary>,
}

fn announce(settings: &TrailSettings, config: &Config) {
    match (&settings.dir, &config.state_dir) {
        (Some(dir), _) => tracing::info!(
            file = %dir.join(DIRECT_FILE).display(),
            access_log = settings.access_log,
            max_bytes = settings.max_bytes,
            keep = settings.keep,
            stdout_copy = settings.sink == TrailSink::Both,
            "compliance trail on: every direct connection is written there"
        ),
        (None, None) => tracing::warn!(
            "compliance trail off: no state_dir is set, so direct connections are only counted (egress_forward_connections_total{{route=\"direct\"}}) and summarised in this log"
        ),
        (None, Some(_)) => tracing::warn!(
            "compliance trail off: [forward] trail = false, so direct connections are only counted and summarised in this log"
        ),
    }
}

impl Trail {
    /// The trail of `config`; says once in the log whether it is on.
    pub fn new(config: &Config) -> Self {
        let settings = TrailSettings::of(config);
        announce(&settings, config);
        Self {
            files: Mutex::new(Files::new(settings)),
            summary: Mutex::new(Summary::new(SUMMARY_WINDOW)),
        }
    }

    /// Takes a reloaded config's settings (a change is logged).
    pub fn configure(&self, config: &Config) {
        let settings = TrailSettings::of(config);
        let mut files = lock(&self.files);
        if files.settings != settings {
            announce(&settings, config);
            *files = Files::new(settings);
        }
    }

    /// A tunnel of `target` to `destination` went direct for `reason`:
    /// logged at once if it is the first of its episode.
    pub fn went_direct(&self, target: &str, destination: &str, reason: &str) {
        let notice = lock(&self.summary).record(Instant::now(), target, destination, reason);
        if let Some(n) = notice {
            log_notice(&n);
        }
    }

    /// A tunnel ended: a direct one is a trail line, and with the access
    /// log on, every one is an access line.
    pub fn closed(&self, c: &Connection) {
        let mut files = lock(&self.files);
        let to_trail = c.is_direct() && files.direct.is_some();
        if !to_trail && files.access.is_none() {
            return;
        }
        let line = match serde_json::to_string(c) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a compliance trail line");
                return;
            }
        };
        if to_trail {
            if let Some(f) = files.direct.as_mut() {
                f.append(&line);
            }
            // After the file, which is the record: the copy may drop it.
            if files.settings.sink == TrailSink::Both {
                stdout_copy::offer(&line);
            }
        }
        if let Some(f) = files.access.as_mut() {
            f.append(&line);
        }
    }

    /// Logs the summaries due now; call every few seconds.
    pub fn tick(&self) {
        let due = lock(&self.summary).due(Instant::now());
        for n in &due {
            log_notice(n);
        }
    }
}

impl Drop for Trail {
    /// Counts not yet told are told at shutdown.
    fn drop(&mut self) {
        let left = lock(&self.summary).finish(Instant::now());
        for n in &left {
            log_notice(n);
        }
    }
}
