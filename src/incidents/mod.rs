//! Incident windows: a window opens when a target loses its preferred route
//! and closes when that route is healthy again, or (keyed by its own cause)
//! when a provider refuses a target's credential, closing only when a check
//! proves it again. Windows with the same cause
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
use std::io::Write;
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

    /// True for a window about a route (not a credential's).
    pub fn is_route_window(&self) -> bool {
        self.reason != FailureReason::CredentialRejected
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

/// Why the incident file or its folder could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IncidentFileError {
    /// `state_dir` could not be created.
    #[error("cannot create state_dir {}: {source}", dir.display())]
    StateDir {
        /// The configured `state_dir`.
        dir: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A window could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The compacted copy could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The compacted copy could not replace the file.
    #[error("cannot replace {}: {source}", path.display())]
    Replace {
        /// The incident file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
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

impl IncidentLog {
    /// A log kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A log persisted in `state_dir`, loading (and compacting) what is
    /// there. Only a `state_dir` that cannot be created is an error: an
    /// oversized, corrupt or unreadable file is moved aside (logged) and
    /// the log starts with what could be read.
    pub fn open(state_dir: &Path) -> Result<Self, IncidentFileError> {
        std::fs::create_dir_all(state_dir).map_err(|source| IncidentFileError::StateDir {
            dir: state_dir.to_path_buf(),
            source,
        })?;
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
    fn compact(&mut self) -> Result<(), IncidentFileError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let tmp = file.with_extension("jsonl.tmp");
        let mut out = String::new();
        for w in &self.windows {
            out.push_str(&serde_json::to_string(w)?);
            out.push('\n');
        }
        std::fs::write(&tmp, &out).map_err(|source| IncidentFileError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, file).map_err(|source| IncidentFileError::Replace {
            path: file.clone(),
            source,
        })?;
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
            .find(|w| w.end.is_none() && w.is_route_window() && w.open_targets.contains(target))
        {
            // Already impacted: one target is in one open route window at
            // a time.
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
            .find(|w| w.end.is_none() && w.is_route_window() && w.open_targets.contains(target))?;
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

    /// The provider refused `target`'s credential over `route` at `now`.
    /// Windows are keyed by cause: a credential window is the target's own
    /// (not merged with other targets'), and only a check that proves the
    /// credential closes it, whatever its routes do.
    pub fn open_credential(
        &mut self,
        target: &str,
        route: &str,
        detail: &str,
        now: SystemTime,
    ) -> Change {
        if let Some(w) = self.open_credential_window(target) {
            return Change::Joined(w.clone());
        }
        let w = IncidentWindow {
            id: self.next_id,
            start: unix(now),
            end: None,
            route: route.to_string(),
            reason: FailureReason::CredentialRejected,
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

    /// `target`'s credential was proven (or it has no credential any
    /// more) at `now`: its credential window closes.
    pub fn close_credential(&mut self, target: &str, now: SystemTime) -> Option<Change> {
        let w = self.open_credential_window(target)?;
        w.open_targets.clear();
        w.end = Some(unix(now));
        let w = w.clone();
        self.persist(&w);
        Some(Change::Closed(w))
    }

    fn open_credential_window(&mut self, target: &str) -> Option<&mut IncidentWindow> {
        self.windows
            .iter_mut()
            .find(|w| w.end.is_none() && !w.is_route_window() && w.open_targets.contains(target))
    }

    /// Targets with an open credential window.
    pub fn open_credential_targets(&self) -> Vec<String> {
        self.windows
            .iter()
            .filter(|w| w.end.is_none() && !w.is_route_window())
            .flat_map(|w| w.open_targets.iter().cloned())
            .collect()
    }

    /// Every window, oldest first.
    pub fn windows(&self) -> impl Iterator<Item = &IncidentWindow> {
        self.windows.iter()
    }

    /// Rewrites the file compactly, one line per window (every change was
    /// already appended when it was made); called at shutdown.
    pub fn flush(&mut self) -> Result<(), IncidentFileError> {
        self.compact()
    }
}

mod file;

use file::{load, move_aside};
#[cfg(test)]
mod tests;
