//! The compliance trail during a failover: the provider's proxy answers
//! 502, push goes direct, and every one of the app's direct connections is
//! one line in `state_dir/direct.jsonl` (target, destination, why, bytes,
//! duration), while the operational log says the first at once and
//! summarises the rest. With `access_log`, proxied connections are written
//! too, to their own file. Files rotate by size and stay bounded.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use egress_sentinel::demo::stand_ins::read_connect_head;
use support::Workspace;
use support::proxy::{Mode, ScriptProxy};
use support::sidecar::{Running, eventually, request, sample};
use support::spawned::Spawned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy's password, in the credentials file only.
const PROXY_PASSWORD: &str = "trail-pw-5521";

/// Opens a tunnel to `host:port` through `proxy`, checks the 200, and
/// hangs up at once (an app that connects and gives up).
async fn tunnel_and_hang_up(proxy: SocketAddr, host: &str, port: u16) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("read");
        assert_eq!(
            n,
            1,
            "closed before the reply: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A plain-http origin on 127.0.0.1: answers every request `200 hello`
/// and closes.
async fn plain_origin() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_connect_head(&mut tcp).await.is_none() {
                    return;
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    port
}

/// The JSON lines of `file` and its rotated copies.
fn trail_lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for n in 0..10 {
        let path = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{name}.{n}"))
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            out.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display())),
            );
        }
    }
    out
}

async fn wait_direct_active(metrics: SocketAddr) {
    eventually(
        Duration::from_secs(10),
        "push's traffic to go direct",
        || async {
            let (_, m) = request(metrics, "GET", "/metrics").await;
            (sample(
                &m,
                "egress_route_active",
                &[("target", "apns"), ("route", "direct")],
            ) == Some(1.0))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_direct_connections_are_a_thousand_trail_lines_and_a_few_log_lines() {
    let up = support::scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    ws.write("credentials", &format!("egress:{PROXY_PASSWORD}\n"));
    let text = support::scenario::daemon_config(&proxy.url(), up.port())
        .state_dir("state")
        .edit_route("provider", |r| r.credentials_file("credentials"));
    let config = ws.write("config.toml", &text.to_string());
    let mut sidecar = Spawned::run(&config, &[]);
    let metrics = sidecar.addr("metrics").await;
    let forward = sidecar.addr("forward proxy").await;
    wait_direct_active(metrics).await;

    let began = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let port = up.port();
        workers.spawn(async move {
            for _ in 0..100 {
                tunnel_and_hang_up(forward, "push.test", port).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(50),
        "1 000 connections took {took:?}"
    );
    let state = ws.path("state");
    eventually(Duration::from_secs(10), "1 000 trail lines", || async {
        (trail_lines(&state, "direct.jsonl").len() >= 1000).then_some(())
    })
    .await;
    let (_, m) = request(metrics, "GET", "/metrics").await;
    let (status, logs) = sidecar.stop().await;
    assert!(status.success());

    // Exactly one line per connection, each saying what compliance asks.
    let lines_after = trail_lines(&state, "direct.jsonl");
    assert_eq!(lines_after.len(), 1000);
    let destination = format!("push.test:{}", up.port());
    for l in &lines_after {
        assert_eq!(l["target"], "apns", "{l}");
        assert_eq!(l["route"], "direct", "{l}");
        assert_eq!(l["destination"], destination.as_str(), "{l}");
        let why = l["reason"].as_str().expect("a reason");
        assert!(
            why.contains("provider") && why.contains("proxy_upstream_error"),
            "{l}"
        );
        assert_eq!(l["bytes_up"], 0, "the app sent nothing: {l}");
        assert!(l["bytes_down"].is_u64(), "{l}");
        assert!(
            l["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0),
            "{l}"
        );
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert_eq!(l["end"], "closed", "{l}");
    }
    assert!(
        sample(
            &m,
            "egress_forward_connections_total",
            &[("target", "apns"), ("route", "direct"), ("result", "ok")]
        )
        .is_some_and(|n| n >= 1000.0),
        "{m}"
    );

    // The operational log: the first at once, the rest in a summary.
    let all = logs.join("\n");
    let direct: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("went DIRECT"))
        })
        .collect();
    assert!(
        (1..=3).contains(&direct.len()),
        "{} log lines about direct connections:\n{all}",
        direct.len()
    );
    assert_eq!(direct[0]["target"], "apns");
    assert_eq!(direct[0]["destination"], destination.as_str());
    let told: u64 = 1 + direct[1..]
        .iter()
        .map(|v| v["count"].as_u64().expect("a count"))
        .sum::<u64>();
    assert_eq!(told, 1000, "every connection is accounted for:\n{all}");
    // No secret anywhere: the proxy's password is in the credentials file only.
    let trail_text = std::fs::read_to_string(state.join("direct.jsonl")).expect("trail");
    for (what, text) in [("logs", &all), ("trail", &trail_text), ("metrics", &m)] {
        assert!(!text.contains(PROXY_PASSWORD), "password in the {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_every_connection_and_files_rotate_within_bounds() {
    let up = support::scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let origin = plain_origin().await;
    let ws = Workspace::new();
    let text = support::scenario::config(&proxy.url(), up.port())
        .state_dir("state")
        .forward(|f| {
            f.access_log(true)
                .trail_max_bytes(4096)
                .trail_keep(1)
                .allow_ports(&[443, origin])
        });
    let sidecar = Running::start(ws.config(&text)).await;
    let state = ws.path("state");
    eventually(Duration::from_secs(10), "apns on the provider", || async {
        let m = sidecar.metrics_text().await;
        (sample(
            &m,
            "egress_route_active",
            &[("target", "apns"), ("route", "provider")],
        ) == Some(1.0))
        .then_some(())
    })
    .await;
    // Through the proxy: an access line, no trail line.
    assert_eq!(
        support::app::get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    let access = eventually(Duration::from_secs(5), "an access line", || async {
        let l = trail_lines(&state, "access.jsonl");
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(access[0]["route"], "provider");
    assert_eq!(access[0]["target"], "apns");
    assert!(access[0].get("reason").is_none(), "{}", access[0]);
    assert!(
        access[0]["bytes_down"].as_u64().is_some_and(|b| b > 0)
            && access[0]["bytes_up"].as_u64().is_some_and(|b| b > 0),
        "{}",
        access[0]
    );
    assert!(trail_lines(&state, "direct.jsonl").is_empty());

    // The proxy breaks; push goes direct: both files, rotated at 4 kB.
    proxy.set_mode(Mode::Status(502, "Bad Gateway"));
    wait_direct_active(sidecar.metrics).await;
    for _ in 0..40 {
        assert_eq!(
            support::app::get_via(sidecar.proxy, "push.test", up.port()).await,
            Ok(200)
        );
    }
    let direct = eventually(Duration::from_secs(5), "the direct lines", || async {
        let l = trail_lines(&state, "direct.jsonl");
        (l.len() >= 10).then_some(l)
    })
    .await;
    assert!(direct.iter().all(|l| l["route"] == "direct"));
    assert!(
        direct
            .iter()
            .all(|l| l["bytes_down"].as_u64().is_some_and(|b| b > 0))
    );
    // Plain http that goes direct is in the trail too, bytes and all.
    let mut app = TcpStream::connect(sidecar.proxy).await.expect("connect");
    app.write_all(
        format!("GET http://push.test:{origin}/ HTTP/1.1\r\nHost: push.test\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = String::new();
    app.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let destination = format!("push.test:{origin}");
    let plain = eventually(
        Duration::from_secs(5),
        "the plain request's line",
        || async {
            trail_lines(&state, "direct.jsonl")
                .into_iter()
                .find(|l| l["destination"] == destination.as_str())
        },
    )
    .await;
    assert_eq!(plain["route"], "direct", "{plain}");
    assert!(
        plain["bytes_up"].as_u64().is_some_and(|b| b > 0)
            && plain["bytes_down"].as_u64().is_some_and(|b| b > 0),
        "{plain}"
    );
    for name in [
        "direct.jsonl",
        "direct.jsonl.1",
        "access.jsonl",
        "access.jsonl.1",
    ] {
        let len = std::fs::metadata(state.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(len > 0 && len <= 4096, "{name}: {len} bytes");
    }
    for name in ["direct.jsonl.2", "access.jsonl.2"] {
        assert!(!state.join(name).exists(), "{name} kept beyond trail_keep");
    }
    sidecar.stop().await;
}
