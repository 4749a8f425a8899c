//! The probe against real Squid (Debian's package) on loopback: an allowed
//! CONNECT succeeds, a `dstdomain` deny is `proxy_denied` with Squid's 403,
//! and an upstream port with nothing behind it is `proxy_upstream_error`.

mod support;

use egress_sentinel::reason::{FailureReason, Phase};
use support::squid::{self, Squid};
use support::upstream::Opts;
use support::{Workspace, check_all};

fn config(proxy: &str, targets: &str) -> String {
    format!(
        r#"
[probe]
timeout = "8s"

[[route]]
name = "squid"
proxy = "{proxy}"
connect_timeout = "8s"

{targets}
"#
    )
}

#[tokio::test]
async fn squid_tunnels_allowed_names_refuses_denied_ones_and_reports_dead_upstreams() {
    let Some(bin) = squid::available() else {
        return;
    };
    let up = Opts::new("push.test").start().await;
    let blocked = Opts::new("blocked.test").start().await;
    let dead_port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr").port()
    };
    let squid = Squid::start(bin, &["push.test", "dead.test"], &["blocked.test"]);
    let ws = Workspace::new();
    let targets = format!(
        r#"
[[target]]
name = "allowed"
url = "https://push.test:{}/health"
ca_file = "ca.pem"

[[target]]
name = "denied"
url = "https://blocked.test:{}/health"
ca_file = "ca.pem"

[[target]]
name = "dead"
url = "https://dead.test:{dead_port}/health"
ca_file = "ca.pem"
"#,
        up.port(),
        blocked.port()
    );
    let cfg = ws.config(&config(&squid.url(), &targets));
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
