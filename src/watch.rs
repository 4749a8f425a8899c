//! Watches file descriptors — this process's and, with `[watch] processes`,
//! the app's (same pod with `shareProcessNamespace`, same user or
//! CAP_SYS_PTRACE): how many are open, of which kind (socket, pipe, file,
//! anon, other), against the soft limit. The detail the fd-exhaustion
//! incident's watchdog lacked.
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

/// The most `/proc` entries looked at when searching processes by name.
const MAX_PROCS: usize = 100_000;

/// The `/proc/<pid>` folders of processes whose command name (`comm`) is
/// `name` (the kernel keeps its first 15 bytes).
pub fn processes_named(name: &str) -> Vec<std::path::PathBuf> {
    let want = name.get(..name.len().min(15)).unwrap_or(name);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .take(MAX_PROCS)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == want)
        })
        .map(|e| e.path())
        .collect()
}

/// The usage of the most loaded process named `name` (highest share of its
/// limit, or most descriptors when the limit is unknown). `None` when no
/// such process exists or none lets us read its descriptors.
pub fn worst_usage(name: &str) -> Option<FdUsage> {
    processes_named(name)
        .iter()
        .filter(|p| std::fs::read_dir(p.join("fd")).is_ok())
        .map(|p| fd_usage(p))
        .max_by(|a, b| {
            let load = |u: &FdUsage| u.total() as f64 / u.max.unwrap_or(u64::MAX).max(1) as f64;
            load(a).total_cmp(&load(b)).then(a.total().cmp(&b.total()))
        })
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

    #[test]
    fn finds_another_process_by_name_and_reads_its_descriptors() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn sleep");
        // Between fork and exec the child still carries our name.
        let comm = format!("/proc/{}/comm", child.id());
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&comm)
            .map(|c| c.trim_end() != "sleep")
            .unwrap_or(true)
        {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "sleep did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let found = processes_named("sleep");
        let usage = worst_usage("sleep");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.iter().any(|p| p.ends_with(child.id().to_string())),
            "{found:?}"
        );
        let usage = usage.expect("usage of sleep");
        assert!(usage.total() >= 1, "{usage:?}");
        assert!(usage.max.is_some());
        assert!(worst_usage("no-such-process-egress").is_none());
    }
}
