//! The route table fed tables of observations under a paused clock.

use std::time::Duration;

use super::*;

fn probe(route: &str, ok: bool) -> Observation {
    let o = if ok {
        ProbeOutcome::observed("apns", route, FailureReason::Ok, "HTTP 403")
    } else {
        ProbeOutcome::observed(
            "apns",
            route,
            FailureReason::ProxyUpstreamError,
            "CONNECT -> 502 Bad Gateway",
        )
    };
    Observation::Probe(Box::new(o))
}

fn traffic(route: &str, host: &str, port: u16, failure: Option<FailureReason>) -> Observation {
    Observation::Traffic(TrafficResult {
        target: "apns".into(),
        route: route.into(),
        destination: HostPort::new(host, port),
        failure: failure.map(|r| (r, format!("{r} for {host}"))),
    })
}

fn settings() -> HealthSettings {
    HealthSettings {
        fall: 2,
        rise: 2,
        hold_down: Duration::from_secs(10),
        hold_down_max: Duration::from_secs(60),
        degraded_window: 10,
        degraded_failures: 3,
    }
}

fn spec(routes: &[(&str, bool)]) -> TargetSpec {
    TargetSpec {
        name: "apns".into(),
        routes: routes.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        probe: HostPort::new("api.push.apple.com", 443),
        failover_on_degraded: true,
    }
}

fn table() -> RouteTable {
    RouteTable::new(
        settings(),
        &[spec(&[("provider", false), ("direct", true)])],
    )
}

fn failovers(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failover { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

fn wanted(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ProbeWanted { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn fall_rise_and_failover_follow_the_thresholds_exactly() {
    let mut b = table();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    assert!(failovers(&b.observe(t0, probe("direct", true))).is_empty());
    // First verdict on the proxy is immediate.
    let e = b.observe(t0, probe("provider", true));
    assert!(matches!(&e[..], [Event::RouteHealth { healthy: true, .. }]));
    assert_eq!(b.active_route("apns"), Some("provider"));
    // One failure is not enough.
    assert!(b.observe(t0 + s(2), probe("provider", false)).is_empty());
    assert_eq!(b.active_route("apns"), Some("provider"));
    // The second one is: down, and traffic moves to direct.
    let e = b.observe(t0 + s(4), probe("provider", false));
    assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
    match &e[0] {
        Event::RouteHealth {
            healthy,
            preferred,
            cause,
            ..
        } => {
            assert!(!healthy && *preferred);
            assert_eq!(
                cause.as_ref().map(|c| c.reason),
                Some(FailureReason::ProxyUpstreamError)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // One success is not enough to come back; two are, with no hold the first time.
    assert!(failovers(&b.observe(t0 + s(6), probe("provider", true))).is_empty());
    let e = b.observe(t0 + s(8), probe("provider", true));
    assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_flapping_route_is_held_down_for_doubling_times() {
    // Hold-down alone: a flapping route is also degraded, which here does
    // not move traffic (see the degraded tests for that).
    let mut spec = spec(&[("provider", false), ("direct", true)]);
    spec.failover_on_degraded = false;
    let mut b = RouteTable::new(settings(), &[spec]);
    let mut now = Instant::now();
    let step = Duration::from_secs(1);
    b.observe(now, probe("direct", true));
    let cycle = |b: &mut RouteTable, now: &mut Instant| -> Option<Duration> {
        for ok in [false, false, true, true] {
            *now += step;
            for e in b.observe(*now, probe("provider", ok)) {
                if let Event::RouteHealth {
                    healthy: true,
                    held_for,
                    ..
                } = e
                {
                    return held_for;
                }
            }
        }
        None
    };
    b.observe(now, probe("provider", true));
    assert_eq!(cycle(&mut b, &mut now), None, "first down: no hold");
    assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(10)));
    assert_eq!(b.active_route("apns"), Some("direct"), "held: stays direct");
    assert!(b.tick(now + Duration::from_secs(9)).is_empty());
    let e = b.tick(now + Duration::from_secs(10));
    assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
    assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(20)));
    assert_eq!(cycle(&mut b, &mut now), Some(Duration::from_secs(40)));
    assert_eq!(
        cycle(&mut b, &mut now),
        Some(Duration::from_secs(60)),
        "capped"
    );
    // Quiet for longer than the window: the count starts over.
    now += Duration::from_secs(600);
    assert_eq!(cycle(&mut b, &mut now), None);
}

#[tokio::test(start_paused = true)]
async fn with_every_route_down_the_target_is_down_on_its_preferred_route() {
    let mut b = table();
    let now = Instant::now();
    let e = b.observe(now, probe("provider", false));
    assert_eq!(
        failovers(&e),
        [("provider".into(), "direct".into())],
        "direct is not known bad yet"
    );
    let e = b.observe(now, probe("direct", false));
    assert_eq!(b.active_route("apns"), Some("provider"));
    assert!(b.targets["apns"].down);
    assert!(
        matches!(e.last(), Some(Event::Failover { down: true, .. })),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn refused_connects_to_other_destinations_only_ask_for_a_probe() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    // A flood of 502s and 403s for a subdomain that does not exist, or a
    // closed port: the route stays healthy and active, each asks for a probe.
    for i in 0..60u16 {
        let (host, port, reason) = if i % 2 == 0 {
            (
                "nope.push.apple.com",
                443,
                FailureReason::ProxyUpstreamError,
            )
        } else {
            ("api.push.apple.com", 8443, FailureReason::ProxyDenied)
        };
        let e = b.observe(now, traffic("provider", host, port, Some(reason)));
        assert_eq!(wanted(&e), 1, "{e:?}");
        assert_eq!(e.len(), 1, "nothing but a probe request: {e:?}");
    }
    let r = &b.targets["apns"].routes[0];
    assert_eq!((r.healthy(), r.consecutive_fail()), (Some(true), 0));
    assert_eq!(b.active_route("apns"), Some("provider"));
    // Our own policy refusal is not the route's business at all.
    let e = b.observe(
        now,
        traffic(
            "direct",
            "x.push.apple.com",
            443,
            Some(FailureReason::PolicyDenied),
        ),
    );
    assert!(e.is_empty(), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_about_the_route_or_on_the_probe_destination_count_at_once() {
    // The proxy unreachable, whatever the app asked for.
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    let dead = Some(FailureReason::ProxyConnect);
    b.observe(now, traffic("provider", "other.example", 443, dead));
    let e = b.observe(now, traffic("provider", "other.example", 443, dead));
    assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
    assert_eq!(wanted(&e), 1, "and the probe confirms: {e:?}");
    // A 502 on the probe's own destination (case and trailing dot aside).
    let mut b = table();
    b.observe(now, probe("provider", true));
    let bad = Some(FailureReason::ProxyUpstreamError);
    b.observe(now, traffic("provider", "API.push.apple.com.", 443, bad));
    let e = b.observe(now, traffic("provider", "api.push.apple.com", 443, bad));
    assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
}

#[tokio::test(start_paused = true)]
async fn only_a_success_on_the_probe_destination_resets_a_failing_streak() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    b.observe(now, probe("provider", false));
    // Tunnels to other hosts stand fine: they must not hide the failing probe.
    for _ in 0..5 {
        assert!(
            b.observe(now, traffic("provider", "www.apple.com", 443, None))
                .is_empty()
        );
    }
    assert_eq!(b.targets["apns"].routes[0].consecutive_fail(), 1);
    // On the probe destination, a tunnel answers a CONNECT failure.
    b.observe(now, traffic("provider", "api.push.apple.com", 443, None));
    assert_eq!(b.targets["apns"].routes[0].consecutive_fail(), 0);
}

#[tokio::test(start_paused = true)]
async fn traffic_success_does_not_cancel_a_tls_failure_behind_the_tunnel() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    let tls = || {
        Observation::Probe(Box::new(ProbeOutcome::observed(
            "apns",
            "provider",
            FailureReason::TlsUntrusted,
            "intercepted",
        )))
    };
    b.observe(now, tls());
    let e = b.observe(now, traffic("provider", "api.push.apple.com", 443, None));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(b.targets["apns"].routes[0].consecutive_fail(), 1);
    let e = b.observe(now, tls());
    assert_eq!(failovers(&e), [("provider".into(), "direct".into())]);
}

#[tokio::test(start_paused = true)]
async fn forcing_direct_or_proxy_overrides_health() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    b.observe(now, probe("direct", true));
    assert_eq!(
        failovers(&b.set_override("apns", Override::Direct, now)),
        [("provider".into(), "direct".into())]
    );
    b.observe(now, probe("provider", true));
    assert_eq!(b.active_route("apns"), Some("direct"));
    assert_eq!(
        failovers(&b.set_override("apns", Override::Auto, now)),
        [("direct".into(), "provider".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rebuild_keeps_each_pair_by_name_and_never_forgets_a_broken_route() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", false));
    b.observe(now, probe("direct", true));
    b.set_override("apns", Override::Direct, now);
    assert_eq!(b.active_route("apns"), Some("direct"));
    // A new generation (say, rotated credentials) adds a backup proxy and
    // another target; the broken provider stays broken, not "unknown".
    let mut other = spec(&[("provider", false)]);
    other.name = "sms".into();
    let mut next = b.rebuild(
        settings(),
        &[
            spec(&[("provider", false), ("backup", false), ("direct", true)]),
            other,
        ],
    );
    let apns = &next.targets["apns"];
    assert_eq!(apns.routes[0].healthy(), Some(false));
    assert_eq!(apns.routes[1].healthy(), None);
    assert_eq!(apns.routes[2].healthy(), Some(true));
    assert_eq!(
        (apns.route_override, apns.active_route()),
        (Override::Direct, "direct")
    );
    assert_eq!(next.targets["sms"].routes[0].healthy(), None);
    next.set_override("apns", Override::Auto, now);
    assert_eq!(
        next.active_route("apns"),
        Some("backup"),
        "an unknown route is eligible, a broken one is not"
    );
    // A target that is gone is gone.
    let next = next.rebuild(settings(), &[spec(&[("direct", true)])]);
    assert_eq!(next.targets.len(), 1);
    assert_eq!(next.targets["apns"].routes[0].healthy(), Some(true));
}

#[tokio::test(start_paused = true)]
async fn an_override_ends_by_itself_at_its_expiry_and_survives_a_rebuild_until_then() {
    let mut b = table();
    let now = Instant::now();
    b.observe(now, probe("provider", true));
    b.observe(now, probe("direct", true));
    let until = now + Duration::from_secs(2);
    assert_eq!(
        failovers(&b.override_until("apns", Override::Direct, now, until)),
        [("provider".into(), "direct".into())]
    );
    // Not yet: a tick just before the expiry changes nothing, and a
    // reload keeps the override with its expiry.
    assert!(b.tick(until - Duration::from_millis(1)).is_empty());
    let mut b = b.rebuild(
        settings(),
        &[spec(&[("provider", false), ("direct", true)])],
    );
    assert_eq!(b.targets["apns"].override_until, Some(until));
    // At the expiry: one event says which override ended, and traffic goes
    // back to the route health prefers.
    let e = b.tick(until);
    assert_eq!(
        e.first(),
        Some(&Event::OverrideExpired {
            target: "apns".into(),
            previous: Override::Direct
        })
    );
    assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
    assert_eq!(
        (
            b.targets["apns"].route_override,
            b.targets["apns"].override_until
        ),
        (Override::Auto, None)
    );
    assert!(
        b.tick(until + Duration::from_secs(5)).is_empty(),
        "expires once"
    );
    // `auto` carries no expiry, and an override without one never expires.
    b.override_until("apns", Override::Auto, now, until);
    assert_eq!(b.targets["apns"].override_until, None);
    b.set_override("apns", Override::Proxy, now);
    assert!(b.tick(until + Duration::from_secs(86_400)).is_empty());
    assert_eq!(b.targets["apns"].route_override, Override::Proxy);
}

fn degraded(events: &[Event]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Degraded { degraded, .. } => Some(*degraded),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn one_failure_in_three_is_degraded_without_fall_rise_ever_moving() {
    // nginx worker exhaustion: a 500 to part of the requests for hours.
    let mut b = table();
    let mut now = Instant::now();
    let mut seen_degraded = Vec::new();
    let mut healthy_changes = 0;
    let mut moved = Vec::new();
    for i in 0..30 {
        now += Duration::from_secs(1);
        let e = b.observe(now, probe("provider", i % 3 != 2));
        seen_degraded.extend(degraded(&e).into_iter().map(|d| (i, d)));
        healthy_changes += e
            .iter()
            .filter(|e| matches!(e, Event::RouteHealth { healthy: false, .. }))
            .count();
        moved.extend(failovers(&e));
    }
    assert_eq!(healthy_changes, 0, "fall/rise never sees it");
    assert_eq!(
        seen_degraded,
        [(8, true)],
        "degraded at the third failure in the window, once"
    );
    assert_eq!(
        moved,
        [("provider".into(), "direct".into())],
        "a direct-allowed target moves"
    );
    assert!(b.targets["apns"].routes[0].degraded());
    // The failures stop: it clears only when at most one of the last ten
    // failed (hysteresis). A first down is no flap: no hold, traffic returns.
    let mut cleared_at = None;
    for i in 0..20 {
        now += Duration::from_secs(1);
        let e = b.observe(now, probe("provider", true));
        if degraded(&e) == [false] {
            cleared_at = Some(i);
            moved.extend(failovers(&e));
            break;
        }
    }
    // Failures at 20, 23, 26 and 29 in the window: it clears once only one
    // of them is left among the last ten, at the 7th success (26 drops out).
    assert_eq!(cleared_at, Some(6));
    assert_eq!(b.active_route("apns"), Some("provider"));
}

#[tokio::test(start_paused = true)]
async fn a_degraded_route_keeps_its_traffic_where_the_target_says_so() {
    let mut spec = spec(&[("provider", false), ("direct", true)]);
    spec.failover_on_degraded = false;
    let mut b = RouteTable::new(settings(), &[spec]);
    let now = Instant::now();
    for ok in [true, false, true, false, true, false] {
        let e = b.observe(now, probe("provider", ok));
        assert!(failovers(&e).is_empty(), "{e:?}");
    }
    assert!(b.targets["apns"].routes[0].degraded());
    assert_eq!(b.active_route("apns"), Some("provider"));
}

#[tokio::test(start_paused = true)]
async fn after_a_full_outage_traffic_returns_after_rise_not_after_the_window_drains() {
    let mut b = table();
    let mut now = Instant::now();
    b.observe(now, probe("direct", true));
    b.observe(now, probe("provider", true));
    // Down hard: many failures, far more than the degraded threshold.
    for _ in 0..8 {
        now += Duration::from_secs(1);
        b.observe(now, probe("provider", false));
    }
    assert_eq!(b.active_route("apns"), Some("direct"));
    assert!(
        !b.targets["apns"].routes[0].degraded(),
        "down, not degraded"
    );
    // Fixed: `rise` successes bring traffic back; the failures of the
    // outage do not hold it in a degraded window.
    now += Duration::from_secs(1);
    b.observe(now, probe("provider", true));
    now += Duration::from_secs(1);
    let e = b.observe(now, probe("provider", true));
    assert_eq!(failovers(&e), [("direct".into(), "provider".into())]);
    assert!(!b.targets["apns"].routes[0].degraded());
}

mod levels;
