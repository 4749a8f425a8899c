//! Credential checks in a running sidecar (the built binary), through a
//! real Squid: an expired Entra ID secret is `credential_rejected` with
//! Microsoft's code while its route stays healthy and active (no failover:
//! going direct does not fix a credential); the token request went through
//! Squid; its incident window stays open through a route flap and closes
//! when the secret is replaced the way Kubernetes does it (a `..data`
//! symlink swap, picked up without a signal). With no
//! working route the checks are skipped and say so. A proxy refusing the
//! token host is `proxy_denied`, and the token host is opened to the check
//! alone, not to the app. No secret appears in any output.

mod support;

use std::time::Duration;

use egress_sentinel::demo::providers::{Entra, EntraSaw, SecretCheck};
use egress_sentinel::demo::stand_ins::{self, DemoPki};
use serde_json::Value;
use support::Workspace;
use support::config::{Route, Target, Toml};
use support::sidecar::{eventually, request, sample};
use support::spawned::Sidecar;
use support::squid::{self, Opts as SquidOpts, Squid};

const APP: &str = "11111111-2222-3333-4444-555555555555";
const GOOD: &str = "CANARY-run-good-secret-0d9e1b";
const EXPIRED: &str = "CANARY-run-expired-secret-7a3c55";

async fn entra(pki: &DemoPki) -> Entra {
    let entra = Entra::start(pki, "login.test", "contoso")
        .await
        .expect("entra");
    entra.add_secret(APP, GOOD);
    entra.add_expired_secret(APP, EXPIRED);
    entra
}

fn credential(token_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("kind", "azure-ad".into()),
        ("tenant", "contoso".into()),
        ("client_id", APP.into()),
        ("client_secret_file", "entra-secret".into()),
        ("token_url", token_url.into()),
        ("every", "1m".into()),
    ]
}

fn with_credential(t: Target, keys: &[(&'static str, String)]) -> Target {
    let pairs: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    t.credential(&pairs)
}

fn base(ws: &Workspace, pki: &DemoPki) -> Toml {
    ws.write("demo-ca.pem", &pki.ca_pem);
    Toml::new()
        .listen_port_zero()
        .probe(|p| p.timings("500ms", "200ms", "3s"))
        .reload_poll("300ms")
        .resolve("login.test", "127.0.0.1")
}

/// The credential object of `target` in `/status`.
async fn credential_state(s: &Sidecar, target: &str) -> Value {
    let status = s.status().await;
    status["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["target"] == target))
        .map(|t| t["credential"].clone())
        .unwrap_or(Value::Null)
}

async fn until_state(s: &Sidecar, target: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("{target}'s credential {state}"),
        || async {
            let c = credential_state(s, target).await;
            (c["state"] == state).then_some(c)
        },
    )
    .await
}

/// The credential incident windows in `/status`.
async fn credential_windows(s: &Sidecar) -> Vec<Value> {
    s.status().await["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w["reason"] == "credential_rejected")
        .collect()
}

async fn until_active(s: &Sidecar, route: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("entra active on {route}"),
        || async {
            let m = s.metrics_text().await;
            let l = [("target", "entra"), ("route", route)];
            (sample(&m, "egress_route_active", &l) == Some(1.0)).then_some(())
        },
    )
    .await;
}

/// A Kubernetes secret volume: `secrets/entra-secret` a symlink to
/// `..data/entra-secret`, `..data` a symlink to a timestamped folder. An
/// update writes a new folder and swaps `..data` in one rename.
fn k8s_secret(ws: &Workspace, generation: u32, secret: &str) {
    let root = ws.path("secrets");
    let folder = root.join(format!("..2026_12_07_{generation}"));
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("entra-secret"), secret).expect("write");
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(folder.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, root.join("..data")).expect("swap ..data");
    let link = root.join("entra-secret");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/entra-secret", &link).expect("symlink");
    }
}

fn no_canary(what: &str, text: &str) {
    for c in [GOOD, EXPIRED] {
        assert!(!text.contains(c), "{what} shows a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_is_rejected_without_failover_and_its_window_outlives_a_route_flap() {
    let Some(bin) = squid::available() else {
        return;
    };
    let pki = stand_ins::pki(&["login.test"]).expect("pki");
    let entra = entra(&pki).await;
    let mut squid = Squid::start(bin, &["login.test"], &[]);
    let squid_port = squid.addr.port();
    let ws = Workspace::new();
    k8s_secret(&ws, 1, EXPIRED);
    let mut keys = credential(&entra.token_url());
    keys[3].1 = "secrets/entra-secret".into();
    let url = format!("https://login.test:{}/", entra.addr().port());
    let toml = base(&ws, &pki)
        .route(Route::proxy("squid", &squid.url()).connect_timeout("3s"))
        .target(with_credential(
            Target::new("entra", &url)
                .routes(&["squid", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"]),
            &keys,
        ));
    let path = ws.write("config.toml", &toml.to_string());
    let s = Sidecar::start(&path).await;

    let c = until_state(&s, "entra", "rejected").await;
    assert_eq!(c["reason"], "credential_rejected", "{c:#}");
    assert_eq!(c["code"], "AADSTS7000222", "{c:#}");
    assert_eq!(c["route"], "squid", "{c:#}");
    assert_eq!(
        entra
            .seen()
            .into_iter()
            .filter(|x| *x != EntraSaw::Malformed)
            .collect::<Vec<_>>(),
        vec![EntraSaw::Secret(SecretCheck::Expired)]
    );
    let m = s.metrics_text().await;
    let on = |route| [("target", "entra"), ("route", route)];
    assert_eq!(
        sample(&m, "egress_credential_success", &on("squid")),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "egress_route_healthy", &on("squid")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "egress_route_active", &on("squid")), Some(1.0));
    let rejected = [
        ("target", "entra"),
        ("route", "squid"),
        ("reason", "credential_rejected"),
    ];
    assert_eq!(
        sample(&m, "egress_credential_failures_total", &rejected),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "egress_credential_rejected_in_a_row",
            &[("target", "entra")]
        ),
        Some(1.0)
    );
    assert!(!m.contains("egress_failovers_total{"), "no failover:\n{m}");
    // The token request went through Squid, as the app's would.
    let port = entra.addr().port();
    eventually(
        Duration::from_secs(10),
        "squid logged the CONNECT",
        || async {
            squid
                .access_log()
                .contains(&format!("CONNECT login.test:{port}"))
                .then_some(())
        },
    )
    .await;
    let windows = credential_windows(&s).await;
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!(windows[0]["end"], Value::Null);

    // The route flaps: Squid dies, traffic moves direct, Squid comes back.
    squid.kill();
    until_active(&s, "direct").await;
    squid = Squid::start_with(
        bin,
        &["login.test"],
        &[],
        &SquidOpts {
            port: Some(squid_port),
            ..Default::default()
        },
    );
    until_active(&s, "squid").await;
    let windows = credential_windows(&s).await;
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert_eq!(
        windows[0]["end"],
        Value::Null,
        "a route recovering does not close it"
    );

    // The secret is replaced as Kubernetes does it (the `..data` swap, no
    // signal): checked at once, proven, closed.
    k8s_secret(&ws, 2, GOOD);
    let c = until_state(&s, "entra", "proven").await;
    assert_eq!(c["rejected_in_a_row"], 0, "{c:#}");
    let windows = credential_windows(&s).await;
    assert_eq!(windows.len(), 1, "{windows:#?}");
    assert!(windows[0]["end"].is_i64(), "{windows:#?}");
    let m = s.metrics_text().await;
    assert_eq!(
        sample(&m, "egress_credential_success", &on("squid")),
        Some(1.0),
        "{m}"
    );

    let status = s.status().await.to_string();
    let (_, page) = request(s.admin, "GET", "/").await;
    assert!(
        page.contains("data-credential=\"entra\""),
        "the page has its row"
    );
    let (stopped, lines) = s.process.stop().await;
    assert!(stopped.success(), "{}", lines.join("\n"));
    no_canary("/status", &status);
    no_canary("/metrics", &m);
    no_canary("the page", &page);
    no_canary("the logs", &lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("credential check did not prove the credential")),
        "a warning was logged"
    );
    drop(squid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_working_route_the_checks_are_skipped_and_say_so() {
    let pki = stand_ins::pki(&["login.test"]).expect("pki");
    let entra = entra(&pki).await;
    let ws = Workspace::new();
    ws.write("entra-secret", EXPIRED);
    // A proxy route with nothing listening, and no direct.
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let url = format!("https://login.test:{}/", entra.addr().port());
    let toml = base(&ws, &pki)
        .route(Route::proxy("dead", &dead).connect_timeout("1s"))
        .target(with_credential(
            Target::new("entra", &url)
                .routes(&["dead"])
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"]),
            &credential(&entra.token_url()),
        ));
    let path = ws.write("config.toml", &toml.to_string());
    let s = Sidecar::start(&path).await;
    let c = until_state(&s, "entra", "skipped").await;
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("no working route"), "{detail}");
    assert!(c["skipped_since"].is_f64(), "{c:#}");
    let m = s.metrics_text().await;
    let t = [("target", "entra")];
    assert_eq!(
        sample(&m, "egress_credential_skipped", &t),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "egress_credential_rejected_in_a_row", &t),
        Some(0.0)
    );
    assert!(
        !m.contains("egress_credential_success{"),
        "no check ran:\n{m}"
    );
    assert!(credential_windows(&s).await.is_empty());
    assert_eq!(entra.requests(), 0, "nothing reached the provider");
    let (stopped, _) = s.process.stop().await;
    assert!(stopped.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_refusing_the_token_host_is_proxy_denied_and_the_app_may_not_go_there() {
    let Some(bin) = squid::available() else {
        return;
    };
    let pki = stand_ins::pki(&["login.test", "graph.test"]).expect("pki");
    let entra = entra(&pki).await;
    // The target's own host is a second stand-in; Squid refuses login.test.
    let graph = Entra::start(&pki, "graph.test", "other")
        .await
        .expect("graph");
    let squid = Squid::start(bin, &["graph.test", "login.test"], &["login.test"]);
    let ws = Workspace::new();
    ws.write("entra-secret", GOOD);
    let url = format!("https://graph.test:{}/", graph.addr().port());
    let toml = base(&ws, &pki)
        .resolve("graph.test", "127.0.0.1")
        .route(Route::proxy("squid", &squid.url()).connect_timeout("3s"))
        .target(with_credential(
            Target::new("entra", &url)
                .routes(&["squid"])
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"]),
            &credential(&entra.token_url()),
        ))
        .forward(|f| f.deny_unmatched());
    let path = ws.write("config.toml", &toml.to_string());
    let s = Sidecar::start(&path).await;
    let c = until_state(&s, "entra", "failed").await;
    assert_eq!(c["reason"], "proxy_denied", "{c:#}");
    assert_eq!(entra.requests(), 0);
    // The target's route is healthy: a credential check never moves it.
    let m = s.metrics_text().await;
    let l = [("target", "entra"), ("route", "squid")];
    assert_eq!(sample(&m, "egress_route_healthy", &l), Some(1.0), "{m}");
    // The token host is the check's, not the app's.
    match support::app::get_via(s.proxy, "login.test", entra.addr().port()).await {
        Err(Ok(refusal)) => assert_eq!(refusal.status, 403, "{refusal:?}"),
        other => panic!("the app reached the token host: {other:?}"),
    }
    assert_eq!(entra.requests(), 0, "nothing reached the token host");
    let (stopped, _) = s.process.stop().await;
    assert!(stopped.success());
}
