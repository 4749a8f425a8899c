//! The cost of one file-descriptor sample, run by hand:
//! `cargo bench --bench fd_sample`.
//!
//! Opens BENCH_FDS descriptors (default 10 000) in this process — a third
//! TCP sockets (a listener, connections to it and their accepted ends, a
//! fifth of the connections left in CLOSE_WAIT), the rest files — then
//! times what the sidecar does at each upkeep and scrape for a watched
//! process: descriptors by kind (`/proc/PID/fd`), and the TCP detail
//! (`/proc/PID/net/tcp{,6}` joined with the socket inodes). Nothing leaves
//! 127.0.0.1.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use egress_sentinel::watch;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn time(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    f(); // warm the page cache and the allocator
    let mut out: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn main() {
    let want = env_or("BENCH_FDS", 10_000) as usize;
    let runs = env_or("BENCH_RUNS", 50) as usize;
    let limit = watch::fd_usage(Path::new("/proc/self")).max.unwrap_or(0) as usize;
    if limit < want + 64 {
        eprintln!(
            "the descriptor limit is {limit}; raise it above {want} (e.g. `prlimit --nofile={} cargo bench --bench fd_sample`)",
            want + 1024
        );
        std::process::exit(2);
    }
    let base = watch::open_fds() as usize;
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    // Each connection costs two descriptors here (both ends in this process).
    let pairs = want / 3 / 2;
    let mut clients = Vec::with_capacity(pairs);
    let mut servers = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        clients.push(TcpStream::connect(addr).expect("connect"));
        servers.push(listener.accept().expect("accept").0);
    }
    // The peer hangs up on a fifth: those client ends sit in CLOSE_WAIT.
    servers.truncate(servers.len() - pairs / 5);
    let mut files = Vec::new();
    while (watch::open_fds() as usize) < want + base {
        files.push(std::fs::File::open("/dev/null").expect("open /dev/null"));
    }
    let me = watch::process_fds(Path::new("/proc/self")).expect("self");
    let tcp = me.tcp.expect("tcp detail");
    println!(
        "{} descriptors open: {:?}; tcp {:?}, TIME_WAIT in namespace {}",
        me.usage.total(),
        me.usage.by_kind,
        tcp.by_state
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| format!("{} {n}", s.name()))
            .collect::<Vec<_>>(),
        tcp.time_wait_in_namespace
    );
    let kinds = time(runs, || {
        std::hint::black_box(watch::fd_usage(Path::new("/proc/self")));
    });
    let detail = time(runs, || {
        std::hint::black_box(watch::process_fds(Path::new("/proc/self")));
    });
    let sample = time(runs, || {
        std::hint::black_box(watch::sample(&[]));
    });
    println!("{runs} runs each          p50        p90        max");
    for (what, t) in [
        ("by kind (fd only)", &kinds),
        ("by kind + TCP detail", &detail),
        ("watch::sample (self)", &sample),
    ] {
        println!(
            "{what:<22} {:>8.2}ms {:>8.2}ms {:>8.2}ms",
            percentile(t, 0.5).as_secs_f64() * 1e3,
            percentile(t, 0.9).as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3
        );
    }
    drop((clients, servers, files, listener));
}
