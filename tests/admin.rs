//! The admin surface as an attacker and an operator meet it: a page on
//! another site, a rebound domain name, a form post, a missing or wrong
//! token are all refused with 403 (415 for a form) and change nothing;
//! curl on loopback still runs `POST /verify`; an override ends by itself
//! at its ttl; and 150 clients stalled mid-header or mid-body cannot lock
//! `/status` out. (A non-loopback peer is refused by the pure check in
//! `src/sidecar/admin.rs`: tests never dial a non-loopback address.)

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::Workspace;
use support::config::Toml;
use support::proxy::{Mode, ScriptProxy};
use support::raw::{Answer, send};
use support::scenario;
use support::sidecar::{Running, eventually, sample, tasks_at_rest, tasks_settle_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "0123456789abcdef-admin-token";

/// The scenario (push may go direct, SMS may not) with probes once an hour
/// (so every CONNECT after start-up comes from a verify run) and a verify
/// cooldown of an hour.
fn config(proxy: &str, port: u16) -> Toml {
    scenario::config(proxy, port)
        .probe(|p| p.interval("1h").unhealthy_interval("1h"))
        .admin(|a| a.verify_cooldown("1h"))
}

fn host(addr: SocketAddr) -> String {
    format!("Host: {addr}")
}

async fn force_of(sidecar: &Running, target: &str) -> String {
    let s = sidecar.status().await;
    s["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["target"] == target))
        .map(|t| t["force"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Waits until the start-up probes of the three pairs went through the
/// proxy (two CONNECTs), so later counts see only verify runs.
async fn settled(sidecar: &Running, proxy: &ScriptProxy) -> usize {
    eventually(Duration::from_secs(10), "the start-up probes", || async {
        let s = sidecar.status().await;
        let probed = s["targets"].as_array().is_some_and(|ts| {
            ts.iter().all(|t| {
                t["routes"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().all(|r| !r["last_probe"].is_null()))
            })
        });
        probed.then_some(())
    })
    .await;
    proxy.received().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_configured_a_post_without_it_or_with_another_is_refused_and_changes_nothing()
{
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    ws.write("admin-token", &format!("{TOKEN}\n"));
    let cfg = ws.config(config(&proxy.url(), up.port()).admin(|a| a.token_file("admin-token")));
    let sidecar = Running::start(cfg).await;
    let connects = settled(&sidecar, &proxy).await;
    let h = host(sidecar.admin);
    let json = "Content-Type: application/json";
    let body = r#"{"force":"direct"}"#;

    for (what, auth) in [
        ("no token", None),
        (
            "a wrong token",
            Some("Authorization: Bearer not-the-token-at-all"),
        ),
        (
            "the token as Basic",
            Some("Authorization: Basic 0123456789abcdef-admin-token"),
        ),
    ] {
        let mut headers = vec![h.as_str(), json];
        headers.extend(auth);
        let a = send(sidecar.admin, "POST", "/routes/apns", &headers, body).await;
        assert_eq!(a.status, 403, "{what}: {a:?}");
        assert!(!a.body.contains(TOKEN), "the refusal shows the token");
        let a = send(sidecar.admin, "POST", "/verify", &headers, "").await;
        assert_eq!(a.status, 403, "{what}: {a:?}");
    }
    assert!(
        send(sidecar.admin, "POST", "/verify", &[&h], "")
            .await
            .body
            .contains("Authorization: Bearer <token>"),
        "the refusal says what is needed"
    );
    assert_eq!(force_of(&sidecar, "apns").await, "auto");
    assert_eq!(proxy.received().len(), connects, "a refused verify ran");

    // With the token: the override applies, and the verify run is the
    // first one (a refused one would have started the cool-down).
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let a = send(
        sidecar.admin,
        "POST",
        "/routes/apns",
        &[&h, json, &bearer],
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(force_of(&sidecar, "apns").await, "direct");
    let a = send(sidecar.admin, "POST", "/verify", &[&h, &bearer], "").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(proxy.received().len() > connects, "the verify run probed");
    let a = send(sidecar.admin, "POST", "/verify", &[&h, &bearer], "").await;
    assert_eq!(a.status, 429, "{a:?}");
    // Reading needs no token.
    assert_eq!(
        send(sidecar.admin, "GET", "/status", &[&h], "")
            .await
            .status,
        200
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_another_sites_origin_or_a_form_is_refused_and_changes_nothing() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    let connects = settled(&sidecar, &proxy).await;
    let own = host(sidecar.admin);
    let port = sidecar.admin.port();
    let rebound = format!("Host: attacker.example:{port}");
    let evil_origin = "Origin: http://attacker.example";
    let own_origin = format!("Origin: http://{}", sidecar.admin);
    let json = "Content-Type: application/json";
    let form = "Content-Type: application/x-www-form-urlencoded";
    let body = r#"{"force":"direct"}"#;
    let cases: Vec<(&str, Vec<&str>, &str, u16)> = vec![
        // DNS rebinding: attacker.example now resolves to 127.0.0.1.
        ("rebound Host", vec![&rebound, json], body, 403),
        ("no Host", vec![json], body, 403),
        (
            "rebound Host, own Origin",
            vec![&rebound, &own_origin, json],
            body,
            403,
        ),
        // CSRF: a page on another site posts with fetch or a form.
        ("foreign Origin", vec![&own, evil_origin, json], body, 403),
        ("Origin null", vec![&own, "Origin: null", json], body, 403),
        (
            "cross-site fetch",
            vec![&own, "Sec-Fetch-Site: cross-site", json],
            body,
            403,
        ),
        ("form body", vec![&own, form], "force=direct", 415),
        ("empty form", vec![&own, form], "", 415),
        (
            "text body",
            vec![&own, "Content-Type: text/plain"],
            body,
            415,
        ),
    ];
    for (what, headers, body, status) in &cases {
        let a = send(
            sidecar.admin,
            "POST",
            "/routes/apns?force=direct",
            headers,
            body,
        )
        .await;
        assert_eq!(a.status, *status, "{what}: {a:?}");
        let a = send(sidecar.admin, "POST", "/verify", headers, "").await;
        assert!(
            a.status == 403 || (a.status == 415 && *status == 415),
            "verify, {what}: {a:?}"
        );
    }
    assert_eq!(force_of(&sidecar, "apns").await, "auto");
    assert_eq!(proxy.received().len(), connects, "a refused verify ran");
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_route_override",
            &[("target", "apns"), ("route", "direct")]
        ),
        Some(0.0),
        "{m}"
    );

    // The same requests from the listener's own page are accepted.
    let a = send(
        sidecar.admin,
        "POST",
        "/routes/apns",
        &[&own, &own_origin, "Sec-Fetch-Site: same-origin", json],
        r#"{"force":"direct","ttl":"10m"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let doc: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(doc["active_route"], "direct");
    assert_eq!(doc["ttl_seconds"], 600.0);
    // Bad values are refused with a reason.
    for (body, why) in [
        (r#"{"force":"direct","ttl":"25h"}"#, "at most"),
        (r#"{"force":"direct","ttl":0}"#, "above zero"),
        (r#"{"force":"sideways"}"#, "force must be"),
        ("{not json", "not JSON"),
    ] {
        let a = send(sidecar.admin, "POST", "/routes/apns", &[&own, json], body).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert!(a.body.contains(why), "{body}: {a:?}");
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_on_loopback_runs_verify_without_a_token_config() {
    if !std::path::Path::new("/usr/bin/curl").exists() {
        eprintln!("SKIPPED: /usr/bin/curl not installed");
        return;
    }
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    let url = format!("http://{}/verify", sidecar.admin);
    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-sS", "--noproxy", "*", "-i", "-X", "POST", &url])
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let a = support::raw::parse(text.as_bytes());
    assert_eq!(
        a.status,
        200,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.header("x-verify-result"), Some("fail"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&a.body).expect("JSON report");
    let checks = report.as_array().expect("array");
    assert_eq!(checks.len(), 3);
    assert!(
        checks.iter().any(|c| c["route"] == "provider"
            && c["reason"] == "proxy_upstream_error"
            && c["proxy_reply"]["status_line"] == "HTTP/1.1 502 Bad Gateway"),
        "{text}"
    );
    sidecar.stop().await;
}

/// Log lines of this test binary, for the assertion on the expiry's line.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("egress_sentinel=info")
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_with_a_ttl_of_two_seconds_ends_by_itself() {
    let logs = logs();
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(scenario::config(&proxy.url(), up.port()))).await;
    eventually(Duration::from_secs(10), "apns on the provider", || async {
        let s = sidecar.status().await;
        (s["targets"][0]["routes"][0]["healthy"] == true
            && s["targets"][0]["active_route"] == "provider")
            .then_some(())
    })
    .await;
    let a = send(
        sidecar.admin,
        "POST",
        "/routes/apns",
        &[&host(sidecar.admin), "Content-Type: application/json"],
        r#"{"force":"direct","ttl":"2s"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    let set = Instant::now();
    let s = sidecar.status().await;
    assert_eq!(s["targets"][0]["force"], "direct");
    assert_eq!(s["targets"][0]["active_route"], "direct");
    assert!(
        s["targets"][0]["force_expires_in_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            <= 2.0
    );
    let gauge = |m: &str, route| {
        sample(
            m,
            "egress_route_override",
            &[("target", "apns"), ("route", route)],
        )
    };
    let m = sidecar.metrics_text().await;
    assert_eq!(
        (gauge(&m, "direct"), gauge(&m, "provider")),
        (Some(1.0), Some(0.0)),
        "{m}"
    );
    let page = send(sidecar.admin, "GET", "/", &[], "").await.body;
    assert!(
        page.contains("operator override: direct only, ends in"),
        "the page shows the override"
    );

    // Nobody calls it off: it ends at its ttl (checked every 2 s).
    eventually(Duration::from_secs(8), "the override to end", || async {
        let s = sidecar.status().await;
        (s["targets"][0]["force"] == "auto").then_some(())
    })
    .await;
    let took = set.elapsed();
    assert!(took >= Duration::from_millis(1900), "ended after {took:?}");
    eventually(
        Duration::from_secs(3),
        "traffic back on the provider",
        || async {
            (sidecar.status().await["targets"][0]["active_route"] == "provider").then_some(())
        },
    )
    .await;
    let m = sidecar.metrics_text().await;
    assert_eq!(
        (gauge(&m, "direct"), gauge(&m, "provider")),
        (Some(0.0), Some(0.0)),
        "{m}"
    );
    let text = String::from_utf8_lossy(&logs.lock().expect("lock")).into_owned();
    assert!(
        text.lines().any(|l| l.contains("operator override expired")
            && l.contains("target=apns")
            && l.contains("Direct")),
        "no log line for the expiry:\n{text}"
    );
    sidecar.stop().await;
}

/// Opens a connection that sends `head` and then stalls.
async fn stall(addr: SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_bodies_stalled_mid_way_do_not_lock_status_out() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    let connects = settled(&sidecar, &proxy).await;
    let tasks_idle = tasks_at_rest(sidecar.metrics).await;
    let addr = sidecar.admin;
    // 50 stalled in their request head, then 100 in their body (more than
    // the 64 connections the listener keeps).
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(stall(addr, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n").await);
    }
    let body_head = format!(
        "POST /verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\""
    );
    for _ in 0..100 {
        stalled.push(stall(addr, &body_head).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        let start = Instant::now();
        let a = tokio::time::timeout(
            Duration::from_secs(1),
            send(addr, "GET", "/status", &[&host(addr)], ""),
        )
        .await
        .unwrap_or_else(|_| panic!("/status #{i} did not answer within 1 s"));
        assert_eq!(a.status, 200, "{a:?}");
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(serde_json::from_str::<serde_json::Value>(&a.body).is_ok());
    }
    // The oldest stalled clients were let go; none started a verify run.
    let mut first = stalled.remove(0);
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), first.read(&mut buf))
        .await
        .expect("the oldest stalled connection was closed");
    assert_eq!(n.ok(), Some(0), "closed without an answer");
    assert_eq!(proxy.received().len(), connects);

    // A lone body that stalls is answered 408 at the body timeout.
    drop(stalled);
    let mut lone = stall(addr, &body_head).await;
    let start = Instant::now();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), lone.read_to_end(&mut raw))
        .await
        .expect("the stalled body timed out")
        .expect("read");
    let a: Answer = support::raw::parse(&raw);
    assert_eq!(a.status, 408, "{a:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // A body over the cap is refused before it is sent.
    let mut big = stall(
        addr,
        &format!(
            "POST /verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        ),
    )
    .await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), big.read_to_end(&mut raw))
        .await
        .expect("refused at once")
        .expect("read");
    assert_eq!(support::raw::parse(&raw).status, 413);
    // So is a head over its cap.
    let long = format!("X-Filler: {}", "a".repeat(20 * 1024));
    let a = send(addr, "GET", "/status", &[&host(addr), &long], "").await;
    assert_eq!(a.status, 431, "{a:?}");
    // Every stalled connection's task ended with it.
    drop(big);
    drop(lone);
    tasks_settle_to(
        sidecar.metrics,
        tasks_idle,
        Duration::from_secs(10),
        "after the stalled bodies",
    )
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_takes_over_without_a_restart() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let token_file = ws.write("admin-token", &format!("{TOKEN}\n"));
    let text = config(&proxy.url(), up.port())
        .admin(|a| a.token_file("admin-token"))
        .reload_poll("100ms")
        .drain("0s");
    let cfg = ws.config(&text);
    assert!(
        cfg.files.iter().any(|(p, _)| p == &token_file),
        "the token file is not watched: {:?}",
        cfg.files
    );
    let sidecar = Running::start(cfg).await;
    // The sidecar takes its reference of the files as it starts: rotate
    // after that (its first probes are done by then).
    settled(&sidecar, &proxy).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = host(sidecar.admin);
    let post = |token: &'static str| {
        let h = h.clone();
        let addr = sidecar.admin;
        async move {
            let bearer = format!("Authorization: Bearer {token}");
            send(
                addr,
                "POST",
                "/routes/apns",
                &[&h, "Content-Type: application/json", &bearer],
                r#"{"force":"auto"}"#,
            )
            .await
            .status
        }
    };
    assert_eq!(post(TOKEN).await, 200);
    const NEXT: &str = "fedcba9876543210-rotated-token";
    // A Secret update, as the kubelet writes it: a new file in place.
    let tmp = ws.write("admin-token.new", &format!("{NEXT}\n"));
    std::fs::rename(&tmp, &token_file).expect("swap the token file");
    eventually(
        Duration::from_secs(10),
        "the new token accepted",
        || async { (post(NEXT).await == 200).then_some(()) },
    )
    .await;
    assert_eq!(post(TOKEN).await, 403, "the old token still works");
    sidecar.stop().await;
}

#[test]
fn a_weak_or_unreadable_token_file_is_a_config_error_that_never_shows_the_token() {
    let ws = Workspace::new();
    ws.write("short", "abc123\n");
    ws.write("two-lines", "0123456789abcdef\nmore-0123456789\n");
    for (file, why) in [
        ("short", "at least 16 visible characters"),
        ("two-lines", "at least 16 visible characters"),
        ("missing", "cannot open"),
    ] {
        let text = format!("[admin]\ntoken_file = \"{file}\"\n");
        let p = ws.write("config.toml", &text);
        let e = egress_sentinel::config::Config::load(&p)
            .expect_err(file)
            .to_string();
        assert!(
            e.contains("admin.token_file") && e.contains(why),
            "{file}: {e}"
        );
        assert!(!e.contains("abc123") && !e.contains("more-0123"), "{e}");
    }
    let p = ws.write("config.toml", "[admin]\nhosts = [\"http://evil:1/\"]\n");
    let e = egress_sentinel::config::Config::load(&p)
        .expect_err("hosts")
        .to_string();
    assert!(
        e.contains("admin.hosts") && e.contains("not a host name"),
        "{e}"
    );
}
