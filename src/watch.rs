//! Watches this process's file descriptors: how many are open, of which
//! kind (socket, pipe, file, anon, other), against the soft limit — the
//! detail the fd-exhaustion incident's watchdog lacked.
//!
//! Linux `/proc` only; elsewhere it reports nothing. Reads are bounded.

use std::collections::BTreeMap;
use std::path::Path;

/// Counting stops here: past it, the number alone says enough.
const MAX_SCAN: usize = 1_000_000;

/// Open descriptors by kind, and the soft limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdUsage {
    /// Counts by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// The soft `RLIMIT_NOFILE`, when known.
    pub max: Option<u64>,
}

impl FdUsage {
    /// Total open descriptors.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

/// The descriptor usage of the process whose `/proc` entry is `proc_dir`
/// (e.g. `/proc/self`).
pub fn fd_usage(proc_dir: &Path) -> FdUsage {
    let mut usage = FdUsage::default();
    for kind in ["socket", "pipe", "file", "anon", "other"] {
        usage.by_kind.insert(kind, 0);
    }
    if let Ok(entries) = std::fs::read_dir(proc_dir.join("fd")) {
        for entry in entries.flatten().take(MAX_SCAN) {
            let kind = match std::fs::read_link(entry.path()) {
                Ok(target) => {
                    let t = target.to_string_lossy();
                    if t.starts_with("socket:") {
                        "socket"
                    } else if t.starts_with("pipe:") {
                        "pipe"
                    } else if t.starts_with("anon_inode:") {
                        "anon"
                    } else if t.starts_with('/') {
                        "file"
                    } else {
                        "other"
                    }
                }
                // Closed between listing and reading: not open any more.
                Err(_) => continue,
            };
            *usage.by_kind.entry(kind).or_insert(0) += 1;
        }
    }
    usage.max = std::fs::read_to_string(proc_dir.join("limits"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    usage
}

/// The number of descriptors open in this process (for tests and caps).
pub fn open_fds() -> u64 {
    fd_usage(Path::new("/proc/self")).total()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_socket_we_open() {
        let before = fd_usage(Path::new("/proc/self"));
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let after = fd_usage(Path::new("/proc/self"));
        assert!(
            after.by_kind["socket"] > before.by_kind["socket"],
            "{before:?} {after:?}"
        );
        assert!(after.max.is_some_and(|m| m > 0));
        drop(l);
    }
}
