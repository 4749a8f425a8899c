//! An append-only JSON Lines file rotated by size: `path` → `path.1` → …
//! → `path.N`, the oldest dropped, so the disk it takes is bounded by
//! `max_bytes × (keep + 1)`.
//!
//! Owns opening, rotating and appending. A write that fails is logged once
//! (and the recovery once) and never stops a connection: it never returns
//! an error to the forward proxy, and it never decides what is written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only JSON Lines file rotated by size.
#[derive(Debug)]
pub(super) struct RotatingFile {
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
    pub(super) fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
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

    pub(super) fn append(&mut self, line: &str) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::compliance::{Connection, DIRECT_FILE};
    use crate::config::Route;

    fn conn(route: &str, n: usize) -> Connection {
        Connection {
            time: crate::telemetry::logs::rfc3339_millis(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000),
            ),
            target: "apns".into(),
            destination: format!("push{n}.test:443"),
            route: route.into(),
            reason: (route == Route::DIRECT).then(|| "provider: unhealthy".to_string()),
            bytes_up: 10,
            bytes_down: 20,
            duration_seconds: 1.5,
            end: "closed",
        }
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
