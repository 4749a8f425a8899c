//! The descriptor-exhaustion incident, with the detail its watchdog lacked:
//! a process that holds sockets (some stuck in CLOSE_WAIT), files and pipes
//! is counted exactly by kind, by TCP state and by remote endpoint — in
//! the sampling functions, the metrics, `/status` and `verify --fds` — and
//! its exit is handled. A watched name that matches nothing is said once.

mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_sentinel::watch::{self, TcpState};
use support::config::{Target, Toml};
use support::daemon::{Daemon, one_line, scrape};
use support::sidecar::{Running, eventually, request, sample};
use support::upstream::Opts;
use support::{Workspace, binary};

/// Set in the child: the folder the two processes talk through.
const CHILD_DIR: &str = "EGRESS_FDS_CHILD_DIR";
/// Set in the child: the command name it takes (one per test, as tests
/// run at the same time).
const CHILD_NAME_VAR: &str = "EGRESS_FDS_CHILD_NAME";
const CONNECTIONS: usize = 5;
const CLOSED_BY_PEER: usize = 2;
const FILES: usize = 3;
const PIPED_CHILDREN: usize = 2;

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Not a test of its own: the body of the child process, run by
/// `Holder::spawn` through this test binary. Without the variable it does
/// nothing.
#[test]
fn child_process_body() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let name = std::env::var(CHILD_NAME_VAR).expect("name");
    // /proc/self is the thread-group leader: this names the process.
    std::fs::write("/proc/self/comm", name).expect("rename");
    wait_for(&dir.join("go"));
    let port: u16 = std::fs::read_to_string(dir.join("port"))
        .expect("port")
        .trim()
        .parse()
        .expect("port number");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let conns: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let files: Vec<std::fs::File> = (0..FILES)
        .map(|i| std::fs::File::open(dir.join(format!("file{i}"))).expect("open"))
        .collect();
    // Each child with piped stdin and stdout leaves us two pipe ends.
    let mut piped: Vec<Child> = (0..PIPED_CHILDREN)
        .map(|_| {
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("sleep")
        })
        .collect();
    std::fs::write(dir.join("ready"), b"").expect("ready");
    wait_for(&dir.join("exit"));
    for c in &mut piped {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop((listener, conns, files));
}

/// The child, and the parent's side of its connections.
struct Holder {
    child: Child,
    dir: tempfile::TempDir,
    /// The parent's listener the child connects to.
    remote: std::net::SocketAddr,
    /// The parent's ends still open.
    _open: Vec<TcpStream>,
}

impl Holder {
    fn proc_dir(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.child.id()))
    }

    /// Starts the child named `name`; returns it with what it had open
    /// before the work.
    fn spawn(name: &str) -> (Self, watch::ProcessFds) {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..FILES {
            std::fs::write(dir.path().join(format!("file{i}")), b"x").expect("file");
        }
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "child_process_body",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_NAME_VAR, name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let comm = format!("/proc/{}/comm", child.id());
        let start = Instant::now();
        while std::fs::read_to_string(&comm).map_or(true, |c| c.trim_end() != name) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "child never renamed itself"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = watch::process_fds(Path::new(&format!("/proc/{}", child.id())))
            .expect("the child is readable");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let remote = listener.local_addr().expect("addr");
        std::fs::write(dir.path().join("port"), remote.port().to_string()).expect("port");
        std::fs::write(dir.path().join("go"), b"").expect("go");
        let mut accepted: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| listener.accept().expect("accept").0)
            .collect();
        // The peer hangs up on two; the child never closes them: CLOSE_WAIT.
        for _ in 0..CLOSED_BY_PEER {
            drop(accepted.pop());
        }
        wait_for(&dir.path().join("ready"));
        let holder = Self {
            child,
            dir,
            remote,
            _open: accepted,
        };
        (holder, before)
    }

    /// The child's descriptors once both CLOSE_WAITs are visible, and its
    /// TCP sockets.
    fn settled(&self) -> (watch::ProcessFds, watch::TcpSockets) {
        let start = Instant::now();
        loop {
            let now = watch::process_fds(&self.proc_dir()).expect("readable");
            let tcp = now.tcp.clone().expect("tcp detail");
            if tcp.by_state[&TcpState::CloseWait] == CLOSED_BY_PEER as u64 {
                return (now, tcp);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{tcp:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets the child exit and reaps it.
    fn finish(mut self) -> u32 {
        let pid = self.child.id();
        std::fs::write(self.dir.path().join("exit"), b"").expect("exit");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "the child failed: {status}");
        pid
    }
}

#[test]
fn a_process_with_sockets_files_and_pipes_is_counted_exactly_and_its_exit_handled() {
    const CHILD_NAME: &str = "egress-fdchild1";
    let (holder, before) = Holder::spawn(CHILD_NAME);
    let (after, tcp) = holder.settled();
    let diff = |kind: &str| after.usage.by_kind[kind] as i64 - before.usage.by_kind[kind] as i64;
    // One listener and five connections.
    assert_eq!(diff("socket"), CONNECTIONS as i64 + 1, "{after:?}");
    assert_eq!(diff("file"), FILES as i64);
    assert_eq!(diff("pipe"), 2 * PIPED_CHILDREN as i64);
    assert_eq!(diff("anon"), 0);
    assert_eq!(diff("other"), 0);
    assert!(after.usage.max.is_some_and(|m| m > 0));
    let states: BTreeMap<TcpState, u64> = tcp
        .by_state
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (*s, *n))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            (TcpState::Established, (CONNECTIONS - CLOSED_BY_PEER) as u64),
            (TcpState::CloseWait, CLOSED_BY_PEER as u64),
            (TcpState::Listen, 1),
        ])
    );
    assert_eq!(tcp.other_sockets, 0);
    assert_eq!(tcp.top_remotes.len(), 1, "{:?}", tcp.top_remotes);
    let top = &tcp.top_remotes[0];
    assert_eq!(top.endpoint, holder.remote.to_string());
    assert_eq!(top.sockets, CONNECTIONS as u64);
    assert_eq!(
        top.by_state,
        BTreeMap::from([
            (TcpState::Established, (CONNECTIONS - CLOSED_BY_PEER) as u64),
            (TcpState::CloseWait, CLOSED_BY_PEER as u64),
        ])
    );
    // Found by name, as [watch] finds it.
    let named = watch::sample_named(CHILD_NAME);
    assert_eq!((named.matched, named.skipped), (1, 0));
    assert_eq!(
        named.worst.as_ref().and_then(|w| w.pid),
        Some(holder.child.id())
    );
    let proc_dir = holder.proc_dir();
    holder.finish();
    // Gone: no match, nothing to read, no error.
    assert!(watch::process_fds(&proc_dir).is_none());
    let named = watch::sample_named(CHILD_NAME);
    assert_eq!((named.matched, named.skipped), (0, 0));
    assert!(named.worst.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_verify_fds_show_the_states_and_the_top_endpoint() {
    const CHILD_NAME: &str = "egress-fdchild2";
    let up = Opts::new("push.test").start().await;
    let (holder, _) = tokio::task::spawn_blocking(|| Holder::spawn(CHILD_NAME))
        .await
        .expect("spawn");
    let holder = tokio::task::spawn_blocking(move || {
        holder.settled();
        holder
    })
    .await
    .expect("settle");
    let ws = Workspace::new();
    let text = Toml::new()
        .resolve("push.test", "127.0.0.1")
        .target(
            Target::new("push", &format!("https://push.test:{}/", up.port()))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .expect_ca("ca.pem"),
        )
        .watch_processes(&[CHILD_NAME]);
    let sidecar = Running::start(ws.config(&text)).await;
    // Scrapes count by kind; the TCP detail comes with the upkeep.
    let m = eventually(Duration::from_secs(5), "the TCP detail", || async {
        let m = sidecar.metrics_text().await;
        sample(
            &m,
            "egress_process_tcp_sockets",
            &[("process", CHILD_NAME), ("state", "close_wait")],
        )
        .is_some()
        .then_some(m)
    })
    .await;
    let tcp = |state| {
        sample(
            &m,
            "egress_process_tcp_sockets",
            &[("process", CHILD_NAME), ("state", state)],
        )
    };
    assert_eq!(tcp("established"), Some(3.0));
    assert_eq!(tcp("close_wait"), Some(2.0));
    assert_eq!(tcp("listen"), Some(1.0));
    assert_eq!(tcp("syn_sent"), Some(0.0));
    assert!(
        tcp("time_wait").is_some(),
        "time_wait is exported for the namespace"
    );
    assert_eq!(
        sample(
            &m,
            "egress_watch_processes_matched",
            &[("process", CHILD_NAME)]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "egress_process_tcp_sockets",
            &[("process", "egress-sentinel"), ("state", "listen")]
        )
        .is_some_and(|n| n >= 3.0),
        "the sidecar's own listeners"
    );
    let status = sidecar.status().await;
    let fds = status["fds"]["processes"].as_array().expect("fds");
    assert_eq!(fds[0]["process"], "egress-sentinel");
    assert_eq!(fds[1]["process"], CHILD_NAME);
    assert_eq!(fds[1]["matched"], 1);
    let worst = &fds[1]["worst"];
    assert_eq!(worst["pid"], holder.child.id());
    assert_eq!(worst["tcp"]["by_state"]["close_wait"], 2);
    assert_eq!(
        worst["tcp"]["top_remotes"][0]["endpoint"],
        holder.remote.to_string()
    );
    assert_eq!(worst["tcp"]["top_remotes"][0]["sockets"], 5);
    // verify --fds: the same, for a person.
    let out = tokio::process::Command::new(binary())
        .arg("verify")
        .arg("--config")
        .arg(ws.path("config.toml"))
        .arg("--fds")
        .output()
        .await
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let section: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "FILE DESCRIPTORS")
        .collect();
    let child = section
        .iter()
        .position(|l| l.starts_with(&format!("{CHILD_NAME} pid {}: ", holder.child.id())))
        .unwrap_or_else(|| panic!("the child's block:\n{stdout}"));
    assert!(
        section[child + 2].starts_with("  tcp: ESTABLISHED 3, CLOSE_WAIT 2, LISTEN 1;"),
        "{stdout}"
    );
    assert_eq!(section[child + 3], "  top remote endpoints:");
    let top: Vec<&str> = section[child + 4].split_whitespace().collect();
    assert_eq!(
        top,
        [
            holder.remote.to_string().as_str(),
            "5",
            "(ESTABLISHED",
            "3,",
            "CLOSE_WAIT",
            "2)"
        ],
        "{stdout}"
    );
    // The child exits: the match count drops to 0, nothing breaks.
    tokio::task::spawn_blocking(move || holder.finish())
        .await
        .expect("finish");
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_watch_processes_matched",
            &[("process", CHILD_NAME)]
        ),
        Some(0.0)
    );
    let status = sidecar.status().await;
    assert_eq!(status["fds"]["processes"][1]["matched"], 0);
    assert_eq!(
        status["fds"]["processes"][1]["worst"],
        serde_json::Value::Null
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_name_that_matches_nothing_is_a_warning_once_and_a_zero_gauge() {
    let ws = Workspace::new();
    let text = Toml::new()
        .daemon("1s")
        .target(Target::new("push", "https://push.test/").routes(&["direct"]))
        .resolve_all("push.test", &[])
        .watch_processes(&["nginx-absent"]);
    let path = ws.write("config.toml", &text.to_string());
    let daemon = Daemon::start(&path, "info");
    let metrics = daemon.addr("metrics").await;
    let m = eventually(Duration::from_secs(10), "the gauge", || async {
        let m = scrape(metrics).await?;
        sample(
            &m,
            "egress_watch_processes_matched",
            &[("process", "nginx-absent")],
        )
        .is_some()
        .then_some(m)
    })
    .await;
    assert_eq!(
        sample(
            &m,
            "egress_watch_processes_matched",
            &[("process", "nginx-absent")]
        ),
        Some(0.0)
    );
    // Scrapes and upkeeps sample it again; it is said once.
    for _ in 0..3 {
        let _ = request(metrics, "GET", "/metrics").await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let logs = daemon.stop().await;
    one_line(
        &logs,
        "no process has this command name",
        &["WARN", "process=nginx-absent"],
    );
}
