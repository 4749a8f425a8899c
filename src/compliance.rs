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
//! It never decides anything: the forward proxy reports, this writes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Config, Route};
use crate::telemetry::logs::rfc3339_millis;

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

impl Connection {
    /// A record of a tunnel that stood at `opened` and lasted `lasted`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opened: SystemTime,
        target: &str,
        destination: &str,
        route: &str,
        reason: Option<String>,
        moved: (u64, u64),
        lasted: Duration,
        end: &'static str,
    ) -> Self {
        Self {
            time: rfc3339_millis(opened),
            target: target.to_string(),
            destination: destination.to_string(),
            route: route.to_string(),
            reason,
            bytes_up: moved.0,
            bytes_down: moved.1,
            duration_seconds: (lasted.as_secs_f64() * 1000.0).round() / 1000.0,
            end,
        }
    }

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
        }
    }
}

// === RotatingFile ===

/// An append-only JSON Lines file rotated by size.
#[derive(Debug)]
struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    /// Open once the first line is written.
    file: Option<File>,
    /// Its size as far as we know.
    size: u64,
    /// A write failed and was logged; the next success is logged too.
    failing: bool,
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl RotatingFile {
    fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
            failing: false,
        }
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata().map_or(0, |m| m.len());
            self.file = Some(f);
        }
        match self.file.as_mut() {
            Some(f) => Ok(f),
            None => Err(std::io::Error::other("trail file not open")),
        }
    }

    /// `path` → `path.1` → … → `path.keep`; the oldest is dropped.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.size = 0;
        Ok(())
    }

    fn append(&mut self, line: &str) {
        let len = line.len() as u64 + 1;
        let result = (|| {
            self.open()?;
            if self.size > 0 && self.size + len > self.max_bytes {
                self.rotate()?;
            }
            let f = self.open()?;
            // One write of the whole line: appends from one process do not interleave.
            f.write_all(format!("{line}\n").as_bytes())?;
            self.size += len;
            Ok::<(), std::io::Error>(())
        })();
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(file = %self.path.display(), "writing the compliance trail again");
            }
            Ok(()) => {}
            Err(e) => {
                // Reopen next time (the file may have been removed or rotated away).
                self.file = None;
                if !self.failing {
                    self.failing = true;
                    tracing::error!(file = %self.path.display(), error = %e, "cannot write the compliance trail; connections are still served");
                }
            }
        }
    }
}

// === Summary ===

/// What the operational log says about direct connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The first direct connection of a target (after a quiet window).
    First {
        /// The target.
        target: String,
        /// Where the connection went.
        destination: String,
        /// Why it went direct.
        reason: String,
    },
    /// More direct connections of a target since the last line.
    Since {
        /// The target.
        target: String,
        /// How many since the last line.
        count: u64,
        /// The latest reason.
        reason: String,
        /// Over how long.
        window: Duration,
    },
}

#[derive(Debug, Clone)]
struct Episode {
    since: Instant,
    count: u64,
    reason: String,
}

/// Direct connections per target, summarised: pure, time comes in.
#[derive(Debug, Clone)]
pub struct Summary {
    window: Duration,
    episodes: BTreeMap<String, Episode>,
}

impl Summary {
    /// One line per target per `window` after the first.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            episodes: BTreeMap::new(),
        }
    }

    /// A direct connection of `target` at `now`: the first of an episode is
    /// a notice at once, the others wait for [`Summary::due`].
    pub fn record(
        &mut self,
        now: Instant,
        target: &str,
        destination: &str,
        reason: &str,
    ) -> Option<Notice> {
        match self.episodes.get_mut(target) {
            Some(e) => {
                e.count += 1;
                reason.clone_into(&mut e.reason);
                None
            }
            None => {
                self.episodes.insert(
                    target.to_string(),
                    Episode {
                        since: now,
                        count: 0,
                        reason: reason.to_string(),
                    },
                );
                Some(Notice::First {
                    target: target.to_string(),
                    destination: destination.to_string(),
                    reason: reason.to_string(),
                })
            }
        }
    }

    /// The summary lines due at `now`: one per target whose window is over
    /// and that saw more connections; a target quiet for a whole window
    /// ends its episode (its next direct connection is logged at once).
    pub fn due(&mut self, now: Instant) -> Vec<Notice> {
        let mut out = Vec::new();
        let window = self.window;
        self.episodes.retain(|target, e| {
            let elapsed = now.saturating_duration_since(e.since);
            if elapsed < window {
                return true;
            }
            if e.count == 0 {
                return false;
            }
            out.push(Notice::Since {
                target: target.clone(),
                count: e.count,
                reason: e.reason.clone(),
                window: elapsed,
            });
            e.since = now;
            e.count = 0;
            true
        });
        out
    }

    /// Every count not yet told (at shutdown); the episodes end.
    pub fn finish(&mut self, now: Instant) -> Vec<Notice> {
        let out = self
            .episodes
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(target, e)| Notice::Since {
                target: target.clone(),
                count: e.count,
                reason: e.reason.clone(),
                window: now.saturating_duration_since(e.since),
            })
            .collect();
        self.episodes.clear();
        out
    }
}

fn log_notice(n: &Notice) {
    match n {
        Notice::First {
            target,
            destination,
            reason,
        } => tracing::warn!(
            target = %target,
            destination = %destination,
            reason = %reason,
            "app connection went DIRECT, bypassing the proxy (each one is in the compliance trail; further ones are summarised once a minute)"
        ),
        Notice::Since {
            target,
            count,
            reason,
            window,
        } => tracing::warn!(
            target = %target,
            count = *count,
            reason = %reason,
            seconds = window.as_secs(),
            "{count} more app connections went DIRECT, bypassing the proxy"
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_direct_connection_at_once_then_one_line_per_minute_with_the_count() {
        let t0 = Instant::now();
        let mut s = Summary::new(SUMMARY_WINDOW);
        let first = s.record(t0, "apns", "push.test:443", "provider: unhealthy");
        assert!(matches!(first, Some(Notice::First { .. })));
        for i in 1..1000u64 {
            let at = t0 + Duration::from_millis(i * 50);
            assert_eq!(
                s.record(at, "apns", "push.test:443", "provider: down"),
                None
            );
            // Nothing is due inside the minute.
            if i % 100 == 0 {
                assert_eq!(s.due(at), []);
            }
        }
        // Another target has its own first line.
        assert!(s.record(t0, "azure", "login.test:443", "x").is_some());
        let due = s.due(t0 + Duration::from_secs(60));
        assert_eq!(
            due,
            [Notice::Since {
                target: "apns".into(),
                count: 999,
                reason: "provider: down".into(),
                window: Duration::from_secs(60),
            }]
        );
        // A quiet minute ends the episode: azure (no more connections) and
        // then apns; the next one is logged at once again.
        assert_eq!(s.due(t0 + Duration::from_secs(121)), []);
        assert!(s.episodes.is_empty());
        assert!(
            s.record(t0 + Duration::from_secs(122), "apns", "push.test:443", "r")
                .is_some()
        );
        assert!(
            s.record(t0 + Duration::from_secs(123), "apns", "push.test:443", "r")
                .is_none()
        );
        assert_eq!(s.finish(t0 + Duration::from_secs(124)).len(), 1);
    }

    fn conn(route: &str, n: usize) -> Connection {
        Connection::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000),
            "apns",
            &format!("push{n}.test:443"),
            route,
            (route == Route::DIRECT).then(|| "provider: unhealthy".to_string()),
            (10, 20),
            Duration::from_millis(1500),
            "closed",
        )
    }

    #[test]
    fn trail_files_rotate_by_size_and_keep_a_bounded_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = RotatingFile::new(dir.path().join(DIRECT_FILE), 1000, 2);
        let line = serde_json::to_string(&conn("direct", 0)).expect("json");
        for _ in 0..100 {
            f.append(&line);
        }
        let sizes: Vec<u64> = [DIRECT_FILE, "direct.jsonl.1", "direct.jsonl.2"]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).expect("exists").len())
            .collect();
        assert!(sizes.iter().all(|s| *s <= 1000 && *s > 0), "{sizes:?}");
        assert!(!dir.path().join("direct.jsonl.3").exists());
        let text = std::fs::read_to_string(dir.path().join(DIRECT_FILE)).expect("read");
        let v: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert_eq!(v["time"], "2026-11-23T00:00:00.000Z");
        assert_eq!(v["target"], "apns");
        assert_eq!(v["destination"], "push0.test:443");
        assert_eq!(v["route"], "direct");
        assert_eq!(v["reason"], "provider: unhealthy");
        assert_eq!(v["bytes_up"], 10);
        assert_eq!(v["bytes_down"], 20);
        assert_eq!(v["duration_seconds"], 1.5);
    }

    #[test]
    fn a_trail_file_that_cannot_be_written_does_not_stop_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A folder where the file should be: every write fails.
        std::fs::create_dir(dir.path().join(DIRECT_FILE)).expect("mkdir");
        let mut f = RotatingFile::new(dir.path().join(DIRECT_FILE), 1000, 2);
        f.append("{}");
        f.append("{}");
        assert!(f.failing);
    }
}
