//! The scheduler under tokio's paused clock: a scripted sequence of outcomes
//! gives exact probe times (interval when healthy, unhealthy_interval while
//! failing or recovering), exact route changes and exact incident bounds.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_sentinel::config::{Route, Target};
use egress_sentinel::generation::{Generation, ProberFactory};
use egress_sentinel::incidents::IncidentLog;
use egress_sentinel::probe::ProbeOutcome;
use egress_sentinel::probe::ProbeRunner;
use egress_sentinel::reason::FailureReason;
use egress_sentinel::sidecar::runtime::Runtime;
use egress_sentinel::sidecar::scheduler;
use egress_sentinel::telemetry::Metrics;
use support::Workspace;
use tokio::time::Instant;

/// Answers from a script per route; records when each probe ran.
struct Script {
    start: Instant,
    provider: Mutex<Vec<bool>>,
    calls: Mutex<Vec<(String, Duration)>>,
}

impl ProbeRunner for Script {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>> {
        Box::pin(async move {
            self.calls
                .lock()
                .expect("lock")
                .push((route.name.clone(), self.start.elapsed()));
            let ok = if route.name == "provider" {
                let mut s = self.provider.lock().expect("lock");
                if s.is_empty() { true } else { s.remove(0) }
            } else {
                true
            };
            let (reason, detail) = if ok {
                (FailureReason::Ok, "HTTP 403")
            } else {
                (
                    FailureReason::ProxyUpstreamError,
                    "CONNECT api.push.apple.com:443 -> 502 Bad Gateway",
                )
            };
            ProbeOutcome::observed(&target.name, &route.name, reason, detail)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn probe_times_route_changes_and_incident_follow_the_script() {
    let ws = Workspace::new();
    let config = ws.config(
        r#"
[probe]
interval = "10s"
unhealthy_interval = "2s"
fall = 2
rise = 2
# Fall/rise timing alone: three failures must not also make it degraded.
degraded_failures = 10

[[route]]
name = "provider"
proxy = "http://proxy.test:3128"

[[target]]
name = "apns"
url = "https://api.push.apple.com/"
routes = ["provider", "direct"]
"#,
    );
    let script = Arc::new(Script {
        start: Instant::now(),
        // ok at 0 and ~10 s; fails from ~20 s; recovers two probes later.
        provider: Mutex::new(vec![true, true, false, false, false, true, true, true]),
        calls: Mutex::new(Vec::new()),
    });
    let prober = script.clone();
    let factory: ProberFactory =
        Arc::new(move |_: &_, _: &_| prober.clone() as Arc<dyn ProbeRunner>);
    let shared = Runtime::start(
        Generation::build(1, config, &factory),
        IncidentLog::in_memory(),
        Metrics::new(Duration::from_secs(3600)),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut probes = scheduler::spawn(&shared, &stop_rx);

    let mut active = Vec::new();
    let mut windows = Vec::new();
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = script.start.elapsed();
        let snapshot = shared.snapshot();
        let a = snapshot.active_route("apns").expect("target").to_string();
        if active
            .last()
            .map(|(r, _): &(String, Duration)| r != &a)
            .unwrap_or(true)
        {
            active.push((a, now));
        }
        let open = snapshot
            .incidents
            .iter()
            .filter(|w| w.end.is_none())
            .count();
        if windows.last().map(|(o, _)| *o != open).unwrap_or(true) {
            windows.push((open, now));
        }
    }
    let _ = stop_tx.send(true);
    while probes.join_next().await.is_some() {}

    let calls = script.calls.lock().expect("lock").clone();
    let provider: Vec<Duration> = calls
        .iter()
        .filter(|(r, _)| r == "provider")
        .map(|(_, t)| *t)
        .collect();
    let gaps: Vec<f64> = provider
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let expected = [10.0, 10.0, 2.0, 2.0, 2.0, 2.0, 10.0];
    assert!(
        provider[0] < Duration::from_millis(1),
        "first round at start-up: {provider:?}"
    );
    for (i, want) in expected.iter().enumerate() {
        let got = gaps[i];
        assert!(
            (got - want).abs() <= want * 0.1 + 1e-6,
            "gap {i}: {got} s, want {want} s ±10 %: {gaps:?}"
        );
    }
    // The second failure (4th probe) moves traffic to direct; the second
    // success after it (7th probe) brings it back.
    let at = |i: usize| provider[i];
    assert_eq!(active[0].0, "provider");
    assert_eq!(active[1].0, "direct");
    assert!(
        active[1].1 >= at(3) && active[1].1 < at(3) + Duration::from_millis(300),
        "{active:?} {provider:?}"
    );
    assert_eq!(active[2].0, "provider");
    assert!(
        active[2].1 >= at(6) && active[2].1 < at(6) + Duration::from_millis(300),
        "{active:?} {provider:?}"
    );
    assert_eq!(active.len(), 3, "no bouncing: {active:?}");
    // One incident window: open from the 4th probe to the 7th.
    assert_eq!(
        windows.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [0, 1, 0]
    );
    assert!(windows[1].1 >= at(3) && windows[1].1 < at(3) + Duration::from_millis(300));
    assert!(windows[2].1 >= at(6) && windows[2].1 < at(6) + Duration::from_millis(300));
    // The direct route, always healthy, is probed on the healthy interval.
    let direct: Vec<Duration> = calls
        .iter()
        .filter(|(r, _)| r == "direct")
        .map(|(_, t)| *t)
        .collect();
    for w in direct.windows(2) {
        let gap = (w[1] - w[0]).as_secs_f64();
        assert!((9.0..=11.0).contains(&gap), "direct gap {gap}");
    }
}
