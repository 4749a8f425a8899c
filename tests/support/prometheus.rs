//! Debian's Prometheus server (`/usr/bin/prometheus`), started on a free
//! loopback port with its own config and its TSDB in a temporary folder.
//! It scrapes only the loopback targets a test names (every second),
//! evaluates the rules the test gives it (every second), and sends nothing
//! anywhere: no remote write, no Alertmanager, an external URL on loopback.
//!
//! Skipped with a printed reason when missing, unless
//! `EGRESS_REQUIRE_PROMTOOL=1` (the same Debian package as promtool; set
//! by `.ci/run`), which makes that a failure.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// The server binary, or `None` (with a printed reason) when tests should
/// skip. Panics when it is required but missing.
pub fn available() -> Option<&'static Path> {
    let path = Path::new(PROMETHEUS);
    if path.exists() {
        return Some(path);
    }
    assert_ne!(
        std::env::var("EGRESS_REQUIRE_PROMTOOL").as_deref(),
        Ok("1"),
        "EGRESS_REQUIRE_PROMTOOL=1 but {PROMETHEUS} is missing: apt-get install prometheus"
    );
    eprintln!("SKIPPED: {PROMETHEUS} not installed (apt-get install prometheus)");
    None
}

/// One scrape target: a sidecar's metrics listener and the target labels a
/// PodMonitor would give it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `/metrics` listener (loopback).
    pub addr: SocketAddr,
    /// Extra target labels (`namespace`, `pod`).
    pub labels: Vec<(String, String)>,
}

/// A running Prometheus; killed when dropped.
pub struct Prometheus {
    /// Its web and API listener.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with everything but unreserved characters percent-encoded, for a
/// query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts `binary` scraping `targets` as job `job` and loading `rules`
    /// (a rules file's text); returns once it is ready.
    pub fn start(binary: &Path, job: &str, targets: &[Target], rules: &str) -> Self {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(binary, job, targets, rules) {
                Ok(p) => return p,
                // A free port can be taken before the server binds it.
                Err(log) => last = log,
            }
        }
        panic!("prometheus did not start:\n{last}");
    }

    fn try_start(
        binary: &Path,
        job: &str,
        targets: &[Target],
        rules: &str,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("prometheus dir");
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("rules");
        let mut static_configs = String::new();
        for t in targets {
            assert!(
                t.addr.ip().is_loopback(),
                "scrape loopback only: {}",
                t.addr
            );
            static_configs.push_str(&format!("      - targets: ['{}']\n", t.addr));
            if !t.labels.is_empty() {
                static_configs.push_str("        labels:\n");
                for (k, v) in &t.labels {
                    static_configs.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        let config = format!(
            "global:\n  \
               scrape_interval: 1s\n  \
               scrape_timeout: 900ms\n  \
               evaluation_interval: 1s\n\
             rule_files:\n  - rules.yaml\n\
             scrape_configs:\n  \
               - job_name: '{job}'\n    \
                 static_configs:\n{static_configs}"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus.yml");
        let port = super::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!("--web.external-url=http://{addr}/"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { addr, child, dir };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("prometheus exited with {status}:\n{}", p.log()));
            }
            if ready(addr) {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = p.child.kill();
        Err(format!("prometheus not ready within 20 s:\n{}", p.log()))
    }

    /// Its log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on its API; the `data` member of a successful answer.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(self.addr, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("API JSON");
        assert_eq!(v["status"], "success", "GET {path}: {body}");
        v["data"].clone()
    }

    /// The result vector of an instant query.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active (pending or firing) alerts.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"].as_array().cloned().unwrap_or_default()
    }
}

/// Whether `/-/ready` answers 200 (a blocking check, for the start loop).
fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /-/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// `GET path` as HTTP/1.0, so the answer is neither chunked nor kept
/// alive: the body is everything after the head.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("prometheus answers within 10 s");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}
