//! Watches file descriptors — this process's and, with `[watch] processes`,
//! the app's (same pod with `shareProcessNamespace`, same user or
//! CAP_SYS_PTRACE): how many are open, of which kind (socket, pipe, file,
//! anon, other), against the soft limit, and for sockets the detail the
//! fd-exhaustion incident's watchdog lacked: TCP sockets by state and the
//! remote endpoints holding the most of them.
//!
//! # Layout
//! - `mod.rs`: descriptor kinds and limits ([`fd_usage`]), finding
//!   processes by name, one sample of everything ([`sample`]), or of the
//!   kinds only ([`sample_kinds`], cheap enough for every scrape).
//! - [`tcp`]: `/proc/PID/net/tcp{,6}` joined with the process's socket inodes.
//!
//! Linux `/proc` only; elsewhere it reports nothing. Reads are bounded. A
//! process that vanishes or cannot be read is skipped and counted, never
//! an error.

pub mod tcp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use tcp::{RemoteEndpoint, TcpSockets, TcpState, TcpTable};

/// Counting stops here: past it, the number alone says enough.
const MAX_SCAN: usize = 1_000_000;

/// The process label this sidecar uses for itself.
pub const SELF_NAME: &str = "egress-sentinel";

/// Open descriptors by kind, and the soft limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

/// Descriptor kinds and the inodes of the sockets among them.
fn scan_fds(proc_dir: &Path) -> Option<(FdUsage, HashSet<u64>)> {
    let mut usage = FdUsage::default();
    for kind in ["socket", "pipe", "file", "anon", "other"] {
        usage.by_kind.insert(kind, 0);
    }
    let mut sockets = HashSet::new();
    let entries = std::fs::read_dir(proc_dir.join("fd")).ok()?;
    for entry in entries.flatten().take(MAX_SCAN) {
        let kind = match std::fs::read_link(entry.path()) {
            Ok(target) => {
                let t = target.to_string_lossy();
                if let Some(rest) = t.strip_prefix("socket:[") {
                    if let Some(inode) = rest.strip_suffix(']').and_then(|i| i.parse().ok()) {
                        sockets.insert(inode);
                    }
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
    usage.max = std::fs::read_to_string(proc_dir.join("limits"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    Some((usage, sockets))
}

/// The descriptor usage of the process whose `/proc` entry is `proc_dir`
/// (e.g. `/proc/self`); all zeros when it cannot be read.
pub fn fd_usage(proc_dir: &Path) -> FdUsage {
    match scan_fds(proc_dir) {
        Some((usage, _)) => usage,
        None => {
            let mut usage = FdUsage::default();
            for kind in ["socket", "pipe", "file", "anon", "other"] {
                usage.by_kind.insert(kind, 0);
            }
            usage
        }
    }
}

/// One process's descriptors in detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessFds {
    /// Its pid (`None` for `/proc/self` read by path).
    pub pid: Option<u32>,
    /// Descriptors by kind, and the limit.
    pub usage: FdUsage,
    /// Its TCP sockets (`None` in a kinds-only sample).
    pub tcp: Option<TcpSockets>,
}

impl ProcessFds {
    /// The share of the limit in use (0 when the limit is unknown).
    pub fn load(&self) -> f64 {
        self.usage.total() as f64 / self.usage.max.unwrap_or(u64::MAX).max(1) as f64
    }
}

/// How much a sample reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Descriptors by kind and the limit: one `readlink` per descriptor.
    Kinds,
    /// Also the TCP sockets: the namespace's TCP tables, once per namespace.
    Tcp,
}

/// A process whose descriptors were read, before its TCP detail.
struct Scanned {
    /// Its `/proc` folder.
    dir: PathBuf,
    /// Descriptors by kind, and the limit.
    usage: FdUsage,
    /// The inodes of its sockets.
    sockets: HashSet<u64>,
}

impl Scanned {
    fn read(dir: &Path) -> Option<Self> {
        let (usage, sockets) = scan_fds(dir)?;
        Some(Self {
            dir: dir.to_path_buf(),
            usage,
            sockets,
        })
    }

    /// The share of the limit in use (0 when the limit is unknown).
    fn load(&self) -> f64 {
        self.usage.total() as f64 / self.usage.max.unwrap_or(u64::MAX).max(1) as f64
    }

    /// Finished: with its TCP detail when `detail` asks for it.
    fn finish(self, detail: Detail, tables: &mut Tables) -> ProcessFds {
        let tcp = match detail {
            Detail::Kinds => None,
            Detail::Tcp => Some(tables.of(&self.dir).sockets_of(&self.sockets)),
        };
        let pid = self
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok());
        ProcessFds {
            pid,
            usage: self.usage,
            tcp,
        }
    }
}

/// TCP tables read during one sample, by network namespace, keeping only
/// the sockets of the processes the sample reports: every other process of
/// the namespace (in a pod, the app; on a shared machine, everyone) costs
/// nothing, however many sockets it holds. Keeping them all made the
/// sample's memory follow the namespace's busiest moment (benches/README,
/// "Soak": an 808 KiB step when another process held 16 000 sockets).
struct Tables {
    /// Socket inodes of the processes reported (inodes are unique across
    /// namespaces).
    wanted: HashSet<u64>,
    /// The tables read so far, by namespace.
    by_namespace: HashMap<PathBuf, TcpTable>,
}

impl Tables {
    fn new<'a>(reported: impl IntoIterator<Item = &'a Scanned>) -> Self {
        Self {
            wanted: reported
                .into_iter()
                .flat_map(|s| s.sockets.iter().copied())
                .collect(),
            by_namespace: HashMap::new(),
        }
    }

    fn of(&mut self, proc_dir: &Path) -> &TcpTable {
        // The namespace link names it (`net:[4026531840]`); without it, the
        // process is its own namespace.
        let key =
            std::fs::read_link(proc_dir.join("ns/net")).unwrap_or_else(|_| proc_dir.to_path_buf());
        let wanted = &self.wanted;
        self.by_namespace
            .entry(key)
            .or_insert_with(|| TcpTable::read(proc_dir, wanted))
    }
}

/// Reads one process in detail; `None` when it vanished or cannot be read.
pub fn process_fds(proc_dir: &Path) -> Option<ProcessFds> {
    let p = Scanned::read(proc_dir)?;
    let mut tables = Tables::new([&p]);
    Some(p.finish(Detail::Tcp, &mut tables))
}

/// What one sample found for one watched name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedSample {
    /// The command name watched (`[watch] processes`), or `egress-sentinel`.
    pub process: String,
    /// Processes with that name.
    pub matched: u64,
    /// Of those, processes skipped: they exited during the sample or their
    /// descriptors cannot be read (another user, no CAP_SYS_PTRACE).
    pub skipped: u64,
    /// The most loaded readable one (highest share of its limit, then most
    /// descriptors).
    pub worst: Option<ProcessFds>,
}

/// One sample of this process and the watched ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchSample {
    /// `egress-sentinel` first, then each watched name in config order.
    pub processes: Vec<NamedSample>,
}

/// Samples this process (`/proc/self`) and every process named in `names`,
/// TCP detail included.
pub fn sample(names: &[String]) -> WatchSample {
    sample_with(names, Detail::Tcp)
}

/// [`sample`] without the TCP detail: cheap enough for every scrape.
pub fn sample_kinds(names: &[String]) -> WatchSample {
    sample_with(names, Detail::Kinds)
}

/// The processes named `name`, and of the readable ones the most loaded
/// (highest share of its limit, then most descriptors).
struct Found {
    name: String,
    matched: u64,
    skipped: u64,
    worst: Option<Scanned>,
}

fn find(name: &str) -> Found {
    let found = processes_named(name);
    let mut skipped = 0;
    let mut worst: Option<Scanned> = None;
    for dir in &found {
        match Scanned::read(dir) {
            None => skipped += 1,
            Some(p) => {
                let better = worst.as_ref().is_none_or(|w| {
                    p.load()
                        .total_cmp(&w.load())
                        .then(p.usage.total().cmp(&w.usage.total()))
                        .is_gt()
                });
                if better {
                    worst = Some(p);
                }
            }
        }
    }
    Found {
        name: name.to_string(),
        matched: found.len() as u64,
        skipped,
        worst,
    }
}

impl Found {
    fn finish(self, detail: Detail, tables: &mut Tables) -> NamedSample {
        NamedSample {
            process: self.name,
            matched: self.matched,
            skipped: self.skipped,
            worst: self.worst.map(|p| p.finish(detail, tables)),
        }
    }
}

fn sample_with(names: &[String], detail: Detail) -> WatchSample {
    // Descriptors first, so the TCP tables are read once per namespace
    // keeping only the sockets of the processes reported.
    let me = Scanned::read(Path::new("/proc/self"));
    let found: Vec<Found> = names.iter().map(|n| find(n)).collect();
    let mut tables = Tables::new(
        me.iter()
            .chain(found.iter().filter_map(|f| f.worst.as_ref())),
    );
    let me = me.map(|p| {
        let mut p = p.finish(detail, &mut tables);
        p.pid = Some(std::process::id());
        p
    });
    let mut processes = vec![NamedSample {
        process: SELF_NAME.to_string(),
        matched: 1,
        skipped: u64::from(me.is_none()),
        worst: me,
    }];
    processes.extend(found.into_iter().map(|f| f.finish(detail, &mut tables)));
    WatchSample { processes }
}

/// Samples every process named `name`, keeping the most loaded.
pub fn sample_named(name: &str) -> NamedSample {
    let found = find(name);
    let mut tables = Tables::new(found.worst.as_ref());
    found.finish(Detail::Tcp, &mut tables)
}

/// The most `/proc` entries looked at when searching processes by name.
const MAX_PROCS: usize = 100_000;

/// The `/proc/<pid>` folders of processes whose command name (`comm`) is
/// `name` (the kernel keeps its first 15 bytes).
pub fn processes_named(name: &str) -> Vec<PathBuf> {
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
    sample_named(name).worst.map(|p| p.usage)
}

/// The number of descriptors open in this process (for tests and caps).
pub fn open_fds() -> u64 {
    fd_usage(Path::new("/proc/self")).total()
}

/// The human report of a sample (`verify --fds`): per process, descriptors
/// by kind against the limit, TCP sockets by state, the top remote endpoints.
pub fn render(sample: &WatchSample) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in &sample.processes {
        let Some(w) = &p.worst else {
            let _ = writeln!(
                out,
                "{}: {}",
                p.process,
                if p.matched == 0 {
                    "no process with this name".to_string()
                } else {
                    format!(
                        "{} process(es), none readable (another user? the sidecar needs the same user or CAP_SYS_PTRACE)",
                        p.matched
                    )
                }
            );
            continue;
        };
        let pid = w.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let limit = w
            .usage
            .max
            .map(|m| format!(" of {m}"))
            .unwrap_or_else(|| " (limit unknown)".to_string());
        let mut head = format!("{}{pid}: {} fds{limit}", p.process, w.usage.total());
        if p.matched > 1 || p.skipped > 0 {
            let _ = write!(
                head,
                " (most loaded of {} processes, {} skipped)",
                p.matched, p.skipped
            );
        }
        let _ = writeln!(out, "{head}");
        let kinds: Vec<String> = w
            .usage
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "  by kind: {}", kinds.join(", "));
        let Some(tcp) = &w.tcp else { continue };
        let states: Vec<String> = tcp
            .by_state
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{} {n}", s.name()))
            .collect();
        let _ = writeln!(
            out,
            "  tcp: {}; TIME_WAIT in the namespace {}; other sockets {}",
            if states.is_empty() {
                "none".to_string()
            } else {
                states.join(", ")
            },
            tcp.time_wait_in_namespace,
            tcp.other_sockets
        );
        if !tcp.top_remotes.is_empty() {
            let _ = writeln!(out, "  top remote endpoints:");
            for r in &tcp.top_remotes {
                let states: Vec<String> = r
                    .by_state
                    .iter()
                    .map(|(s, n)| format!("{} {n}", s.name()))
                    .collect();
                let _ = writeln!(
                    out,
                    "    {:<40} {:>6}  ({})",
                    r.endpoint,
                    r.sockets,
                    states.join(", ")
                );
            }
        }
    }
    out
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
    fn our_own_listener_and_connection_show_by_state_and_remote() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let me = process_fds(Path::new("/proc/self")).expect("self");
        let tcp = me.tcp.expect("tcp detail");
        assert!(tcp.by_state[&TcpState::Listen] >= 1, "{tcp:?}");
        assert!(tcp.by_state[&TcpState::Established] >= 2, "{tcp:?}");
        assert!(
            tcp.top_remotes
                .iter()
                .any(|r| r.endpoint == addr.to_string()),
            "{:?}",
            tcp.top_remotes
        );
        let light = sample_kinds(&[]);
        assert!(
            light.processes[0]
                .worst
                .as_ref()
                .is_some_and(|w| w.tcp.is_none())
        );
        drop((c, s, l));
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
        let none = sample_named("no-such-proc");
        assert_eq!((none.matched, none.skipped), (0, 0));
        assert!(none.worst.is_none());
    }
}
