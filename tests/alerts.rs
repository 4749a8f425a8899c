//! The shipped alert rules (`k8s/alerts.yaml`) load in Prometheus and fire
//! as their unit tests say (`k8s/alerts.test.yaml`), checked with promtool.

use std::path::Path;
use std::process::Command;

fn promtool() -> Option<&'static Path> {
    let p = Path::new("/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    assert_ne!(
        std::env::var("EGRESS_REQUIRE_PROMTOOL").as_deref(),
        Ok("1"),
        "EGRESS_REQUIRE_PROMTOOL=1 but promtool is missing: apt-get install prometheus"
    );
    eprintln!("SKIPPED: /usr/bin/promtool not installed (apt-get install prometheus)");
    None
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_metric_an_alert_uses_is_one_we_export() {
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/alerts.yaml"))
            .expect("read");
    let exported = [
        egress_sentinel::telemetry::ROUTE_HEALTHY,
        egress_sentinel::telemetry::FAILOVERS,
        egress_sentinel::telemetry::CERT_NOT_AFTER,
        egress_sentinel::telemetry::PROCESS_OPEN_FDS,
        egress_sentinel::telemetry::PROCESS_MAX_FDS,
        egress_sentinel::telemetry::CONFIG_RELOAD_SUCCESS,
        egress_sentinel::telemetry::FORWARD_CONNECTIONS,
        egress_sentinel::telemetry::PROBE_FAILURES,
    ];
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("egress_") {
            assert!(
                exported.contains(&word),
                "alert rules use {word}, which is not exported"
            );
        }
    }
}
