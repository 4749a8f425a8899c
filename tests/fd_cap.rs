//! The forward proxy under a low descriptor limit (`prlimit`): connections
//! are capped below what the limit allows, the surplus gets a prompt 503
//! instead of an EMFILE storm, the process does not spin, and service
//! resumes when tunnels close. And the other way: with the limit and the
//! cap raised, 5 000 tunnels open at once are all accepted, SIGTERM drains
//! them, and the process exits 0 within the deadline. In its own binary:
//! it opens many sockets; its tests run one at a time.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::config::{Target, Toml};
use support::echo::{cpu_ticks, echo_tunnel, echo_upstream};
use support::proxy::{Mode, ScriptProxy};
use support::scenario::{config, upstream};
use support::sidecar::{eventually, request, sample, tasks_at_rest};
use support::{Workspace, binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open_tunnel(proxy: u16, port: u16) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy))
        .await
        .expect("connect");
    s.write_all(format!("CONNECT push.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = [0u8; 12];
    let status = match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        _ => 0,
    };
    (status, s)
}

/// The tests here load the machine with sockets: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_fd_limit_the_surplus_gets_503_and_nothing_spins() {
    let _serial = SERIAL.lock().await;
    let prlimit = std::path::Path::new("/usr/bin/prlimit");
    if !prlimit.exists() {
        eprintln!("SKIPPED: /usr/bin/prlimit (util-linux) not installed");
        return;
    }
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let forward = support::free_port();
    let text = config(&proxy.url(), up.port())
        .listen("metrics", "off")
        .listen("admin", "off")
        .listen("proxy", &format!("127.0.0.1:{forward}"))
        .shutdown("0s", "1s");
    let path = ws.write("config.toml", &text.to_string());
    // 300 descriptors, the default splice relay: (300 - 128 reserved) / 8 =
    // 21 pipes (42 descriptors), so the cap is (300 - 128 - 42) / 2 = 65.
    let mut child = tokio::process::Command::new(prlimit)
        .arg("--nofile=300:300")
        .arg(binary())
        .args(["run", "--config", path.to_str().expect("utf8")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    eventually(
        Duration::from_secs(10),
        "the forward proxy listening",
        || async {
            TcpStream::connect(("127.0.0.1", forward))
                .await
                .ok()
                .map(drop)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let (status, s) = open_tunnel(forward, up.port()).await;
        statuses.push(status);
        held.push(s);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok, 65, "{statuses:?}");
    assert_eq!(refused, 35, "{statuses:?}");
    assert!(statuses[..65].iter().all(|s| *s == 200), "{statuses:?}");

    // Full, yet idle: no spinning on accept errors.
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 20,
        "the sidecar used {spent} ticks of CPU in 1 s while idle at its cap"
    );

    // Tunnels close; service resumes.
    drop(held);
    let (status, _s) = eventually(
        Duration::from_secs(5),
        "a tunnel after the others closed",
        || async {
            let (status, s) = open_tunnel(forward, up.port()).await;
            (status == 200).then_some((status, s))
        },
    )
    .await;
    assert_eq!(status, 200);
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exit")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// The tunnels the 5 000-tunnel test opens: 5 000, or as many as this
/// process's descriptor limit allows (each tunnel holds two here: the
/// app's end and the upstream's).
fn tunnels_that_fit(want: usize) -> usize {
    // Root may raise its own limit (CI runs as root); otherwise make do.
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("/usr/bin/prlimit")
        .args(["--pid", &me, "--nofile=65536:65536"])
        .stderr(std::process::Stdio::null())
        .status();
    let soft = egress_sentinel::watch::fd_usage(std::path::Path::new("/proc/self"))
        .max
        .unwrap_or(1024);
    let fit = usize::try_from(soft.saturating_sub(512) / 2).unwrap_or(0);
    if fit < want {
        eprintln!("the descriptor limit {soft} fits {fit} tunnels, not {want}");
    }
    want.min(fit)
}

/// 5 000 app tunnels at once (the sidecar's descriptor limit raised with
/// `prlimit`, `max_connections` raised to 6 000): every one is accepted
/// and carries bytes; SIGTERM makes `/readyz` 503 while tunnels keep
/// working through the drain; after it the listener refuses new
/// connections and the open tunnels still carry bytes; when the app closes
/// them the process exits 0, well before the deadline, with every
/// upstream connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_tunnels_are_all_accepted_then_sigterm_drains_them_and_exits_0() {
    use std::sync::atomic::Ordering;
    let _serial = SERIAL.lock().await;
    let prlimit = std::path::Path::new("/usr/bin/prlimit");
    if !prlimit.exists() {
        eprintln!("SKIPPED: /usr/bin/prlimit (util-linux) not installed");
        return;
    }
    let n = tunnels_that_fit(5_000);
    let up = upstream().await;
    let (echo_port, echo_open) = echo_upstream().await;
    let ws = Workspace::new();
    let text = Toml::new()
        .listen("metrics", "127.0.0.1:0")
        .listen("admin", "off")
        .listen("proxy", "127.0.0.1:0")
        .probe(|p| p.interval("2s").timeout("2s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("echo.test", "127.0.0.1")
        .target(
            Target::new("apns", &format!("https://push.test:{}/", up.port()))
                .routes(&["direct"])
                .hosts(&["echo.test"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .forward(|f| {
            f.deny_unmatched()
                .allow_ports(&[echo_port])
                .max_connections(6000)
        })
        .shutdown("2s", "30s");
    let path = ws.write("config.toml", &text.to_string());
    let mut command = std::process::Command::new(prlimit);
    command
        .arg("--nofile=16384:16384")
        .arg(binary())
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info");
    let mut sidecar = support::spawned::Spawned::spawn(command);
    let metrics = sidecar.addr("metrics").await;
    let proxy = sidecar.addr("forward proxy").await;
    let fds_idle = sidecar.steady_fds().await;
    let tasks_idle = tasks_at_rest(metrics).await;

    // Open them, 50 at a time.
    let opening = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(n);
    let mut failures = Vec::new();
    while held.len() + failures.len() < n {
        let batch = (n - held.len() - failures.len()).min(50);
        let handles: Vec<_> = (0..batch)
            .map(|_| tokio::spawn(echo_tunnel(proxy, echo_port)))
            .collect();
        for h in handles {
            match h.await.expect("task") {
                Ok(s) => held.push(s),
                Err(e) => failures.push(e),
            }
        }
        assert!(
            opening.elapsed() < Duration::from_secs(120),
            "only {} tunnels within 120 s",
            held.len()
        );
    }
    let opened_in = opening.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {n} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(held.len(), n);
    let (_, m) = request(metrics, "GET", "/metrics").await;
    assert_eq!(
        sample(
            &m,
            "egress_forward_active_connections",
            &[("route", "direct")]
        ),
        Some(n as f64),
        "every tunnel counted open"
    );
    // One task a tunnel, no more: a leak per tunnel would show here.
    let tasks_full = sample(&m, "egress_runtime_alive_tasks", &[]).unwrap_or(0.0);
    assert!(
        tasks_full >= tasks_idle + n as f64 && tasks_full <= tasks_idle + n as f64 + 20.0,
        "{tasks_full} tasks alive with {n} tunnels ({tasks_idle} at rest)"
    );
    let fds_full = sidecar.open_fds();
    assert!(
        // Less two: the idle count may include a descriptor held only for
        // a moment (the descriptor watch reading the namespace's TCP
        // tables, slow when a run left 100 000 TIME_WAIT sockets; a probe's
        // connection), which a tunnel count must not depend on.
        fds_full + 2 >= fds_idle + 2 * n as u64,
        "{fds_full} descriptors for {n} tunnels (idle {fds_idle})"
    );
    let rss_full = sidecar.rss_kib();
    eprintln!(
        "{n} tunnels open in {opened_in:?}: {fds_full} descriptors, RSS {rss_full} KiB ({} KiB a tunnel)",
        rss_full / n as u64
    );

    // SIGTERM: not ready at once, yet the tunnels keep working.
    let term = Instant::now();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(sidecar.pid()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    eventually(Duration::from_secs(2), "/readyz 503", || async {
        (request(metrics, "GET", "/readyz").await.0 == 503).then_some(())
    })
    .await;
    for s in held.iter_mut().step_by(n / 20 + 1) {
        s.write_all(b"d").await.expect("write during the drain");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("echo during the drain");
    }
    // After the drain the listener is closed; tunnels in flight still work.
    eventually(Duration::from_secs(10), "the listener closed", || async {
        TcpStream::connect(proxy).await.is_err().then_some(())
    })
    .await;
    assert!(
        term.elapsed() >= Duration::from_millis(1900),
        "closed before the drain ended"
    );
    for s in held.iter_mut().step_by(n / 20 + 1) {
        s.write_all(b"f").await.expect("write after the drain");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("echo after the drain");
    }
    // The app closes its tunnels; the process exits 0, long before the
    // 30 s deadline, and every upstream connection is closed.
    drop(held);
    let (status, lines) = sidecar.exit_within(Duration::from_secs(25)).await;
    let took = term.elapsed();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    assert!(
        took < Duration::from_secs(25),
        "exit {took:?} after SIGTERM"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("at the deadline was closed")),
        "tunnels were cut at the deadline:\n{}",
        lines.join("\n")
    );
    eventually(
        Duration::from_secs(5),
        "upstream connections closed",
        || async { (echo_open.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    eprintln!("SIGTERM to exit 0 with {n} tunnels: {took:?}");
}
