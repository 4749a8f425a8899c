//! The push providers' checks against stand-ins that verify for real, over
//! TLS on loopback, without the sidecar: an APNs `.p8` key's provider token
//! (ES256, verified with the registered public key, sent over HTTP/2) and
//! an FCM service account's assertion (RS256) traded for an access token,
//! then a `validate_only` send. Apple's rule for provider tokens (reuse up
//! to 50 minutes, renew no more often than every 20) is checked with the
//! clock the check is given.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use egress_sentinel::config::{Config, Credential, Endpoint};
use egress_sentinel::credential::provider::{self, Call, CannotRun, Reply, Step, Verdict};
use egress_sentinel::demo::providers::fcm::{rsa_public_key, service_account_json};
use egress_sentinel::demo::providers::{Apns, ApnsMode, ApnsSaw, Fcm, FcmMode, FcmSaw};
use egress_sentinel::demo::stand_ins::{DemoPki, pki};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::Workspace;
use support::config::{Target, Toml};
use support::pki::{p256, rsa_pem};

const APNS: &str = "api.push.apple.demo.test";
const FCM: &str = "fcm.googleapis.demo.test";
const OAUTH: &str = "oauth2.googleapis.demo.test";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "DEF123GHIJ";
const TOPIC: &str = "com.example.app";
const PROJECT: &str = "demo-project";
const EMAIL: &str = "push@demo-project.iam.gserviceaccount.com";
const MINUTE: Duration = Duration::from_secs(60);

/// A target `t` at `url` carrying `[target.credential]` `table`, compiled.
fn credential(ws: &Workspace, url: &str, table: &str) -> (Credential, Endpoint) {
    let text = Toml::new()
        .target(Target::new("t", url).routes(&["direct"]))
        .raw(&format!("\n[target.credential]\n{table}"));
    let cfg = Config::parse(&ws.path("config.toml"), &text.to_string()).expect("config");
    let t = cfg.target("t").expect("target");
    let c = t.credential.as_deref().expect("credential").clone();
    (c, t.endpoint.clone())
}

/// Sends `call` to 127.0.0.1 at its port over TLS, trusting `ca_pem` for
/// its host name; HTTP/2 (ALPN `h2` only) when `h2`.
async fn send(ca_pem: &str, call: &Call, h2: bool) -> Reply {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    config.alpn_protocols = vec![alpn.to_vec()];
    let ep = &call.endpoint;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ep.port))
        .await
        .expect("connect");
    let name = ServerName::try_from(ep.host.clone()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let mut req = http::Request::builder().method(call.method.clone());
    req = if h2 {
        req.uri(ep.url())
    } else {
        req.uri(&ep.path_and_query)
            .header(http::header::HOST, format!("{}:{}", ep.host, ep.port))
    };
    for (k, v) in &call.headers {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(call.body.clone())).expect("request");
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.send_request(req).await.expect("response")
    };
    let (parts, body) = resp.into_parts();
    let body: Bytes = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// The secrets a check must never show: every line of the key files'
/// PEM bodies, the tokens it sent, and Google-style access tokens.
fn assert_no_secrets(shown: &str, keys: &[&str], sent: &[String]) {
    let lines = keys
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.starts_with("-----") && l.len() > 16);
    for needle in lines.map(str::to_string).chain(sent.iter().cloned()) {
        assert!(!shown.contains(&needle), "a secret is shown: {shown}");
    }
    assert!(
        !shown.contains("ya29."),
        "an access token is shown: {shown}"
    );
}

/// The credential in `call`'s `Authorization`.
fn sent_credential(call: &Call) -> Option<String> {
    let (_, v) = call
        .headers
        .iter()
        .find(|(k, _)| *k == http::header::AUTHORIZATION)?;
    let v = v.to_str().ok()?;
    Some(v.split_once(' ').map_or(v, |(_, t)| t).to_string())
}

/// One whole check of `c` on `target` at `now`, every request sent (over
/// HTTP/2 when `h2`): its verdict and how many requests it made. Asserts
/// that no secret shows in any value it made.
async fn check_at(
    pki: &DemoPki,
    c: &Credential,
    target: &Endpoint,
    now: SystemTime,
    h2: bool,
    keys: &[&str],
) -> (Verdict, usize) {
    let loaded = provider::load(c).expect("load");
    let mut call = provider::first(c, &loaded, target, now).expect("first");
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.extend(sent_credential(&call));
        let reply = send(&pki.ca_pem, &call, h2).await;
        match provider::next(c, &loaded, target, n, &call, &reply) {
            Step::Next(more) => {
                assert_no_secrets(&format!("{more:?}"), keys, &sent);
                call = more;
            }
            Step::Done(verdict) => {
                let shown = format!("{c:?} {loaded:?} {call:?} {verdict:?}");
                assert_no_secrets(&shown, keys, &sent);
                return (verdict, n + 1);
            }
        }
    }
    panic!("no verdict after 3 requests")
}

fn code(v: &Verdict) -> &str {
    match v {
        Verdict::Rejected { code, .. } => code,
        v => panic!("not a rejection: {v:?}"),
    }
}

fn apns_table(key_file: &std::path::Path, key_id: &str, topic: &str) -> String {
    format!(
        "kind = \"apns-token\"\nkey_file = \"{}\"\nkey_id = \"{key_id}\"\nteam_id = \"{TEAM_ID}\"\ntopic = \"{topic}\"\n",
        key_file.display()
    )
}

/// An APNs stand-in knowing `public` as key `KEY_ID` and topic `TOPIC`.
async fn apns(pki: &DemoPki, public: &[u8]) -> (Apns, String) {
    let apns = Apns::start(pki).await.expect("apns");
    apns.add_key(KEY_ID, TEAM_ID, public);
    apns.add_topic(TOPIC);
    let url = format!("https://{APNS}:{}/", apns.addr().port());
    (apns, url)
}

#[tokio::test]
async fn apns_proves_a_good_key_and_names_a_wrong_key_a_wrong_topic_and_a_slow_down() {
    let ws = Workspace::new();
    let pki = pki(&[APNS]).expect("pki");
    let (pem, public) = p256();
    let (stand_in, url) = apns(&pki, &public).await;
    let key = ws.write("AuthKey.p8", &pem);
    let (good, target) = credential(&ws, &url, &apns_table(&key, KEY_ID, TOPIC));
    let now = SystemTime::now();
    let (v, calls) = check_at(&pki, &good, &target, now, true, &[&pem]).await;
    assert_eq!(
        v,
        Verdict::Proven(
            "key and team accepted (APNs 400 BadDeviceToken for the dummy device)".into()
        )
    );
    assert_eq!(calls, 1);
    assert_eq!(stand_in.http2_requests(), 1, "APNs is spoken over HTTP/2");

    // Another key registered under a second key id: the signature fails.
    let (other_pem, _) = p256();
    let (_, registered) = p256();
    stand_in.add_key("ZZZ999YYYY", TEAM_ID, &registered);
    let other = ws.write("Other.p8", &other_pem);
    let (wrong, _) = credential(&ws, &url, &apns_table(&other, "ZZZ999YYYY", TOPIC));
    let (v, _) = check_at(&pki, &wrong, &target, now, true, &[&other_pem]).await;
    assert_eq!(code(&v), "InvalidProviderToken", "{v:?}");

    let (topic, _) = credential(&ws, &url, &apns_table(&key, KEY_ID, "com.example.other"));
    let (v, _) = check_at(&pki, &topic, &target, now, true, &[&pem]).await;
    assert_eq!(code(&v), "TopicDisallowed", "{v:?}");

    stand_in.set_mode(ApnsMode::TooManyUpdates);
    let (v, _) = check_at(&pki, &good, &target, now, true, &[&pem]).await;
    assert!(
        matches!(&v, Verdict::BackOff { after, detail } if *after >= 20 * MINUTE && detail.contains("TooManyProviderTokenUpdates")),
        "{v:?}"
    );
    assert_eq!(
        stand_in.seen(),
        [
            ApnsSaw::Accepted,
            ApnsSaw::InvalidToken,
            ApnsSaw::TopicDisallowed,
            ApnsSaw::TooManyUpdates
        ]
    );
}

#[tokio::test]
async fn apns_reuses_its_token_for_50_minutes_and_renews_it_no_sooner_than_20() {
    let ws = Workspace::new();
    let pki = pki(&[APNS]).expect("pki");
    let (pem, public) = p256();
    let (stand_in, url) = apns(&pki, &public).await;
    let key = ws.write("AuthKey.p8", &pem);
    let (c, target) = credential(&ws, &url, &apns_table(&key, KEY_ID, TOPIC));
    let t0 = SystemTime::now();
    let at = |m: u32| t0 + MINUTE * m;
    let proven = |v: &Verdict| assert!(matches!(v, Verdict::Proven(_)), "{v:?}");
    proven(&check_at(&pki, &c, &target, at(0), true, &[&pem]).await.0);
    // A reload that leaves the key alone compiles the credential again.
    let (reloaded, _) = credential(&ws, &url, &apns_table(&key, KEY_ID, TOPIC));
    proven(
        &check_at(&pki, &reloaded, &target, at(1), true, &[&pem])
            .await
            .0,
    );
    assert_eq!(stand_in.distinct_tokens(), 1, "one token for both checks");
    proven(&check_at(&pki, &c, &target, at(51), true, &[&pem]).await.0);
    assert_eq!(stand_in.distinct_tokens(), 2, "renewed after 50 minutes");

    // The key is revoked 5 minutes into the new token's life: the refusal
    // is reported, but no new token before the token is 20 minutes old.
    stand_in.set_mode(ApnsMode::KeyRevoked);
    for m in [56, 60, 70] {
        let (v, _) = check_at(&pki, &c, &target, at(m), true, &[&pem]).await;
        assert_eq!(code(&v), "InvalidProviderToken", "at +{m}: {v:?}");
        assert_eq!(stand_in.distinct_tokens(), 2, "at +{m}");
    }
    stand_in.set_mode(ApnsMode::Normal);
    proven(&check_at(&pki, &c, &target, at(72), true, &[&pem]).await.0);
    assert_eq!(stand_in.distinct_tokens(), 3, "renewed once allowed");
    assert_eq!(stand_in.requests(), 7);
}

#[tokio::test]
async fn an_apns_key_that_is_not_p256_cannot_run_and_names_its_file() {
    let ws = Workspace::new();
    let key = ws.write("AuthKey_RSA.p8", &rsa_pem());
    let (c, _) = credential(
        &ws,
        "https://api.push.apple.demo.test/",
        &apns_table(&key, KEY_ID, TOPIC),
    );
    let Err(CannotRun(why)) = provider::load(&c) else {
        panic!("an RSA key loaded as a .p8")
    };
    assert!(why.contains(&key.display().to_string()), "{why}");
    assert!(why.contains("not an ES256 (P-256) key"), "{why}");
}

/// An FCM stand-in knowing `EMAIL` with `pem`'s public key, a service
/// account file for it, and the target URL.
async fn fcm(ws: &Workspace, pki: &DemoPki, pem: &str) -> (Fcm, std::path::PathBuf, String) {
    let fcm = Fcm::start(pki, OAUTH).await.expect("fcm");
    let public = rsa_public_key(pem).expect("rsa public key");
    fcm.add_service_account(EMAIL, &public, PROJECT);
    let file = ws.write(
        "service-account.json",
        &service_account_json(EMAIL, pem, &fcm.token_url(), PROJECT),
    );
    let url = format!("https://{FCM}:{}/", fcm.addr().port());
    (fcm, file, url)
}

fn fcm_table(file: &std::path::Path) -> String {
    format!(
        "kind = \"fcm\"\nservice_account_file = \"{}\"\n",
        file.display()
    )
}

#[tokio::test]
async fn fcm_proves_a_service_account_in_two_requests_and_names_each_refusal() {
    let ws = Workspace::new();
    let pki = pki(&[FCM, OAUTH]).expect("pki");
    let pem = rsa_pem();
    let (stand_in, file, url) = fcm(&ws, &pki, &pem).await;
    let (c, target) = credential(&ws, &url, &fcm_table(&file));
    let now = SystemTime::now();
    let (v, calls) = check_at(&pki, &c, &target, now, false, &[&pem]).await;
    assert_eq!(
        v,
        Verdict::Proven(
            "service account accepted (FCM validate_only: the dummy registration token refused)"
                .into()
        )
    );
    assert_eq!(calls, 2);

    stand_in.set_mode(FcmMode::KeyRevoked);
    let (v, calls) = check_at(&pki, &c, &target, now, false, &[&pem]).await;
    assert_eq!((code(&v), calls), ("invalid_grant", 1), "{v:?}");
    assert!(format!("{v:?}").contains("Invalid JWT Signature."), "{v:?}");

    stand_in.set_mode(FcmMode::ApiDisabled);
    let (v, _) = check_at(&pki, &c, &target, now, false, &[&pem]).await;
    assert_eq!(code(&v), "PERMISSION_DENIED", "{v:?}");
    assert!(format!("{v:?}").contains("SERVICE_DISABLED"), "{v:?}");

    // A key the account does not have: the signature fails.
    stand_in.set_mode(FcmMode::Normal);
    let unknown = rsa_pem();
    let other = ws.write(
        "unknown.json",
        &service_account_json(EMAIL, &unknown, &stand_in.token_url(), PROJECT),
    );
    let (u, _) = credential(&ws, &url, &fcm_table(&other));
    let (v, _) = check_at(&pki, &u, &target, now, false, &[&unknown]).await;
    assert_eq!(code(&v), "invalid_grant", "{v:?}");
    assert_eq!(
        stand_in.seen(),
        [
            FcmSaw::TokenIssued,
            FcmSaw::Validated,
            FcmSaw::KeyRevoked,
            FcmSaw::TokenIssued,
            FcmSaw::ApiDisabled,
            FcmSaw::BadSignature
        ]
    );
    assert_eq!(stand_in.token_exchanges(), 4);
}

#[tokio::test]
async fn a_service_account_file_without_its_private_key_cannot_run_and_says_so() {
    let ws = Workspace::new();
    let doc = serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "client_email": EMAIL,
        "token_uri": "https://oauth2.googleapis.demo.test/token",
    });
    let file = ws.write("no-key.json", &doc.to_string());
    let (c, _) = credential(&ws, "https://fcm.googleapis.demo.test/", &fcm_table(&file));
    let Err(CannotRun(why)) = provider::load(&c) else {
        panic!("a file without a private key loaded")
    };
    assert!(why.contains(&file.display().to_string()), "{why}");
    assert!(why.contains("`private_key`"), "{why}");
}
