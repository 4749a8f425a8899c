//! The standard `process_*` metrics every Prometheus exporter has (resident
//! memory, CPU time, descriptors, start time), read from `/proc/self` at
//! scrape time and rendered as text next to the recorder's output.
//!
//! They are written here rather than through the recorder because
//! `process_cpu_seconds_total` is a counter with a fractional value, which
//! the `metrics` crate's integer counters cannot carry, and because they
//! describe the process, not one sidecar instance: several sidecars in one
//! test process all report the same values. Linux only; elsewhere, and for
//! any file that cannot be read, the sample is left out (never a made-up 0).

use std::fmt::Write as _;
use std::path::Path;

/// `process_resident_memory_bytes`.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// `process_virtual_memory_bytes`.
pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
/// `process_cpu_seconds_total`.
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// `process_open_fds`.
pub const OPEN_FDS: &str = "process_open_fds";
/// `process_max_fds`.
pub const MAX_FDS: &str = "process_max_fds";
/// `process_start_time_seconds`.
pub const START_TIME: &str = "process_start_time_seconds";

/// `/proc/<pid>/stat` times are in USER_HZ ticks, which the kernel fixes at
/// 100 for user space on every architecture Linux containers run on (the
/// Prometheus Go client assumes the same).
const USER_HZ: f64 = 100.0;

/// The most bytes read from one `/proc` file.
const MAX_PROC_FILE: u64 = 64 * 1024;

/// Stop counting descriptors here: past it, the number says enough.
const MAX_FDS_SCANNED: usize = 1_000_000;

/// One reading of the process's own figures; `None` where unknown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size, bytes (`VmRSS`).
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes (`VmSize`).
    pub virtual_bytes: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open descriptors.
    pub open_fds: Option<u64>,
    /// The soft descriptor limit.
    pub max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub start_time: Option<f64>,
}

fn read(path: &Path) -> Option<String> {
    crate::files::read_text(path, MAX_PROC_FILE).ok()
}

/// `VmRSS:   12345 kB` → bytes.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and parentheses, so the split is at the last `)`), numbered as in
/// proc(5) minus 3: index 0 is field 3, `state`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The boot time from `/proc/stat` (`btime`), Unix seconds.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcessSample {
    /// Reads the process whose `/proc` folder is `proc_dir` (`/proc/self`),
    /// with the system-wide `/proc/stat` at `proc_stat`.
    pub fn read(proc_dir: &Path, proc_stat: &Path) -> Self {
        let mut s = Self::default();
        if let Some(status) = read(&proc_dir.join("status")) {
            s.resident_bytes = status_kb(&status, "VmRSS");
            s.virtual_bytes = status_kb(&status, "VmSize");
        }
        if let Some(stat) = read(&proc_dir.join("stat")) {
            let f = stat_fields(&stat);
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            // proc(5): utime is field 14, stime 15, starttime 22.
            if let (Some(utime), Some(stime)) = (num(11), num(12)) {
                s.cpu_seconds = Some((utime + stime) as f64 / USER_HZ);
            }
            if let (Some(start), Some(boot)) =
                (num(19), read(proc_stat).and_then(|t| boot_time(&t)))
            {
                s.start_time = Some(boot as f64 + start as f64 / USER_HZ);
            }
        }
        if let Ok(entries) = std::fs::read_dir(proc_dir.join("fd")) {
            // The listing's own descriptor is among them, as the Go
            // client counts it.
            s.open_fds = Some(entries.take(MAX_FDS_SCANNED).count() as u64);
        }
        s.max_fds = read(&proc_dir.join("limits")).and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
        s
    }

    /// This process, now.
    pub fn current() -> Self {
        Self::read(Path::new("/proc/self"), Path::new("/proc/stat"))
    }

    /// The Prometheus text format of what is known.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
                );
            }
        };
        one(
            RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v as f64),
        );
        one(
            VIRTUAL_MEMORY,
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v as f64),
        );
        one(
            CPU_SECONDS,
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        one(
            OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v as f64),
        );
        one(
            MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|v| v as f64),
        );
        one(
            START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_proc_folder_with_a_command_name_holding_parentheses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::write(
            p.join("status"),
            "Name:\tx\nVmSize:\t  200000 kB\nVmRSS:\t    9300 kB\n",
        )
        .expect("write");
        // Fields 3.. after "(a) b)": state R, then 4..13, utime=250, stime=50, ..., starttime=12345.
        let mut fields = vec!["R"];
        fields.extend(["0"; 10]);
        fields.extend(["250", "50"]);
        fields.extend(["0"; 6]);
        fields.push("12345");
        std::fs::write(p.join("stat"), format!("42 (a) b) {}\n", fields.join(" "))).expect("write");
        std::fs::write(p.join("sys_stat"), "cpu 1 2 3\nbtime 1700000000\n").expect("write");
        std::fs::write(
            p.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n",
        )
        .expect("write");
        std::fs::create_dir(p.join("fd")).expect("mkdir");
        for i in 0..4 {
            std::fs::write(p.join("fd").join(i.to_string()), "").expect("write");
        }
        let s = ProcessSample::read(p, &p.join("sys_stat"));
        assert_eq!(s.resident_bytes, Some(9300 * 1024));
        assert_eq!(s.virtual_bytes, Some(200_000 * 1024));
        assert_eq!(s.cpu_seconds, Some(3.0));
        let start = s.start_time.expect("start time");
        assert!((start - 1_700_000_123.45).abs() < 1e-3, "{start}");
        assert_eq!(s.max_fds, Some(1024));
        assert_eq!(s.open_fds, Some(4));
        let text = s.render();
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_figures_are_left_out_not_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ProcessSample::read(dir.path(), &dir.path().join("none"));
        assert_eq!(s, ProcessSample::default());
        assert_eq!(s.render(), "");
    }
}
