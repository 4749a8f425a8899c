//! The push credentials end to end, through the built binary: `verify`
//! proves a good APNs key and FCM service account against stand-ins that
//! check the signatures (exit 0, each stand-in saw its check pass), and
//! names a revoked key and an unknown service-account key (exit 1,
//! `credential_rejected` with `InvalidProviderToken` and `invalid_grant`, in
//! the table and the JSON). A running sidecar told to slow down by APNs
//! (429 `TooManyProviderTokenUpdates`) backs off at least 20 minutes
//! without reporting a rejection. In real time (3 minutes, `#[ignore]`d:
//! `.ci/run` runs it): at `every = "1m"` one APNs provider token is signed
//! and at most 4 FCM tokens are traded. No key or token shows in any
//! output.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use egress_sentinel::demo::providers::fcm::{rsa_public_key, service_account_json};
use egress_sentinel::demo::providers::{Apns, ApnsMode, ApnsSaw, Fcm, FcmSaw};
use egress_sentinel::demo::stand_ins::{self, DemoPki};
use support::Workspace;
use support::config::{Target, Toml};
use support::pki::{p256, rsa_pem};
use support::sidecar::eventually;
use support::spawned::Sidecar;

const APNS: &str = "api.push.apple.demo.test";
const FCM: &str = "fcm.googleapis.demo.test";
const OAUTH: &str = "oauth2.googleapis.demo.test";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const TOPIC: &str = "com.example.app";
const PROJECT: &str = "demo-project";
const EMAIL: &str = "push@demo-project.iam.gserviceaccount.com";

struct Push {
    pki: DemoPki,
    apns: Apns,
    fcm: Fcm,
    /// The key files' PEM: never to be shown.
    keys: Vec<String>,
}

async fn push() -> Push {
    let pki = stand_ins::pki(&[APNS, FCM, OAUTH]).expect("pki");
    let apns = Apns::start(&pki).await.expect("apns");
    let fcm = Fcm::start(&pki, OAUTH).await.expect("fcm");
    Push {
        pki,
        apns,
        fcm,
        keys: Vec::new(),
    }
}

impl Push {
    /// A registered APNs key written to `AuthKey.p8`.
    fn apns_key(&mut self, ws: &Workspace) {
        let (pem, public) = p256();
        self.apns.add_key(KEY_ID, TEAM_ID, &public);
        self.apns.add_topic(TOPIC);
        ws.write("AuthKey.p8", &pem);
        self.keys.push(pem);
    }

    /// A service account written to `service-account.json`; registered
    /// with the stand-in when `known`.
    fn service_account(&mut self, ws: &Workspace, known: bool) {
        let pem = rsa_pem();
        if known {
            let public = rsa_public_key(&pem).expect("public key");
            self.fcm.add_service_account(EMAIL, &public, PROJECT);
        }
        let json = service_account_json(EMAIL, &pem, &self.fcm.token_url(), PROJECT);
        ws.write("service-account.json", &json);
        self.keys.push(pem);
    }

    fn no_key_in(&self, what: &str, text: &str) {
        let lines = self
            .keys
            .iter()
            .flat_map(|k| k.lines())
            .filter(|l| !l.starts_with("-----") && l.len() > 16);
        for l in lines {
            assert!(!text.contains(l), "{what} shows a key");
        }
        assert!(!text.contains("ya29."), "{what} shows an access token");
        assert!(!text.contains("eyJ"), "{what} shows a JWT");
    }
}

fn config(ws: &Workspace, p: &Push, every: &str) -> PathBuf {
    ws.write("demo-ca.pem", &p.pki.ca_pem);
    let apns_url = format!("https://{APNS}:{}/", p.apns.addr().port());
    let fcm_url = format!("https://{FCM}:{}/", p.fcm.addr().port());
    let toml = Toml::new()
        .listen_port_zero()
        .probe(|pr| pr.timings("1s", "200ms", "3s"))
        .resolve(APNS, "127.0.0.1")
        .resolve(FCM, "127.0.0.1")
        .resolve(OAUTH, "127.0.0.1")
        .target(
            Target::new("apns", &apns_url)
                .direct_to("127.0.0.1/32")
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"])
                .credential(&[
                    ("kind", "apns-token"),
                    ("key_file", "AuthKey.p8"),
                    ("key_id", KEY_ID),
                    ("team_id", TEAM_ID),
                    ("topic", TOPIC),
                    ("every", every),
                ]),
        )
        .target(
            Target::new("fcm", &fcm_url)
                .direct_to("127.0.0.1/32")
                .ca_file("demo-ca.pem")
                .expect_status(&["200-499"])
                .credential(&[
                    ("kind", "fcm"),
                    ("service_account_file", "service-account.json"),
                    ("every", every),
                ]),
        );
    ws.write("config.toml", &toml.to_string())
}

fn verify(config: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(support::binary());
    cmd.args(["verify", "--config"]).arg(config);
    if json {
        cmd.args(["--format", "json"]);
    }
    let out = cmd.output().expect("verify");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn credential_of(json: &str, target: &str) -> serde_json::Value {
    let start = json.find('[').expect("a JSON array");
    let end = json.rfind(']').expect("a JSON array");
    let checks: serde_json::Value = serde_json::from_str(&json[start..=end]).expect("JSON");
    checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["target"] == target))
        .map(|c| c["credential"].clone())
        .unwrap_or_else(|| panic!("no check of {target}: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_good_push_credentials_and_names_a_revoked_key_and_an_unknown_account() {
    let mut p = push().await;
    let ws = Workspace::new();
    p.apns_key(&ws);
    p.service_account(&ws, true);
    let cfg = config(&ws, &p, "5m");

    let (code, out) = verify(&cfg, false);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(p.apns.seen(), vec![ApnsSaw::Accepted], "{out}");
    assert!(p.apns.http2_requests() >= 1, "APNs over HTTP/2");
    assert_eq!(p.fcm.token_exchanges(), 1);
    assert_eq!(p.fcm.seen().len(), 2, "{:?}", p.fcm.seen());
    assert!(
        matches!(p.fcm.seen().last(), Some(FcmSaw::Validated)),
        "{:?}",
        p.fcm.seen()
    );
    p.no_key_in("verify", &out);

    // The key is revoked in Apple's developer account; the service
    // account's key is replaced by one Google does not know.
    p.apns.set_mode(ApnsMode::KeyRevoked);
    p.service_account(&ws, false);
    let (code, out) = verify(&cfg, false);
    assert_eq!(code, Some(1), "{out}");
    let row = |t: &str| {
        out.lines()
            .find(|l| l.starts_with(t) && l.contains("credential_rejected"))
            .unwrap_or_else(|| panic!("no rejected row for {t}:\n{out}"))
            .to_string()
    };
    assert!(row("apns").contains("InvalidProviderToken"), "{out}");
    assert!(row("fcm").contains("invalid_grant"), "{out}");
    p.no_key_in("verify", &out);

    let (code, out) = verify(&cfg, true);
    assert_eq!(code, Some(1), "{out}");
    let apns = credential_of(&out, "apns");
    assert_eq!(apns["reason"], "credential_rejected", "{apns}");
    assert_eq!(apns["code"], "InvalidProviderToken");
    let fcm = credential_of(&out, "fcm");
    assert_eq!(fcm["reason"], "credential_rejected", "{fcm}");
    assert_eq!(fcm["code"], "invalid_grant");
    p.no_key_in("verify --format json", &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_from_apns_backs_off_at_least_20_minutes_and_is_no_rejection() {
    let mut p = push().await;
    let ws = Workspace::new();
    p.apns_key(&ws);
    p.service_account(&ws, true);
    p.apns.set_mode(ApnsMode::TooManyUpdates);
    let cfg = config(&ws, &p, "1m");
    let s = Sidecar::start(&cfg).await;
    let c = eventually(Duration::from_secs(30), "apns backing off", || async {
        let status = s.status().await;
        let c = status["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["target"] == "apns"))
            .map(|t| t["credential"].clone())?;
        (c["state"] == "backing_off").then_some(c)
    })
    .await;
    assert_eq!(c["rejected_in_a_row"], 0, "{c:#}");
    assert_eq!(c["code"], serde_json::Value::Null, "{c:#}");
    let last = c["last_check"].as_f64().expect("last check");
    let not_before = c["not_before"].as_f64().expect("not before");
    assert!(not_before - last >= 1200.0, "{c:#}");
    // No further APNs check meanwhile (a probe is not one).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(p.apns.seen(), vec![ApnsSaw::TooManyUpdates]);
    let m = s.metrics_text().await;
    assert!(
        !m.lines()
            .any(|l| l.starts_with("egress_credential_failures_total")
                && l.contains("credential_rejected")
                && !l.ends_with(" 0")),
        "no rejection counted:\n{m}"
    );
    let (stopped, lines) = s.process.stop().await;
    assert!(stopped.success());
    p.no_key_in("the logs", &lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3 minutes of real time: .ci/run runs it with --ignored"]
async fn at_every_1m_three_minutes_sign_one_apns_token_and_trade_at_most_4_fcm_tokens() {
    let mut p = push().await;
    let ws = Workspace::new();
    p.apns_key(&ws);
    p.service_account(&ws, true);
    let cfg = config(&ws, &p, "1m");
    let s = Sidecar::start(&cfg).await;
    tokio::time::sleep(Duration::from_secs(180)).await;
    let checks = p.apns.seen();
    assert!(
        (3..=4).contains(&checks.len()) && checks.iter().all(|c| *c == ApnsSaw::Accepted),
        "{checks:?}"
    );
    assert_eq!(p.apns.distinct_tokens(), 1, "one provider token, reused");
    let exchanges = p.fcm.token_exchanges();
    assert!(
        (3..=4).contains(&exchanges),
        "{exchanges} FCM token exchanges"
    );
    let (stopped, lines) = s.process.stop().await;
    assert!(stopped.success());
    p.no_key_in("the logs", &lines.join("\n"));
}
