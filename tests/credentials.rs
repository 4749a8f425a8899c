//! `verify` proves the app's own credentials against loopback stand-ins
//! that behave as Entra ID and Twilio document (real TLS, real signature
//! checks): good ones exit 0 and each stand-in saw its check pass; an
//! expired Entra secret and a wrong Twilio token exit 1, each
//! `credential_rejected` with the provider's code, in the table and in the
//! JSON; a check that cannot run (a missing file, a FIFO) is a finding
//! naming the file, never a hang. No canary secret appears in any output.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use egress_sentinel::demo::providers::{Entra, EntraSaw, SecretCheck, Twilio, TwilioSaw};
use egress_sentinel::demo::stand_ins::{self, DemoPki};
use support::Workspace;
use support::config::{Target, Toml};

const APP: &str = "11111111-2222-3333-4444-555555555555";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Canaries: every secret the checks send.
const ENTRA_GOOD: &str = "CANARY-entra-good-6b1f0c";
const ENTRA_EXPIRED: &str = "CANARY-entra-expired-9d24e7";
const TWILIO_GOOD: &str = "CANARY-twilio-good-a4c8d1";
const TWILIO_WRONG: &str = "CANARY-twilio-wrong-53e0aa";
const CANARIES: [&str; 4] = [ENTRA_GOOD, ENTRA_EXPIRED, TWILIO_GOOD, TWILIO_WRONG];

struct Providers {
    pki: DemoPki,
    entra: Entra,
    twilio: Twilio,
}

async fn providers() -> Providers {
    let pki = stand_ins::pki(&["login.test", "api.twilio.test"]).expect("pki");
    let entra = Entra::start(&pki, "login.test", "contoso")
        .await
        .expect("entra");
    entra.add_secret(APP, ENTRA_GOOD);
    entra.add_expired_secret(APP, ENTRA_EXPIRED);
    let twilio = Twilio::start(&pki).await.expect("twilio");
    twilio.add_account(SID, TWILIO_GOOD);
    Providers { pki, entra, twilio }
}

/// Both targets direct to their stand-ins, each carrying its credential.
fn config(ws: &Workspace, p: &Providers) -> std::path::PathBuf {
    ws.write("demo-ca.pem", &p.pki.ca_pem);
    let toml = Toml::new()
        .resolve("login.test", "127.0.0.1")
        .resolve("api.twilio.test", "127.0.0.1")
        .target(
            Target::new(
                "entra",
                &format!("https://login.test:{}/", p.entra.addr().port()),
            )
            .direct_to("127.0.0.1/32")
            .ca_file("demo-ca.pem")
            .expect_status(&["200-499"])
            .credential(&[
                ("kind", "azure-ad"),
                ("tenant", "contoso"),
                ("client_id", APP),
                ("client_secret_file", "entra-secret"),
                ("token_url", &p.entra.token_url()),
            ]),
        )
        .target(
            Target::new(
                "sms",
                &format!("https://api.twilio.test:{}/", p.twilio.addr().port()),
            )
            .direct_to("127.0.0.1/32")
            .ca_file("demo-ca.pem")
            .expect_status(&["200-499"])
            .credential(&[
                ("kind", "twilio"),
                ("account_sid", SID),
                ("auth_token_file", "twilio-token"),
            ]),
        );
    ws.write("config.toml", &toml.to_string())
}

fn verify(config: &Path, json: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(support::binary());
    cmd.args(["verify", "--config"]).arg(config);
    if json {
        cmd.args(["--format", "json"]);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run verify");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn no_canary(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{what} shows a secret:\n{text}");
    }
}

/// The credential object of the JSON check of `target`.
fn credential_of(json: &str, target: &str) -> serde_json::Value {
    let checks: serde_json::Value = serde_json::from_str(json).expect("JSON report");
    checks
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["target"] == target)
        .unwrap_or_else(|| panic!("no check of {target}: {json}"))["credential"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_proves_good_credentials_and_names_each_rejection_with_its_code() {
    let p = providers().await;
    let ws = Workspace::new();
    let cfg = config(&ws, &p);
    ws.write("entra-secret", &format!("{ENTRA_GOOD}\n"));
    ws.write("twilio-token", TWILIO_GOOD);

    let (code, out, err) = verify(&cfg, false);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("CREDENTIALS"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" proven ")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(p.entra.seen(), vec![EntraSaw::Secret(SecretCheck::Good)]);
    assert_eq!(p.twilio.seen(), vec![TwilioSaw::AccountRead]);
    no_canary("verify", &(out.clone() + &err));

    // The secret expires; the Twilio token is rotated under the app.
    ws.write("entra-secret", ENTRA_EXPIRED);
    ws.write("twilio-token", TWILIO_WRONG);
    let (code, out, err) = verify(&cfg, false);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let row = |target: &str| {
        out.lines()
            .find(|l| l.starts_with(target) && l.contains("credential_rejected"))
            .unwrap_or_else(|| panic!("no rejected row for {target}:\n{out}"))
            .to_string()
    };
    assert!(row("entra").contains("AADSTS7000222"), "{out}");
    assert!(row("sms").contains("20003"), "{out}");
    no_canary("verify", &(out + &err));

    let (code, out, err) = verify(&cfg, true);
    assert_eq!(code, Some(1), "{err}");
    let entra = credential_of(&out, "entra");
    assert_eq!(entra["result"], "rejected", "{entra}");
    assert_eq!(entra["reason"], "credential_rejected");
    assert_eq!(entra["code"], "AADSTS7000222");
    assert_eq!(entra["kind"], "azure-ad");
    let sms = credential_of(&out, "sms");
    assert_eq!(sms["code"], "20003", "{sms}");
    assert_eq!(sms["http_status"], 401);
    no_canary("verify --format json", &(out + &err));
    assert_eq!(
        p.entra.seen().last(),
        Some(&EntraSaw::Secret(SecretCheck::Expired))
    );
    assert_eq!(p.twilio.seen().last(), Some(&TwilioSaw::WrongCredentials));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_cannot_run_names_its_file_and_never_hangs() {
    let p = providers().await;
    let ws = Workspace::new();
    let cfg = config(&ws, &p);
    // No Entra secret file at all; a FIFO where the Twilio token should be.
    let fifo = ws.path("twilio-token");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let started = Instant::now();
    let (code, out, err) = verify(&cfg, true);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    let entra = credential_of(&out, "entra");
    assert_eq!(entra["result"], "cannot_run", "{entra}");
    let detail = entra["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("entra-secret"), "{detail}");
    let sms = credential_of(&out, "sms");
    assert_eq!(sms["result"], "cannot_run", "{sms}");
    let detail = sms["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("twilio-token") && detail.contains("regular file"),
        "{detail}"
    );
    assert_eq!(
        p.entra.requests() + p.twilio.requests(),
        0,
        "no check reached a provider"
    );
}
