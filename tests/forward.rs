//! The app's forward proxy: failover before the tunnel stands (zero failed
//! requests for a target that may go direct), clear errors for one that may
//! not, fail-back, the open-proxy guard, malformed requests, descriptor
//! hygiene, and the operator override.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Workspace;
use support::app::{ProxyRefusal, get_via};
use support::proxy::{Mode, ScriptProxy};
use support::scenario::{config, upstream};
use support::sidecar::{Running, eventually, request, sample};
use support::upstream::Opts;

type Log = Arc<
    Mutex<
        Vec<(
            Instant,
            &'static str,
            Result<u16, Result<ProxyRefusal, String>>,
        )>,
    >,
>;

/// Sends a request to each upstream every 50 ms until `stop`.
fn app(
    proxy: std::net::SocketAddr,
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::default();
    let l = log.clone();
    let task = tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let (a, s) = tokio::join!(
                get_via(proxy, "push.test", port),
                get_via(proxy, "sms.test", port)
            );
            let now = Instant::now();
            l.lock().expect("lock").push((now, "apns", a));
            l.lock().expect("lock").push((now, "sms", s));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (log, task)
}

#[derive(Clone, Copy, Debug)]
enum Break {
    Status502,
    Refused,
    Hang,
}

async fn incident(kind: Break) {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    eventually(Duration::from_secs(5), "healthy", || async {
        let s = sidecar.status().await;
        (s["targets"][0]["routes"][0]["healthy"] == true
            && s["targets"][1]["routes"][0]["healthy"] == true)
            .then_some(())
    })
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (log, task) = app(sidecar.proxy, up.port(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let broke = Instant::now();
    match kind {
        Break::Status502 => proxy.set_mode(Mode::Status(502, "Bad Gateway")),
        Break::Refused => proxy.refuse_connections(),
        Break::Hang => proxy.set_mode(Mode::Hang),
    }
    eventually(Duration::from_secs(5), "failover to direct", || async {
        (sidecar.status().await["targets"][0]["active_route"] == "direct").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fixed = Instant::now();
    match kind {
        Break::Refused => proxy.accept_connections().await,
        _ => proxy.set_mode(Mode::Tunnel),
    }
    eventually(Duration::from_secs(5), "fail-back to the proxy", || async {
        let s = sidecar.status().await;
        (s["targets"][0]["active_route"] == "provider"
            && s["targets"][1]["routes"][0]["healthy"] == true)
            .then_some(())
    })
    .await;
    let back = Instant::now();
    // After fail-back the app's connections go through the proxy again.
    // (Counted by route: probes of the direct route share the upstream.)
    let count = |m: &str, route: &str| {
        sample(
            m,
            "egress_forward_connections_total",
            &[("target", "apns"), ("route", route), ("result", "ok")],
        )
        .unwrap_or(0.0)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = sidecar.metrics_text().await;
    let (direct_then, proxy_then) = (count(&m, "direct"), count(&m, "provider"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = sidecar.metrics_text().await;
    assert_eq!(
        count(&m, "direct"),
        direct_then,
        "{kind:?}: app traffic still goes direct after fail-back"
    );
    assert!(
        count(&m, "provider") > proxy_then,
        "{kind:?}: app traffic did not return to the proxy"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    task.await.expect("app");

    let log = log.lock().expect("lock").clone();
    let apns: Vec<_> = log.iter().filter(|(_, t, _)| *t == "apns").collect();
    assert!(
        apns.len() > 20,
        "the app sent too few requests: {}",
        apns.len()
    );
    for (_, _, r) in &apns {
        assert_eq!(
            r,
            &Ok(200),
            "{kind:?}: a push request failed although direct is allowed"
        );
    }
    let sms_during: Vec<_> = log
        .iter()
        .filter(|(t, n, _)| *n == "sms" && *t > broke + Duration::from_millis(700) && *t < fixed)
        .collect();
    assert!(!sms_during.is_empty());
    let (want_status, want_reason) = match kind {
        Break::Status502 => (502, "proxy_upstream_error"),
        Break::Refused => (502, "proxy_connect"),
        Break::Hang => (504, "proxy_timeout"),
    };
    for (_, _, r) in &sms_during {
        let Err(Ok(refusal)) = r else {
            panic!("{kind:?}: sms should get a proxy error, got {r:?}");
        };
        assert_eq!(refusal.status, want_status, "{refusal:?}");
        let ps = refusal
            .proxy_status
            .as_deref()
            .expect("Proxy-Status header");
        assert!(ps.starts_with("egress-sentinel; error="), "{ps}");
        assert!(ps.contains(want_reason), "{ps}");
        assert!(
            refusal.body.contains("- provider: ") && refusal.body.contains("- direct: not allowed"),
            "{}",
            refusal.body
        );
    }
    // Which way did connections reach the upstream? Through the proxy they
    // come from 127.0.0.2, directly from 127.0.0.1.
    let seen = up.requests();
    let direct = seen
        .iter()
        .filter(|r| r.peer.ip().to_string() == "127.0.0.1")
        .count();
    assert!(direct > 0, "{kind:?}: nothing went direct");
    let m = sidecar.metrics_text().await;
    assert!(
        sample(
            &m,
            "egress_forward_connections_total",
            &[("target", "apns"), ("route", "direct"), ("result", "ok")]
        )
        .is_some_and(|n| n > 0.0)
    );
    assert!(
        sample(
            &m,
            "egress_forward_connections_total",
            &[
                ("target", "sms"),
                ("route", "provider"),
                ("result", "failed")
            ]
        )
        .is_some_and(|n| n > 0.0)
    );
    eprintln!("{kind:?}: fail-back {:?} after the fix", back - fixed);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answering_502_loses_no_push_request_and_sms_gets_a_clear_502() {
    incident(Break::Status502).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refusing_connections_loses_no_push_request() {
    incident(Break::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_hanging_loses_no_push_request_and_sms_gets_504() {
    incident(Break::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_an_open_proxy() {
    let up = upstream().await;
    let mut decoy = Opts::new("decoy.test");
    decoy.bind = "127.0.0.2:0".parse().expect("addr");
    let decoy = decoy.start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let text = config(&proxy.url(), up.port()).forward(|f| f.allow_ports(&[443, decoy.port()]));
    let sidecar = Running::start(ws.config(&text)).await;
    let refused = |r: Result<u16, Result<ProxyRefusal, String>>| match r {
        Err(Ok(p)) => p,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A port that is neither the target's nor allowed.
    let r = refused(get_via(sidecar.proxy, "push.test", 25).await);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("port 25 is not allowed"), "{}", r.body);
    // A host that matches no target, with default = "deny".
    let r = refused(get_via(sidecar.proxy, "evil.test", 443).await);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("matches no target"), "{}", r.body);
    // Address literals in denied ranges, on any route.
    let r = refused(get_via(sidecar.proxy, "169.254.169.254", 443).await);
    assert_eq!(r.status, 403);
    // A listed name that resolves to a denied loopback address: the proxy
    // route is forced off so the only way is direct, which the policy refuses.
    let (code, _) = request(sidecar.admin, "POST", "/routes/apns?force=direct").await;
    assert_eq!(code, 200);
    let r = refused(get_via(sidecar.proxy, "decoy.test", decoy.port()).await);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body.contains("policy_denied") && r.body.contains("127.0.0.2 is loopback"),
        "{}",
        r.body
    );
    assert_eq!(decoy.connections(), 0, "the decoy was dialed");
    let m = sidecar.metrics_text().await;
    let refused = |target| {
        sample(
            &m,
            "egress_forward_connections_total",
            &[("target", target), ("route", "none"), ("result", "refused")],
        )
    };
    assert_eq!(refused("apns"), Some(1.0), "port 25:\n{m}");
    assert_eq!(
        refused("_unmatched"),
        Some(2.0),
        "evil.test and the metadata literal:\n{m}"
    );
    assert!(
        proxy
            .received()
            .iter()
            .all(|c| !c.authority.starts_with("169.254")),
        "relayed to the metadata address"
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_override_forces_a_route_where_policy_allows_it() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    let (code, body) = request(sidecar.admin, "POST", "/routes/apns?force=direct").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"active_route\":\"direct\""), "{body}");
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    // Probes share the upstream, so count the app's connection by route.
    let m = sidecar.metrics_text().await;
    let direct_ok = [("target", "apns"), ("route", "direct"), ("result", "ok")];
    assert_eq!(
        sample(&m, "egress_forward_connections_total", &direct_ok),
        Some(1.0)
    );
    let s = sidecar.status().await;
    assert_eq!(s["targets"][0]["force"], "direct");
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_route_active",
            &[("target", "apns"), ("route", "direct")]
        ),
        Some(1.0)
    );
    // SMS may not go direct, whatever the operator says.
    let (code, body) = request(sidecar.admin, "POST", "/routes/sms?force=direct").await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        request(sidecar.admin, "POST", "/routes/nope?force=auto")
            .await
            .0,
        404
    );
    assert_eq!(
        request(sidecar.admin, "POST", "/routes/apns?force=sideways")
            .await
            .0,
        400
    );
    let (code, _) = request(sidecar.admin, "POST", "/routes/apns?force=auto").await;
    assert_eq!(code, 200);
    eventually(Duration::from_secs(3), "back on the proxy", || async {
        (sidecar.status().await["targets"][0]["active_route"] == "provider").then_some(())
    })
    .await;
    // The app's own Proxy-Authorization never reaches the provider's proxy.
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    assert!(proxy.received().iter().all(|c| c.authorization.is_none()));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_but_lets_an_open_tunnel_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let text = config(&proxy.url(), up.port()).shutdown("0s", "5s");
    let mut sidecar = Running::start(ws.config(&text)).await;
    // An app tunnel, open before shutdown begins.
    let mut tunnel = tokio::net::TcpStream::connect(sidecar.proxy)
        .await
        .expect("connect");
    let connect = format!(
        "CONNECT push.test:{0} HTTP/1.1\r\nHost: push.test:{0}\r\n\r\n",
        up.port()
    );
    tunnel.write_all(connect.as_bytes()).await.expect("write");
    let mut head = [0u8; 39];
    tunnel.read_exact(&mut head).await.expect("200");
    assert!(head.starts_with(b"HTTP/1.1 200 Connection established"));
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_forward_active_connections",
            &[("route", "provider")]
        ),
        Some(1.0),
        "{m}"
    );

    let stopping = Instant::now();
    let done = sidecar.begin_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections...
    assert!(
        tokio::net::TcpStream::connect(sidecar.proxy).await.is_err(),
        "the forward proxy still accepts during shutdown"
    );
    // ...but the open tunnel still carries bytes (a TLS ClientHello gets an answer).
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new({
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::pem::PemObject::from_pem_slice(
                    support::pki::ca().cert_pem.as_bytes(),
                )
                .expect("ca"),
            )
            .expect("root");
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }));
    let name = rustls::pki_types::ServerName::try_from("push.test").expect("name");
    let stream = tls
        .connect(name, tunnel)
        .await
        .expect("TLS through the draining tunnel");
    drop(stream);
    // Once it closes, the sidecar finishes well before the 5 s deadline.
    tokio::time::timeout(Duration::from_secs(3), done)
        .await
        .expect("stopped after the tunnel closed");
    assert!(stopping.elapsed() < Duration::from_secs(4));
}
