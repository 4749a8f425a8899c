//! The probe against real Squid (Debian's package) on loopback: an allowed
//! CONNECT succeeds, a `dstdomain` deny is `proxy_denied` with Squid's 403,
//! and an upstream port with nothing behind it is `proxy_upstream_error`.
//!
//! The fault matrix's Squid rows, with a running sidecar: Squid killed and
//! restarted on its port (`proxy_connect`, failover with no failed push
//! request, fail-back, the direct tunnel closed after the grace); Squid frozen by
//! SIGSTOP (its kernel still accepts, nothing answers) is `proxy_timeout`
//! within the probe timeout and push fails over; Squid reconfigured while
//! it runs — a deny rule, then authentication, then a dead parent — is
//! named `proxy_denied`, `proxy_auth_required`, `proxy_upstream_error` with
//! Squid's status line. Each ends with the sidecar's descriptors back where
//! they were and a clean exit.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use egress_sentinel::reason::{FailureReason, Phase};
use support::app::{KeptTunnel, get_via};
use support::config::{Route, Target, Toml};
use support::sidecar::{eventually, request, sample, tasks_at_rest, tasks_settle_to};
use support::spawned::Spawned;
use support::squid::{self, Squid};
use support::upstream::Opts;
use support::{Workspace, check_all};

/// Squid at `proxy` as the one route, with generous timeouts.
fn config(proxy: &str) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("8s"))
        .route(Route::proxy("squid", proxy).connect_timeout("8s"))
}

#[tokio::test]
async fn squid_tunnels_allowed_names_refuses_denied_ones_and_reports_dead_upstreams() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = Opts::new("push.test").start().await;
    let blocked = Opts::new("blocked.test").start().await;
    let dead_port = support::free_port();
    let squid = Squid::start(bin, &["push.test", "dead.test"], &["blocked.test"]);
    let ws = Workspace::new();
    let cfg = ws.config(
        config(&squid.url())
            .target(
                Target::new(
                    "allowed",
                    &format!("https://push.test:{}/health", up.port()),
                )
                .ca_file("ca.pem"),
            )
            .target(
                Target::new(
                    "denied",
                    &format!("https://blocked.test:{}/health", blocked.port()),
                )
                .ca_file("ca.pem"),
            )
            .target(
                Target::new("dead", &format!("https://dead.test:{dead_port}/health"))
                    .ca_file("ca.pem"),
            ),
    );
    let results = check_all(&cfg).await;
    let by = |name: &str| {
        results
            .iter()
            .find(|o| o.target == name)
            .unwrap_or_else(|| panic!("no result for {name}"))
    };

    let ok = by("allowed");
    assert_eq!(
        ok.reason,
        FailureReason::Ok,
        "{}\nsquid log:\n{}",
        ok.detail,
        squid.log()
    );
    assert_eq!(ok.connect_status, Some(200));
    assert_eq!(up.requests().len(), 1);

    let denied = by("denied");
    assert_eq!(
        denied.reason,
        FailureReason::ProxyDenied,
        "{}",
        denied.detail
    );
    assert_eq!(denied.connect_status, Some(403));
    assert_eq!(denied.failed_phase, Some(Phase::Tunnel));
    assert!(denied.detail.contains("403 Forbidden"), "{}", denied.detail);
    assert!(
        denied.detail.contains("X-Squid-Error: ERR_ACCESS_DENIED"),
        "{}",
        denied.detail
    );
    assert_eq!(
        blocked.connections(),
        0,
        "squid let a denied CONNECT through"
    );

    let dead = by("dead");
    assert_eq!(
        dead.reason,
        FailureReason::ProxyUpstreamError,
        "{}",
        dead.detail
    );
    assert!(
        dead.connect_status.is_some_and(|s| (500..600).contains(&s)),
        "{:?}",
        dead.connect_status
    );
}

/// The sidecar's config for the fault rows: push may go direct, SMS only
/// through Squid; probes time out after 1 s. Every listener on port 0.
fn running_config(squid: &str, port: u16) -> String {
    Toml::new()
        .daemon("2s")
        .probe(|p| p.timings("1s", "200ms", "1s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("sms.test", "127.0.0.1")
        .route(Route::proxy("squid", squid).connect_timeout("500ms"))
        .target(
            Target::new("apns", &format!("https://push.test:{port}/"))
                .routes(&["squid", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .target(
            Target::new("sms", &format!("https://sms.test:{port}/"))
                .routes(&["squid"])
                .ca_file("ca.pem"),
        )
        .forward(|f| f.deny_unmatched().failback_grace("1s"))
        .to_string()
}

/// One TLS upstream answering for push.test and sms.test.
async fn upstream() -> support::upstream::Upstream {
    let leaf = support::pki::ca().server(&["push.test", "sms.test"], false);
    Opts::new("push.test").leaf(leaf).start().await
}

/// The binary, run on `running_config`, with its listeners found.
struct Sidecar {
    process: Spawned,
    metrics: SocketAddr,
    admin: SocketAddr,
    proxy: SocketAddr,
}

/// Descriptors and live tasks at rest.
#[derive(Debug, Clone, Copy)]
struct Rest {
    fds: u64,
    tasks: f64,
}

impl Sidecar {
    /// Its descriptors and live tasks now, once they hold still.
    async fn rest(&self) -> Rest {
        Rest {
            fds: self.process.steady_fds().await,
            tasks: tasks_at_rest(self.metrics).await,
        }
    }

    /// Waits until its descriptors and live tasks are back to `rest`.
    async fn settles(&self, rest: Rest, what: &str) {
        let within = Duration::from_secs(10);
        self.process.fds_settle_to(rest.fds, within, what).await;
        tasks_settle_to(self.metrics, rest.tasks, within, what).await;
    }

    async fn start(ws: &Workspace, squid: &Squid, port: u16) -> Self {
        let path = ws.write("config.toml", &running_config(&squid.url(), port));
        let s = support::spawned::Sidecar::start(&path).await;
        Self {
            process: s.process,
            metrics: s.metrics,
            admin: s.admin,
            proxy: s.proxy,
        }
    }

    async fn metrics(&self) -> String {
        request(self.metrics, "GET", "/metrics").await.1
    }

    fn gauge(m: &str, name: &str, target: &str, route: &str) -> Option<f64> {
        sample(m, name, &[("target", target), ("route", route)])
    }

    /// Waits until `want` holds for the metrics text; returns when the
    /// last scrape that did not see it started (it came true after that).
    async fn until(&self, what: &str, want: impl Fn(&str) -> bool) -> Instant {
        let missed = std::cell::Cell::new(Instant::now());
        eventually(Duration::from_secs(15), what, || async {
            let polled = Instant::now();
            let seen = want(&self.metrics().await);
            if !seen {
                missed.set(polled);
            }
            seen.then(|| missed.get())
        })
        .await
    }

    /// Waits until `target`'s Squid route's current reason is `reason`,
    /// and returns its last probe from `/status`.
    async fn reason_becomes(&self, target: &str, reason: &str) -> serde_json::Value {
        let within = Duration::from_secs(15);
        eventually(within, &format!("{target} via squid: {reason}"), || async {
            let m = self.metrics().await;
            let labels = [("target", target), ("route", "squid"), ("reason", reason)];
            if sample(&m, "egress_route_reason", &labels) != Some(1.0) {
                return None;
            }
            let (_, body) = request(self.admin, "GET", "/status").await;
            let s: serde_json::Value = serde_json::from_str(&body).ok()?;
            let t = s["targets"]
                .as_array()?
                .iter()
                .find(|t| t["target"] == target)?
                .clone();
            let last = t["routes"][0]["last_probe"].clone();
            (last["reason"] == reason).then_some(last)
        })
        .await
    }

    /// SIGTERM; it must exit 0.
    async fn stop(self) {
        let (status, lines) = self.process.stop().await;
        assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    }
}

/// Squid frozen by SIGSTOP: its kernel still completes the TCP handshake
/// and queues the CONNECT, nothing answers. Probes say `proxy_timeout`
/// (not `proxy_connect`) within the 1 s timeout, push fails over to direct
/// and the app's push requests keep succeeding, SMS (proxy only) gets a
/// prompt 504; after SIGCONT the route comes back and push fails back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_frozen_by_sigstop_is_proxy_timeout_within_the_timeout_and_push_fails_over() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = upstream().await;
    let squid = Squid::start(bin, &["push.test", "sms.test"], &[]);
    let ws = Workspace::new();
    let sidecar = Sidecar::start(&ws, &squid, up.port()).await;
    let gauge = Sidecar::gauge;
    sidecar
        .until("squid healthy", |m| {
            gauge(m, "egress_route_active", "apns", "squid") == Some(1.0)
                && gauge(m, "egress_route_healthy", "sms", "squid") == Some(1.0)
        })
        .await;
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    let before = sidecar.rest().await;

    squid.signal("STOP");
    let stopped = Instant::now();
    // The one-off check (verify's path, the same dialer) times out in the
    // tunnel phase, within the timeout.
    // (Its own file: the running sidecar watches config.toml.)
    let verify = ws.write("verify.toml", &running_config(&squid.url(), up.port()));
    let cfg = egress_sentinel::config::Config::load(&verify).expect("valid");
    let outcomes = check_all(&cfg).await;
    let via_squid = outcomes
        .iter()
        .find(|o| o.target == "sms" && o.route == "squid")
        .expect("sms via squid");
    assert_eq!(
        via_squid.reason,
        FailureReason::ProxyTimeout,
        "{}",
        via_squid.detail
    );
    assert_eq!(via_squid.failed_phase, Some(Phase::Tunnel));
    assert!(
        via_squid.duration < Duration::from_millis(1500),
        "took {:?} for a 1 s timeout",
        via_squid.duration
    );

    let last = sidecar.reason_becomes("apns", "proxy_timeout").await;
    assert_eq!(last["failed_phase"], "tunnel", "{last:#}");
    sidecar
        .until("push on direct", |m| {
            gauge(m, "egress_route_active", "apns", "direct") == Some(1.0)
        })
        .await;
    let failed_over = stopped.elapsed();
    // The next scheduled probe (1 s), then fall = 2 probes of at most the
    // 1 s timeout, 200 ms apart: well within 6 s on a loaded machine.
    assert!(failed_over < Duration::from_secs(6), "{failed_over:?}");
    for _ in 0..5 {
        assert_eq!(
            get_via(sidecar.proxy, "push.test", up.port()).await,
            Ok(200)
        );
    }
    let start = Instant::now();
    match get_via(sidecar.proxy, "sms.test", up.port()).await {
        Err(Ok(refusal)) => {
            assert_eq!(refusal.status, 504, "{refusal:?}");
            let ps = refusal.proxy_status.unwrap_or_default();
            assert!(ps.contains("proxy_timeout"), "{ps}");
        }
        other => panic!("sms through a frozen squid: {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    squid.signal("CONT");
    sidecar
        .until("push back on squid", |m| {
            gauge(m, "egress_route_active", "apns", "squid") == Some(1.0)
                && gauge(m, "egress_route_healthy", "sms", "squid") == Some(1.0)
        })
        .await;
    assert_eq!(get_via(sidecar.proxy, "sms.test", up.port()).await, Ok(200));
    // Every connection that queued at the frozen squid is closed by now.
    sidecar.settles(before, "after SIGCONT").await;
    sidecar.stop().await;
}

/// An operator changes Squid's rules while the sidecar runs: a `dstdomain`
/// deny, then Basic authentication, then a parent proxy that is down. Each
/// is named with its own reason and Squid's own status line, and the route
/// recovers when the rule goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_reconfigured_to_deny_to_demand_auth_and_to_a_dead_parent_is_named_each_time() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = upstream().await;
    let hosts = ["push.test", "sms.test"];
    let mut squid = Squid::start(bin, &hosts, &[]);
    let ws = Workspace::new();
    let sidecar = Sidecar::start(&ws, &squid, up.port()).await;
    sidecar.reason_becomes("sms", "ok").await;
    let before = sidecar.rest().await;

    // The ACL now denies the SMS provider.
    squid.reconfigure(&["push.test"], &["sms.test"], &squid::Opts::default());
    let last = sidecar.reason_becomes("sms", "proxy_denied").await;
    assert_eq!(last["connect_status"], 403, "{last:#}");
    let detail = last["detail"].as_str().unwrap_or_default();
    eprintln!("denied: {detail}");
    assert!(detail.contains("403 Forbidden"), "{detail}");
    assert!(detail.contains("ERR_ACCESS_DENIED"), "{detail}");
    let m = sidecar.metrics().await;
    assert_eq!(
        Sidecar::gauge(&m, "egress_proxy_connect_status", "sms", "squid"),
        Some(403.0)
    );

    // Authentication required; the sidecar has no credentials.
    let auth = squid::Opts {
        auth: Some(("app".into(), "secret".into())),
        ..Default::default()
    };
    squid.reconfigure(&hosts, &[], &auth);
    let last = sidecar.reason_becomes("sms", "proxy_auth_required").await;
    assert_eq!(last["connect_status"], 407, "{last:#}");
    let detail = last["detail"].as_str().unwrap_or_default();
    eprintln!("auth: {detail}");
    assert!(
        detail.contains("407 Proxy Authentication Required"),
        "{detail}"
    );

    // Every request through a parent proxy that is down.
    let dead = support::free_port();
    let parent = squid::Opts {
        parent: Some(dead),
        ..Default::default()
    };
    squid.reconfigure(&hosts, &[], &parent);
    let last = sidecar.reason_becomes("sms", "proxy_upstream_error").await;
    let status = last["connect_status"].as_u64().unwrap_or(0);
    assert!((500..600).contains(&status), "{last:#}");
    let detail = last["detail"].as_str().unwrap_or_default();
    eprintln!("dead parent: {detail}");
    assert!(detail.contains(&format!("{status} ")), "{detail}");
    assert!(detail.contains("X-Squid-Error"), "{detail}");

    // The rule goes; the route comes back.
    squid.reconfigure(&hosts, &[], &squid::Opts::default());
    sidecar.reason_becomes("sms", "ok").await;
    assert_eq!(get_via(sidecar.proxy, "sms.test", up.port()).await, Ok(200));
    sidecar.settles(before, "after the rule changes").await;
    sidecar.stop().await;
}

/// Squid is killed mid-run (SIGKILL: connections refused) and started
/// again on the same port. Probes name `proxy_connect`; push fails over
/// to direct without one failed request; a tunnel the app opens meanwhile
/// goes direct; after the restart push fails back, and that direct tunnel
/// is closed `failback_grace` (1 s) later and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_killed_then_restarted_fails_over_and_back_and_closes_direct_tunnels_after_the_grace()
{
    let Some(bin) = squid::available() else {
        return;
    };
    let up = upstream().await;
    let hosts = ["push.test", "sms.test"];
    let mut squid = Squid::start(bin, &hosts, &[]);
    let port = squid.addr.port();
    let ws = Workspace::new();
    let sidecar = Sidecar::start(&ws, &squid, up.port()).await;
    let gauge = Sidecar::gauge;
    sidecar
        .until("push on squid", |m| {
            gauge(m, "egress_route_active", "apns", "squid") == Some(1.0)
        })
        .await;
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    let before = sidecar.rest().await;

    squid.kill();
    // The app keeps calling push all along: not one request fails.
    let mut results = Vec::new();
    for _ in 0..10 {
        results.push(get_via(sidecar.proxy, "push.test", up.port()).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(results.iter().all(|r| r == &Ok(200)), "{results:?}");
    let last = sidecar.reason_becomes("apns", "proxy_connect").await;
    assert_eq!(last["failed_phase"], "connect", "{last:#}");
    sidecar
        .until("push on direct", |m| {
            gauge(m, "egress_route_active", "apns", "direct") == Some(1.0)
        })
        .await;
    let mut tunnel = KeptTunnel::open(sidecar.proxy, "push.test", up.port())
        .await
        .expect("a tunnel while squid is down");
    assert_eq!(tunnel.get("/during").await, Ok(200));

    drop(squid);
    let squid = Squid::start_with(
        bin,
        &hosts,
        &[],
        &squid::Opts {
            port: Some(port),
            ..Default::default()
        },
    );
    let back = sidecar
        .until("push back on squid", |m| {
            gauge(m, "egress_route_active", "apns", "squid") == Some(1.0)
        })
        .await;
    eventually(
        Duration::from_secs(5),
        "the direct tunnel closed",
        || async { tunnel.is_closed().then_some(()) },
    )
    .await;
    assert!(
        back.elapsed() >= Duration::from_millis(700),
        "closed {:?} after fail-back, before the 1 s grace",
        back.elapsed()
    );
    let m = sidecar.metrics().await;
    let closed = sample(
        &m,
        "egress_forward_connections_total",
        &[
            ("target", "apns"),
            ("route", "direct"),
            ("result", "closed_on_failback"),
        ],
    );
    assert_eq!(closed, Some(1.0));
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    // Squid logs a tunnel when it ends.
    eventually(
        Duration::from_secs(5),
        "traffic through the restarted squid",
        || async {
            squid
                .access_log()
                .contains("CONNECT push.test:")
                .then_some(())
        },
    )
    .await;
    sidecar.settles(before, "after the restart").await;
    sidecar.stop().await;
}
