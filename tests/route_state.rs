//! The one owner of route state, driven through its public handle: a burst
//! of app observations while probes run (nothing lost, memory bounded by
//! merging, the same verdicts as one by one), and a snapshot held through
//! a reload and a failover (one consistent moment).

mod support;

use std::time::Duration;

use egress_sentinel::generation::{Generation, real_prober};
use egress_sentinel::health::{
    HealthSettings, HostPort, Level, Observation, RouteState, RouteTable, TargetSpec, TrafficResult,
};
use egress_sentinel::incidents::IncidentLog;
use egress_sentinel::probe::ProbeOutcome;
use egress_sentinel::reason::{FailureReason, Phase};
use egress_sentinel::sidecar::runtime::{INBOX_CAPACITY, Runtime};
use egress_sentinel::telemetry::Metrics;
use support::Workspace;
use support::config::{Route, Target, Toml};
use tokio::time::Instant;

/// Push via the provider or direct, judged on fall/rise 2 and 3 failures
/// in 10 for degraded.
fn config() -> Toml {
    Toml::new()
        .probe(|p| p.fall(2).rise(2).degraded_window(10).degraded_failures(3))
        .route(Route::proxy("provider", "http://proxy.test:3128"))
        .target(Target::new("apns", "https://api.push.apple.com/").routes(&["provider", "direct"]))
}

fn start(ws: &Workspace, toml: Toml, id: u64) -> std::sync::Arc<Runtime> {
    let config = ws.config(toml);
    Runtime::start(
        Generation::build(id, config, &real_prober()),
        IncidentLog::in_memory(),
        Metrics::new(Duration::from_secs(3600)),
    )
}

fn traffic(i: usize) -> TrafficResult {
    // Runs of one outcome: 300 tunnels, then a refusal by a dead proxy
    // (one at a time: fall/rise never trips), and now and then a tunnel to
    // another host (which counts for nothing).
    let failure = (i % 301 == 300).then(|| {
        (
            FailureReason::ProxyConnect,
            "connecting to proxy: refused".to_string(),
        )
    });
    let host = if i % 1000 == 999 {
        "www.apple.com"
    } else {
        "api.push.apple.com"
    };
    TrafficResult {
        target: "apns".into(),
        route: "provider".into(),
        destination: HostPort::new(host, 443),
        failure,
    }
}

fn probe(i: usize) -> ProbeOutcome {
    let mut o = if i % 2 == 1 {
        ProbeOutcome::observed("apns", "provider", FailureReason::HttpStatus, "HTTP 500")
    } else {
        ProbeOutcome::observed("apns", "provider", FailureReason::Ok, "HTTP 403")
    };
    if !o.ok {
        o.failed_phase = Some(Phase::FirstByte);
    }
    o
}

#[tokio::test]
async fn a_burst_of_ten_thousand_app_observations_loses_no_probe_and_judges_as_one_by_one() {
    let ws = Workspace::new();
    let rt = start(&ws, config(), 1);
    // The same sequence, fed one by one to a table of our own.
    let mut alone = RouteTable::new(
        HealthSettings {
            fall: 2,
            rise: 2,
            hold_down: Duration::from_secs(10),
            hold_down_max: Duration::from_secs(300),
            degraded_window: 10,
            degraded_failures: 3,
        },
        &[TargetSpec {
            name: "apns".into(),
            routes: vec![("provider".into(), false), ("direct".into(), true)],
            probe: HostPort::new("api.push.apple.com", 443),
            failover_on_degraded: true,
        }],
    );
    let now = Instant::now();
    let mut probes = 0usize;
    // How far behind the inbox the published route state runs: from a
    // probe's send to the snapshot that shows it (its acknowledgement).
    let mut lag = Duration::ZERO;
    for i in 0..10_000 {
        let t = traffic(i);
        alone.observe(now, Observation::Traffic(t.clone()));
        rt.report_traffic(t).await;
        // Probes run meanwhile; between two, more app observations than
        // the inbox holds.
        if i % 2000 == 0 {
            let o = probe(probes);
            probes += 1;
            alone.observe(now, Observation::Probe(Box::new(o.clone())));
            let sent = Instant::now();
            rt.record_probe(o, true).await;
            lag = lag.max(sent.elapsed());
        }
    }
    // A probe after the burst: acknowledged once everything before it was
    // applied (the inbox keeps order).
    let last = probe(probes);
    alone.observe(now, Observation::Probe(Box::new(last.clone())));
    rt.record_probe(last, true).await;

    eprintln!(
        "snapshot lag behind a full inbox ({INBOX_CAPACITY} messages): at most {lag:?}; {} observations merged",
        rt.merged_observations()
    );
    assert!(
        lag < Duration::from_secs(2),
        "the route state ran {lag:?} behind its inbox"
    );
    assert!(
        rt.merged_observations() > 0,
        "the burst filled the inbox ({INBOX_CAPACITY}) and identical observations were merged"
    );
    let snapshot = rt.snapshot();
    let (got, want) = (
        &snapshot.table.targets["apns"].routes[0],
        &alone.targets["apns"].routes[0],
    );
    // No probe lost, none reordered: every level's streaks and window
    // (the answer level is fed by probes alone) are those of the sequence
    // fed one by one.
    for level in Level::ALL {
        let (g, w) = (got.level(level), want.level(level));
        assert_eq!(g.healthy, w.healthy, "{level}");
        assert_eq!(g.consecutive_ok, w.consecutive_ok, "{level}");
        assert_eq!(g.consecutive_fail, w.consecutive_fail, "{level}");
        assert_eq!(g.recent, w.recent, "{level}");
        assert_eq!(g.degraded, w.degraded, "{level}");
    }
    assert_eq!(got.healthy(), want.healthy());
    assert_eq!(got.degraded(), want.degraded());
    assert_eq!(
        snapshot.table.targets["apns"].active_route(),
        alone.targets["apns"].active_route()
    );
    assert!(
        got.degraded(),
        "one probe in three answered 500: degraded at the answer level"
    );
}

#[tokio::test]
async fn a_snapshot_held_through_a_reload_and_a_failover_stays_one_moment() {
    let ws = Workspace::new();
    let rt = start(&ws, config(), 1);
    rt.record_probe(probe(0), true).await;
    let ok = ProbeOutcome::observed("apns", "direct", FailureReason::Ok, "HTTP 403");
    rt.record_probe(ok, false).await;
    let before = rt.snapshot();

    // A reload adds a backup proxy; then the provider fails twice: failover.
    let next = config()
        .edit_target("apns", |t| t.routes(&["provider", "backup", "direct"]))
        .route(Route::proxy("backup", "http://backup.test:3128"));
    rt.install(Generation::build(2, ws.config(&next), &real_prober()))
        .await;
    for _ in 0..2 {
        let down = ProbeOutcome::observed(
            "apns",
            "provider",
            FailureReason::ProxyUpstreamError,
            "CONNECT -> 502",
        );
        rt.record_probe(down, true).await;
    }
    let after = rt.snapshot();

    // The old snapshot: generation 1, its routes and states as they were.
    assert_eq!(before.generation, 1);
    assert_eq!(
        before.routes_to_try("apns"),
        Some(vec!["provider".to_string(), "direct".to_string()])
    );
    assert_eq!(before.state("apns", "provider"), Some(RouteState::Healthy));
    assert_eq!(before.state("apns", "backup"), None);
    assert!(!before.broken("apns", "provider"));
    assert_eq!(before.active_route("apns"), Some("provider"));
    // The new one: generation 2, the failover, the new route not yet probed.
    assert_eq!(after.generation, 2);
    assert_eq!(after.state("apns", "provider"), Some(RouteState::Failing));
    assert_eq!(
        after.state("apns", "backup"),
        Some(RouteState::NotYetProbed)
    );
    assert_eq!(after.active_route("apns"), Some("backup"));
    assert_eq!(
        after.routes_to_try("apns"),
        Some(vec![
            "backup".to_string(),
            "provider".to_string(),
            "direct".to_string()
        ])
    );
    assert!(after.broken("apns", "provider"));
    assert!(after.taken >= before.taken);
    rt.stop().await.expect("stopped");
}

#[tokio::test]
async fn a_probe_loop_that_takes_its_waker_at_once_is_woken_by_a_failing_app_connection() {
    let ws = Workspace::new();
    let rt = start(&ws, config(), 1);
    // Taken before the owner ran at all (the scheduler starts right away).
    let wake = rt
        .snapshot()
        .waker("apns", "provider")
        .expect("scheduled at start");
    let mut dead = traffic(0);
    dead.failure = Some((FailureReason::ProxyConnect, "connect: refused".into()));
    rt.report_traffic(dead).await;
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("the probe loop is woken by the app's failure");
}
