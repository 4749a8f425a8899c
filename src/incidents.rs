//! Incident windows: a window opens when a target loses its preferred route
//! and closes when that route is healthy again. Windows with the same cause
//! (route and reason) that overlap merge into one, listing every impacted
//! target — one provider outage is one incident, not four.
//!
//! Owns the in-memory log (bounded), its rendering in the incident log's own
//! words, and the JSON Lines file in `state_dir` that lets a restart keep
//! them. Wall-clock time comes in as an argument.
//!
//! The file stays bounded: every change is appended as it happens, and the
//! file is rewritten compactly (one line per window kept) whenever the
//! appends have doubled it. A file that is too large or holds unreadable
//! lines (not just a torn last one) never stops the sidecar: it is moved
//! aside (`incidents.jsonl.oversized-<unix>`, `.corrupt-<unix>`) with a log
//! line, and what could be read from it is kept.

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::dial::tls::rfc3339;
use crate::reason::FailureReason;

/// Windows kept in memory (and in the file after compaction).
pub const MAX_WINDOWS: usize = 1000;
/// The largest incident file read whole at start; of a larger one, only
/// the last [`MAX_TAIL`] bytes are read, and the file is moved aside.
const MAX_FILE: u64 = 32 * 1024 * 1024;
/// What is read of an oversized file to recover the latest windows.
const MAX_TAIL: u64 = 4 * 1024 * 1024;
/// The file is compacted when appends have grown it past twice its last
/// compacted size, and at least this much.
const COMPACT_FLOOR: u64 = 256 * 1024;
/// The file's name inside `state_dir`.
pub const FILE_NAME: &str = "incidents.jsonl";

/// One incident window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentWindow {
    /// Unique within the log.
    pub id: u64,
    /// Opened (Unix seconds).
    pub start: i64,
    /// Closed (Unix seconds), `None` while open.
    pub end: Option<i64>,
    /// The preferred route that failed.
    pub route: String,
    /// The first failure's reason.
    pub reason: FailureReason,
    /// The first failure's detail.
    pub detail: String,
    /// Every target impacted during the window.
    pub impact: Vec<String>,
    /// Targets still impacted.
    pub open_targets: BTreeSet<String>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hhmmss(unix: i64) -> String {
    // "2026-11-23T11:47:05Z" -> "11:47:05"
    rfc3339(unix).get(11..19).unwrap_or("").to_string()
}

impl IncidentWindow {
    /// The window in the incident log's words, to the second (UTC):
    /// `Incident window: 11:47:05 -> 13:00:12 · cause: proxy_upstream_error (...) · impact: apns, sms`.
    pub fn render(&self) -> String {
        let end = self.end.map_or_else(|| "(open)".to_string(), hhmmss);
        format!(
            "Incident window: {} -> {end} · cause: {} ({}) · impact: {}",
            hhmmss(self.start),
            self.reason,
            self.detail,
            self.impact.join(", ")
        )
    }

    /// How long it lasted (so far, at `now`).
    pub fn duration(&self, now: SystemTime) -> Duration {
        let end = self.end.unwrap_or_else(|| unix(now));
        Duration::from_secs(u64::try_from(end - self.start).unwrap_or(0))
    }
}

/// What a change did to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new window opened.
    Opened(IncidentWindow),
    /// A target joined an open window.
    Joined(IncidentWindow),
    /// A window closed.
    Closed(IncidentWindow),
}

/// The incident windows, newest last, with optional persistence.
#[derive(Debug, Default)]
pub struct IncidentLog {
    windows: VecDeque<IncidentWindow>,
    next_id: u64,
    file: Option<PathBuf>,
    /// The file's size as far as we know.
    size: u64,
    /// Its size after the last compaction.
    compacted: u64,
}

/// What was read of the file at start.
#[derive(Debug, Default)]
struct Loaded {
    windows: Vec<IncidentWindow>,
    /// Why the file must be moved aside: (a word for its new name, the reason).
    problem: Option<(&'static str, String)>,
}

/// Reads the incident file: whole when it fits in [`MAX_FILE`], else its
/// last [`MAX_TAIL`] bytes. A torn last line (a crash mid-write) is
/// skipped quietly; any other unreadable line makes the file corrupt.
fn load(file: &Path, len: u64) -> std::io::Result<Loaded> {
    let mut f = std::fs::File::open(file)?;
    let mut out = Loaded::default();
    let mut bytes = Vec::new();
    let oversized = len > MAX_FILE;
    if oversized {
        f.seek(SeekFrom::Start(len - MAX_TAIL))?;
        f.take(MAX_TAIL).read_to_end(&mut bytes)?;
        // The first line is probably cut: start after it.
        let first_end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_end);
        out.problem = Some((
            "oversized",
            format!(
                "larger than {MAX_FILE} bytes ({len}); the windows in its last {MAX_TAIL} bytes are kept"
            ),
        ));
    } else {
        f.take(MAX_FILE).read_to_end(&mut bytes)?;
    }
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines
        .iter()
        .rposition(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut bad = 0usize;
    for (n, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<IncidentWindow>(line) {
            Ok(w) => out.windows.push(w),
            Err(e) if Some(n) == last && !oversized => {
                tracing::warn!(file = %file.display(), line = n + 1, error = %e, "skipping a torn last incident record");
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 && out.problem.is_none() {
        out.problem = Some((
            "corrupt",
            format!(
                "{bad} unreadable lines; the {} readable windows are kept",
                out.windows.len()
            ),
        ));
    }
    Ok(out)
}

/// Renames `file` to `file.<word>-<unix>`; returns the new path.
fn move_aside(file: &Path, word: &str) -> std::io::Result<PathBuf> {
    let now = unix(SystemTime::now());
    let mut name = file.as_os_str().to_os_string();
    name.push(format!(".{word}-{now}"));
    let to = PathBuf::from(name);
    std::fs::rename(file, &to)?;
    Ok(to)
}

impl IncidentLog {
    /// A log kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A log persisted in `state_dir`, loading (and compacting) what is
    /// there. Only a `state_dir` that cannot be created is an error: an
    /// oversized, corrupt or unreadable file is moved aside (logged) and
    /// the log starts with what could be read.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create state_dir {}: {e}", state_dir.display()))?;
        let file = state_dir.join(FILE_NAME);
        let mut log = Self {
            file: Some(file.clone()),
            ..Self::default()
        };
        let len = match std::fs::metadata(&file) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => {
                log.set_aside(&file, "unreadable", "not a regular file");
                return Ok(log);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(log),
            Err(e) => {
                log.set_aside(&file, "unreadable", &e.to_string());
                return Ok(log);
            }
        };
        let loaded = match load(&file, len) {
            Ok(l) => l,
            Err(e) => {
                log.set_aside(&file, "unreadable", &e.to_string());
                return Ok(log);
            }
        };
        for w in loaded.windows {
            log.upsert(w);
        }
        log.next_id = log.windows.iter().map(|w| w.id + 1).max().unwrap_or(0);
        if let Some((word, why)) = &loaded.problem {
            log.set_aside(&file, word, why);
        }
        if let Err(e) = log.compact() {
            tracing::error!(error = %e, "cannot rewrite the incident file; incidents are kept in memory and appended when possible");
        }
        Ok(log)
    }

    /// Moves the file aside because of `why`, saying so in the log.
    fn set_aside(&self, file: &Path, word: &str, why: &str) {
        match move_aside(file, word) {
            Ok(to) => tracing::warn!(
                file = %file.display(),
                moved_to = %to.display(),
                why = %why,
                windows_kept = self.windows.len(),
                "incident file moved aside; starting a new one"
            ),
            Err(e) => tracing::error!(
                file = %file.display(),
                why = %why,
                error = %e,
                "incident file is unusable and cannot be moved aside; it will be replaced"
            ),
        }
    }

    fn upsert(&mut self, w: IncidentWindow) {
        match self.windows.iter_mut().find(|x| x.id == w.id) {
            Some(x) => *x = w,
            None => {
                self.windows.push_back(w);
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        while self.windows.len() > MAX_WINDOWS {
            // Drop the oldest closed window; never an open one.
            match self.windows.iter().position(|w| w.end.is_some()) {
                Some(i) => {
                    self.windows.remove(i);
                }
                None => break,
            }
        }
    }

    /// Rewrites the file with one line per window kept.
    fn compact(&mut self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let tmp = file.with_extension("jsonl.tmp");
        let mut out = String::new();
        for w in &self.windows {
            out.push_str(&serde_json::to_string(w).map_err(|e| e.to_string())?);
            out.push('\n');
        }
        std::fs::write(&tmp, &out).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, file)
            .map_err(|e| format!("cannot replace {}: {e}", file.display()))?;
        self.size = out.len() as u64;
        self.compacted = self.size;
        Ok(())
    }

    /// Appends `w`'s new state; compacts when the appends have doubled the file.
    fn persist(&mut self, w: &IncidentWindow) {
        self.append(w);
        if self.file.is_some() && self.size > COMPACT_FLOOR.max(2 * self.compacted) {
            if let Err(e) = self.compact() {
                tracing::error!(error = %e, "cannot compact the incident file");
            }
        }
    }

    fn append(&mut self, w: &IncidentWindow) {
        let Some(file) = &self.file else { return };
        let line = match serde_json::to_string(w) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an incident window");
                return;
            }
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| writeln!(f, "{line}").and_then(|()| f.sync_data()));
        match written {
            Ok(()) => self.size += line.len() as u64 + 1,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "cannot append to the incident file")
            }
        }
    }

    /// `target` lost its preferred `route` for `reason` (`detail`) at `now`.
    pub fn open_target(
        &mut self,
        target: &str,
        route: &str,
        reason: FailureReason,
        detail: &str,
        now: SystemTime,
    ) -> Change {
        if let Some(w) = self
            .windows
            .iter_mut()
            .find(|w| w.end.is_none() && w.open_targets.contains(target))
        {
            // Already impacted: one target is in one open window at a time.
            return Change::Joined(w.clone());
        }
        if let Some(w) = self
            .windows
            .iter_mut()
            .find(|w| w.end.is_none() && w.route == route && w.reason == reason)
        {
            w.open_targets.insert(target.to_string());
            if !w.impact.iter().any(|t| t == target) {
                w.impact.push(target.to_string());
            }
            let w = w.clone();
            self.persist(&w);
            return Change::Joined(w);
        }
        let w = IncidentWindow {
            id: self.next_id,
            start: unix(now),
            end: None,
            route: route.to_string(),
            reason,
            detail: detail.to_string(),
            impact: vec![target.to_string()],
            open_targets: BTreeSet::from([target.to_string()]),
        };
        self.next_id += 1;
        self.persist(&w);
        self.windows.push_back(w.clone());
        self.trim();
        Change::Opened(w)
    }

    /// `target`'s preferred route is healthy again at `now`. Closes its window
    /// when no other target is still impacted.
    pub fn close_target(&mut self, target: &str, now: SystemTime) -> Option<Change> {
        let w = self
            .windows
            .iter_mut()
            .find(|w| w.end.is_none() && w.open_targets.contains(target))?;
        w.open_targets.remove(target);
        let closed = w.open_targets.is_empty();
        if closed {
            w.end = Some(unix(now));
        }
        let w = w.clone();
        self.persist(&w);
        Some(if closed {
            Change::Closed(w)
        } else {
            Change::Joined(w)
        })
    }

    /// Every window, oldest first.
    pub fn windows(&self) -> impl Iterator<Item = &IncidentWindow> {
        self.windows.iter()
    }

    /// Rewrites the file compactly, one line per window (every change was
    /// already appended when it was made); called at shutdown.
    pub fn flush(&mut self) -> Result<(), String> {
        self.compact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u64, m: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + h * 3600 + m * 60)
    }

    #[test]
    fn one_outage_on_one_route_is_one_window_with_every_impact() {
        let mut log = IncidentLog::in_memory();
        let detail = "CONNECT api.push.apple.com:443 -> 502 Bad Gateway, Via: 1.1 egress-proxy";
        assert!(matches!(
            log.open_target(
                "apns",
                "provider",
                FailureReason::ProxyUpstreamError,
                detail,
                at(11, 47)
            ),
            Change::Opened(_)
        ));
        assert!(matches!(
            log.open_target(
                "sms",
                "provider",
                FailureReason::ProxyUpstreamError,
                "other",
                at(11, 48)
            ),
            Change::Joined(_)
        ));
        assert!(matches!(
            log.open_target(
                "azure-ad",
                "provider",
                FailureReason::ProxyUpstreamError,
                "x",
                at(11, 48)
            ),
            Change::Joined(_)
        ));
        // A different cause is a different window.
        assert!(matches!(
            log.open_target(
                "fcm",
                "provider",
                FailureReason::TlsUntrusted,
                "y",
                at(11, 50)
            ),
            Change::Opened(_)
        ));
        assert!(matches!(
            log.close_target("apns", at(12, 30)),
            Some(Change::Joined(_))
        ));
        assert!(matches!(
            log.close_target("sms", at(12, 59)),
            Some(Change::Joined(_))
        ));
        let Some(Change::Closed(w)) = log.close_target("azure-ad", at(13, 0)) else {
            panic!("window should close with its last target");
        };
        assert_eq!(
            w.render(),
            "Incident window: 11:47:00 -> 13:00:00 · cause: proxy_upstream_error (CONNECT api.push.apple.com:443 -> 502 Bad Gateway, Via: 1.1 egress-proxy) · impact: apns, sms, azure-ad"
        );
        assert_eq!(w.duration(at(14, 0)), Duration::from_secs(73 * 60));
        assert_eq!(log.windows().count(), 2);
        assert!(log.close_target("apns", at(13, 1)).is_none());
    }

    #[test]
    fn windows_survive_a_restart_through_the_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut log = IncidentLog::open(dir.path()).expect("open");
            log.open_target(
                "apns",
                "provider",
                FailureReason::ProxyDenied,
                "403",
                at(10, 17),
            );
            log.open_target(
                "sms",
                "provider",
                FailureReason::ProxyDenied,
                "403",
                at(10, 18),
            );
            log.close_target("apns", at(10, 20));
        }
        let mut log = IncidentLog::open(dir.path()).expect("reopen");
        let w: Vec<_> = log.windows().cloned().collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].impact, ["apns", "sms"]);
        assert_eq!(w[0].open_targets, BTreeSet::from(["sms".to_string()]));
        // The reopened window closes when its last target recovers, and new ids do not collide.
        assert!(matches!(
            log.close_target("sms", at(10, 30)),
            Some(Change::Closed(_))
        ));
        let Change::Opened(n) =
            log.open_target("fcm", "provider", FailureReason::Timeout, "t", at(11, 0))
        else {
            panic!("new window");
        };
        assert_eq!(n.id, 1);
        // A torn last line (crash mid-write) is skipped, not fatal.
        let file = dir.path().join(FILE_NAME);
        let mut text = std::fs::read_to_string(&file).expect("read");
        text.push_str("{\"id\": 7, \"sta");
        std::fs::write(&file, text).expect("write");
        let log = IncidentLog::open(dir.path()).expect("reopen torn");
        assert_eq!(log.windows().count(), 2);
        assert!(
            only_file(dir.path()),
            "a torn last line is no reason to move the file aside"
        );
    }

    /// True when the state folder holds the incident file and nothing else.
    fn only_file(dir: &Path) -> bool {
        let names: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names == [std::ffi::OsString::from(FILE_NAME)]
    }

    fn aside(dir: &Path, word: &str) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{FILE_NAME}.{word}-")))
            })
            .collect()
    }

    #[test]
    fn incident_times_are_to_the_second() {
        let mut log = IncidentLog::in_memory();
        let t = at(11, 47) + Duration::from_secs(5);
        let Change::Opened(w) =
            log.open_target("apns", "provider", FailureReason::ProxyDenied, "403", t)
        else {
            panic!("opened");
        };
        assert!(
            w.render()
                .starts_with("Incident window: 11:47:05 -> (open)"),
            "{}",
            w.render()
        );
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_its_readable_windows_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut log = IncidentLog::open(dir.path()).expect("open");
            log.open_target(
                "apns",
                "provider",
                FailureReason::ProxyDenied,
                "403",
                at(9, 0),
            );
        }
        let file = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&file).expect("read");
        bytes.extend_from_slice(b"\x00\xff not json at all\n");
        bytes.extend_from_slice(
            serde_json::to_string(&IncidentWindow {
                id: 5,
                start: 0,
                end: Some(1),
                route: "provider".into(),
                reason: FailureReason::Timeout,
                detail: String::new(),
                impact: vec!["sms".into()],
                open_targets: BTreeSet::new(),
            })
            .expect("json")
            .as_bytes(),
        );
        bytes.push(b'\n');
        std::fs::write(&file, bytes).expect("write");
        let log = IncidentLog::open(dir.path()).expect("the sidecar starts");
        assert_eq!(log.windows().count(), 2);
        assert_eq!(aside(dir.path(), "corrupt").len(), 1);
        // The new file holds the windows kept, one line each.
        let text = std::fs::read_to_string(&file).expect("read");
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn an_oversized_file_is_moved_aside_and_its_latest_windows_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(FILE_NAME);
        {
            let mut f = std::fs::File::create(&file).expect("create");
            let filler = format!("{}\n", "x".repeat(1023));
            for _ in 0..(MAX_FILE / 1024 + 10) {
                f.write_all(filler.as_bytes()).expect("write");
            }
            let w = IncidentWindow {
                id: 41,
                start: 100,
                end: None,
                route: "provider".into(),
                reason: FailureReason::ProxyUpstreamError,
                detail: "502".into(),
                impact: vec!["apns".into()],
                open_targets: BTreeSet::from(["apns".to_string()]),
            };
            writeln!(f, "{}", serde_json::to_string(&w).expect("json")).expect("write");
        }
        let mut log = IncidentLog::open(dir.path()).expect("the sidecar starts");
        assert_eq!(aside(dir.path(), "oversized").len(), 1);
        let kept: Vec<_> = log.windows().map(|w| w.id).collect();
        assert_eq!(kept, [41]);
        assert!(std::fs::metadata(&file).expect("new file").len() < 4096);
        // The open window still closes, and ids go on from it.
        assert!(matches!(
            log.close_target("apns", at(10, 0)),
            Some(Change::Closed(_))
        ));
        let Change::Opened(n) =
            log.open_target("sms", "provider", FailureReason::Timeout, "t", at(11, 0))
        else {
            panic!("opened");
        };
        assert_eq!(n.id, 42);
    }

    #[test]
    fn the_file_is_compacted_as_it_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(FILE_NAME);
        let mut log = IncidentLog::open(dir.path()).expect("open");
        let detail = "d".repeat(1000);
        // Each flap appends two lines of ~1.2 kB: 1 500 flaps would be ~3.6 MB.
        for i in 0..1500u64 {
            let t = at(0, 0) + Duration::from_secs(i * 10);
            log.open_target("apns", "provider", FailureReason::ProxyDenied, &detail, t);
            log.close_target("apns", t + Duration::from_secs(5));
        }
        let size = std::fs::metadata(&file).expect("file").len();
        let live: u64 = log
            .windows()
            .map(|w| serde_json::to_string(w).expect("json").len() as u64 + 1)
            .sum();
        assert_eq!(log.windows().count(), MAX_WINDOWS);
        assert!(
            size <= 2 * live + COMPACT_FLOOR + 2048,
            "file {size} bytes for {live} bytes of windows"
        );
        let reopened = IncidentLog::open(dir.path()).expect("reopen");
        assert_eq!(reopened.windows().count(), MAX_WINDOWS);
        assert!(only_file(dir.path()));
    }
}
