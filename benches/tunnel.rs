//! Tunnel benchmark, run by hand: `cargo bench --bench tunnel`.
//!
//! Measures on loopback, side by side and interleaved round by round:
//! direct, egress-sentinel's forward proxy (the release binary in its own
//! process, once per relay mode), Squid, tinyproxy and HAProxy (`mode tcp`,
//! splice, 1 MiB pipes; Debian's packages, when installed):
//! - one tunnel's throughput, as a ratio to direct, with its spread, and the
//!   proxy's CPU per GiB relayed;
//! - 50 tunnels at once: aggregate throughput and CPU per GiB;
//! - setup: new tunnels in a row, `connect()` to the `200` (direct: to the
//!   established connection; HAProxy, which takes no CONNECT: likewise);
//! - a 1 KiB request/response, alone and while 4 bulk tunnels run;
//! - the proxy's RSS at start and after the bulk runs, and KiB per idle
//!   tunnel;
//! - egress-sentinel's footprint while probing 4 targets × 2 routes every
//!   second, with 1 and 2 worker threads: RSS, `RssAnon`, CPU per probe.
//!
//! Environment (defaults in brackets): BENCH_ROUNDS [5], BENCH_BYTES
//! [512 MiB], BENCH_AGG_TUNNELS [50], BENCH_AGG_BYTES [16 MiB each],
//! BENCH_DIALS [1000 in all], BENCH_RTT [2000 in all], BENCH_IDLE [500],
//! BENCH_FOOTPRINT_SECS [30; 0 skips], BENCH_WORKERS [the sidecar's
//! default `[runtime] worker_threads`], BENCH_SIDECAR_BIN [the release
//! binary cargo built], BENCH_ONLY [unset; `footprint` runs only the
//! footprint part, for issue 27's before/after numbers],
//! BENCH_FOOTPRINT_WORKERS [1,2: the worker counts the footprint part
//! runs]. Nothing leaves 127.0.0.1.

#[allow(unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{
    BulkLoad, Ends, Entry, MIB, Path_, all_paths, cpu_ns, env_or, free_port, local, open, pct,
    sidecar_binary, sink, sorted, status_kib, wait_listening,
};

const GIB: f64 = (1u64 << 30) as f64;
/// The size of one request and of its answer in the latency test.
const RTT_BYTES: usize = 1024;

// === the far end: an echo (the sink is in common) ===

/// An echo of 1 KiB requests: reads 1 KiB, answers 1 KiB. On its own
/// thread, so the bench's bulk senders do not delay its answers.
fn echo() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let addr = l.local_addr().expect("addr");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("echo runtime");
        rt.block_on(async move { serve_echo(TcpListener::from_std(l).expect("listener")).await });
    });
    addr
}

async fn serve_echo(l: TcpListener) {
    {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            s.set_nodelay(true).ok();
            tokio::spawn(async move {
                let mut buf = [0u8; RTT_BYTES];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// Sends `bytes` through `s` and waits for the sink's acknowledgements.
async fn send_acked(s: TcpStream, bytes: u64) {
    let (mut r, mut w) = s.into_split();
    let mib = bytes / MIB;
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5au8; MIB as usize];
        for _ in 0..mib {
            w.write_all(&chunk).await.expect("write");
        }
        w
    });
    let mut acks = vec![0u8; mib as usize];
    r.read_exact(&mut acks).await.expect("acks");
    drop(writer.await);
}

/// Throughput (MiB/s) and the proxy's CPU (s) of `n` tunnels carrying
/// `each` bytes at once.
async fn bulk(p: &Path_, ends: Ends, n: u64, each: u64) -> (f64, f64) {
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(open(p.entry, ends, ends.sink).await);
    }
    let cpu0 = p.pid().map(cpu_ns);
    let start = Instant::now();
    let jobs: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(send_acked(s, each)))
        .collect();
    for j in jobs {
        j.await.expect("tunnel");
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, p.pid()) {
        (Some(a), Some(pid)) => (cpu_ns(pid).saturating_sub(a)) as f64 / 1e9,
        _ => f64::NAN,
    };
    ((n * each / MIB) as f64 / secs, cpu)
}

/// Setup latencies (µs) of `n` new tunnels in a row.
async fn dials(p: &Path_, ends: Ends, n: u64, out: &mut Vec<f64>) {
    for _ in 0..n {
        let start = Instant::now();
        let s = open(p.entry, ends, ends.sink).await;
        out.push(start.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
}

/// Round trips (µs) of `n` 1 KiB requests on one tunnel to the echo, from
/// a thread of their own (the bench's bulk senders do not delay them).
async fn round_trips(p: &Path_, ends: Ends, n: u64, out: &mut Vec<f64>) {
    let entry = p.entry;
    let got = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        rt.block_on(async move {
            let mut out = Vec::new();
            timed_round_trips(entry, ends, n, &mut out).await;
            out
        })
    })
    .await
    .expect("round trips");
    out.extend(got);
}

async fn timed_round_trips(entry: Entry, ends: Ends, n: u64, out: &mut Vec<f64>) {
    let mut s = open(entry, ends, ends.echo).await;
    let req = [0x42u8; RTT_BYTES];
    let mut resp = [0u8; RTT_BYTES];
    for _ in 0..n {
        let start = Instant::now();
        s.write_all(&req).await.expect("request");
        s.read_exact(&mut resp).await.expect("answer");
        out.push(start.elapsed().as_secs_f64() * 1e6);
    }
}

/// Round trips while 4 bulk tunnels run on the same path.
async fn round_trips_loaded(p: &Path_, ends: Ends, n: u64, out: &mut Vec<f64>) {
    let load = BulkLoad::start(p.entry, ends, 4).await;
    round_trips(p, ends, n, out).await;
    load.stop().await;
}

/// KiB per idle tunnel: RSS growth over `n` open, idle tunnels.
async fn idle_cost(p: &Path_, ends: Ends, n: u64) -> Option<f64> {
    let pid = p.pid()?;
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(open(p.entry, ends, ends.sink).await);
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = status_kib(pid, "VmRSS:");
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(open(p.entry, ends, ends.sink).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib(pid, "VmRSS:");
    drop(held);
    Some(after.saturating_sub(before) as f64 / n as f64)
}

/// Everything measured for one path.
#[derive(Default)]
struct Results {
    single: Vec<f64>,
    single_cpu: Vec<f64>,
    agg: Vec<f64>,
    agg_cpu: Vec<f64>,
    dials: Vec<f64>,
    rtt: Vec<f64>,
    rtt_loaded: Vec<f64>,
    rss_start: Option<u64>,
    rss_after: Option<u64>,
    idle_kib: Option<f64>,
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

// === footprint while probing ===

/// egress-sentinel probing 4 targets × 2 routes (a CONNECT proxy and
/// direct) every second for `secs`, with `workers` worker threads: RSS,
/// RssAnon, RssFile (MiB) and CPU per probe (ms).
async fn footprint(workers: u32, secs: u64) -> (f64, f64, f64, f64, f64) {
    use support::proxy::{Mode, ScriptProxy};
    let names = ["t1.test", "t2.test", "t3.test", "t4.test"];
    let leaf = support::pki::ca().server(&names, false);
    let up = support::upstream::Opts::new("t1.test")
        .leaf(leaf)
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = support::Workspace::new();
    let metrics = free_port();
    let mut config = format!(
        "[listen]\nmetrics = \"127.0.0.1:{metrics}\"\nadmin = \"off\"\nproxy = \"127.0.0.1:{}\"\n\n[runtime]\nworker_threads = {workers}\n\n[probe]\ninterval = \"1s\"\ntimeout = \"2s\"\n\n[resolve]\n",
        free_port()
    );
    for n in names {
        config += &format!("\"{n}\" = \"127.0.0.1\"\n");
    }
    config += &format!(
        "\n[[route]]\nname = \"provider\"\nproxy = \"{}\"\n",
        proxy.url()
    );
    for (i, n) in names.iter().enumerate() {
        config += &format!(
            "\n[[target]]\nname = \"t{i}\"\nurl = \"https://{n}:{}/\"\nroutes = [\"provider\", \"direct\"]\nallow_addresses = [\"127.0.0.1/32\"]\nca_file = \"ca.pem\"\n",
            up.port()
        );
    }
    let path = ws.write("footprint.toml", &config);
    let mut child = Command::new(sidecar_binary())
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sidecar");
    let pid = child.id();
    wait_listening(local(metrics), &mut child, "egress-sentinel (probing)");
    // Settle: the first rounds build everything once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let probes0 = probes_done(metrics).await;
    let cpu0 = cpu_ns(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let probes = probes_done(metrics).await - probes0;
    let cpu = cpu_ns(pid).saturating_sub(cpu0);
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let anon = status_kib(pid, "RssAnon:") as f64 / 1024.0;
    let file = status_kib(pid, "RssFile:") as f64 / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    (rss, anon, file, cpu as f64 / 1e6 / probes.max(1.0), probes)
}

/// Probes finished so far, from the sidecar's `/metrics`.
async fn probes_done(port: u16) -> f64 {
    let Ok(mut s) = TcpStream::connect(local(port)).await else {
        return 0.0;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.lines()
        .filter(|l| l.starts_with("egress_probe_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What each round measures, from the environment.
struct Sizes {
    rounds: u64,
    bytes: u64,
    agg_n: u64,
    agg_each: u64,
    dials_n: u64,
    rtt_n: u64,
}

/// One round's measurements along one path.
async fn measure_path(p: &Path_, r: &mut Results, ends: Ends, z: &Sizes) {
    let (rounds, bytes, agg_n, agg_each) = (z.rounds, z.bytes, z.agg_n, z.agg_each);
    let (dials_n, rtt_n) = (z.dials_n, z.rtt_n);
    let s = open(p.entry, ends, ends.sink).await;
    let cpu0 = p.pid().map(cpu_ns);
    let start = Instant::now();
    send_acked(s, bytes).await;
    let secs = start.elapsed().as_secs_f64();
    r.single.push((bytes / MIB) as f64 / secs);
    if let (Some(c), Some(pid)) = (cpu0, p.pid()) {
        r.single_cpu
            .push(cpu_ns(pid).saturating_sub(c) as f64 / 1e9 / (bytes as f64 / GIB));
    }
    let (agg, cpu) = bulk(p, ends, agg_n, agg_each).await;
    r.agg.push(agg);
    r.agg_cpu.push(cpu / ((agg_n * agg_each) as f64 / GIB));
    dials(p, ends, dials_n / rounds, &mut r.dials).await;
    round_trips(p, ends, rtt_n / rounds, &mut r.rtt).await;
    round_trips_loaded(p, ends, rtt_n / rounds, &mut r.rtt_loaded).await;
}

fn throughput_table(paths: &[Path_], results: &[Results]) {
    let direct_single = sorted(results[0].single.clone());
    let direct_agg = sorted(results[0].agg.clone());
    let direct_dials = sorted(results[0].dials.clone());
    let d_med = pct(&direct_single, 0.5);
    let d_agg = pct(&direct_agg, 0.5);
    println!();
    println!(
        "{:<24} {:>7} {:>16} {:>9} | {:>8} {:>8} {:>9} | {:>9} {:>9} {:>9}",
        "path",
        "MiB/s",
        "x direct (range)",
        "CPU s/GiB",
        "50x MiB/s",
        "x direct",
        "CPU s/GiB",
        "setup p50",
        "setup p99",
        "added p99"
    );
    for (p, r) in paths.iter().zip(results.iter()) {
        let s = sorted(r.single.clone());
        let a = sorted(r.agg.clone());
        let d = sorted(r.dials.clone());
        let cpu = sorted(r.single_cpu.clone());
        let acpu = sorted(r.agg_cpu.clone());
        println!(
            "{:<24} {:>7.0} {:>5.2} ({:.2}-{:.2}) {:>9} | {:>8.0} {:>8.2} {:>9} | {:>7.0}µs {:>7.0}µs {:>7.0}µs",
            p.name,
            pct(&s, 0.5),
            pct(&s, 0.5) / d_med,
            s[0] / d_med,
            s[s.len() - 1] / d_med,
            if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", pct(&cpu, 0.5))
            },
            pct(&a, 0.5),
            pct(&a, 0.5) / d_agg,
            if acpu.iter().all(|c| c.is_nan()) {
                "-".to_string()
            } else {
                format!("{:.3}", pct(&acpu, 0.5))
            },
            pct(&d, 0.5),
            pct(&d, 0.99),
            pct(&d, 0.99) - pct(&direct_dials, 0.99),
        );
    }
}

fn latency_table(paths: &[Path_], results: &[Results]) {
    println!();
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>12} | {:>10} {:>10} {:>12}",
        "path",
        "rtt p50",
        "rtt p99",
        "p99 4 bulk",
        "load adds",
        "RSS start",
        "RSS after",
        "KiB/idle tun."
    );
    for (p, r) in paths.iter().zip(results.iter()) {
        let rtt = sorted(r.rtt.clone());
        let loaded = sorted(r.rtt_loaded.clone());
        let mib =
            |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!(
            "{:<24} {:>7}ms {:>7}ms {:>10}ms {:>10}ms | {:>10} {:>10} {:>12}",
            p.name,
            ms(pct(&rtt, 0.5)),
            ms(pct(&rtt, 0.99)),
            ms(pct(&loaded, 0.99)),
            ms(pct(&loaded, 0.99) - pct(&rtt, 0.99)),
            mib(r.rss_start),
            mib(r.rss_after),
            r.idle_kib.map_or("-".to_string(), |c| format!("{c:.1}")),
        );
    }
}

async fn footprint_table(footprint_secs: u64) {
    if footprint_secs == 0 {
        return;
    }
    println!();
    println!("egress-sentinel probing 4 targets x 2 routes every 1 s, {footprint_secs} s:");
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>13} {:>7}",
        "worker_threads", "RSS MiB", "RssAnon", "RssFile", "CPU ms/probe", "probes"
    );
    let workers: Vec<u32> = match std::env::var("BENCH_FOOTPRINT_WORKERS") {
        Ok(list) => list
            .split(',')
            .filter_map(|w| w.trim().parse().ok())
            .collect(),
        Err(_) => vec![1, 2],
    };
    for workers in workers {
        let (rss, anon, file, cpu, probes) = footprint(workers, footprint_secs).await;
        println!("{workers:<16} {rss:>9.1} {anon:>9.1} {file:>9.1} {cpu:>13.2} {probes:>7.0}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let z = Sizes {
        rounds: env_or("BENCH_ROUNDS", 5).max(1),
        bytes: env_or("BENCH_BYTES", 512 * MIB),
        agg_n: env_or("BENCH_AGG_TUNNELS", 50),
        agg_each: env_or("BENCH_AGG_BYTES", 16 * MIB),
        dials_n: env_or("BENCH_DIALS", 1000),
        rtt_n: env_or("BENCH_RTT", 2000),
    };
    let idle_n = env_or("BENCH_IDLE", 500);
    let footprint_secs = env_or("BENCH_FOOTPRINT_SECS", 30);
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "footprint") {
        footprint_table(footprint_secs).await;
        return;
    }
    let ends = Ends {
        sink: sink().await,
        echo: echo(),
    };
    let paths = all_paths(ends);
    let mut results: Vec<Results> = paths.iter().map(|_| Results::default()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (p, r) in paths.iter().zip(results.iter_mut()) {
        let mut warm = Vec::new();
        dials(p, ends, 20, &mut warm).await;
        r.rss_start = p.pid().map(|pid| status_kib(pid, "VmRSS:"));
    }
    println!(
        "{} rounds, interleaved; one tunnel: {} MiB; {} tunnels × {} MiB at once; {} new tunnels; {} round trips of 1 KiB, alone and beside 4 bulk tunnels",
        z.rounds,
        z.bytes / MIB,
        z.agg_n,
        z.agg_each / MIB,
        z.dials_n,
        z.rtt_n
    );
    for round in 0..z.rounds {
        // A different path goes first each round.
        let n = paths.len();
        for k in 0..n {
            let i = (k + round as usize) % n;
            measure_path(&paths[i], &mut results[i], ends, &z).await;
        }
        eprintln!("round {} of {} done", round + 1, z.rounds);
    }
    for (p, r) in paths.iter().zip(results.iter_mut()) {
        r.rss_after = p.pid().map(|pid| status_kib(pid, "VmRSS:"));
        r.idle_kib = idle_cost(p, ends, idle_n).await;
    }
    throughput_table(&paths, &results);
    latency_table(&paths, &results);
    drop(paths);
    footprint_table(footprint_secs).await;
}
