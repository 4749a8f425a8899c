//! What the benches that compare paths share (`tunnel.rs`,
//! `login_load.rs`): the far end's sink, the paths (direct, the release
//! binary per relay mode, Squid, tinyproxy, HAProxy `mode tcp`), opening a
//! stream along one, bulk load beside a measurement, and reading a
//! process's CPU and memory from `/proc`. Everything listens on 127.0.0.1;
//! clients may come from any 127.0.0.0/8 address.

// Each bench uses a different part.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub const MIB: u64 = 1 << 20;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// === the far end's sink ===

/// A sink: reads and discards; answers one byte per MiB so the sender knows
/// the data arrived (no credit for bytes still in buffers).
pub async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = l.local_addr().expect("sink address");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            s.set_nodelay(true).ok();
            tokio::spawn(sink_one(s));
        }
    });
    addr
}

async fn sink_one(mut s: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let before = total / MIB;
                total += n as u64;
                for _ in before..total / MIB {
                    if s.write_all(b".").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Where the paths lead: the sink, and the server a bench measures
/// against (tunnel.rs: a plain echo; login_load.rs: a TLS server).
#[derive(Clone, Copy)]
pub struct Ends {
    pub sink: SocketAddr,
    pub echo: SocketAddr,
}

// === the paths ===

/// How a path is entered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Straight to the destination.
    Direct,
    /// `CONNECT` through a forward proxy at this address.
    Connect(SocketAddr),
    /// A TCP forwarder: one port per destination (sink, echo).
    Forwarder { sink: SocketAddr, echo: SocketAddr },
}

pub struct Path_ {
    pub name: &'static str,
    pub entry: Entry,
    pub child: Option<Child>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Drop for Path_ {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Path_ {
    pub fn direct() -> Path_ {
        Path_ {
            name: "direct",
            entry: Entry::Direct,
            child: None,
            _dir: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Direct, egress-sentinel (copy and splice), and whichever of Squid,
/// tinyproxy and HAProxy are installed; with `BENCH_PATHS` (a
/// comma-separated list of words: `direct,copy,splice,squid`), only the
/// paths whose name holds one of them (direct always runs: the others are
/// measured against it).
pub fn all_paths(ends: Ends) -> Vec<Path_> {
    let wanted = std::env::var("BENCH_PATHS").ok();
    let wants = |name: &str| match &wanted {
        None => true,
        Some(list) => list
            .split(',')
            .any(|w| !w.is_empty() && name.contains(w.trim())),
    };
    let mut paths = vec![Path_::direct()];
    if wants("egress-sentinel copy") {
        paths.push(sidecar("egress-sentinel copy", ends, "copy"));
    }
    if wants("egress-sentinel splice") {
        paths.push(sidecar("egress-sentinel splice", ends, "splice"));
    }
    if wants("squid") {
        paths.extend(squid());
    }
    if wants("tinyproxy") {
        paths.extend(tinyproxy());
    }
    if wants("haproxy-splice") {
        paths.extend(haproxy(ends));
    }
    paths
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn wait_listening(addr: SocketAddr, child: &mut Child, name: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{name} exited: {s}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on {addr}");
}

fn spawn(name: &'static str, cmd: &mut Command, entry: Entry, dir: tempfile::TempDir) -> Path_ {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let probe = match entry {
        Entry::Connect(a) => a,
        Entry::Forwarder { sink, .. } => sink,
        Entry::Direct => unreachable!("nothing to start"),
    };
    wait_listening(probe, &mut child, name);
    Path_ {
        name,
        entry,
        child: Some(child),
        _dir: Some(dir),
    }
}

/// The release binary cargo built, or `BENCH_SIDECAR_BIN` (to compare builds).
pub fn sidecar_binary() -> PathBuf {
    std::env::var_os("BENCH_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_egress-sentinel")))
}

/// egress-sentinel with `relay`, a `direct` target for each end (the same
/// dialer and policy checks as production traffic).
pub fn sidecar(name: &'static str, ends: Ends, relay: &str) -> Path_ {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = format!(
        r#"
[listen]
metrics = "off"
admin = "off"
proxy = "127.0.0.1:{port}"

[probe]
interval = "1h"
timeout = "5s"

[tls]
roots = "webpki"

[[target]]
name = "sink"
url = "https://127.0.0.1:{sink}/"
routes = ["direct"]
allow_addresses = ["127.0.0.1/32"]

[[target]]
name = "echo"
url = "https://127.0.0.1:{echo}/"
routes = ["direct"]
allow_addresses = ["127.0.0.1/32"]

[forward]
default = "deny"
max_connections = 100000
relay = "{relay}"
"#,
        sink = ends.sink.port(),
        echo = ends.echo.port(),
    );
    let config = match std::env::var("BENCH_WORKERS") {
        Ok(n) => format!("[runtime]\nworker_threads = {n}\n{config}"),
        Err(_) => config,
    };
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config).expect("write the sidecar's config");
    spawn(
        name,
        Command::new(sidecar_binary())
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "error"),
        Entry::Connect(local(port)),
        dir,
    )
}

fn installed(bin: &str, package: &str) -> Option<&'static Path> {
    let p: &'static Path = Box::leak(PathBuf::from(bin).into_boxed_path());
    if p.exists() {
        Some(p)
    } else {
        eprintln!("{bin} not installed: skipped (apt-get install {package})");
        None
    }
}

pub fn tinyproxy() -> Option<Path_> {
    let bin = installed("/usr/bin/tinyproxy", "tinyproxy")?;
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 20000\nAllow 127.0.0.0/8\nLogLevel Critical\nUser nobody\nGroup nogroup\n"),
    )
    .expect("write tinyproxy's config");
    Some(spawn(
        "tinyproxy",
        Command::new(bin).args(["-d", "-c"]).arg(&conf),
        Entry::Connect(local(port)),
        dir,
    ))
}

/// Squid, stock settings, no logging; a hosts file of its own and
/// `dns_nameservers 127.0.0.1`, so no name ever leaves the machine.
pub fn squid() -> Option<Path_> {
    let bin = installed("/usr/sbin/squid", "squid")?;
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod squid's directory");
    }
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n").expect("write squid's hosts");
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\npid_filename none\naccess_log none\ncache_log {d}/cache.log\ncoredump_dir {d}\nhosts_file {d}/hosts\ndns_nameservers 127.0.0.1\nmax_filedescriptors 65536\nshutdown_lifetime 0 seconds\n"
        ),
    )
    .expect("write squid's config");
    Some(spawn(
        "squid",
        Command::new(bin).args(["-N", "-f"]).arg(&conf),
        Entry::Connect(local(port)),
        dir,
    ))
}

/// HAProxy as a TCP forwarder with splice both ways and 1 MiB pipes.
pub fn haproxy(ends: Ends) -> Option<Path_> {
    let bin = installed("/usr/sbin/haproxy", "haproxy")?;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sink_port, echo_port) = (free_port(), free_port());
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(
        &conf,
        format!(
            "global\n  maxconn 4000\n  tune.pipesize 1048576\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n  option splice-request\n  option splice-response\n\nlisten sink\n  bind 127.0.0.1:{sink_port}\n  server s {}\n\nlisten echo\n  bind 127.0.0.1:{echo_port}\n  server e {}\n",
            ends.sink, ends.echo
        ),
    )
    .expect("write haproxy's config");
    Some(spawn(
        "haproxy-splice",
        Command::new(bin).args(["-db", "-f"]).arg(&conf),
        Entry::Forwarder {
            sink: local(sink_port),
            echo: local(echo_port),
        },
        dir,
    ))
}

/// Opens a stream to `to` (the sink or the echo of `ends`) along `entry`.
pub async fn open(entry: Entry, ends: Ends, to: SocketAddr) -> TcpStream {
    try_open(entry, ends, to, None)
        .await
        .unwrap_or_else(|e| panic!("open a stream to {to}: {e}"))
}

/// Opens a stream to `to` along `entry`, from the source address `from`
/// when given (any of 127.0.0.0/8).
pub async fn try_open(
    entry: Entry,
    ends: Ends,
    to: SocketAddr,
    from: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let first = match entry {
        Entry::Direct => to,
        Entry::Connect(p) => p,
        Entry::Forwarder { sink, echo } => {
            if to == ends.sink {
                sink
            } else {
                echo
            }
        }
    };
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut s = socket.connect(first).await?;
    s.set_nodelay(true).ok();
    if let Entry::Connect(_) = entry {
        s.write_all(format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
            .await?;
        connect_reply(&mut s).await?;
    }
    Ok(s)
}

/// Reads a CONNECT reply's head (a byte at a time: nothing past it) and
/// wants a `200`.
async fn connect_reply(s: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? != 1 {
            return Err(std::io::Error::other(format!(
                "proxy closed: {}",
                String::from_utf8_lossy(&head)
            )));
        }
        head.push(b[0]);
    }
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "proxy refused: {}",
            String::from_utf8_lossy(&head)
        )))
    }
}

// === bulk load beside a measurement ===

/// `n` tunnels to the sink sending as fast as they can until stopped.
pub struct BulkLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BulkLoad {
    /// Opens `n` tunnels along `entry` and lets them reach full speed (and
    /// borrow the relay's large buffers).
    pub async fn start(entry: Entry, ends: Ends, n: usize) -> BulkLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let s = open(entry, ends, ends.sink).await;
            tasks.push(tokio::spawn(send_until(s, stop.clone())));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        BulkLoad { stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn send_until(s: TcpStream, stop: Arc<AtomicBool>) {
    let (mut r, mut w) = s.into_split();
    let drain = tokio::spawn(async move {
        let mut b = [0u8; 64];
        while matches!(r.read(&mut b).await, Ok(n) if n > 0) {}
    });
    let chunk = vec![0x5au8; MIB as usize];
    while !stop.load(Ordering::Relaxed) {
        if w.write_all(&chunk).await.is_err() {
            break;
        }
    }
    drop(w);
    drain.abort();
}

// === measurements ===

/// On-CPU time of a process, its threads and its children: schedstat (ns)
/// of every live thread, plus what its children that exited used (`cutime`
/// and `cstime`, in clock ticks: tinyproxy forks workers).
pub fn cpu_ns(pid: u32) -> u64 {
    let reaped: u64 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(") ")?.1.to_string();
            let f: Vec<u64> = after
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            // cutime and cstime: fields 16 and 17 of stat, 14 and 15 here.
            Some((f.get(13)? + f.get(14)?) * 10_000_000)
        })
        .unwrap_or(0);
    reaped + live_cpu_ns(pid)
}

pub fn live_cpu_ns(pid: u32) -> u64 {
    let own: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| {
                    std::fs::read_to_string(t.path().join("schedstat"))
                        .ok()?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum()
        })
        .unwrap_or(0);
    own + children(pid).into_iter().map(cpu_ns).sum::<u64>()
}

pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .flat_map(|t| {
                    std::fs::read_to_string(t.path().join("children"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `/proc/PID/status` field (KiB) of a process and its children.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    own + children(pid)
        .into_iter()
        .map(|c| status_kib(c, key))
        .sum::<u64>()
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}
