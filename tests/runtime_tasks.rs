//! A task leak must show in production, not only in the soak:
//! `egress_runtime_alive_tasks` on `/metrics` and `runtime.alive_tasks` in
//! `/status` carry tokio's live-task count, and an app's tunnels that
//! opened and closed leave it where it was.

mod support;

use std::time::Duration;

use support::Workspace;
use support::proxy::{Mode, ScriptProxy};
use support::scenario;
use support::sidecar::{Running, eventually, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gauge's value in a scrape.
fn alive(metrics: &str) -> Option<f64> {
    sample(metrics, "egress_runtime_alive_tasks", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alive_tasks_show_on_metrics_and_status_and_return_to_rest_after_tunnels_close() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(scenario::config(&proxy.url(), up.port()))).await;

    let first = eventually(Duration::from_secs(10), "the gauge on /metrics", || async {
        alive(&sidecar.metrics_text().await)
    })
    .await;
    assert!(first >= 1.0, "at least the listeners' tasks: {first}");
    let status = sidecar.status().await;
    let in_status = status["runtime"]["alive_tasks"].as_u64();
    assert!(
        in_status.is_some_and(|n| n >= 1),
        "runtime.alive_tasks in /status: {}",
        status["runtime"]
    );

    // The least seen over a second: probes and scrapes come and go.
    let at_rest = || async {
        let mut least = f64::MAX;
        for _ in 0..10 {
            if let Some(n) = alive(&sidecar.metrics_text().await) {
                least = least.min(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        least
    };
    let before = at_rest().await;

    // 20 tunnels held open at once: the count rises with them.
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(sidecar.proxy).await.expect("connect");
        let target = format!("push.test:{}", up.port());
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.expect("reply");
        assert_eq!(&head[9..12], b"200", "{}", String::from_utf8_lossy(&head));
        open.push(s);
    }
    let busy = alive(&sidecar.metrics_text().await).unwrap_or(0.0);
    assert!(
        busy >= before + 20.0,
        "20 open tunnels: {busy} tasks, {before} at rest"
    );

    drop(open);
    eventually(
        Duration::from_secs(10),
        "the count back at rest",
        || async { (at_rest().await <= before).then_some(()) },
    )
    .await;
    sidecar.stop().await;
}
