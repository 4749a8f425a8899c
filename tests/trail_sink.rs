//! The compliance trail leaves the pod: with `[compliance] sink = "both"`,
//! every line of `state_dir/direct.jsonl` is also on stdout, marked
//! `"log":"compliance"`, while the operational log stays on stderr. The
//! file stays the record: a stdout nobody reads never slows a tunnel, and
//! what the copy drops is counted (`egress_compliance_stdout_dropped_total`)
//! and logged, never lost from the file. A reload turns the copy on.
//!
//! The built binary, as a container runs it: stdout and stderr are pipes.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::Workspace;
use support::proxy::{Mode, ScriptProxy};
use support::sidecar::{eventually, request, sample};
use support::upstream::Upstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DROPPED: &str = "egress_compliance_stdout_dropped_total";

/// Lines a pipe gave, collected by a thread.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(pipe: impl std::io::Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

/// `run --config`, stderr collected; stdout collected, or held and never read.
struct Sidecar {
    child: Child,
    stderr: Lines,
    stdout: Option<Lines>,
    /// The unread pipe, kept open so that writes to it block.
    _unread: Option<ChildStdout>,
}

impl Sidecar {
    fn start(config: &Path, read_stdout: bool) -> Self {
        let mut child = Command::new(support::binary())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let stderr = collect(child.stderr.take().expect("stderr"));
        let out = child.stdout.take().expect("stdout");
        let (stdout, unread) = if read_stdout {
            (Some(collect(out)), None)
        } else {
            (None, Some(out))
        };
        Self {
            child,
            stderr,
            stdout,
            _unread: unread,
        }
    }

    fn logs(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lock()
            .expect("lines")
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The address the `listener` logged.
    async fn addr(&self, listener: &str) -> SocketAddr {
        eventually(Duration::from_secs(20), listener, || async {
            self.logs()
                .iter()
                .find(|v| v["message"] == "listening" && v["listener"] == listener)
                .and_then(|v| v["addr"].as_str()?.parse().ok())
        })
        .await
    }

    /// The stdout lines so far, parsed.
    fn stdout_json(&self) -> Vec<serde_json::Value> {
        let lines = self.stdout.as_ref().expect("stdout read");
        lines
            .lock()
            .expect("lines")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout: {e}: {l}")))
            .collect()
    }

    /// The stdout lines so far, as written.
    fn stdout_raw(&self) -> Vec<String> {
        self.stdout
            .as_ref()
            .expect("stdout read")
            .lock()
            .expect("lines")
            .clone()
    }

    fn signal(&self, s: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, s).expect("signal");
    }

    /// SIGTERM, and the exit within 10 s.
    async fn stop(mut self) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tunnel to `host:port` through `proxy`: checks the 200, hangs up.
async fn tunnel_and_hang_up(proxy: SocketAddr, host: &str, port: u16) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.expect("read"), 1, "closed early");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// `n` tunnels, 10 at a time.
async fn connections(proxy: SocketAddr, port: u16, n: usize) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        workers.spawn(async move {
            for _ in 0..n / 10 {
                tunnel_and_hang_up(proxy, "push.test", port).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
}

/// The trail file's lines (no rotation at these sizes).
fn file_lines(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("direct.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The stand-ins: push's upstream and a provider proxy answering 502, so
/// push goes direct.
struct Scene {
    up: Upstream,
    proxy: ScriptProxy,
    ws: Workspace,
    config: PathBuf,
    state: PathBuf,
}

impl Scene {
    async fn new(sink: &str) -> Self {
        let up = support::scenario::upstream().await;
        let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
        let ws = Workspace::new();
        let config = ws.write("config.toml", "");
        let mut scene = Self {
            up,
            proxy,
            config,
            state: ws.path("state"),
            ws,
        };
        scene.write(sink);
        scene
    }

    fn write(&mut self, sink: &str) {
        let text = support::scenario::daemon_config(&self.proxy.url(), self.up.port())
            .state_dir("state")
            .to_string();
        self.config = self.ws.write(
            "config.toml",
            &format!("{text}\n[compliance]\nsink = {sink:?}\n"),
        );
    }

    async fn direct(&self, sidecar: &Sidecar) -> (SocketAddr, SocketAddr) {
        let metrics = sidecar.addr("metrics").await;
        let forward = sidecar.addr("forward proxy").await;
        eventually(Duration::from_secs(10), "push to go direct", || async {
            let (_, m) = request(metrics, "GET", "/metrics").await;
            (sample(
                &m,
                "egress_route_active",
                &[("target", "apns"), ("route", "direct")],
            ) == Some(1.0))
            .then_some(())
        })
        .await;
        (metrics, forward)
    }
}

/// The stdout lines marked as the trail, with the mark taken off.
fn trail_copies(stdout: &[serde_json::Value]) -> Vec<serde_json::Value> {
    stdout
        .iter()
        .filter(|v| v["log"] == "compliance")
        .map(|v| {
            let mut v = v.clone();
            v.as_object_mut().expect("object").remove("log");
            v
        })
        .collect()
}

/// Each line as its text, counted, for comparing two sets of lines.
fn counted(lines: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry(l.to_string()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sink_both_the_same_thousand_trail_lines_are_on_stdout_and_in_the_file() {
    let scene = Scene::new("both").await;
    let sidecar = Sidecar::start(&scene.config, true);
    let (metrics, forward) = scene.direct(&sidecar).await;
    connections(forward, scene.up.port(), 1000).await;
    eventually(Duration::from_secs(10), "1 000 lines in both", || async {
        let copies = trail_copies(&sidecar.stdout_json()).len();
        (file_lines(&scene.state).len() >= 1000 && copies >= 1000).then_some(())
    })
    .await;
    let (_, m) = request(metrics, "GET", "/metrics").await;
    let stdout = sidecar.stdout_json();
    let raw = sidecar.stdout_raw();
    let logs = sidecar.logs();
    assert!(sidecar.stop().await.success());

    let file = file_lines(&scene.state);
    let copies = trail_copies(&stdout);
    assert_eq!(file.len(), 1000);
    assert_eq!(copies.len(), 1000);
    assert_eq!(counted(&copies), counted(&file), "stdout and file differ");
    for l in &copies {
        assert_eq!(l["route"], "direct", "{l}");
        assert_eq!(l["target"], "apns", "{l}");
    }
    // Only the trail is on stdout, marked first; the log is on stderr, unmarked.
    assert!(
        raw.iter().all(|l| l.starts_with(r#"{"log":"compliance","#)),
        "stdout holds something else: {:?}",
        raw.iter()
            .find(|l| !l.starts_with(r#"{"log":"compliance","#))
    );
    assert!(
        logs.iter()
            .all(|v| v.get("log") != Some(&"compliance".into()))
    );
    assert_eq!(sample(&m, DROPPED, &[]), Some(0.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_nobody_reads_never_stalls_tunnels_and_the_drops_are_counted() {
    let scene = Scene::new("both").await;
    let sidecar = Sidecar::start(&scene.config, false);
    let (metrics, forward) = scene.direct(&sidecar).await;
    let began = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        connections(forward, scene.up.port(), 2000),
    )
    .await
    .expect("2 000 tunnels with stdout blocked: the relay stalled");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "2 000 tunnels took {took:?}"
    );

    // The file has every line; the copy dropped what did not fit.
    eventually(Duration::from_secs(10), "2 000 trail lines", || async {
        (file_lines(&scene.state).len() >= 2000).then_some(())
    })
    .await;
    let (_, m) = request(metrics, "GET", "/metrics").await;
    let dropped = sample(&m, DROPPED, &[]).expect("the drop counter");
    // A 64 KiB pipe and a 1024-line queue hold at most ~1 300 lines.
    assert!(dropped >= 500.0, "{dropped} dropped of 2 000");
    assert!(dropped <= 2000.0, "{dropped} dropped of 2 000");
    // Tunnels still stand after the drops.
    tunnel_and_hang_up(forward, "push.test", scene.up.port()).await;
    // Logged, at most once a second.
    let warned: Vec<serde_json::Value> = sidecar
        .logs()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|s| s.contains("left out of the stdout copy"))
        })
        .collect();
    assert!(!warned.is_empty(), "no log line about the drops");
    let seconds = began.elapsed().as_secs() + 1;
    assert!(
        warned.len() as u64 <= seconds + 1,
        "{} drop lines in {seconds} s",
        warned.len()
    );
    assert!(sidecar.stop().await.success());
    assert_eq!(file_lines(&scene.state).len(), 2001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_file_writes_nothing_to_stdout_and_a_reload_to_both_starts_the_copy() {
    let mut scene = Scene::new("file").await;
    let sidecar = Sidecar::start(&scene.config, true);
    let (_, forward) = scene.direct(&sidecar).await;
    connections(forward, scene.up.port(), 10).await;
    eventually(Duration::from_secs(10), "10 trail lines", || async {
        (file_lines(&scene.state).len() >= 10).then_some(())
    })
    .await;
    assert!(
        sidecar.stdout_json().is_empty(),
        "sink = \"file\" wrote to stdout"
    );

    scene.write("both");
    sidecar.signal(Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the reload", || async {
        sidecar
            .logs()
            .iter()
            .any(|v| v["stdout_copy"] == true)
            .then_some(())
    })
    .await;
    connections(forward, scene.up.port(), 10).await;
    eventually(Duration::from_secs(10), "10 copies", || async {
        (trail_copies(&sidecar.stdout_json()).len() >= 10).then_some(())
    })
    .await;
    let copies = trail_copies(&sidecar.stdout_json());
    let file = file_lines(&scene.state);
    assert_eq!(file.len(), 20);
    assert_eq!(
        counted(&copies),
        counted(&file[10..]),
        "the copies after the reload"
    );
    assert!(sidecar.stop().await.success());
}
