//! Incident windows: a window opens when a target loses its preferred route
//! and closes when that route is healthy again. Windows with the same cause
//! (route and reason) that overlap merge into one, listing every impacted
//! target — one provider outage is one incident, not four.
//!
//! Owns the in-memory log (bounded), its rendering in the incident log's own
//! words, and the JSON Lines file in `state_dir` that lets a restart keep
//! them. Wall-clock time comes in as an argument.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::dial::tls::rfc3339;
use crate::reason::FailureReason;

/// Windows kept in memory (and in the file after compaction).
pub const MAX_WINDOWS: usize = 1000;
/// The largest incident file read at start.
const MAX_FILE: u64 = 32 * 1024 * 1024;
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

fn hhmm(unix: i64) -> String {
    // "2026-11-23T11:47:05Z" -> "11:47"
    rfc3339(unix).get(11..16).unwrap_or("").to_string()
}

impl IncidentWindow {
    /// The window in the incident log's words:
    /// `Incident window: 11:47 -> 13:00 · cause: proxy_upstream_error (...) · impact: apns, sms`.
    pub fn render(&self) -> String {
        let end = self.end.map_or_else(|| "(open)".to_string(), hhmm);
        format!(
            "Incident window: {} -> {end} · cause: {} ({}) · impact: {}",
            hhmm(self.start),
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
}

impl IncidentLog {
    /// A log kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A log persisted in `state_dir`, loading (and compacting) what is there.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create state_dir {}: {e}", state_dir.display()))?;
        let file = state_dir.join(FILE_NAME);
        let mut log = Self {
            file: Some(file.clone()),
            ..Self::default()
        };
        if file.exists() {
            let text = crate::files::read_text(&file, MAX_FILE)?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<IncidentWindow>(line) {
                    Ok(w) => log.upsert(w),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), line = n + 1, error = %e, "skipping an unreadable incident record")
                    }
                }
            }
            log.next_id = log.windows.iter().map(|w| w.id + 1).max().unwrap_or(0);
            log.compact()?;
        }
        Ok(log)
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

    fn compact(&self) -> Result<(), String> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let tmp = file.with_extension("jsonl.tmp");
        let mut out = String::new();
        for w in &self.windows {
            out.push_str(&serde_json::to_string(w).map_err(|e| e.to_string())?);
            out.push('\n');
        }
        std::fs::write(&tmp, out).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, file).map_err(|e| format!("cannot replace {}: {e}", file.display()))
    }

    fn persist(&self, w: &IncidentWindow) {
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
        if let Err(e) = written {
            tracing::error!(file = %file.display(), error = %e, "cannot append to the incident file");
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
    pub fn flush(&self) -> Result<(), String> {
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
            "Incident window: 11:47 -> 13:00 · cause: proxy_upstream_error (CONNECT api.push.apple.com:443 -> 502 Bad Gateway, Via: 1.1 egress-proxy) · impact: apns, sms, azure-ad"
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
    }
}
