//! Login-shaped load (issue 27), run by hand: `cargo bench --bench login_load`.
//!
//! Each login is a fresh tunnel: TCP connect (from 127.0.0.2..=127.0.0.20 in
//! turn, so TIME_WAIT does not pile up on one address), `CONNECT` (none for
//! direct; HAProxy `mode tcp` forwards a port), a full TLS 1.3 handshake
//! (no resumption) with a server holding an ECDSA P-256 certificate made
//! by rcgen, one 1 KiB request and its 1 KiB answer, then close. Logins
//! start open-loop at a fixed rate (200/s, then 1 000/s), at most 50 at
//! once; a login's latency runs from the time it was *scheduled* to start
//! to its answer's last byte, so a path that falls behind is charged for
//! the wait of every login queued behind it (no coordinated omission).
//!
//! Paths, interleaved round by round (a different one first each round):
//! direct, egress-sentinel (the release binary, `relay = "copy"` and
//! `"splice"`), Squid, tinyproxy, HAProxy `mode tcp` (skipped when not
//! installed). Each rate runs alone, then beside 4 bulk tunnels on the
//! same path. Reported per path and rate: p50 and p99, the latency added
//! over direct (the same round, rate and load) with its range over the
//! rounds, and the proxy's own CPU per 1 000 logins (`/proc/PID/schedstat`
//! of all its threads and children, so the load generator's CPU does not
//! count; alone only: beside bulk it is mostly the bulk's).
//!
//! Environment (defaults in brackets): BENCH_ROUNDS [3], BENCH_LOGIN_SECS
//! [5 per rate and load], BENCH_LOGIN_RATES [200,1000], BENCH_WORKERS,
//! BENCH_SIDECAR_BIN (as in tunnel.rs). Nothing leaves 127.0.0.0/8.

#[path = "common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use common::{BulkLoad, Ends, Entry, Path_, all_paths, cpu_ns, env_or, pct, sink, sorted};

/// The size of the request and of its answer.
const EXCHANGE: usize = 1024;
/// Logins in flight at most.
const CONCURRENCY: usize = 50;
/// A login not done this long after its scheduled start counts as failed.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Bulk tunnels beside the logins in the loaded runs.
const BULK_TUNNELS: usize = 4;
/// The name in the far end's certificate.
const SERVER_NAME: &str = "localhost";

// === the far end: a TLS server with an ECDSA P-256 certificate ===

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed ECDSA P-256 certificate for `localhost`, and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("an ECDSA P-256 key");
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .expect("certificate parameters")
        .self_signed(&key)
        .expect("a self-signed certificate");
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    (cert.der().clone(), PrivateKeyDer::Pkcs8(der))
}

/// Starts the far end on a thread of its own (the bench's bulk senders do
/// not delay its answers): TLS, read 1 KiB, answer 1 KiB, close.
fn tls_server(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the server's certificate");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the TLS server");
    let addr = l.local_addr().expect("the TLS server's address");
    l.set_nonblocking(true).expect("a non-blocking listener");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the TLS server's runtime");
        rt.block_on(async move {
            let l = TcpListener::from_std(l).expect("the TLS listener");
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                s.set_nodelay(true).ok();
                tokio::spawn(serve_one(acceptor.clone(), s));
            }
        });
    });
    addr
}

async fn serve_one(acceptor: TlsAcceptor, s: tokio::net::TcpStream) {
    let Ok(mut tls) = acceptor.accept(s).await else {
        return;
    };
    let mut buf = [0u8; EXCHANGE];
    if tls.read_exact(&mut buf).await.is_err() {
        return;
    }
    buf.fill(0x61);
    if tls.write_all(&buf).await.is_ok() {
        let _ = tls.shutdown().await;
    }
}

/// The client's TLS: trusts the far end's certificate, never resumes.
fn connector(cert: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert)
        .expect("the far end's certificate as a root");
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

// === one login, and a run of them at a rate ===

/// A fresh tunnel along `entry` from `from`, a TLS handshake, 1 KiB each way.
async fn login(entry: Entry, ends: Ends, from: IpAddr, tls: TlsConnector) -> Result<(), String> {
    let tcp = common::try_open(entry, ends, ends.echo, Some(from))
        .await
        .map_err(|e| format!("tunnel: {e}"))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let mut s = tls
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    s.write_all(&[0x42u8; EXCHANGE])
        .await
        .map_err(|e| format!("request: {e}"))?;
    let mut answer = [0u8; EXCHANGE];
    s.read_exact(&mut answer)
        .await
        .map_err(|e| format!("answer: {e}"))?;
    Ok(())
}

/// What one run at one rate gave.
struct Run {
    /// Latencies (µs) of the logins that succeeded, from their scheduled start.
    lat: Vec<f64>,
    failed: u64,
    first_error: Option<String>,
}

/// The source address of login `i`: 127.0.0.2 ..= 127.0.0.20 in turn.
fn source(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 19) as u8))
}

/// `rate` logins a second for `secs`, open-loop, at most `CONCURRENCY` at
/// once, on a thread and runtime of their own.
async fn open_loop(entry: Entry, ends: Ends, tls: TlsConnector, rate: u64, secs: u64) -> Run {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the client's runtime")
            .block_on(schedule(entry, ends, tls, rate, secs))
    })
    .await
    .expect("the client's thread")
}

type Outcome = (Duration, Result<(), String>);

async fn schedule(entry: Entry, ends: Ends, tls: TlsConnector, rate: u64, secs: u64) -> Run {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    let mut run = Run {
        lat: Vec::new(),
        failed: 0,
        first_error: None,
    };
    let start = Instant::now() + Duration::from_millis(10);
    for i in 0..rate * secs {
        let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(at.into()).await;
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let tls = tls.clone();
        set.spawn(async move {
            let _slot = slot;
            let left = GIVE_UP.saturating_sub(at.elapsed());
            let r = match tokio::time::timeout(left, login(entry, ends, source(i), tls)).await {
                Ok(r) => r,
                Err(_) => Err(format!("not done {GIVE_UP:?} after its scheduled start")),
            };
            (at.elapsed(), r)
        });
        while let Some(done) = set.try_join_next() {
            tally(&mut run, done);
        }
    }
    while let Some(done) = set.join_next().await {
        tally(&mut run, done);
    }
    run
}

fn tally(run: &mut Run, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok((took, Ok(()))) => run.lat.push(took.as_secs_f64() * 1e6),
        Ok((_, Err(e))) => {
            run.failed += 1;
            run.first_error.get_or_insert(e);
        }
        Err(e) => {
            run.failed += 1;
            run.first_error.get_or_insert(e.to_string());
        }
    }
}

// === rounds ===

/// Per path, rate and load: one entry per round.
#[derive(Default, Clone)]
struct Cell {
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Proxy CPU (ms) per 1 000 logins.
    cpu: Vec<f64>,
    ok: u64,
    failed: u64,
}

/// One run at `rate` along path `p`, alone or beside bulk tunnels.
async fn measure(
    p: &Path_,
    ends: Ends,
    tls: &TlsConnector,
    rate: u64,
    secs: u64,
    loaded: bool,
) -> (Run, Option<f64>) {
    let load = if loaded {
        Some(BulkLoad::start(p.entry, ends, BULK_TUNNELS).await)
    } else {
        None
    };
    let cpu0 = p.pid().map(cpu_ns);
    let run = open_loop(p.entry, ends, tls.clone(), rate, secs).await;
    let cpu = match (cpu0, p.pid()) {
        (Some(c), Some(pid)) => Some(cpu_ns(pid).saturating_sub(c) as f64 / 1e6),
        _ => None,
    };
    if let Some(load) = load {
        load.stop().await;
    }
    // Let the last tunnels close before the next run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_1000 = cpu.map(|ms| ms * 1000.0 / run.lat.len().max(1) as f64);
    (run, per_1000)
}

fn record(cell: &mut Cell, run: Run, cpu: Option<f64>, what: &str) {
    if let Some(e) = &run.first_error {
        eprintln!("{what}: {} failed, first: {e}", run.failed);
    }
    let lat = sorted(run.lat);
    cell.ok += lat.len() as u64;
    cell.failed += run.failed;
    cell.p50.push(pct(&lat, 0.5));
    cell.p99.push(pct(&lat, 0.99));
    cell.cpu.extend(cpu);
}

fn rates() -> Vec<u64> {
    std::env::var("BENCH_LOGIN_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![200, 1000])
}

/// cells[path][rate][loaded]
type Cells = Vec<Vec<[Cell; 2]>>;

async fn rounds(
    paths: &[Path_],
    ends: Ends,
    tls: &TlsConnector,
    rates: &[u64],
    secs: u64,
    rounds: u64,
) -> Cells {
    let mut cells: Cells = vec![vec![[Cell::default(), Cell::default()]; rates.len()]; paths.len()];
    for round in 0..rounds as usize {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            for (j, &rate) in rates.iter().enumerate() {
                for loaded in [false, true] {
                    let what = format!(
                        "{} at {rate}/s{}",
                        paths[i].name,
                        if loaded { " beside bulk" } else { "" }
                    );
                    let (run, cpu) = measure(&paths[i], ends, tls, rate, secs, loaded).await;
                    record(&mut cells[i][j][loaded as usize], run, cpu, &what);
                }
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    cells
}

// === the report ===

/// The median and range of `v`.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let s = sorted(v.iter().copied().filter(|x| !x.is_nan()).collect());
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (pct(&s, 0.5), s[0], s[s.len() - 1])
}

/// Round by round, `a[r] - b[r]`, in ms.
fn minus(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| (x - y) / 1000.0).collect()
}

fn ratio(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

fn ms_range(v: &[f64]) -> String {
    let (m, lo, hi) = spread(v);
    format!("{m:+.2} ({lo:+.2}..{hi:+.2})")
}

fn median_ms(v: &[f64]) -> f64 {
    spread(v).0 / 1000.0
}

fn table(paths: &[Path_], rates: &[u64], cells: &Cells, loaded: bool) {
    let last = if loaded {
        "p99 - direct alone"
    } else {
        "CPU ms/1k"
    };
    println!(
        "{:<23} {:>5} {:>7} {:>7} {:>22} {:>22} {:>6} {:>24} {:>9}",
        "path",
        "rate",
        "p50 ms",
        "p99 ms",
        "added p50 ms (range)",
        "added p99 ms (range)",
        "p99 x",
        last,
        "failed"
    );
    for (i, p) in paths.iter().enumerate() {
        for (j, rate) in rates.iter().enumerate() {
            let (c, d) = (&cells[i][j][loaded as usize], &cells[0][j][loaded as usize]);
            let last = if loaded {
                ms_range(&minus(&c.p99, &cells[0][j][0].p99))
            } else if c.cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", spread(&c.cpu).0)
            };
            println!(
                "{:<23} {:>5} {:>7.2} {:>7.2} {:>22} {:>22} {:>6.2} {:>24} {:>9}",
                p.name,
                rate,
                median_ms(&c.p50),
                median_ms(&c.p99),
                ms_range(&minus(&c.p50, &d.p50)),
                ms_range(&minus(&c.p99, &d.p99)),
                spread(&ratio(&c.p99, &d.p99)).0,
                last,
                format!("{}/{}", c.failed, c.ok + c.failed),
            );
        }
    }
}

/// Issue 27's "Done when" targets on the login load, per relay mode.
fn verdicts(paths: &[Path_], rates: &[u64], cells: &Cells) {
    let find = |name: &str| paths.iter().position(|p| p.name == name);
    let Some(squid) = find("squid") else {
        println!("Squid not installed: no verdicts against it");
        return;
    };
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    for mode in ["egress-sentinel copy", "egress-sentinel splice"] {
        let Some(x) = find(mode) else { continue };
        for (j, rate) in rates.iter().enumerate() {
            let alone = |i: usize| &cells[i][j][0];
            let bulk = |i: usize| &cells[i][j][1];
            let add = |i: usize| spread(&minus(&bulk(i).p99, &alone(0).p99)).0;
            let (ax, asq, ad) = (add(x), add(squid), add(0));
            println!(
                "{mode} at {rate}/s: beside 4 bulk, p99 - direct alone {ax:.2} ms vs Squid {asq:.2} + 0.5, direct {ad:.2} + 1: {}",
                yes(ax <= asq + 0.5 && ax <= ad + 1.0)
            );
            let added = |i: usize| spread(&minus(&alone(i).p99, &alone(0).p99)).0;
            if *rate == 1000 {
                let (px, ps) = (added(x), added(squid));
                println!(
                    "{mode} at {rate}/s: added p99 {px:.2} ms vs Squid {ps:.2}: {}",
                    yes(px < ps)
                );
            }
            let (cx, cs) = (spread(&alone(x).cpu).0, spread(&alone(squid).cpu).0);
            println!(
                "{mode} at {rate}/s: CPU {cx:.1} ms per 1 000 logins vs Squid {cs:.1}: {}",
                yes(cx <= cs)
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let secs = env_or("BENCH_LOGIN_SECS", 5).max(1);
    let rates = rates();
    let (cert, key) = certificate();
    let ends = Ends {
        sink: sink().await,
        echo: tls_server(cert.clone(), key),
    };
    let tls = connector(cert);
    let paths = all_paths(ends);
    // Warm up every path (and check it works) before measuring.
    for p in &paths {
        let (run, _) = measure(p, ends, &tls, 50, 1, false).await;
        if let Some(e) = run.first_error {
            panic!("{}: logins fail: {e}", p.name);
        }
    }
    println!(
        "{n_rounds} rounds, interleaved; {secs} s per rate {rates:?}/s, open-loop, at most {CONCURRENCY} at once; each login a fresh tunnel + TLS 1.3 (ECDSA P-256, no resumption) + 1 KiB each way; latency from the scheduled start"
    );
    let cells = rounds(&paths, ends, &tls, &rates, secs, n_rounds).await;
    println!(
        "\nalone (added: over direct, same round and rate; CPU: the proxy's, per 1 000 logins)"
    );
    table(&paths, &rates, &cells, false);
    println!(
        "\nbeside {BULK_TUNNELS} bulk tunnels on the same path (added: over direct beside its own 4 bulk tunnels)"
    );
    table(&paths, &rates, &cells, true);
    println!();
    verdicts(&paths, &rates, &cells);
}
