//! The shipped alert rules in a real Prometheus (Debian's server) scraping
//! a running sidecar in front of a real Squid, all on loopback. The rules
//! are loaded as shipped but for their `for:`, shortened to seconds (the
//! promtool unit tests cover the real durations):
//! - healthy, no alert is pending or firing;
//! - Squid killed: `EgressRouteDown` for both targets' Squid route reaches
//!   `firing` in `/api/v1/alerts` with the reason the sidecar saw in its
//!   annotations, `EgressFailedOverToDirect` for the target that may go
//!   direct, `EgressTargetUnreachableDirectDenied` for the one that may not;
//! - Squid started again on the same port: they resolve;
//! - the sidecar stopped: `EgressSidecarNotScraped` fires.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::config::{Route, Target as TargetToml, Toml};
use support::prometheus::{self, Prometheus, Target};
use support::rules;
use support::sidecar::{Running, eventually, sample};
use support::squid::{self, Squid};
use support::upstream::Opts;
use support::{Workspace, pki};

/// The scrape job, named like the PodMonitor's (`EgressSidecarNotScraped`
/// matches `.*egress-sentinel.*`).
const JOB: &str = "egress-sentinel";

/// Each wait's bound: the whole test stays well under a minute.
const WITHIN: Duration = Duration::from_secs(15);

/// The alerts in `state`, as `(alertname, target)` with their annotations.
fn in_state<'a>(alerts: &'a [Value], state: &str) -> Vec<(String, String, &'a Value)> {
    let mut out: Vec<_> = alerts
        .iter()
        .filter(|a| a["state"] == state)
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap_or_default().into(),
                a["labels"]["target"].as_str().unwrap_or_default().into(),
                &a["annotations"],
            )
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn names(alerts: &[(String, String, &Value)]) -> Vec<(String, String)> {
    alerts
        .iter()
        .map(|(n, t, _)| (n.clone(), t.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_killed_fires_route_down_in_a_real_prometheus_and_restarting_it_resolves() {
    let started = Instant::now();
    let (Some(squid_bin), Some(prom_bin)) = (squid::available(), prometheus::available()) else {
        return;
    };
    let leaf = pki::ca().server(&["push.test", "sms.test"], false);
    let up = Opts::new("push.test").leaf(leaf).start().await;
    let hosts = ["push.test", "sms.test"];
    let mut squid = Squid::start(squid_bin, &hosts, &[]);
    let squid_port = squid.addr.port();
    let ws = Workspace::new();
    let port = up.port();
    let config = Toml::new()
        .probe(|p| p.timings("500ms", "100ms", "2s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("sms.test", "127.0.0.1")
        .route(Route::proxy("squid", &squid.url()).connect_timeout("500ms"))
        .target(
            TargetToml::new("apns", &format!("https://push.test:{port}/"))
                .routes(&["squid", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem")
                .expect_ca("ca.pem"),
        )
        .target(
            TargetToml::new("sms", &format!("https://sms.test:{port}/"))
                .routes(&["squid"])
                .ca_file("ca.pem")
                .expect_ca("ca.pem"),
        );
    let sidecar = Running::start(ws.config(&config)).await;
    let healthy = |m: &str| {
        [("apns", "squid"), ("apns", "direct"), ("sms", "squid")]
            .iter()
            .all(|(t, r)| {
                sample(m, "egress_route_healthy", &[("target", t), ("route", r)]) == Some(1.0)
            })
    };
    eventually(WITHIN, "every route healthy through Squid", || async {
        healthy(&sidecar.metrics_text().await).then_some(())
    })
    .await;

    // Prometheus, once the sidecar is healthy: a route that has not yet
    // risen at start-up is not what this test is about.
    let rules_text = rules::with_for(&rules::read(rules::RULES), "3s");
    let target = Target {
        addr: sidecar.metrics,
        labels: vec![
            ("namespace".into(), "sso".into()),
            ("pod".into(), "sso-0".into()),
        ],
    };
    let prom = Prometheus::start(prom_bin, JOB, &[target], &rules_text);
    let group_count = rules::yaml(&rules_text)["groups"]
        .as_sequence()
        .map_or(0, Vec::len);
    eventually(
        WITHIN,
        "the rules loaded and the sidecar scraped",
        || async {
            let groups = prom.api("/api/v1/rules").await["groups"]
                .as_array()
                .map_or(0, Vec::len);
            let up = prom.query(&format!("up{{job=\"{JOB}\"}} == 1")).await;
            let routes = prom.query("egress_route_healthy == 1").await;
            (groups == group_count && up.len() == 1 && routes.len() == 3).then_some(())
        },
    )
    .await;
    // Healthy: a few evaluations later, nothing pending or firing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = prom.alerts().await;
    assert!(
        alerts.is_empty(),
        "alerts on a healthy sidecar: {alerts:#?}\n{}",
        prom.log()
    );

    // Squid dies: connections to the proxy are refused.
    squid.kill();
    let expected = [
        ("EgressFailedOverToDirect", "apns"),
        ("EgressRouteDown", "apns"),
        ("EgressRouteDown", "sms"),
        ("EgressTargetUnreachableDirectDenied", "sms"),
    ];
    let firing = eventually(WITHIN, "the route-down alerts firing", || async {
        let alerts = prom.alerts().await;
        let firing = in_state(&alerts, "firing");
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect();
        want.iter()
            .all(|w| names(&firing).contains(w))
            .then_some(alerts)
    })
    .await;
    let firing_now = in_state(&firing, "firing");
    for (name, target, annotations) in &firing_now {
        assert!(
            expected.contains(&(name.as_str(), target.as_str())) || name == "EgressRouteDownFleet",
            "unexpected alert {name} for {target}: {firing:#?}"
        );
        if name == "EgressRouteDown" {
            // The reason the sidecar exported, through the annotation's
            // query against this Prometheus' own series.
            assert_eq!(annotations["reason"], "proxy_connect", "{annotations:#?}");
            assert!(
                annotations["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("no CONNECT answer")),
                "{annotations:#?}"
            );
            assert_eq!(
                annotations["summary"],
                format!("Route squid to {target} is down in pod sso/sso-0."),
            );
        }
    }
    // One pod: never a fleet page.
    assert!(
        !names(&firing_now)
            .iter()
            .any(|(n, _)| n == "EgressRouteDownFleet"),
        "{firing:#?}"
    );

    // Squid back on the same port: the routes rise and the alerts resolve.
    let squid = Squid::start_with(
        squid_bin,
        &hosts,
        &[],
        &squid::Opts {
            port: Some(squid_port),
            ..Default::default()
        },
    );
    eventually(WITHIN, "the route-down alerts resolved", || async {
        prom.alerts().await.is_empty().then_some(())
    })
    .await;
    assert!(healthy(&sidecar.metrics_text().await));

    // The sidecar stops: Prometheus cannot scrape it any more.
    sidecar.stop().await;
    eventually(WITHIN, "EgressSidecarNotScraped firing", || async {
        let alerts = prom.alerts().await;
        names(&in_state(&alerts, "firing"))
            .contains(&("EgressSidecarNotScraped".into(), String::new()))
            .then_some(())
    })
    .await;
    drop(squid);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "took {:?}",
        started.elapsed()
    );
}
