//! Soak, run by hand: `SOAK_MINUTES=30 cargo bench --bench soak`.
//!
//! The demo's situation for as long as one likes: stand-ins for push, SMS
//! and Azure AD and for the provider's proxy (the demo's own), an app that
//! calls each upstream through the sidecar every 200 ms, and the provider's
//! proxy broken (502 to CONNECT) and restored every `SOAK_FLIP_SECONDS`
//! (default 120). Every `SOAK_SAMPLE_SECONDS` (default 60) it prints the
//! sidecar's resident memory, open descriptors, live tokio tasks and
//! threads, and the app's requests in that interval; at the end, how each
//! moved from the first sample after warm-up to the last. Flat is the goal.
//!
//! The sidecar runs in a process of its own (this bench re-executed with
//! `SOAK_ROLE=sidecar`): the same `run_with` the binary calls, on its own
//! runtime, so that memory, descriptors and tasks are the sidecar's alone;
//! it reports its task count on stdout and stops when its stdin closes.
//! Without `SOAK_MINUTES` it only says how to run it, so a plain
//! `cargo bench` does not start a 30-minute run. Nothing leaves 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use egress_sentinel::config::Config;
use egress_sentinel::demo::stand_ins;
use egress_sentinel::sidecar::{Hooks, Listeners, run_with};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The three upstreams: target name and host.
const UPSTREAMS: [(&str, &str); 3] = [
    ("push", "push.demo.test"),
    ("sms", "sms.demo.test"),
    ("azure-ad", "login.demo.test"),
];

/// How often the app calls each upstream (the demo's rate).
const APP_EVERY: Duration = Duration::from_millis(200);

fn main() {
    if std::env::var("SOAK_ROLE").as_deref() == Ok("sidecar") {
        sidecar();
        return;
    }
    let Some(minutes) = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    else {
        println!(
            "soak: not run. SOAK_MINUTES=30 cargo bench --bench soak (benches/README.md, \"Soak\")"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(soak(Duration::from_secs_f64(minutes * 60.0)));
    std::process::exit(code);
}

// === the sidecar's process ===

/// `SOAK_ROLE=sidecar`: runs the sidecar on `SOAK_CONFIG`, prints
/// `listening <metrics> <proxy>` and then `tasks <n>` every second;
/// stops when stdin closes.
fn sidecar() {
    let config = Config::load(Path::new(
        &std::env::var("SOAK_CONFIG").expect("SOAK_CONFIG"),
    ))
    .unwrap_or_else(|e| panic!("soak config: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = runtime.handle().metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // The parent holds our stdin: when it ends, so do we.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop_tx.send(());
    });
    runtime.block_on(async move {
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
        let (m, p) = (bind().await, bind().await);
        let addrs = (m.local_addr().expect("addr"), p.local_addr().expect("addr"));
        println!("listening {} {}", addrs.0, addrs.1);
        std::thread::spawn(move || {
            loop {
                let line = format!("tasks {}\n", metrics.num_alive_tasks());
                if std::io::stdout().write_all(line.as_bytes()).is_err() {
                    return;
                }
                let _ = std::io::stdout().flush();
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let listeners = Listeners {
            metrics: Some(m),
            admin: None,
            proxy: Some(p),
        };
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = run_with(config, listeners, shutdown, Hooks::default()).await {
            eprintln!("sidecar: {e}");
        }
    });
}

// === the soak ===

fn config_text(proxy: SocketAddr, ports: [u16; 3]) -> String {
    format!(
        r#"
[listen]
metrics = "off"
admin = "off"
proxy = "off"

[probe]
interval = "1s"
unhealthy_interval = "200ms"
timeout = "1s"
fall = 2
rise = 2

[run]
reload_poll = "off"

[shutdown]
drain = "0s"
deadline = "2s"

[resolve]
"push.demo.test" = "127.0.0.1"
"sms.demo.test" = "127.0.0.1"
"login.demo.test" = "127.0.0.1"

[tls]
roots = "none"
ca_file = "demo-ca.pem"

[[route]]
name = "provider"
proxy = "http://{proxy}"
connect_timeout = "500ms"

[[target]]
name = "push"
url = "https://push.demo.test:{}/"
expect_status = [200, 403]
routes = ["provider", "direct"]
allow_addresses = ["127.0.0.1/32"]

[[target]]
name = "sms"
url = "https://sms.demo.test:{}/"
expect_status = [200, 401]
routes = ["provider"]

[[target]]
name = "azure-ad"
url = "https://login.demo.test:{}/"
routes = ["provider", "direct"]
allow_addresses = ["127.0.0.1/32"]

[forward]
default = "deny"
failback_grace = "5s"
"#,
        ports[0], ports[1], ports[2]
    )
}

/// The sidecar process and what it reports.
struct Child {
    child: std::process::Child,
    tasks: Arc<AtomicU64>,
}

impl Child {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory and its anonymous part (KiB: heap and allocator
    /// arenas, without the binary's and libraries' pages), open descriptors
    /// and threads, from `/proc`.
    fn usage(&self) -> (u64, u64, u64, u64) {
        let dir = format!("/proc/{}", self.pid());
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let field = |name: &str| {
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
        (field("VmRSS:"), field("RssAnon:"), fds, field("Threads:"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Closing stdin stops it; give it the shutdown deadline.
        drop(self.child.stdin.take());
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

fn start_sidecar(config: &Path) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .env("SOAK_ROLE", "sidecar")
        .env("SOAK_CONFIG", config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the sidecar");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .expect("the sidecar's listening line");
    let mut parts = first.split_whitespace().skip(1);
    let mut addr = || -> SocketAddr {
        parts
            .next()
            .and_then(|a| a.parse().ok())
            .expect("an address")
    };
    let (metrics, proxy) = (addr(), addr());
    let tasks = Arc::new(AtomicU64::new(0));
    let seen = tasks.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("tasks ").and_then(|n| n.parse().ok()) {
                seen.store(n, Ordering::Relaxed);
            }
        }
    });
    (Child { child, tasks }, metrics, proxy)
}

/// The app's counts since the last sample.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// `GET https://host:port/` through the sidecar: the upstream's status, or
/// `Err` with the sidecar's refusal status (0 for any other failure).
async fn get(
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
) -> Result<u16, u16> {
    let work = async {
        let mut tcp = TcpStream::connect(proxy).await.map_err(|_| 0u16)?;
        tcp.write_all(
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|_| 0u16)?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return Err(0),
            }
        }
        let status = |text: &[u8]| -> u16 {
            String::from_utf8_lossy(text)
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        };
        if status(&head) != 200 {
            return Err(status(&head));
        }
        let name = ServerName::try_from(host.to_string()).map_err(|_| 0u16)?;
        let mut s = tls.connect(name, tcp).await.map_err(|_| 0u16)?;
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|_| 0u16)?;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        Ok(status(&answer))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or(Err(0))
}

async fn soak(length: Duration) -> i32 {
    egress_sentinel::dial::tls::install_default_provider();
    let flip = Duration::from_secs(env_secs("SOAK_FLIP_SECONDS", 120));
    let every = Duration::from_secs(env_secs("SOAK_SAMPLE_SECONDS", 60));
    let hosts: Vec<&str> = UPSTREAMS.iter().map(|u| u.1).collect();
    let pki = stand_ins::pki(&hosts).expect("pki");
    let push = stand_ins::upstream(&pki, 403, "{\"reason\":\"MissingProviderToken\"}")
        .await
        .expect("push");
    let sms = stand_ins::upstream(&pki, 401, "{\"code\":20003}")
        .await
        .expect("sms");
    let login = stand_ins::upstream(&pki, 200, "{\"issuer\":\"demo\"}")
        .await
        .expect("login");
    let provider = stand_ins::ProviderProxy::start()
        .await
        .expect("provider proxy");
    let ports = [push.addr.port(), sms.addr.port(), login.addr.port()];

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("demo-ca.pem"), &pki.ca_pem).expect("ca");
    let config = dir.path().join("soak.toml");
    std::fs::write(&config, config_text(provider.addr, ports)).expect("config");
    let (child, metrics, proxy) = start_sidecar(&config);

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));

    let tally: Arc<[Tally; 3]> = Arc::default();
    let end = Instant::now() + length;
    let mut app = Vec::new();
    for (i, (_, host)) in UPSTREAMS.iter().enumerate() {
        let (tally, tls, port) = (tally.clone(), tls.clone(), ports[i]);
        app.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(APP_EVERY);
            while Instant::now() < end {
                tick.tick().await;
                let t = &tally[i];
                match get(proxy, &tls, host, port).await {
                    Ok(_) => t.ok.fetch_add(1, Ordering::Relaxed),
                    Err(0) => t.failed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => t.refused.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    println!(
        "soak: {:.1} min, provider proxy broken/restored every {} s, sample every {} s; sidecar pid {} (metrics http://{metrics}/metrics)",
        length.as_secs_f64() / 60.0,
        flip.as_secs(),
        every.as_secs(),
        child.pid()
    );
    println!(
        "{:>7} {:>8} {:>9} {:>9} {:>5} {:>6} {:>8} | {:>17} {:>17} {:>17}",
        "t",
        "proxy",
        "RSS KiB",
        "anon KiB",
        "fds",
        "tasks",
        "threads",
        "push ok/ref/fail",
        "sms ok/ref/fail",
        "azure ok/ref/fail"
    );
    let mut rows: Vec<(u64, u64, u64, u64)> = Vec::new();
    let start = Instant::now();
    let mut broken = false;
    let mut next_flip = start + flip;
    let mut next_sample = start + every;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        if now >= next_sample {
            next_sample += every;
            let (rss, anon, fds, threads) = child.usage();
            let tasks = child.tasks.load(Ordering::Relaxed);
            let counts: Vec<String> = tally
                .iter()
                .map(|t| {
                    format!(
                        "{}/{}/{}",
                        t.ok.swap(0, Ordering::Relaxed),
                        t.refused.swap(0, Ordering::Relaxed),
                        t.failed.swap(0, Ordering::Relaxed)
                    )
                })
                .collect();
            println!(
                "{:>6}s {:>8} {rss:>9} {anon:>9} {fds:>5} {tasks:>6} {threads:>8} | {:>17} {:>17} {:>17}",
                start.elapsed().as_secs(),
                if broken { "broken" } else { "ok" },
                counts[0],
                counts[1],
                counts[2]
            );
            rows.push((rss, anon, fds, tasks));
        }
        // After the sample, so a row's proxy state is the one its counts
        // were taken under (when the flip period is a multiple of it).
        if now >= next_flip {
            broken = !broken;
            provider.set_broken(broken);
            next_flip += flip;
        }
    }
    for t in app {
        let _ = t.await;
    }
    // The first sample is warm-up (TLS sessions, buffers, the first
    // failover); compare the second with the last.
    match (rows.get(1), rows.last()) {
        (Some(first), Some(last)) if rows.len() >= 3 => {
            let peak = rows.iter().skip(1).map(|r| r.0).max().unwrap_or(0);
            println!(
                "from the 2nd sample to the last: RSS {} -> {} KiB (peak {peak}), anonymous {} -> {} KiB, fds {} -> {}, tasks {} -> {}",
                first.0, last.0, first.1, last.1, first.2, last.2, first.3, last.3
            );
        }
        _ => println!("too short to compare: at least 3 samples are needed"),
    }
    drop(child);
    0
}
