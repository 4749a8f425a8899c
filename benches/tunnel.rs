//! Tunnel benchmark, run by hand: `cargo bench --bench tunnel`.
//!
//! Measures, on loopback, side by side in one run: throughput of one CONNECT
//! tunnel, the latency a new tunnel adds over dialing directly, and the
//! memory an idle tunnel costs the proxy process — for egress-sentinel's
//! forward proxy (the release binary, as a separate process), tinyproxy and
//! Squid (Debian's packages, when installed), against a direct connection.
//!
//! Environment: BENCH_BYTES (default 1 GiB), BENCH_DIALS (2000),
//! BENCH_IDLE (1000). Nothing leaves 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A sink: reads and discards; answers one byte per 1 MiB so the sender
/// knows the data arrived (no credit for bytes still in buffers).
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let before = total / (1 << 20);
                            total += n as u64;
                            for _ in before..total / (1 << 20) {
                                if s.write_all(b".").await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Proxy {
    name: &'static str,
    addr: Option<SocketAddr>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn wait_listening(addr: SocketAddr, child: &mut Child, name: &str) {
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

fn sidecar(sink: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().expect("dir");
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
url = "https://127.0.0.1:{}/"
routes = ["direct"]
allow_addresses = ["127.0.0.1/32"]

[forward]
default = "deny"
max_connections = 100000
"#,
        sink.port()
    );
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config).expect("config");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_egress-sentinel"));
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn egress-sentinel");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "egress-sentinel");
    Proxy {
        name: "egress-sentinel",
        addr: Some(addr),
        child: Some(child),
        _dir: Some(dir),
    }
}

/// Starts a proxy from its prepared command and waits until it listens.
fn spawn_proxy(
    name: &'static str,
    cmd: &mut Command,
    port: u16,
    dir: tempfile::TempDir,
) -> Option<Proxy> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, name);
    Some(Proxy {
        name,
        addr: Some(addr),
        child: Some(child),
        _dir: Some(dir),
    })
}

fn tinyproxy() -> Option<Proxy> {
    let bin = Path::new("/usr/bin/tinyproxy");
    if !bin.exists() {
        eprintln!("tinyproxy not installed: skipped (apt-get install tinyproxy)");
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 20000\nAllow 127.0.0.1\nLogLevel Critical\nUser nobody\nGroup nogroup\n"),
    )
    .expect("conf");
    spawn_proxy(
        "tinyproxy",
        Command::new(bin).args(["-d", "-c"]).arg(&conf),
        port,
        dir,
    )
}

fn squid() -> Option<Proxy> {
    let bin = Path::new("/usr/sbin/squid");
    if !bin.exists() {
        eprintln!("squid not installed: skipped (apt-get install squid)");
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let port = free_port();
    let d = dir.path().display();
    let conf = dir.path().join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\npid_filename none\naccess_log none\ncache_log {d}/cache.log\ncoredump_dir {d}\ndns_nameservers 127.0.0.1\nmax_filedescriptors 65536\nshutdown_lifetime 0 seconds\n"
        ),
    )
    .expect("conf");
    spawn_proxy(
        "squid",
        Command::new(bin).args(["-N", "-f"]).arg(&conf),
        port,
        dir,
    )
}

/// Opens a stream to `sink`, through `proxy` when given.
async fn open(proxy: Option<SocketAddr>, sink: SocketAddr) -> TcpStream {
    let Some(p) = proxy else {
        let s = TcpStream::connect(sink).await.expect("connect sink");
        s.set_nodelay(true).ok();
        return s;
    };
    let mut s = TcpStream::connect(p).await.expect("connect proxy");
    s.set_nodelay(true).ok();
    s.write_all(format!("CONNECT {sink} HTTP/1.1\r\nHost: {sink}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read reply");
        assert!(n == 1, "proxy closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// MiB/s of `bytes` sent through one stream and acknowledged by the sink.
async fn throughput(proxy: Option<SocketAddr>, sink: SocketAddr, bytes: u64) -> f64 {
    let s = open(proxy, sink).await;
    let (mut r, mut w) = s.into_split();
    let mib = bytes / (1 << 20);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..mib {
            w.write_all(&chunk).await.expect("write");
        }
        w
    });
    let mut acks = vec![0u8; mib as usize];
    r.read_exact(&mut acks).await.expect("acks");
    let secs = start.elapsed().as_secs_f64();
    drop(writer.await);
    mib as f64 / secs
}

/// Latencies (µs) of `n` sequential new tunnels (connect, CONNECT, 200).
async fn dial_latencies(proxy: Option<SocketAddr>, sink: SocketAddr, n: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = Instant::now();
        let s = open(proxy, sink).await;
        out.push(start.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Resident memory (KiB) of a process and its children.
fn rss_kib(pid: u32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(rss_kib)
        .sum();
    own + children
}

/// KiB per idle tunnel: RSS growth over `n` open, idle tunnels.
async fn idle_cost(proxy: &Proxy, sink: SocketAddr, n: u64) -> Option<f64> {
    let pid = proxy.child.as_ref()?.id();
    // Warm up allocator pools first.
    let warm: Vec<_> = futures_join(proxy.addr, sink, 50).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let held = futures_join(proxy.addr, sink, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(held);
    Some((after.saturating_sub(before)) as f64 / n as f64)
}

async fn futures_join(proxy: Option<SocketAddr>, sink: SocketAddr, n: u64) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        v.push(open(proxy, sink).await);
    }
    v
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bytes = env_or("BENCH_BYTES", 1 << 30);
    let dials = env_or("BENCH_DIALS", 2000);
    let idle = env_or("BENCH_IDLE", 1000);
    let sink = sink().await;
    let mut proxies = vec![
        Proxy {
            name: "direct",
            addr: None,
            child: None,
            _dir: None,
        },
        sidecar(sink),
    ];
    proxies.extend(tinyproxy());
    proxies.extend(squid());

    println!(
        "one tunnel: {} MiB; new tunnels: {dials} in a row; idle tunnels: {idle}",
        bytes >> 20
    );
    println!(
        "{:<16} {:>10} {:>8} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "path",
        "MiB/s",
        "x direct",
        "dial p50",
        "dial p99",
        "added p50",
        "added p99",
        "KiB/idle tun."
    );
    let mut direct_tp = 0.0;
    let mut direct_lat = Vec::new();
    for p in &proxies {
        let tp = throughput(p.addr, sink, bytes).await;
        let lat = dial_latencies(p.addr, sink, dials).await;
        if p.addr.is_none() {
            direct_tp = tp;
            direct_lat = lat.clone();
        }
        let cost = idle_cost(p, sink, idle).await;
        println!(
            "{:<16} {:>10.0} {:>8.2} {:>8.0}µs {:>8.0}µs {:>10.0}µs {:>10.0}µs {:>14}",
            p.name,
            tp,
            tp / direct_tp,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 0.5) - pct(&direct_lat, 0.5),
            pct(&lat, 0.99) - pct(&direct_lat, 0.99),
            cost.map_or("-".to_string(), |c| format!("{c:.1}")),
        );
    }
}
