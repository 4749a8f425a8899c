//! Happy Eyeballs in the one dialer: a proxy (or upstream) name with several
//! addresses whose first address is dead costs one 250 ms attempt delay,
//! not the whole timeout, and the report names the address that answered
//! and the one that did not. The dead address is a blackhole on loopback (a
//! full accept queue: SYNs go unanswered), never a real remote address.

mod support;

use std::time::Duration;

use egress_sentinel::dial::eyeballs::ATTEMPT_DELAY;
use egress_sentinel::reason::{FailureReason, Phase};
use support::blackhole::Blackhole;
use support::config::{Route, Target, Toml};
use support::proxy::{Mode, ScriptProxy};
use support::upstream::Opts;
use support::{Workspace, check_one};

/// What a probe over loopback may take beyond the attempt delay: TLS,
/// HTTP and a busy two-core machine.
const SLACK: Duration = Duration::from_millis(750);

fn via_proxy(proxy_port: u16, proxy_addrs: &[&str], push_port: u16, connect_timeout: &str) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("5s"))
        .resolve_all("proxy.test", proxy_addrs)
        .resolve("push.test", "127.0.0.1")
        .route(
            Route::proxy("provider", &format!("http://proxy.test:{proxy_port}"))
                .connect_timeout(connect_timeout),
        )
        .target(
            Target::new("push", &format!("https://push.test:{push_port}/"))
                .routes(&["provider"])
                .ca_file("ca.pem"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_proxy_address_costs_one_attempt_delay_and_the_report_names_both() {
    let up = Opts::new("push.test").start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let port = proxy.addr.port();
    let dead = Blackhole::bind(format!("127.0.0.3:{port}").parse().expect("addr")).await;
    let ws = Workspace::new();
    // The whole connect budget is 3 s: trying addresses one after the
    // other would spend all of it on the dead one and fail.
    let cfg = ws.config(via_proxy(
        port,
        &["127.0.0.3", "127.0.0.1"],
        up.port(),
        "3s",
    ));
    let o = check_one(&cfg).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert!(
        o.duration < ATTEMPT_DELAY + SLACK,
        "took {:?}: the dead address was given more than the attempt delay ({})",
        o.duration,
        o.detail
    );
    let connect = o.phases.connect.expect("connect phase timed");
    assert!(
        connect >= ATTEMPT_DELAY && connect < ATTEMPT_DELAY + SLACK,
        "connect took {connect:?}: the second address should start after the delay"
    );
    assert!(
        o.detail.contains(&format!("{} no answer in ", dead.addr))
            && o.detail.contains("(abandoned)"),
        "the report does not name the dead address: {}",
        o.detail
    );
    assert!(
        o.detail.contains(&format!("127.0.0.1:{port} connected in")),
        "the report does not name the address that answered: {}",
        o.detail
    );
    // The probe's CONNECT, and the per-address check's through the live
    // node (the dead one never accepts anything).
    assert_eq!(
        proxy.received().len(),
        2,
        "the probe and the live address's check"
    );
    assert!(
        o.proxy_addresses
            .iter()
            .any(|c| c.address == dead.addr && !c.up),
        "the check names the dead node: {:?}",
        o.proxy_addresses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_address_on_the_direct_route_is_skipped_too() {
    let up = Opts::new("push.test").start().await;
    let dead = Blackhole::bind(format!("127.0.0.3:{}", up.port()).parse().expect("addr")).await;
    let ws = Workspace::new();
    let cfg = ws.config(
        Toml::new()
            .probe(|p| p.timeout("3s"))
            .resolve_all("push.test", &["127.0.0.3", "127.0.0.1"])
            .target(
                Target::new("push", &format!("https://push.test:{}/", up.port()))
                    .routes(&["direct"])
                    .allow_addresses(&["127.0.0.1/32", "127.0.0.3/32"])
                    .ca_file("ca.pem"),
            ),
    );
    let o = check_one(&cfg).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert!(o.duration < ATTEMPT_DELAY + SLACK, "took {:?}", o.duration);
    assert!(
        o.detail.contains(&format!("{} no answer in ", dead.addr))
            && o.detail
                .contains(&format!("127.0.0.1:{} connected in", up.port())),
        "{}",
        o.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_address_dead_is_a_proxy_timeout_naming_each_address() {
    let up = Opts::new("push.test").start().await;
    let first = Blackhole::bind("127.0.0.3:0".parse().expect("addr")).await;
    let port = first.addr.port();
    let second = Blackhole::bind(format!("127.0.0.4:{port}").parse().expect("addr")).await;
    let ws = Workspace::new();
    let cfg = ws.config(via_proxy(
        port,
        &["127.0.0.3", "127.0.0.4"],
        up.port(),
        "600ms",
    ));
    let o = check_one(&cfg).await;
    assert_eq!(o.reason, FailureReason::ProxyTimeout, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Connect));
    assert!(
        o.duration < Duration::from_millis(600) + SLACK,
        "took {:?}",
        o.duration
    );
    assert!(
        o.detail.contains(&format!(
            "addresses tried: {} no answer, {} no answer",
            first.addr, second.addr
        )),
        "{}",
        o.detail
    );
}
