//! Evidence levels: the table fed probes and app traffic with `now` as an
//! argument (no clock, no tokio): busy traffic hides no partial failure,
//! our own exhaustion proves nothing.

use std::time::Duration;

use super::*;

fn at(now: std::time::Instant) -> Instant {
    Instant::from_std(now)
}

fn answer_failure() -> Observation {
    Observation::Probe(Box::new(ProbeOutcome {
        failed_phase: Some(crate::reason::Phase::FirstByte),
        ..ProbeOutcome::observed(
            "apns",
            "provider",
            FailureReason::HttpStatus,
            "HTTP 500 Internal Server Error",
        )
    }))
}

fn answer_ok() -> Observation {
    probe("provider", true)
}

#[test]
fn a_busy_target_degrades_on_partial_500s_as_soon_as_an_idle_one() {
    // The nginx worker-exhaustion incident: one probe in three answered 500,
    // with (busy) and without (idle) 20 app tunnels standing between probes.
    let first_degraded = |busy: bool| {
        let mut b = table();
        let mut now = at(std::time::Instant::now());
        let mut flaps = 0;
        for i in 0..30 {
            now += Duration::from_secs(1);
            let obs = if i % 3 == 2 {
                answer_failure()
            } else {
                answer_ok()
            };
            let mut events = b.observe(now, obs);
            if busy {
                for _ in 0..20 {
                    events.extend(
                        b.observe(now, traffic("provider", "api.push.apple.com", 443, None)),
                    );
                }
            }
            flaps += events
                .iter()
                .filter(|e| matches!(e, Event::RouteHealth { .. }))
                .count();
            if degraded(&events) == [true] {
                let r = &b.targets["apns"].routes[0];
                assert_eq!(r.worst_window().0, Level::Answer);
                assert_eq!(r.level(Level::Answer).recent_failures(), 3);
                return (i, flaps);
            }
        }
        panic!("never degraded (busy: {busy})");
    };
    let idle = first_degraded(false);
    assert_eq!(
        idle,
        (8, 1),
        "the first probe's verdict, then degraded at the third 500"
    );
    assert_eq!(first_degraded(true), idle, "app traffic hides nothing");
}

#[test]
fn app_traffic_proves_the_route_level_only() {
    let mut b = table();
    let now = at(std::time::Instant::now());
    b.observe(now, traffic("provider", "api.push.apple.com", 443, None));
    let r = &b.targets["apns"].routes[0];
    assert_eq!(r.level(Level::Route).healthy, Some(true));
    assert_eq!(r.level(Level::Tunnel).healthy, None);
    assert_eq!(r.level(Level::Answer).healthy, None);
    assert_eq!(
        r.healthy(),
        Some(true),
        "as good as its worst level with evidence"
    );
    // A TLS failure behind the tunnel is the tunnel level's; the route level stands.
    let tls = Observation::Probe(Box::new(ProbeOutcome::observed(
        "apns",
        "provider",
        FailureReason::TlsUntrusted,
        "intercepted",
    )));
    b.observe(now, tls);
    let r = &b.targets["apns"].routes[0];
    assert_eq!(r.level(Level::Route).consecutive_ok, 2);
    assert_eq!(r.level(Level::Tunnel).healthy, Some(false));
    assert_eq!(r.healthy(), Some(false));
    assert_eq!(r.cause().map(|c| c.level), Some(Level::Tunnel));
}

#[test]
fn our_own_exhaustion_is_evidence_of_nothing() {
    let mut b = table();
    let now = at(std::time::Instant::now());
    b.observe(now, probe("provider", true));
    let exhausted = || {
        Observation::Probe(Box::new(ProbeOutcome {
            failed_phase: Some(crate::reason::Phase::Connect),
            ..ProbeOutcome::observed(
                "apns",
                "provider",
                FailureReason::LocalExhausted,
                "connect: Too many open files (os error 24)",
            )
        }))
    };
    for i in 0..50u64 {
        let at = now + Duration::from_millis(100 * i);
        assert!(b.observe(at, exhausted()).is_empty());
        let app = traffic(
            "provider",
            "api.push.apple.com",
            443,
            Some(FailureReason::LocalExhausted),
        );
        assert!(b.observe(at, app).is_empty(), "not even a probe is woken");
    }
    let r = &b.targets["apns"].routes[0];
    assert_eq!(
        (r.healthy(), r.consecutive_fail(), r.degraded()),
        (Some(true), 0, false)
    );
    assert_eq!(r.last.as_ref().map(|s| s.reason), Some(FailureReason::Ok));
    assert_eq!(b.active_route("apns"), Some("provider"));
}

proptest::proptest! {
    /// Any number of app tunnels standing between probes leaves the
    /// answer level's failure count, streak and verdict exactly as the
    /// probes alone leave them.
    #[test]
    fn traffic_successes_never_change_the_answer_level(
        probes in proptest::collection::vec(proptest::bool::ANY, 1..40),
        tunnels in proptest::collection::vec(0usize..30, 40),
    ) {
        let mut alone = table();
        let mut busy = table();
        let mut now = at(std::time::Instant::now());
        for (i, ok) in probes.iter().enumerate() {
            now += Duration::from_secs(1);
            let obs = || if *ok { answer_ok() } else { answer_failure() };
            alone.observe(now, obs());
            busy.observe(now, obs());
            for _ in 0..tunnels[i] {
                busy.observe(now, traffic("provider", "api.push.apple.com", 443, None));
            }
            let (a, b) = (
                alone.targets["apns"].routes[0].level(Level::Answer),
                busy.targets["apns"].routes[0].level(Level::Answer),
            );
            proptest::prop_assert_eq!(a.recent_failures(), b.recent_failures());
            proptest::prop_assert_eq!(a.consecutive_fail, b.consecutive_fail);
            proptest::prop_assert_eq!(a.healthy, b.healthy);
            proptest::prop_assert_eq!(a.degraded, b.degraded);
            let (ra, rb) = (&alone.targets["apns"].routes[0], &busy.targets["apns"].routes[0]);
            proptest::prop_assert_eq!(ra.healthy(), rb.healthy());
            proptest::prop_assert_eq!(ra.degraded(), rb.degraded());
        }
    }
}
