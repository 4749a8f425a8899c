//! The soak's load, its measurements and its verdict, shared by
//! `benches/soak.rs` (by hand, for hours) and `tests/soak.rs` (CI, 5
//! minutes).
//!
//! The load is issue 23's: the release binary (`run --config`, a process of
//! its own) probing 4 targets × 2 routes (a real Squid from Debian's
//! package, and direct) every second; an app opening ~10 TLS tunnels a
//! second through it (CONNECT, TLS, one small GET); a 4 MiB download
//! through it every 20 s. Every sample (10 s by default) reads the
//! sidecar's `VmRSS`, `RssAnon`, descriptors, threads and CPU time from
//! `/proc`, and its live tokio tasks from `/metrics`
//! (`egress_runtime_alive_tasks`). Before the load and after it, the
//! descriptors and tasks at rest (the least seen over 3 s: probes come and
//! go every second) are the baseline and the end.
//!
//! Nothing leaves 127.0.0.0/8: the upstreams listen on 127.0.0.1, the
//! sidecar maps every name with `[resolve]`, Squid with its hosts file and
//! `dns_nameservers 127.0.0.1`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "../../tests/support/squid.rs"]
mod squid;

/// A free loopback port: `squid` asks its parent module for one, as in
/// tests/support.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The four targets: name and host.
pub const TARGETS: [(&str, &str); 4] = [
    ("push", "push.soak.test"),
    ("fcm", "fcm.soak.test"),
    ("sms", "sms.soak.test"),
    ("azure-ad", "login.soak.test"),
];

/// The size of the periodic download.
pub const DOWNLOAD_BYTES: usize = 4 << 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// The sidecar's binary.
    pub binary: PathBuf,
    /// How long the load runs.
    pub length: Duration,
    /// How often the sidecar is measured.
    pub sample_every: Duration,
    /// How often a row is printed (a multiple of `sample_every`).
    pub print_every: Duration,
    /// App tunnels opened per second.
    pub tunnels_per_second: u32,
    /// How often the 4 MiB download runs.
    pub download_every: Duration,
    /// Extra environment for the sidecar (`MALLOC_ARENA_MAX`,
    /// `LD_PRELOAD` for an allocator comparison).
    pub env: Vec<(String, String)>,
}

impl Opts {
    /// The issue's load for `length`: 10 tunnels a second, a download
    /// every 20 s, a sample every 10 s, a row a minute.
    pub fn new(binary: PathBuf, length: Duration) -> Self {
        Self {
            binary,
            length,
            sample_every: Duration::from_secs(10),
            print_every: Duration::from_secs(60),
            tunnels_per_second: 10,
            download_every: Duration::from_secs(20),
            env: Vec::new(),
        }
    }
}

/// One measurement of the sidecar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// `VmRSS`, KiB.
    pub rss: u64,
    /// `RssAnon`, KiB.
    pub anon: u64,
    /// Open descriptors.
    pub fds: u64,
    /// Live tokio tasks (`egress_runtime_alive_tasks`).
    pub tasks: u64,
    /// Threads.
    pub threads: u64,
    /// User plus system CPU, seconds.
    pub cpu: f64,
}

/// Descriptors and tasks at rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rest {
    /// Open descriptors.
    pub fds: u64,
    /// Live tokio tasks.
    pub tasks: u64,
}

/// What the app saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Tunnels that got their answer.
    pub tunnels_ok: AtomicU64,
    /// Tunnels that failed (any stage).
    pub tunnels_failed: AtomicU64,
    /// Downloads that got every byte.
    pub downloads_ok: AtomicU64,
    /// Downloads that failed.
    pub downloads_failed: AtomicU64,
}

/// A finished run.
#[derive(Debug)]
pub struct Report {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// At rest before the load.
    pub baseline: Rest,
    /// At rest after the load (the closest to the baseline seen within
    /// 30 s).
    pub end: Rest,
    /// The app's counts over the whole run.
    pub tunnels_ok: u64,
    /// Failed tunnels.
    pub tunnels_failed: u64,
    /// Downloads with every byte.
    pub downloads_ok: u64,
    /// Failed downloads.
    pub downloads_failed: u64,
    /// The sidecar's warnings and errors (the last 50).
    pub warnings: Vec<String>,
}

impl Report {
    /// Least-squares slope of `field` (KiB) against time, KiB per minute,
    /// over the samples from `from_secs` on (`None` with fewer than 3).
    pub fn slope(&self, field: fn(&Sample) -> u64, from_secs: f64) -> Option<f64> {
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.t >= from_secs)
            .map(|s| (s.t / 60.0, field(s) as f64))
            .collect();
        if pts.len() < 3 {
            return None;
        }
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        (sxx > 0.0).then(|| sxy / sxx)
    }

    /// The largest rise of `field` (KiB) from one sample to any sample at
    /// most 60 s later, both from `from_secs` on: a step, as opposed to a
    /// creep.
    pub fn max_step(&self, field: fn(&Sample) -> u64, from_secs: f64) -> u64 {
        let s: Vec<&Sample> = self.samples.iter().filter(|s| s.t >= from_secs).collect();
        let mut most = 0;
        for (i, a) in s.iter().enumerate() {
            for b in s[i + 1..].iter().take_while(|b| b.t - a.t <= 60.0 + 1e-6) {
                most = most.max(field(b).saturating_sub(field(a)));
            }
        }
        most
    }

    /// The highest `VmRSS`, KiB.
    pub fn peak_rss(&self) -> u64 {
        self.samples.iter().map(|s| s.rss).max().unwrap_or(0)
    }

    /// CPU seconds the sidecar used per minute of load.
    pub fn cpu_per_minute(&self) -> Option<f64> {
        let (a, b) = (self.samples.first()?, self.samples.last()?);
        (b.t > a.t).then(|| (b.cpu - a.cpu) / ((b.t - a.t) / 60.0))
    }

    /// The summary lines: slopes past `settle` seconds, steps past `warm`.
    pub fn summary(&self, settle: f64, warm: f64) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:+.2}"));
        let first = self.samples.first().copied().unwrap_or_default();
        let last = self.samples.last().copied().unwrap_or_default();
        format!(
            "slopes past {:.0} min (least squares, KiB/min): RSS {}, RssAnon {}\n\
             largest rise within 60 s past {:.0} min: RSS {} KiB, RssAnon {} KiB\n\
             RSS {} -> {} KiB (peak {}), RssAnon {} -> {} KiB; CPU {} s/min\n\
             at rest: descriptors {} -> {}, tasks {} -> {}\n\
             app: {} tunnels ok, {} failed; {} downloads of 4 MiB ok, {} failed",
            settle / 60.0,
            f(self.slope(|s| s.rss, settle)),
            f(self.slope(|s| s.anon, settle)),
            warm / 60.0,
            self.max_step(|s| s.rss, warm),
            self.max_step(|s| s.anon, warm),
            first.rss,
            last.rss,
            self.peak_rss(),
            first.anon,
            last.anon,
            self.cpu_per_minute()
                .map_or("-".to_string(), |c| format!("{c:.2}")),
            self.baseline.fds,
            self.end.fds,
            self.baseline.tasks,
            self.end.tasks,
            self.tunnels_ok,
            self.tunnels_failed,
            self.downloads_ok,
            self.downloads_failed,
        )
    }
}

// === the upstreams ===

/// A TLS upstream on 127.0.0.1: `GET /big` answers [`DOWNLOAD_BYTES`],
/// anything else a 2-byte 200; one request per connection.
async fn upstream(tls: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(30), serve(tls, tcp)).await;
            });
        }
    });
    addr
}

async fn serve(tls: tokio_rustls::TlsAcceptor, tcp: TcpStream) -> std::io::Result<()> {
    let mut s = tls.accept(tcp).await?;
    let head = read_head(&mut s).await?;
    let path = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if path == "/big" {
        s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {DOWNLOAD_BYTES}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        static CHUNK: [u8; 64 * 1024] = [0x5a; 64 * 1024];
        for _ in 0..DOWNLOAD_BYTES / CHUNK.len() {
            s.write_all(&CHUNK).await?;
        }
    } else {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await?;
    }
    s.shutdown().await
}

/// An HTTP head, at most 16 KiB.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16 * 1024 || s.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    Ok(head)
}

fn status(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// === the app ===

/// `GET https://host:port/path` through the sidecar at `proxy`: the body's
/// length on a 200.
async fn fetch(
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
    path: &str,
) -> Option<usize> {
    let work = async {
        let mut tcp = TcpStream::connect(proxy).await.ok()?;
        tcp.write_all(
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let head = read_head(&mut tcp).await.ok()?;
        if status(&head) != 200 {
            return None;
        }
        let name = ServerName::try_from(host.to_string()).ok()?;
        let mut s = tls.connect(name, tcp).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let head = read_head(&mut s).await.ok()?;
        if status(&head) != 200 {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut body = 0;
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => body += n,
                // rustls reports a peer that closed without close_notify.
                Err(_) => break,
            }
        }
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .ok()
        .flatten()
}

// === the sidecar ===

/// The sidecar's process, its listeners and its log.
struct Sidecar {
    child: Child,
    metrics: SocketAddr,
    proxy: SocketAddr,
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(dir: &Path, squid: SocketAddr, ports: &[u16]) -> String {
    let mut text = format!(
        r#"state_dir = "{state}"

[listen]
metrics = "127.0.0.1:0"
admin = "off"
proxy = "127.0.0.1:0"

[probe]
interval = "1s"
unhealthy_interval = "1s"
timeout = "2s"

[run]
reload_poll = "off"

[shutdown]
drain = "0s"
deadline = "2s"

[tls]
roots = "none"
ca_file = "{ca}"

[forward]
default = "deny"

[[route]]
name = "squid"
proxy = "http://{squid}"

[resolve]
"#,
        state = dir.join("state").display(),
        ca = dir.join("ca.pem").display(),
    );
    for (_, host) in TARGETS {
        text.push_str(&format!("\"{host}\" = \"127.0.0.1\"\n"));
    }
    for ((name, host), port) in TARGETS.iter().zip(ports) {
        text.push_str(&format!(
            "\n[[target]]\nname = \"{name}\"\nurl = \"https://{host}:{port}/\"\nroutes = [\"squid\", \"direct\"]\nallow_addresses = [\"127.0.0.1/32\"]\nexpect_ca = \"{ca}\"\n",
            ca = dir.join("ca.pem").display(),
        ));
    }
    text
}

fn start_sidecar(opts: &Opts, config: &Path) -> Sidecar {
    let mut child = Command::new(&opts.binary)
        .args(["run", "--config"])
        .arg(config)
        .args(["--log-format", "text"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", opts.binary.display()));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let keep = warnings.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line.clone());
            }
            if line.contains("WARN") || line.contains("ERROR") {
                let mut w = keep.lock().expect("lock");
                if w.len() >= 50 {
                    w.remove(0);
                }
                w.push(line);
            }
        }
    });
    let (mut metrics, mut proxy) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.is_none() || proxy.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no listening lines from the sidecar within 20 s"));
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.trim_matches('"').parse::<SocketAddr>().ok());
        if line.contains("listener=\"metrics\"") {
            metrics = addr;
        } else if line.contains("listener=\"forward proxy\"") {
            proxy = addr;
        }
    }
    Sidecar {
        child,
        metrics: metrics.expect("metrics"),
        proxy: proxy.expect("proxy"),
        warnings,
    }
}

/// `egress_runtime_alive_tasks` from the sidecar's `/metrics`.
async fn alive_tasks(metrics: SocketAddr) -> Option<u64> {
    let work = async {
        let mut s = TcpStream::connect(metrics).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("egress_runtime_alive_tasks "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

/// `VmRSS`, `RssAnon`, threads (KiB, KiB, count), descriptors and CPU
/// seconds of `pid`, from `/proc`.
fn usage(pid: u32) -> (u64, u64, u64, u64, f64) {
    let dir = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("{dir}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    // utime and stime: fields 14 and 15, counted after the `(comm)`.
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (
        field("VmRSS:"),
        field("RssAnon:"),
        field("Threads:"),
        fds,
        ticks as f64 / 100.0,
    )
}

/// Descriptors and tasks at rest: the least of each over `over` (a
/// reading every 100 ms), descriptors read before each scrape.
async fn at_rest(sidecar: &Sidecar, over: Duration) -> Rest {
    let start = Instant::now();
    let mut rest = Rest {
        fds: u64::MAX,
        tasks: u64::MAX,
    };
    while start.elapsed() < over {
        let (_, _, _, fds, _) = usage(sidecar.child.id());
        rest.fds = rest.fds.min(fds);
        if let Some(t) = alive_tasks(sidecar.metrics).await {
            rest.tasks = rest.tasks.min(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rest
}

// === the run ===

/// Runs the soak; `row` is called with each printed line.
pub fn run(opts: &Opts, row: &mut dyn FnMut(&str)) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(soak(opts, row))
}

async fn soak(opts: &Opts, row: &mut dyn FnMut(&str)) -> Report {
    let squid_bin = squid::available().expect("the soak needs Squid: apt-get install squid");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hosts: Vec<&str> = TARGETS.iter().map(|t| t.1).collect();
    let pki = egress_sentinel::demo::stand_ins::pki(&hosts).expect("pki");
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let mut ports = Vec::new();
    for _ in TARGETS {
        ports.push(upstream(acceptor.clone()).await.port());
    }
    let squid = squid::Squid::start(squid_bin, &hosts, &[]);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).expect("ca");
    let config = dir.path().join("soak.toml");
    std::fs::write(&config, config_text(dir.path(), squid.addr, &ports)).expect("config");
    let sidecar = start_sidecar(opts, &config);
    let pid = sidecar.child.id();

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client));

    // Probes settle (every route healthy) before the baseline.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let baseline = at_rest(&sidecar, Duration::from_secs(3)).await;

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + opts.length;
    let proxy = sidecar.proxy;
    let tunnels = {
        let (tally, tls, ports) = (tally.clone(), tls.clone(), ports.clone());
        let every = Duration::from_secs_f64(1.0 / f64::from(opts.tunnels_per_second.max(1)));
        tokio::spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tick = tokio::time::interval(every);
            let mut n = 0usize;
            let mut jobs = tokio::task::JoinSet::new();
            while Instant::now() < end {
                tick.tick().await;
                while jobs.try_join_next().is_some() {}
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tally.tunnels_failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let i = n % TARGETS.len();
                n += 1;
                let (tally, tls, port) = (tally.clone(), tls.clone(), ports[i]);
                jobs.spawn(async move {
                    let _permit = permit;
                    match fetch(proxy, &tls, TARGETS[i].1, port, "/").await {
                        Some(2) => tally.tunnels_ok.fetch_add(1, Ordering::Relaxed),
                        _ => tally.tunnels_failed.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
            while jobs.join_next().await.is_some() {}
        })
    };
    let downloads = {
        let (tally, tls, port) = (tally.clone(), tls.clone(), ports[0]);
        let every = opts.download_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // The first at `every`, not at once: the warm-up sees the
            // small tunnels alone for a moment.
            tick.tick().await;
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    return;
                }
                match fetch(proxy, &tls, TARGETS[0].1, port, "/big").await {
                    Some(DOWNLOAD_BYTES) => tally.downloads_ok.fetch_add(1, Ordering::Relaxed),
                    _ => tally.downloads_failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    row(&format!(
        "soak: {:.1} min against {} (pid {pid}); {} tunnels/s, 4 MiB every {} s; Squid {}; baseline at rest: {} descriptors, {} tasks",
        opts.length.as_secs_f64() / 60.0,
        opts.binary.display(),
        opts.tunnels_per_second,
        opts.download_every.as_secs(),
        squid.addr,
        baseline.fds,
        baseline.tasks,
    ));
    row(&format!(
        "{:>6} {:>8} {:>8} {:>5} {:>6} {:>7} {:>7} | {:>9} {:>6} {:>5} {:>5}",
        "t s",
        "RSS KiB",
        "anon KiB",
        "fds",
        "tasks",
        "threads",
        "CPU s",
        "tun ok",
        "fail",
        "dl ok",
        "fail"
    ));
    let mut samples = Vec::new();
    let mut next_sample = start;
    let mut next_print = start;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            next_sample += opts.sample_every;
            let t = start.elapsed().as_secs_f64();
            let (rss, anon, threads, fds, cpu) = usage(pid);
            let tasks = alive_tasks(sidecar.metrics).await.unwrap_or(0);
            let s = Sample {
                t,
                rss,
                anon,
                fds,
                tasks,
                threads,
                cpu,
            };
            samples.push(s);
            if now >= next_print {
                next_print += opts.print_every;
                row(&format!(
                    "{:>6.0} {:>8} {:>8} {:>5} {:>6} {:>7} {:>7.1} | {:>9} {:>6} {:>5} {:>5}",
                    s.t,
                    s.rss,
                    s.anon,
                    s.fds,
                    s.tasks,
                    s.threads,
                    s.cpu,
                    tally.tunnels_ok.load(Ordering::Relaxed),
                    tally.tunnels_failed.load(Ordering::Relaxed),
                    tally.downloads_ok.load(Ordering::Relaxed),
                    tally.downloads_failed.load(Ordering::Relaxed),
                ));
            }
        }
        if now >= end {
            break;
        }
        let wake = next_sample.min(end);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    }
    let _ = tunnels.await;
    let _ = downloads.await;

    // At rest again: the closest to the baseline within 30 s (a tunnel's
    // sockets take a moment to close).
    let settle = Instant::now();
    let mut end_rest = at_rest(&sidecar, Duration::from_secs(3)).await;
    while end_rest != baseline && settle.elapsed() < Duration::from_secs(30) {
        end_rest = at_rest(&sidecar, Duration::from_secs(3)).await;
    }
    let warnings = sidecar.warnings.lock().expect("lock").clone();
    drop(sidecar);
    drop(squid);
    Report {
        samples,
        baseline,
        end: end_rest,
        tunnels_ok: tally.tunnels_ok.load(Ordering::Relaxed),
        tunnels_failed: tally.tunnels_failed.load(Ordering::Relaxed),
        downloads_ok: tally.downloads_ok.load(Ordering::Relaxed),
        downloads_failed: tally.downloads_failed.load(Ordering::Relaxed),
        warnings,
    }
}
