//! The credential schedule, in real time (3 minutes, so `#[ignore]`d in the
//! plain `cargo test` and run by `.ci/run` on its own): at `every = "1m"`
//! a 3-minute run makes at most 4 token requests (a first check at start,
//! then one a minute, jittered ±10 %), and a reload that leaves the
//! credential alone keeps its schedule (no extra check).

mod support;

use std::time::{Duration, Instant};

use egress_sentinel::demo::providers::Entra;
use egress_sentinel::demo::stand_ins;
use support::Workspace;
use support::config::{Target, Toml};
use support::spawned::Sidecar;

const APP: &str = "app-id";
const SECRET: &str = "CANARY-rate-secret-51c0";

fn config(entra: &Entra, interval: &str) -> String {
    let url = format!("https://login.test:{}/", entra.addr().port());
    Toml::new()
        .listen_port_zero()
        .probe(|p| p.timings(interval, "200ms", "3s"))
        .reload_poll("300ms")
        .resolve("login.test", "127.0.0.1")
        .target(
            Target::new("entra", &url)
                .direct_to("127.0.0.1/32")
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"])
                .credential(&[
                    ("kind", "azure-ad"),
                    ("tenant", "contoso"),
                    ("client_id", APP),
                    ("client_secret_file", "secret"),
                    ("token_url", &entra.token_url()),
                    ("every", "1m"),
                ]),
        )
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3 minutes of real time: .ci/run runs it with --ignored"]
async fn at_every_1m_a_3_minute_run_makes_at_most_4_token_requests() {
    let pki = stand_ins::pki(&["login.test"]).expect("pki");
    let entra = Entra::start(&pki, "login.test", "contoso")
        .await
        .expect("entra");
    entra.add_secret(APP, SECRET);
    let ws = Workspace::new();
    ws.write("demo-ca.pem", &pki.ca_pem);
    ws.write("secret", SECRET);
    let path = ws.write("config.toml", &config(&entra, "1s"));
    let s = Sidecar::start(&path).await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(entra.requests(), 1, "a first check at start");
    // A reload that leaves the credential alone: the schedule goes on.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let before = entra.requests();
    ws.write("config.toml", &config(&entra, "2s"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(entra.requests(), before, "the reload made no check");
    tokio::time::sleep(Duration::from_secs(180).saturating_sub(start.elapsed())).await;
    let n = entra.requests();
    assert!(
        (3..=4).contains(&n),
        "{n} token requests in 3 minutes at every = 1m"
    );
    let status = s.status().await;
    assert_eq!(status["config_reload"]["generation"], 2, "the reload took");
    let (stopped, _) = s.process.stop().await;
    assert!(stopped.success());
}
