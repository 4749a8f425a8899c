//! The built binary's `run` on port 0, with its log lines captured (read
//! as they come, so the sidecar never blocks on a full pipe, and so the
//! addresses it bound can be read from its `listening` lines), stopped
//! with SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

/// A running `egress-sentinel run`.
pub struct Daemon {
    child: Child,
    logs: Arc<Mutex<String>>,
    reader: JoinHandle<()>,
}

impl Daemon {
    /// Runs the binary on `config` with text logs at `log_level` (at least
    /// `info`, for the `listening` lines).
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
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = sink.lock().expect("lock");
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self {
            child,
            logs,
            reader,
        }
    }

    /// The address `listener` (`metrics`, `admin`, `forward proxy`) is bound
    /// to, from its `listening` log line; waits up to 10 s for it.
    pub async fn addr(&self, listener: &str) -> SocketAddr {
        let needle = format!("listener=\"{listener}\" addr=");
        let start = Instant::now();
        loop {
            let found = self.logs.lock().expect("lock").lines().find_map(|l| {
                let rest = l.split(&needle).nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no `listening` line for {listener}:\n{}",
                self.logs.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
            let _ = (&mut self.reader).await;
        })
        .await
        .expect("the sidecar stops within 10 s");
        self.logs.lock().expect("lock").clone()
    }
}

/// The daemon's `/metrics` at `addr` (`None` when it does not answer 200).
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
