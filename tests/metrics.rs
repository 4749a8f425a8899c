//! Metrics as an operator queries them during an incident: failure counters
//! that exist at 0 before the first failure, a reason gauge that follows a
//! route from `proxy_upstream_error` back to `ok` with no stale 1 left
//! behind, no NaN for phases that did not run, the forward proxy's wait
//! histogram and byte counters, and the standard `process_*` metrics —
//! all clean under `promtool check metrics`.

mod support;

use std::time::Duration;

use egress_sentinel::reason::FailureReason;
use support::Workspace;
use support::proxy::{Mode, ScriptProxy};
use support::scenario;
use support::sidecar::{Running, eventually, sample};
use support::upstream::Opts;

const PAIRS: [(&str, &str); 3] = [
    ("apns", "provider"),
    ("apns", "direct"),
    ("sms", "provider"),
];

fn pair<'a>(target: &'a str, route: &'a str) -> [(&'static str, &'a str); 2] {
    [("target", target), ("route", route)]
}

/// The reasons whose `egress_route_reason` series is 1 for the pair.
fn current_reasons(m: &str, target: &str, route: &str) -> Vec<&'static str> {
    FailureReason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| {
            sample(
                m,
                "egress_route_reason",
                &[("target", target), ("route", route), ("reason", r)],
            ) == Some(1.0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_counters_exist_at_zero_before_any_failure() {
    let up = scenario::upstream().await;
    // A proxy that never answers: no probe finishes within the first scrape.
    let proxy = ScriptProxy::start(Mode::Hang).await;
    let ws = Workspace::new();
    // Nothing can fail before the first scrape: the direct probe may pass,
    // and the proxy's silence is given a minute.
    let text = scenario::config(&proxy.url(), up.port())
        .shutdown("0s", "1s")
        .edit_route("provider", |r| r.connect_timeout("60s"))
        .probe(|p| p.timeout("60s"));
    let sidecar = Running::start(ws.config(&text)).await;
    let m = sidecar.metrics_text().await;
    for (target, route) in PAIRS {
        for reason in FailureReason::ALL {
            let labels = [
                ("target", target),
                ("route", route),
                ("reason", reason.as_str()),
            ];
            let failures = sample(&m, "egress_probe_failures_total", &labels);
            if reason == FailureReason::Ok {
                assert_eq!(failures, None, "no `ok` failure series:\n{m}");
            } else {
                assert_eq!(failures, Some(0.0), "{target}/{route}/{reason}:\n{m}");
            }
            // Every reason of the reason gauge is there too; nothing is
            // current before the first observation.
            let current = sample(&m, "egress_route_reason", &labels);
            assert!(
                current == Some(0.0) || (reason == FailureReason::Ok && current == Some(1.0)),
                "{target}/{route}/{reason}: {current:?}\n{m}"
            );
        }
    }
    // Bounded: pairs × (reasons without ok), no more.
    let series = m
        .lines()
        .filter(|l| l.starts_with("egress_probe_failures_total{"))
        .count();
    assert_eq!(series, PAIRS.len() * (FailureReason::ALL.len() - 1), "{m}");
    support::promtool::check(&m).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_reason_follows_a_route_from_proxy_upstream_error_back_to_ok() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(scenario::config(&proxy.url(), up.port()))).await;
    let failing = eventually(
        Duration::from_secs(10),
        "apns/provider's reason to be proxy_upstream_error",
        || async {
            let m = sidecar.metrics_text().await;
            (current_reasons(&m, "apns", "provider") == ["proxy_upstream_error"]).then_some(m)
        },
    )
    .await;
    // The exporter renders its shards one after another, not as one
    // snapshot: a probe that lands mid-render can show its reason with the
    // counter not yet counted, or with a series registered by that first
    // failing probe (its phases) not yet present. Both only appear once and
    // stay, so a later scrape has them.
    let later = sidecar.metrics_text().await;
    assert!(
        sample(
            &later,
            "egress_probe_failures_total",
            &[
                ("target", "apns"),
                ("route", "provider"),
                ("reason", "proxy_upstream_error")
            ]
        )
        .is_some_and(|n| n >= 1.0)
    );
    // The probe stopped at the CONNECT: the later phases say "did not run"
    // (-1), never NaN; the tunnel phase ran.
    for phase in ["tls", "first_byte", "body"] {
        let labels = [("target", "apns"), ("route", "provider"), ("phase", phase)];
        assert_eq!(
            sample(&later, "egress_probe_phase_seconds", &labels),
            Some(-1.0),
            "{phase}:\n{later}"
        );
    }
    assert!(!later.contains("NaN"), "{later}");
    let last = sample(
        &later,
        "egress_probe_last_timestamp_seconds",
        &pair("apns", "provider"),
    )
    .expect("last probe time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!((now - last).abs() < 10.0, "last probe {last}, now {now}");
    support::promtool::check(&failing).await;

    proxy.set_mode(Mode::Tunnel);
    let recovered = eventually(
        Duration::from_secs(10),
        "apns/provider's reason back to ok",
        || async {
            let m = sidecar.metrics_text().await;
            (current_reasons(&m, "apns", "provider") == ["ok"]).then_some(m)
        },
    )
    .await;
    assert_eq!(
        sample(
            &recovered,
            "egress_route_reason",
            &[
                ("target", "apns"),
                ("route", "provider"),
                ("reason", "proxy_upstream_error")
            ]
        ),
        Some(0.0),
        "the old reason is 0, not left at 1"
    );
    for phase in ["tunnel", "tls", "first_byte", "body"] {
        let labels = [("target", "apns"), ("route", "provider"), ("phase", phase)];
        assert!(
            sample(&recovered, "egress_probe_phase_seconds", &labels).is_some_and(|v| v >= 0.0),
            "{phase} ran:\n{recovered}"
        );
    }
    support::promtool::check(&recovered).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_histogram_and_byte_counters_move_with_a_1_mib_transfer() {
    const MIB: usize = 1024 * 1024;
    let leaf = support::pki::ca().server(&["push.test", "sms.test", "decoy.test"], false);
    let up = Opts::new("push.test")
        .leaf(leaf)
        .h1_only()
        .reply(200, &"x".repeat(MIB))
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(scenario::config(&proxy.url(), up.port()))).await;
    eventually(
        Duration::from_secs(10),
        "apns active on provider",
        || async {
            let m = sidecar.metrics_text().await;
            (sample(&m, "egress_route_active", &pair("apns", "provider")) == Some(1.0))
                .then_some(())
        },
    )
    .await;
    let before = sidecar.metrics_text().await;
    let count = |m: &str| {
        sample(
            m,
            "egress_forward_request_duration_seconds_count",
            &pair("apns", "provider"),
        )
        .unwrap_or(0.0)
    };
    let bytes = |m: &str, direction: &str| {
        sample(
            m,
            "egress_forward_bytes_total",
            &[
                ("target", "apns"),
                ("route", "provider"),
                ("direction", direction),
            ],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        support::app::get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    let after = eventually(Duration::from_secs(5), "the byte counters", || async {
        let m = sidecar.metrics_text().await;
        (bytes(&m, "down") - bytes(&before, "down") >= MIB as f64).then_some(m)
    })
    .await;
    assert_eq!(count(&after) - count(&before), 1.0, "{after}");
    // The TLS handshake and the request went up: some bytes, far less than down.
    let up_bytes = bytes(&after, "up") - bytes(&before, "up");
    assert!(up_bytes > 0.0 && up_bytes < 64.0 * 1024.0, "up {up_bytes}");
    let down = bytes(&after, "down") - bytes(&before, "down");
    assert!(down < (MIB + 64 * 1024) as f64, "down {down}");
    // The wait lands in a bucket below the 2 s route timeout.
    assert!(
        sample(
            &after,
            "egress_forward_request_duration_seconds_bucket",
            &[("target", "apns"), ("route", "provider"), ("le", "2.5")]
        )
        .is_some_and(|n| n >= 1.0),
        "{after}"
    );
    support::promtool::check(&after).await;
    sidecar.stop().await;
}

fn vm_rss() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_metrics_describe_this_process() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    // The sidecar runs in this test's process: its process_* are ours.
    let sidecar = Running::start(ws.config(scenario::config(&proxy.url(), up.port()))).await;
    // Other tests of this binary run alongside: VmRSS is read on both
    // sides of the scrape, and the scrape must be within 20 % of it.
    let rss_before = vm_rss();
    let m = sidecar.metrics_text().await;
    let rss_after = vm_rss();
    let rss = sample(&m, "process_resident_memory_bytes", &[]).expect("rss");
    let (lo, hi) = (rss_before.min(rss_after), rss_before.max(rss_after));
    assert!(
        rss >= 0.8 * lo && rss <= 1.2 * hi,
        "process_resident_memory_bytes {rss} vs VmRSS {rss_before}..{rss_after}"
    );
    // The count moves with the other tests' sockets: only its sanity here.
    let fds = sample(&m, "process_open_fds", &[]).expect("open fds");
    assert!(fds >= 3.0, "{fds}");
    assert!(sample(&m, "process_max_fds", &[]).is_some_and(|n| n >= fds));
    assert!(sample(&m, "process_cpu_seconds_total", &[]).is_some_and(|s| s > 0.0));
    let start = sample(&m, "process_start_time_seconds", &[]).expect("start");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        start <= now && now - start < 3600.0,
        "started at {start}, now {now}"
    );
    assert!(m.contains("# TYPE process_cpu_seconds_total counter"));
    support::promtool::check(&m).await;
    sidecar.stop().await;
}
