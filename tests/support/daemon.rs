//! The built binary's `run`, on free loopback ports, with its log lines
//! captured (the pipe is drained while it runs so the sidecar never blocks
//! on a full pipe), stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::task::JoinHandle;

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The `[listen]` table for a daemon on free ports, and `[shutdown]` with
/// no drain (it stops at once on SIGTERM); its metrics and admin addresses.
pub fn listen_table() -> (String, SocketAddr, SocketAddr) {
    let (m, a, p) = (free_port(), free_port(), free_port());
    (
        format!(
            "[listen]\nmetrics = \"127.0.0.1:{m}\"\nadmin = \"127.0.0.1:{a}\"\nproxy = \"127.0.0.1:{p}\"\n\n[shutdown]\ndrain = \"0s\"\ndeadline = \"1s\"\n"
        ),
        SocketAddr::from(([127, 0, 0, 1], m)),
        SocketAddr::from(([127, 0, 0, 1], a)),
    )
}

/// A running `egress-sentinel run`.
pub struct Daemon {
    child: Child,
    logs: JoinHandle<String>,
}

impl Daemon {
    /// Runs the binary on `config` with text logs at `log_level`.
    pub fn start(config: &Path, log_level: &str) -> Self {
        let mut child = tokio::process::Command::new(super::binary())
            .args([
                "run",
                "--config",
                config.to_str().expect("utf8"),
                "--log-format",
                "text",
            ])
            .env("RUST_LOG", log_level)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the sidecar");
        let mut stderr = child.stderr.take().expect("stderr");
        let logs = tokio::spawn(async move {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err).await;
            err
        });
        Self { child, logs }
    }

    /// SIGTERM, then its whole log.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().expect("pid").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        tokio::time::timeout(Duration::from_secs(10), async {
            let _ = self.child.wait().await;
            self.logs.await.expect("logs")
        })
        .await
        .expect("the sidecar stops within 10 s")
    }
}

/// The daemon's `/metrics` at `addr`, once it listens (`None` before).
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let (code, body) = super::sidecar::request(addr, "GET", "/metrics").await;
    (code == 200).then_some(body)
}

/// The one line of `logs` that contains `needle`, checked to contain each
/// of `words` as well; fails with the whole log otherwise.
pub fn one_line<'a>(logs: &'a str, needle: &str, words: &[&str]) -> &'a str {
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one line with {needle:?}:\n{logs}");
    for w in words {
        assert!(lines[0].contains(w), "{w:?} missing: {}", lines[0]);
    }
    lines[0]
}
