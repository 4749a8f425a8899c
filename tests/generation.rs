//! One generation at a time, and a route's health moved only by the route:
//! app traffic to bad destinations through real Squid never takes the route
//! down; a reload moves probes and new app connections together while an
//! open tunnel stays where it was; rotated proxy credentials are picked up
//! from a Secret volume's `..data` swap with no signal; fail-back closes
//! direct tunnels after the grace; a wedged scheduler fails `/healthz`; a
//! config file overwritten with garbage keeps the running generation until
//! it is fixed.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_sentinel::config::{Route, Target};
use egress_sentinel::generation::ProberFactory;
use egress_sentinel::probe::{ProbeOutcome, ProbeRunner};
use egress_sentinel::reason::FailureReason;
use egress_sentinel::sidecar::Hooks;
use support::Workspace;
use support::app::{KeptTunnel, get_via};
use support::proxy::{Mode, ScriptProxy};
use support::sidecar::{Running, eventually, request, sample};
use support::squid::{self, Squid};
use support::upstream::{Opts, Upstream};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn push_upstream(bind: SocketAddr) -> Upstream {
    let leaf = support::pki::ca().server(&["push.test", "api.push.test"], false);
    let mut opts = Opts::new("push.test").leaf(leaf);
    opts.bind = bind;
    opts.start().await
}

fn gauge(text: &str, name: &str, target: &str, route: &str) -> Option<f64> {
    sample(text, name, &[("target", target), ("route", route)])
}

/// A closed port on a `hosts`-matched name, 60 CONNECTs over 10 s, six at
/// a time, through real Squid: every one reaches Squid (its access log
/// shows them) and fails there, and the route stays healthy and active: no
/// failover, no incident; the target's own traffic keeps going through
/// Squid. Then Squid is killed: failover at the first request, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_to_a_closed_port_through_squid_never_take_the_route_down() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let closed = free_port();
    let mut squid = Squid::start(bin, &["push.test", "api.push.test"], &[]);
    let ws = Workspace::new();
    let config = ws.config(&format!(
        r#"
[probe]
interval = "1s"
unhealthy_interval = "200ms"
timeout = "2s"
fall = 2
rise = 2

[resolve]
"push.test" = "127.0.0.1"
"api.push.test" = "127.0.0.1"

[[route]]
name = "squid"
proxy = "{squid}"
connect_timeout = "500ms"

[[target]]
name = "apns"
url = "https://push.test:{port}/"
routes = ["squid", "direct"]
hosts = ["*.push.test"]
allow_addresses = ["127.0.0.1/32"]
ca_file = "ca.pem"

[forward]
default = "deny"
allow_ports = [443, {closed}]
"#,
        squid = squid.url(),
        port = up.port(),
    ));
    let sidecar = Running::start(config).await;
    eventually(Duration::from_secs(10), "squid route healthy", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_healthy", "apns", "squid") == Some(1.0)).then_some(())
    })
    .await;

    // The storm, with the target's own traffic alongside and a watcher
    // that samples the route's state all along.
    let proxy = sidecar.proxy;
    let port = up.port();
    let storm = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let round = (0..6).map(|_| get_via(proxy, "api.push.test", closed));
            for r in futures_join_all(round).await {
                statuses.push(match r {
                    Err(Ok(refusal)) => refusal.status,
                    other => panic!("a CONNECT to a closed port got {other:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        statuses
    });
    let own = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..20 {
            results.push(get_via(proxy, "push.test", port).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        results
    });
    let mut samples = 0;
    while !storm.is_finished() {
        let m = sidecar.metrics_text().await;
        assert_eq!(
            gauge(&m, "egress_route_healthy", "apns", "squid"),
            Some(1.0)
        );
        assert_eq!(gauge(&m, "egress_route_active", "apns", "squid"), Some(1.0));
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 50, "the state was watched throughout");
    let statuses = storm.await.expect("storm");
    assert_eq!(statuses.len(), 60);
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    let own = own.await.expect("own traffic");
    assert!(own.iter().all(|r| r == &Ok(200)), "{own:?}");

    // Squid writes its access log a moment later.
    let count = |log: &str, what: &str, status: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains(status))
            .count()
    };
    let storm_line = format!("CONNECT api.push.test:{closed}");
    let own_line = format!("CONNECT push.test:{port}");
    let log = eventually(Duration::from_secs(5), "squid's log lines", || async {
        let log = squid.access_log();
        (count(&log, &storm_line, "") >= 60 && count(&log, &own_line, "/200") >= 20).then_some(log)
    })
    .await;
    assert!(
        count(&log, &storm_line, "/200") == 0,
        "no storm CONNECT was tunnelled: {log}"
    );
    let m = sidecar.metrics_text().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("egress_failovers_total{") && !l.ends_with(" 0")),
        "no failover:\n{m}"
    );
    let status = sidecar.status().await;
    assert_eq!(status["incidents"], serde_json::json!([]), "no incident");

    // Now the route itself breaks: the first request fails over, none lost.
    squid.kill();
    let mut failed = Vec::new();
    for _ in 0..20 {
        let r = get_via(sidecar.proxy, "push.test", port).await;
        if r != Ok(200) {
            failed.push(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed.is_empty(), "zero failed requests: {failed:?}");
    let m = sidecar.metrics_text().await;
    assert_eq!(
        gauge(&m, "egress_route_active", "apns", "direct"),
        Some(1.0)
    );
    sidecar.stop().await;
}

/// `join_all` without a futures dependency: runs the futures concurrently.
async fn futures_join_all<F: Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

fn direct_config(port: u16, address: &str) -> String {
    format!(
        r#"
[probe]
interval = "300ms"
timeout = "2s"

[run]
reload_poll = "100ms"

[resolve]
"push.test" = "{address}"

[[target]]
name = "apns"
url = "https://push.test:{port}/"
routes = ["direct"]
allow_addresses = ["127.0.0.1/32", "127.0.0.3/32"]
ca_file = "ca.pem"

[forward]
default = "deny"
"#
    )
}

/// `[resolve]` moves push.test from upstream A (127.0.0.1) to B (127.0.0.3)
/// on the same port: the next app request and the next probe reach B; a
/// tunnel opened before the reload stays on A until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_probes_and_new_connections_together_and_open_tunnels_stay() {
    let a = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let port = a.port();
    let b = push_upstream(SocketAddr::from(([127, 0, 0, 3], port))).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(&direct_config(port, "127.0.0.1"))).await;
    eventually(Duration::from_secs(5), "a probe reached A", || async {
        (!a.requests().is_empty()).then_some(())
    })
    .await;
    let mut old = KeptTunnel::open(sidecar.proxy, "push.test", port)
        .await
        .expect("tunnel to A");
    assert_eq!(old.get("/before").await, Ok(200));
    assert!(a.requests().iter().any(|r| r.path == "/before"));
    assert!(b.requests().is_empty(), "nothing at B yet");

    ws.write("config.toml", &direct_config(port, "127.0.0.3"));
    eventually(Duration::from_secs(5), "generation 2", || async {
        let s = sidecar.status().await;
        (s["config_reload"]["generation"] == 2).then_some(())
    })
    .await;
    // The next probe reaches B (probes start at once with a new generation).
    eventually(Duration::from_secs(5), "a probe at B", || async {
        b.requests().iter().any(|r| r.path == "/").then_some(())
    })
    .await;
    // A new app connection reaches B.
    let mut new = KeptTunnel::open(sidecar.proxy, "push.test", port)
        .await
        .expect("tunnel to B");
    assert_eq!(new.get("/after").await, Ok(200));
    assert!(b.requests().iter().any(|r| r.path == "/after"));
    assert!(!a.requests().iter().any(|r| r.path == "/after"));
    // The old tunnel is still on A.
    assert_eq!(old.get("/still-a").await, Ok(200));
    assert!(a.requests().iter().any(|r| r.path == "/still-a"));
    assert!(!b.requests().iter().any(|r| r.path == "/still-a"));
    drop((old, new));
    // And probes stay on B from now on.
    let probes_at_a = a.requests().iter().filter(|r| r.path == "/").count();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        a.requests().iter().filter(|r| r.path == "/").count(),
        probes_at_a,
        "no probe went to A after the reload"
    );
    sidecar.stop().await;
}

/// Writes `..2026_<tag>/credentials` and points `..data` at it with one
/// rename, as the kubelet does for a Secret volume.
fn swap_secret(dir: &Path, tag: &str, content: &str) {
    let version = dir.join(format!("..2026_{tag}"));
    std::fs::create_dir_all(&version).expect("version dir");
    std::fs::write(version.join("credentials"), content).expect("credentials");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..2026_{tag}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

/// Squid demands Basic credentials; the provider rotates the password and
/// the Secret volume behind the credentials file is swapped. No signal: the
/// probes through the route pass again within 2 × the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_proxy_credentials_are_picked_up_from_a_secret_volume_swap() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let squid = Squid::start_with(
        bin,
        &["push.test"],
        &[],
        &squid::Opts {
            auth: Some(("egress".into(), "first-secret".into())),
            port: None,
            ..Default::default()
        },
    );
    let ws = Workspace::new();
    let secret = ws.path("secret");
    std::fs::create_dir_all(&secret).expect("secret dir");
    swap_secret(&secret, "a", "egress:first-secret\n");
    std::os::unix::fs::symlink("..data/credentials", secret.join("credentials"))
        .expect("credentials link");
    let interval = Duration::from_secs(1);
    let sidecar = Running::start(ws.config(&format!(
        r#"
[probe]
interval = "1s"
unhealthy_interval = "200ms"
timeout = "2s"

[run]
reload_poll = "100ms"

[resolve]
"push.test" = "127.0.0.1"

[[route]]
name = "squid"
proxy = "{squid}"
credentials_file = "secret/credentials"

[[target]]
name = "apns"
url = "https://push.test:{port}/"
routes = ["squid"]
ca_file = "ca.pem"
"#,
        squid = squid.url(),
        port = up.port(),
    )))
    .await;
    let success = |m: &str| gauge(m, "egress_probe_success", "apns", "squid");
    eventually(Duration::from_secs(10), "probes pass", || async {
        (success(&sidecar.metrics_text().await) == Some(1.0)).then_some(())
    })
    .await;

    squid.set_password("egress", "second-secret");
    eventually(Duration::from_secs(10), "probes get 407", || async {
        let s = sidecar.status().await;
        let reason = &s["targets"][0]["routes"][0]["last_probe"]["reason"];
        (reason == "proxy_auth_required").then_some(())
    })
    .await;
    assert!(
        squid.access_log().contains("TCP_DENIED/407"),
        "squid refused the old password: {}",
        squid.access_log()
    );

    let swapped = Instant::now();
    swap_secret(&secret, "b", "egress:second-secret\n");
    eventually(
        2 * interval + Duration::from_millis(500),
        "probes pass again",
        || async { (success(&sidecar.metrics_text().await) == Some(1.0)).then_some(()) },
    )
    .await;
    let took = swapped.elapsed();
    assert!(took <= 2 * interval, "passed again after {took:?}");
    let s = sidecar.status().await;
    assert_eq!(s["config_reload"]["generation"], 2);
    assert_eq!(s["config_reload"]["ok"], true);
    sidecar.stop().await;
}

/// The provider's proxy breaks, push goes direct and an app tunnel stays
/// open direct; the proxy is fixed, push fails back, and the direct tunnel
/// is closed `failback_grace` later, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_fail_back_a_direct_tunnel_is_closed_after_the_grace() {
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(&support::scenario::config(
        &proxy.url(),
        up.port(),
        "failback_grace = \"1s\"",
    )))
    .await;
    eventually(Duration::from_secs(5), "push on direct", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_active", "apns", "direct") == Some(1.0)).then_some(())
    })
    .await;
    let mut tunnel = KeptTunnel::open(sidecar.proxy, "push.test", up.port())
        .await
        .expect("direct tunnel");
    assert_eq!(tunnel.get("/during").await, Ok(200));

    proxy.set_mode(Mode::Tunnel);
    // The start of the last scrape that did not see the fail-back: it
    // happened after that (a busy machine may take a while to scrape).
    let missed = std::cell::Cell::new(Instant::now());
    let back = eventually(Duration::from_secs(5), "fail-back", || async {
        let polled = Instant::now();
        let m = sidecar.metrics_text().await;
        let active = gauge(&m, "egress_route_active", "apns", "provider") == Some(1.0);
        if !active {
            missed.set(polled);
        }
        active.then(|| missed.get())
    })
    .await;
    // Within the grace the tunnel still works.
    assert_eq!(tunnel.get("/grace").await, Ok(200));
    eventually(
        Duration::from_secs(3),
        "the direct tunnel closed",
        || async { tunnel.is_closed().then_some(()) },
    )
    .await;
    let after = back.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "not before the grace: {after:?}"
    );
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_forward_connections_total",
            &[
                ("target", "apns"),
                ("route", "direct"),
                ("result", "closed_on_failback")
            ]
        ),
        Some(1.0)
    );
    sidecar.stop().await;
}

/// A prober whose probes of one pair never return: the scheduler is wedged.
struct Wedged;

impl ProbeRunner for Wedged {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>> {
        Box::pin(async move {
            if route.name == "provider" {
                std::future::pending::<()>().await;
            }
            ProbeOutcome::observed(&target.name, &route.name, FailureReason::Ok, "HTTP 200")
        })
    }
}

/// `/healthz` fails once a pair's last probe is older than 3 × interval +
/// timeout, and names it; `/readyz` stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_scheduler_fails_healthz_within_the_bound() {
    let ws = Workspace::new();
    let mut config = ws.config(
        r#"
[probe]
interval = "200ms"
timeout = "300ms"

[[route]]
name = "provider"
proxy = "http://proxy.test:3128"

[[target]]
name = "apns"
url = "https://push.test/"
routes = ["provider", "direct"]
"#,
    );
    config.shutdown.drain = Duration::ZERO;
    // The wedged probe never finishes: shutdown closes it at the deadline.
    config.shutdown.deadline = Duration::from_millis(500);
    let bound = Duration::from_millis(3 * 200 + 300);
    let prober: ProberFactory = Arc::new(|_: &_, _: &_| Arc::new(Wedged) as Arc<dyn ProbeRunner>);
    let started = Instant::now();
    let sidecar = Running::start_with(
        config,
        Hooks {
            prober,
            ..Hooks::default()
        },
    )
    .await;
    let (code, _) = request(sidecar.metrics, "GET", "/healthz").await;
    assert_eq!(code, 200, "alive at start");
    let body = eventually(bound + Duration::from_secs(2), "healthz fails", || async {
        let (code, body) = request(sidecar.metrics, "GET", "/healthz").await;
        (code == 503).then_some(body)
    })
    .await;
    assert!(started.elapsed() >= bound, "not before the bound");
    assert!(body.contains("apns/provider"), "{body}");
    let (code, _) = request(sidecar.metrics, "GET", "/readyz").await;
    assert_eq!(code, 200, "readiness does not depend on it");
    sidecar.stop().await;
}

/// nginx worker exhaustion behind the proxy: every second CONNECT for the
/// probe's authority gets a 500. Fall/rise never sees it (each failure is
/// followed by a success); the degraded window does, within one window,
/// the 500s are counted as `proxy_upstream_error`, and `egress_route_healthy`
/// never flaps. When the failures stop, degraded clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connect_in_two_failing_is_degraded_without_healthy_ever_flapping() {
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let authority = format!("push.test:{}", up.port());
    let proxy = ScriptProxy::start(Mode::EverySecondFails(authority)).await;
    let ws = Workspace::new();
    let sidecar =
        Running::start(ws.config(&support::scenario::config(&proxy.url(), up.port(), ""))).await;
    eventually(Duration::from_secs(5), "first verdict", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_healthy", "apns", "provider") == Some(1.0)).then_some(())
    })
    .await;
    let started = Instant::now();
    let healthy_seen = std::sync::Mutex::new(Vec::new());
    let degraded_at = eventually(Duration::from_secs(10), "degraded", || async {
        let text = sidecar.metrics_text().await;
        healthy_seen.lock().expect("lock").push(gauge(
            &text,
            "egress_route_healthy",
            "apns",
            "provider",
        ));
        (gauge(&text, "egress_route_degraded", "apns", "provider") == Some(1.0))
            .then_some(started.elapsed())
    })
    .await;
    let healthy_seen = healthy_seen.into_inner().expect("lock");
    // Within one window of probes (10, at the 100 ms unhealthy interval
    // after the first failure, the 1 s interval before it).
    assert!(degraded_at < Duration::from_secs(5), "{degraded_at:?}");
    assert!(
        healthy_seen.iter().all(|h| *h != Some(0.0)),
        "fall/rise never flapped: {healthy_seen:?}"
    );
    let m = sidecar.metrics_text().await;
    let failures = sample(
        &m,
        "egress_probe_failures_total",
        &[
            ("target", "apns"),
            ("route", "provider"),
            ("reason", "proxy_upstream_error"),
        ],
    )
    .unwrap_or(0.0);
    assert!(
        failures >= 3.0,
        "the 500s are proxy_upstream_error: {failures}"
    );
    let s = sidecar.status().await;
    assert_eq!(s["targets"][0]["routes"][0]["degraded"], true, "{s:#}");
    // push may go direct: while degraded, its traffic does.
    assert_eq!(
        gauge(&m, "egress_route_active", "apns", "direct"),
        Some(1.0)
    );

    proxy.set_mode(Mode::Tunnel);
    eventually(Duration::from_secs(10), "degraded clears", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_degraded", "apns", "provider") == Some(0.0)
            && gauge(&m, "egress_route_active", "apns", "provider") == Some(1.0))
        .then_some(())
    })
    .await;
    sidecar.stop().await;
}

/// One bad node behind the proxy's name: `proxy.test` has two addresses
/// (from a stub nameserver on loopback), 127.0.0.4 a blackhole (never
/// answers) listed first, 127.0.0.1 the proxy.
/// The route is degraded, not down; the bad address is named in the metric
/// and the report; app traffic goes through the good node with no failed
/// request, and once a probe has named the bad node, without waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_node_behind_the_proxy_name_degrades_the_route_and_traffic_avoids_it() {
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let port = proxy.addr.port();
    let _dead = support::blackhole::Blackhole::bind(SocketAddr::from(([127, 0, 0, 4], port))).await;
    // The provider's name, answered by a nameserver of our own on loopback.
    let dns = support::stub_dns::StubDns::start().await;
    dns.set(
        "proxy.test",
        support::stub_dns::Answer::Addresses(vec![
            "127.0.0.4".parse().expect("ip"),
            "127.0.0.1".parse().expect("ip"),
        ]),
    );
    let ws = Workspace::new();
    let text = format!(
        "[dns]\nnameservers = [\"{}\"]\n{}",
        dns.addr(),
        support::scenario::config(&format!("http://proxy.test:{port}"), up.port(), "")
            .replace("connect_timeout = \"300ms\"", "connect_timeout = \"1s\"")
    );
    let sidecar = Running::start(ws.config(&text)).await;
    let good = format!("127.0.0.1:{port}");
    let bad = format!("127.0.0.4:{port}");
    let up_gauge = |m: &str, address: &str| {
        sample(
            m,
            "egress_proxy_address_up",
            &[("route", "provider"), ("address", address)],
        )
    };
    eventually(Duration::from_secs(10), "the bad node named", || async {
        let m = sidecar.metrics_text().await;
        (up_gauge(&m, &bad) == Some(0.0) && up_gauge(&m, &good) == Some(1.0)).then_some(())
    })
    .await;
    let m = sidecar.metrics_text().await;
    assert_eq!(
        gauge(&m, "egress_route_degraded", "apns", "provider"),
        Some(1.0)
    );
    assert_eq!(
        gauge(&m, "egress_route_healthy", "apns", "provider"),
        Some(1.0),
        "not down"
    );
    assert_eq!(
        gauge(&m, "egress_route_active", "apns", "provider"),
        Some(1.0)
    );
    let s = sidecar.status().await;
    let route = &s["targets"][0]["routes"][0];
    assert!(
        route["addresses_down"].to_string().contains(&bad),
        "{route:#}"
    );
    assert!(
        route["last_probe"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{bad} DOWN")),
        "{route:#}"
    );
    // The app: every request succeeds through the good node, promptly.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(
            get_via(sidecar.proxy, "push.test", up.port()).await,
            Ok(200)
        );
        assert!(
            started.elapsed() < Duration::from_millis(240),
            "the known-dead node is tried last, not first: {:?}",
            started.elapsed()
        );
    }
    assert!(
        proxy
            .received()
            .iter()
            .any(|r| r.authority == format!("push.test:{}", up.port())),
        "through the good node"
    );
    sidecar.stop().await;
}

/// The config file is overwritten with garbage while the sidecar runs (a
/// bad deploy, a half-written file, binary junk), then fixed. Each bad
/// version is rejected and the running generation keeps serving — probes
/// and app tunnels — with `egress_config_last_reload_success` 0 and the
/// error in `/status`; the fix is taken with the gauge back at 1, and the
/// sidecar's descriptors end where they began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_replaced_by_garbage_keeps_the_old_generation_until_it_is_fixed() {
    let up = push_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let ws = Workspace::new();
    let listen = "[listen]\nmetrics = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nproxy = \"127.0.0.1:0\"\n\n[shutdown]\ndrain = \"0s\"\ndeadline = \"2s\"\n";
    let good = format!("{listen}{}", direct_config(up.port(), "127.0.0.1"));
    let path = ws.write("config.toml", &good);
    let mut sidecar = support::spawned::Spawned::run(&path, &[]);
    let metrics = sidecar.addr("metrics").await;
    let admin = sidecar.addr("admin").await;
    let proxy = sidecar.addr("forward proxy").await;
    let status = || async {
        let (_, body) = request(admin, "GET", "/status").await;
        serde_json::from_str::<serde_json::Value>(&body).expect("status JSON")
    };
    let reload_gauge = || async {
        let (_, m) = request(metrics, "GET", "/metrics").await;
        sample(&m, "egress_config_last_reload_success", &[])
    };
    eventually(Duration::from_secs(5), "apns healthy", || async {
        (status().await["targets"][0]["routes"][0]["healthy"] == true).then_some(())
    })
    .await;
    assert_eq!(get_via(proxy, "push.test", up.port()).await, Ok(200));
    assert_eq!(reload_gauge().await, Some(1.0));
    let generation = status().await["config_reload"]["generation"].clone();
    let before = sidecar.steady_fds().await;

    let mut junk = b"\x7fELF\x02\x01\x01\0\0\0garbage\xff\xfe".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let bad_versions: [(&str, Vec<u8>); 4] = [
        ("binary junk", junk),
        ("an empty file", Vec::new()),
        ("half-written", good.as_bytes()[..good.len() / 2].to_vec()),
        (
            "TOML of the wrong shape",
            b"[[target]]\nname = 7\n".to_vec(),
        ),
    ];
    let mut previous = String::new();
    for (what, bytes) in bad_versions {
        std::fs::write(&path, &bytes).expect("overwrite the config");
        let s = eventually(Duration::from_secs(5), what, || async {
            let s = status().await;
            let error = s["config_reload"]["error"].as_str().unwrap_or_default();
            // This version's own error, not the previous one's.
            (s["config_reload"]["ok"] == false
                && error.contains("config.toml")
                && error != previous)
                .then_some(s)
        })
        .await;
        previous = s["config_reload"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(reload_gauge().await, Some(0.0), "{what}");
        assert_eq!(
            s["config_reload"]["generation"], generation,
            "{what}: the running generation stays"
        );
        assert_eq!(s["targets"][0]["target"], "apns", "{what}: {s:#}");
        // Still serving: a new app tunnel, and fresh probes.
        assert_eq!(
            get_via(proxy, "push.test", up.port()).await,
            Ok(200),
            "{what}"
        );
        let probes = up.requests().len();
        eventually(
            Duration::from_secs(3),
            "a probe after the bad version",
            || async { (up.requests().len() > probes).then_some(()) },
        )
        .await;
    }

    std::fs::write(&path, &good).expect("fix the config");
    eventually(Duration::from_secs(5), "the fix applied", || async {
        let s = status().await;
        (s["config_reload"]["ok"] == true).then_some(())
    })
    .await;
    assert_eq!(reload_gauge().await, Some(1.0));
    assert_eq!(get_via(proxy, "push.test", up.port()).await, Ok(200));
    sidecar
        .fds_settle_to(before, Duration::from_secs(5), "after the bad versions")
        .await;
    let (code, lines) = sidecar.stop().await;
    assert_eq!(code.code(), Some(0), "{}", lines.join("\n"));
    let rejected = lines
        .iter()
        .filter(|l| l.contains("configuration reload rejected"))
        .count();
    assert!(rejected >= 4, "each bad version logged: {rejected}");
}
