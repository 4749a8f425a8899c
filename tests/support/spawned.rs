//! The sidecar run as users run it: the built binary, `run --config`, with
//! its stderr (the logs) collected line by line. Listeners bound on port 0
//! are found from the "listening" log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running binary.
pub struct Spawned {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    /// `egress-sentinel run --config <config>` plus `args`, stderr collected,
    /// at the default log level.
    pub fn run(config: &Path, args: &[&str]) -> Self {
        Self::run_at(config, args, None)
    }

    /// [`Spawned::run`] with `RUST_LOG` set to `level` (when given).
    pub fn run_at(config: &Path, args: &[&str], level: Option<&str>) -> Self {
        let mut command = Command::new(super::binary());
        command
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if let Some(level) = level {
            command.env("RUST_LOG", level);
        }
        Self::spawn(command)
    }

    /// Any command of the binary, stderr collected.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the binary");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Self { child, lines }
    }

    /// The process id, for `/proc` and signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its open descriptors, from `/proc` (nothing of the test process's).
    pub fn open_fds(&self) -> u64 {
        let dir = format!("/proc/{}", self.pid());
        egress_sentinel::watch::fd_usage(Path::new(&dir)).total()
    }

    /// Its resident memory in KiB (`VmRSS`), 0 once it has exited.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until its descriptors are at most `baseline` (a tunnel's or a
    /// probe's sockets can take a moment to close), within `within`.
    pub async fn fds_settle_to(&self, baseline: u64, within: Duration, what: &str) {
        let start = Instant::now();
        loop {
            let now = self.open_fds();
            if now <= baseline {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{what}: {now} descriptors open, {baseline} before, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its descriptor count once it holds still (two equal readings 300 ms
    /// apart), for a baseline.
    pub async fn steady_fds(&self) -> u64 {
        let start = Instant::now();
        loop {
            let a = self.open_fds();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let b = self.open_fds();
            if a == b || start.elapsed() > Duration::from_secs(5) {
                return a.max(b);
            }
        }
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// The stderr lines that parse as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits up to `within` for a JSON log line satisfying `pred`.
    pub async fn logged(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.json_lines().into_iter().find(|v| pred(v)) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the sidecar exited ({status}) before logging {what}:\n{}",
                    self.lines().join("\n")
                );
            }
            assert!(
                start.elapsed() < within,
                "no log line {what} within {within:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address the `listener` ("metrics", "admin", "forward proxy") logged.
    pub async fn addr(&mut self, listener: &str) -> SocketAddr {
        let line = self
            .logged(Duration::from_secs(20), listener, |v| {
                v["message"] == "listening" && v["listener"] == listener
            })
            .await;
        line["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("a listen address")
    }

    /// SIGTERM, then waits for the exit (10 s at most); returns the status
    /// and every stderr line.
    pub async fn stop(self) -> (ExitStatus, Vec<String>) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = kill(pid, Signal::SIGTERM);
        self.exit_within(Duration::from_secs(10)).await
    }

    /// Waits for the exit (a signal was sent already), `within` at most,
    /// then kills it and panics; returns the status and every stderr line.
    pub async fn exit_within(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("no exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader thread ends with the pipe; give it a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, self.lines())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on a config whose listeners are all on port 0, with the
/// addresses it bound found from its log.
pub struct Sidecar {
    /// The process.
    pub process: Spawned,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// `/status`, `POST /verify`.
    pub admin: SocketAddr,
    /// The forward proxy.
    pub proxy: SocketAddr,
}

impl Sidecar {
    /// `run --config <config>` at the default log level, once every
    /// listener is bound.
    pub async fn start(config: &Path) -> Self {
        let mut process = Spawned::run(config, &[]);
        let metrics = process.addr("metrics").await;
        let admin = process.addr("admin").await;
        let proxy = process.addr("forward proxy").await;
        Self {
            process,
            metrics,
            admin,
            proxy,
        }
    }

    /// `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = super::sidecar::request(self.metrics, "GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (status, body) = super::sidecar::request(self.admin, "GET", "/status").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }
}

/// The shared scenario ([`super::scenario::config`]) for the binary: every
/// listener on a loopback port 0 (found with [`Spawned::addr`]), no drain,
/// a short deadline. `top` goes before every table (e.g. `state_dir`);
/// `extra` at the end of `[forward]`, where more tables may follow.
pub fn scenario_config(proxy: &str, port: u16, top: &str, extra: &str) -> String {
    format!(
        "{top}\n[listen]\nmetrics = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nproxy = \"127.0.0.1:0\"\n{}",
        super::scenario::config(
            proxy,
            port,
            &format!("{extra}\n\n[shutdown]\ndrain = \"0s\"\ndeadline = \"2s\"\n"),
        )
    )
}
