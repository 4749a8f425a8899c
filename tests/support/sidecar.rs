//! The sidecar run in-process on port 0, with a tiny HTTP client for its
//! endpoints and a helper that waits for a condition with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_sentinel::config::Config;
use egress_sentinel::sidecar::{Hooks, Listeners, run_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// A running sidecar.
pub struct Running {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// `/status`, `POST /verify`.
    pub admin: SocketAddr,
    /// The forward proxy.
    pub proxy: SocketAddr,
    /// Triggers a reload, as SIGHUP would.
    pub reload: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts `config` on loopback port-0 listeners, with no shutdown drain
    /// (tests stop many sidecars; the drain has tests of its own).
    pub async fn start(mut config: Config) -> Self {
        config.shutdown.drain = Duration::ZERO;
        Self::start_with(config, Hooks::default()).await
    }

    /// Starts `config` as it is, with `hooks`.
    pub async fn start_with(config: Config, hooks: Hooks) -> Self {
        let bind = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
        let (m, a, p) = (bind().await, bind().await, bind().await);
        let (metrics, admin, proxy) = (
            m.local_addr().expect("addr"),
            a.local_addr().expect("addr"),
            p.local_addr().expect("addr"),
        );
        let listeners = Listeners {
            metrics: Some(m),
            admin: Some(a),
            proxy: Some(p),
        };
        let reload = hooks.reload.clone();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            run_with(
                config,
                listeners,
                async move {
                    let _ = rx.await;
                },
                hooks,
            )
            .await
            .expect("sidecar run");
        });
        Self {
            metrics,
            admin,
            proxy,
            reload,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts the shutdown; the returned future completes when `run` returns.
    pub fn begin_stop(&mut self) -> impl Future<Output = ()> + use<> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take();
        async move {
            if let Some(t) = task {
                t.await.expect("sidecar task");
            }
        }
    }

    /// Stops it and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("sidecar stops within 10 s")
                .expect("sidecar task");
        }
    }

    /// GET on the metrics listener.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = request(self.metrics, "GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = request(self.admin, "GET", "/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// One HTTP/1.1 request; returns the status and the body.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` in a Prometheus text exposition,
/// where `labels` lists `key="value"` pairs that must all be present.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

/// Every sample of `name` in a Prometheus text exposition: its labels
/// (the text between the braces) and its value.
pub fn series<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            if n != name {
                return None;
            }
            Some((rest.trim_end_matches('}'), value.parse().ok()?))
        })
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `egress_runtime_alive_tasks` at rest: the least of ten scrapes of
/// `metrics` 100 ms apart (probes and scrapes come and go). A fault test
/// ends by finding it back at its baseline, beside the descriptor count.
pub async fn tasks_at_rest(metrics: SocketAddr) -> f64 {
    let mut least = f64::MAX;
    for _ in 0..10 {
        let (code, text) = request(metrics, "GET", "/metrics").await;
        if code == 200 {
            if let Some(n) = sample(&text, "egress_runtime_alive_tasks", &[]) {
                least = least.min(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    least
}

/// Waits until [`tasks_at_rest`] is at most `baseline`, within `within`.
pub async fn tasks_settle_to(metrics: SocketAddr, baseline: f64, within: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let now = tasks_at_rest(metrics).await;
        if now <= baseline {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{what}: {now} tasks alive at rest, {baseline} before, after {within:?}"
        );
    }
}
