//! `run` end to end, in-process: the provider's proxy starts answering
//! CONNECT with 502; the sidecar names it, marks the route unhealthy, moves
//! the target that may go direct, opens one incident for every impacted
//! target, and closes it when the proxy recovers. Also: `/metrics` passes
//! `promtool check metrics`, readiness does not follow upstream health,
//! reloads (valid, invalid, ConfigMap symlink swap). The binary's signals
//! are in `tests/signals.rs`.

mod support;

use std::time::Duration;

use support::Workspace;
use support::config::{Route, Target, Toml};
use support::proxy::{Mode, ScriptProxy};
use support::sidecar::{Running, eventually, request, sample};
use support::upstream::Opts;

const INTERVAL_MS: u64 = 500;
const UNHEALTHY_MS: u64 = 100;
const TIMEOUT_MS: u64 = 1000;
const FALL: u64 = 2;

fn config(proxy: &str, port: u16) -> Toml {
    Toml::new()
        .probe(|p| {
            p.interval(&format!("{INTERVAL_MS}ms"))
                .unhealthy_interval(&format!("{UNHEALTHY_MS}ms"))
                .timeout(&format!("{TIMEOUT_MS}ms"))
                .fall(FALL)
                .rise(2)
        })
        .reload_poll("100ms")
        .shutdown("0s", "2s")
        .resolve("push.test", "127.0.0.1")
        .resolve("sms.test", "127.0.0.1")
        .route(Route::proxy("provider", proxy))
        .target(
            Target::new("apns", &format!("https://push.test:{port}/3/device/x"))
                .routes(&["provider", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .target(
            Target::new("sms", &format!("https://sms.test:{port}/v1/health"))
                .routes(&["provider"])
                .ca_file("ca.pem"),
        )
}

/// One upstream standing in for both push and SMS.
async fn upstream() -> support::upstream::Upstream {
    let leaf = support::pki::ca().server(&["push.test", "sms.test"], false);
    Opts::new("push.test").leaf(leaf).start().await
}

fn gauge(text: &str, name: &str, target: &str, route: &str) -> Option<f64> {
    sample(text, name, &[("target", target), ("route", route)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_returning_502_after_migration_fails_over_push_but_not_sms_and_recovers() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    let settle = Duration::from_secs(5);
    eventually(settle, "every route healthy", || async {
        let m = sidecar.metrics_text().await;
        let all = [
            ("apns", "provider"),
            ("apns", "direct"),
            ("sms", "provider"),
        ]
        .iter()
        .all(|(t, r)| gauge(&m, "egress_route_healthy", t, r) == Some(1.0));
        all.then_some(())
    })
    .await;
    let m = sidecar.metrics_text().await;
    assert_eq!(
        gauge(&m, "egress_route_active", "apns", "provider"),
        Some(1.0)
    );
    assert_eq!(
        gauge(&m, "egress_proxy_connect_status", "apns", "provider"),
        Some(200.0)
    );

    // The provider's change: CONNECT now answers 502.
    proxy.set_mode(Mode::Status(502, "Bad Gateway"));
    let broke = std::time::Instant::now();
    // The next scheduled probe (≤ interval + 10 % jitter) sees the first
    // failure; the rest come every unhealthy_interval.
    let bound = Duration::from_millis(INTERVAL_MS * 11 / 10 + FALL * UNHEALTHY_MS + TIMEOUT_MS);
    let m = eventually(bound, "the proxy route marked unhealthy", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_healthy", "apns", "provider") == Some(0.0)
            && gauge(&m, "egress_route_healthy", "sms", "provider") == Some(0.0))
        .then_some(m)
    })
    .await;
    let detected = broke.elapsed();
    assert!(detected <= bound, "detected after {detected:?}");
    let failures = sample(
        &m,
        "egress_probe_failures_total",
        &[
            ("target", "apns"),
            ("route", "provider"),
            ("reason", "proxy_upstream_error"),
        ],
    );
    assert!(failures.is_some_and(|n| n >= FALL as f64), "{m}");
    assert_eq!(
        gauge(&m, "egress_proxy_connect_status", "apns", "provider"),
        Some(502.0)
    );
    // Push may go direct and does; SMS may not and stays on the broken proxy.
    let m = eventually(Duration::from_secs(2), "apns active on direct", || async {
        let m = sidecar.metrics_text().await;
        (gauge(&m, "egress_route_active", "apns", "direct") == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        gauge(&m, "egress_route_active", "apns", "provider"),
        Some(0.0)
    );
    assert_eq!(
        gauge(&m, "egress_route_active", "sms", "provider"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "egress_failovers_total",
            &[("target", "apns"), ("from", "provider"), ("to", "direct")]
        ),
        Some(1.0)
    );
    // Readiness does not follow upstream health.
    assert_eq!(request(sidecar.metrics, "GET", "/readyz").await.0, 200);

    let status = sidecar.status().await;
    let incidents = status["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "one cause, one window: {status:#}");
    let w = &incidents[0];
    assert_eq!(w["reason"], "proxy_upstream_error");
    assert!(w["end"].is_null());
    let text = w["text"].as_str().expect("text");
    assert!(text.starts_with("Incident window: "), "{text}");
    assert!(
        text.contains("-> (open) · cause: proxy_upstream_error (CONNECT "),
        "{text}"
    );
    assert!(
        text.contains("502 Bad Gateway, Via: 1.1 script-proxy"),
        "{text}"
    );
    assert!(
        text.ends_with("impact: apns, sms") || text.ends_with("impact: sms, apns"),
        "{text}"
    );
    let apns = &status["targets"][0];
    assert_eq!(apns["active_route"], "direct");
    assert_eq!(apns["routes"][0]["healthy"], false);
    assert_eq!(apns["routes"][0]["last"]["reason"], "proxy_upstream_error");
    assert_eq!(status["targets"][1]["down"], true);

    // The provider reverts its change.
    proxy.set_mode(Mode::Tunnel);
    eventually(
        Duration::from_secs(5),
        "recovery and a closed window",
        || async {
            let s = sidecar.status().await;
            let closed = s["incidents"][0]["end"].is_number();
            (closed && s["targets"][0]["active_route"] == "provider").then_some(())
        },
    )
    .await;
    let m = sidecar.metrics_text().await;
    assert_eq!(
        gauge(&m, "egress_route_healthy", "sms", "provider"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "egress_failovers_total",
            &[("target", "apns"), ("from", "direct"), ("to", "provider")]
        ),
        Some(1.0)
    );
    support::promtool::check(&m).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_every_contract_name_and_pass_promtool() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let client = support::pki::ca().client("app");
    ws.write("client.pem", &client.cert_pem);
    ws.write("client.key", &client.key_pem);
    // The "app" whose descriptors the sidecar watches.
    let mut app = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let text = config(&proxy.url(), up.port())
        .edit_target("sms", |t| t.client_pem("client.pem", "client.key"))
        .watch_processes(&["sleep"]);
    let sidecar = Running::start(ws.config(&text)).await;
    // Every pair, apns over the provider included: its tunnel phase is
    // asserted below, and the three first probes finish in any order.
    let m = eventually(Duration::from_secs(5), "a probe of every pair", || async {
        let m = sidecar.metrics_text().await;
        [
            ("apns", "provider"),
            ("apns", "direct"),
            ("sms", "provider"),
        ]
        .iter()
        .all(|(t, r)| gauge(&m, "egress_probe_success", t, r) == Some(1.0))
        .then_some(m)
    })
    .await;
    for name in [
        "egress_probe_success",
        "egress_probe_duration_seconds_bucket",
        "egress_probe_phase_seconds",
        "egress_proxy_connect_status",
        "egress_route_healthy",
        "egress_route_active",
        "egress_cert_not_after_timestamp_seconds",
        "egress_process_open_fds",
        "egress_process_max_fds",
        "egress_config_last_reload_success",
        "egress_build_info",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{m}"
        );
    }
    assert!(
        sample(
            &m,
            "egress_probe_duration_seconds_bucket",
            &[("le", "0.001")]
        )
        .is_some(),
        "1 ms bucket"
    );
    assert!(
        sample(&m, "egress_probe_duration_seconds_bucket", &[("le", "30")]).is_some(),
        "30 s bucket"
    );
    assert!(
        sample(
            &m,
            "egress_probe_phase_seconds",
            &[
                ("target", "apns"),
                ("route", "provider"),
                ("phase", "tunnel")
            ]
        )
        .is_some()
    );
    assert!(
        sample(
            &m,
            "egress_cert_not_after_timestamp_seconds",
            &[("target", "sms"), ("source", "client")]
        )
        .is_some()
    );
    assert!(
        sample(
            &m,
            "egress_cert_not_after_timestamp_seconds",
            &[("target", "apns"), ("source", "peer")]
        )
        .is_some()
    );
    assert!(
        sample(
            &m,
            "egress_process_open_fds",
            &[("process", "egress-sentinel"), ("kind", "socket")]
        )
        .is_some_and(|n| n >= 3.0)
    );
    // The watched process appears once it has exec'd and been scraped.
    eventually(
        Duration::from_secs(5),
        "the watched process's descriptors",
        || async {
            let m = sidecar.metrics_text().await;
            let sleep = |name, labels: &[(&str, &str)]| sample(&m, name, labels).is_some();
            (sleep("egress_process_max_fds", &[("process", "sleep")])
                && sleep(
                    "egress_process_open_fds",
                    &[("process", "sleep"), ("kind", "other")],
                ))
            .then_some(())
        },
    )
    .await;
    let _ = app.kill();
    let _ = app.wait();
    support::promtool::check(&m).await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_change_rejects_a_bad_one_and_sees_a_configmap_swap() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    // Laid out like a Kubernetes ConfigMap volume: config.toml -> ..data/config.toml,
    // ..data -> a timestamped folder that an update replaces atomically.
    let dir = ws.dir.path();
    let write_version = |name: &str, text: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::copy(dir.join("ca.pem"), d.join("ca.pem")).expect("ca");
        std::fs::write(d.join("config.toml"), text).expect("write");
    };
    let swap_to = |name: &str| {
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(name, &tmp).expect("symlink");
        std::fs::rename(&tmp, dir.join("..data")).expect("atomic swap");
    };
    let base = config(&proxy.url(), up.port());
    write_version("..v1", &base.to_string());
    swap_to("..v1");
    std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).expect("link");
    let cfg = egress_sentinel::config::Config::load(&dir.join("config.toml")).expect("valid");
    let sidecar = Running::start(cfg).await;
    eventually(Duration::from_secs(5), "apns healthy", || async {
        let s = sidecar.status().await;
        (s["targets"][0]["routes"][0]["healthy"] == true).then_some(())
    })
    .await;

    // A valid change arrives by ConfigMap swap: a new target appears; the
    // unchanged ones keep their health.
    let v2 = base.clone().target(
        Target::new("azure-ad", &format!("https://push.test:{}/", up.port())).ca_file("ca.pem"),
    );
    write_version("..v2", &v2.to_string());
    swap_to("..v2");
    let s = eventually(Duration::from_secs(30), "the new target", || async {
        let s = sidecar.status().await;
        (s["targets"].as_array().map(Vec::len) == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(s["config_reload"]["ok"], true);
    assert_eq!(
        s["targets"][0]["routes"][0]["healthy"], true,
        "kept across the reload: {s:#}"
    );

    // A bad change is rejected with the precise error; the old config stays.
    // A second [probe] table: not valid TOML, whatever it says.
    write_version(
        "..v3",
        &base.clone().raw("\n[probe]\nfall = 0\n").to_string(),
    );
    swap_to("..v3");
    let s = eventually(Duration::from_secs(30), "the rejection", || async {
        let s = sidecar.status().await;
        (s["config_reload"]["ok"] == false).then_some(s)
    })
    .await;
    let error = s["config_reload"]["error"].as_str().expect("error text");
    assert!(error.contains("config.toml:"), "{error}");
    assert_eq!(
        s["targets"].as_array().map(Vec::len),
        Some(3),
        "the previous config still serves"
    );
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(&m, "egress_config_last_reload_success", &[]),
        Some(0.0)
    );

    // SIGHUP-style reload after fixing the file.
    write_version("..v4", &base.to_string());
    swap_to("..v4");
    sidecar.reload.notify_one();
    eventually(Duration::from_secs(30), "the fix applied", || async {
        let s = sidecar.status().await;
        (s["config_reload"]["ok"] == true && s["targets"].as_array().map(Vec::len) == Some(2))
            .then_some(())
    })
    .await;
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_endpoint_shares_one_run_and_refuses_within_the_cooldown() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let cfg = ws.config(config(&proxy.url(), up.port()).admin(|a| a.verify_cooldown("30s")));
    let sidecar = Running::start(cfg).await;
    let before = proxy.received().len();
    let (a, b) = tokio::join!(
        request(sidecar.admin, "POST", "/verify"),
        request(sidecar.admin, "POST", "/verify")
    );
    assert_eq!((a.0, b.0), (200, 200));
    let json: serde_json::Value = serde_json::from_str(&a.1).expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    assert_eq!(a.1, b.1, "concurrent callers share one run");
    // Each run probes the two proxy pairs; scheduled probes may add a few more.
    let (code, body) = request(sidecar.admin, "POST", "/verify").await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("try again in"), "{body}");
    assert!(proxy.received().len() > before);
    assert_eq!(request(sidecar.admin, "GET", "/verify").await.0, 405);
    assert_eq!(request(sidecar.admin, "GET", "/nope").await.0, 404);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_windows_survive_a_restart_through_state_dir() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(403, "Forbidden")).await;
    let ws = Workspace::new();
    let state = ws.path("state");
    let text = config(&proxy.url(), up.port()).state_dir(&state.display().to_string());
    let sidecar = Running::start(ws.config(&text)).await;
    let opened = eventually(Duration::from_secs(5), "an open window", || async {
        let s = sidecar.status().await;
        s["incidents"][0]["text"].as_str().map(str::to_string)
    })
    .await;
    assert!(opened.contains("cause: proxy_denied (CONNECT "), "{opened}");
    sidecar.stop().await;

    // Restarted after the provider fixed its proxy: the window is still
    // there, and closes when the preferred route is healthy again.
    proxy.set_mode(Mode::Tunnel);
    let sidecar = Running::start(ws.config(&text)).await;
    let s = sidecar.status().await;
    assert_eq!(s["incidents"][0]["reason"], "proxy_denied", "{s:#}");
    let s = eventually(Duration::from_secs(5), "the window closed", || async {
        let s = sidecar.status().await;
        s["incidents"][0]["end"].is_number().then_some(s)
    })
    .await;
    assert_eq!(s["incidents"].as_array().map(Vec::len), Some(1), "{s:#}");
    sidecar.stop().await;
    let file = std::fs::read_to_string(state.join("incidents.jsonl")).expect("incident file");
    assert_eq!(file.lines().count(), 1, "compacted at shutdown: {file}");
}
