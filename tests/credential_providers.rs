//! The providers' checks against stand-ins that check for real, over TLS
//! on loopback, without the sidecar: a credential compiled from a config,
//! its files read by `load`, the request built by `first` sent by a small
//! client trusting the demo CA, and the answer read by `next`. The
//! stand-ins compare secrets and verify the certificate assertion's
//! signature, so a Proven verdict means the signing is right.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use egress_sentinel::config::{Config, Credential, Endpoint};
use egress_sentinel::credential::provider::{self, Call, Reply, Step, Verdict};
use egress_sentinel::demo::providers::{
    AssertionCheck, Entra, EntraMode, EntraSaw, SecretCheck, Twilio, TwilioMode, TwilioSaw,
};
use egress_sentinel::demo::stand_ins::{DemoPki, pki};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::Workspace;
use support::config::{Target, Toml};

const LOGIN: &str = "login.demo.test";
const TWILIO: &str = "api.twilio.demo.test";
const TENANT: &str = "contoso";
const CLIENT: &str = "11111111-2222-4333-8444-555555555555";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
/// Secrets that must never be seen outside the wire.
const CANARY: &str = "canary-entra-s3cret~Q8";
const WRONG: &str = "canary-wrong-s3cret~Z1";
const TOKEN: &str = "canary-twilio-t0ken";
const KEY_SECRET: &str = "canary-twilio-key-s3cret";

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

/// Sends `call` to 127.0.0.1 at its port, over TLS trusting `ca_pem` as
/// its host name.
async fn send(ca_pem: &str, call: &Call) -> Reply {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let ep = &call.endpoint;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", ep.port))
        .await
        .expect("connect");
    let name = ServerName::try_from(ep.host.clone()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(call.method.clone())
        .uri(&ep.path_and_query)
        .header(http::header::HOST, format!("{}:{}", ep.host, ep.port));
    for (k, v) in &call.headers {
        req = req.header(k, v);
    }
    let resp = sender
        .send_request(req.body(Full::new(call.body.clone())).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body: Bytes = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// One whole check of `c` on `target`; asserts no canary leaks from any
/// value it made.
async fn check(pki: &DemoPki, c: &Credential, target: &Endpoint) -> Verdict {
    let loaded = provider::load(c).expect("load");
    let call = provider::first(c, &loaded, target, SystemTime::now()).expect("first");
    let reply = send(&pki.ca_pem, &call).await;
    let Step::Done(verdict) = provider::next(c, &loaded, target, 0, &call, &reply) else {
        panic!("a single-request check asked for more")
    };
    let shown = format!("{c:?} {loaded:?} {call:?} {verdict:?}");
    for canary in [CANARY, WRONG, TOKEN, KEY_SECRET] {
        assert!(!shown.contains(canary), "{canary} shown: {shown}");
    }
    verdict
}

fn code(v: Verdict) -> String {
    match v {
        Verdict::Rejected { code, .. } => code,
        v => panic!("not a rejection: {v:?}"),
    }
}

/// A self-signed RSA certificate (PEM) and its key, by openssl.
fn rsa_cert(ws: &Workspace, stem: &str) -> (String, String, Vec<u8>) {
    let (cert, key, der) = ws.rsa_cert(stem);
    (cert.display().to_string(), key.display().to_string(), der)
}

fn entra_table(url: &str, secret_line: &str) -> String {
    format!(
        "kind = \"azure-ad\"\ntenant = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\ntoken_url = \"{url}\"\n{secret_line}\n"
    )
}

#[tokio::test]
async fn entra_client_secrets_good_expired_and_wrong_are_told_apart() {
    let ws = Workspace::new();
    let pki = pki(&[LOGIN]).expect("pki");
    let entra = Entra::start(&pki, LOGIN, TENANT).await.expect("entra");
    entra.add_secret(CLIENT, CANARY);
    let url = entra.token_url();
    let good = ws.write("secret", &format!("{CANARY}\n"));
    let (c, target) = credential(
        &ws,
        &url,
        &entra_table(
            &url,
            &format!("client_secret_file = \"{}\"", good.display()),
        ),
    );
    assert_eq!(
        check(&pki, &c, &target).await,
        Verdict::Proven("access token issued (HTTP 200)".into())
    );
    entra.set_mode(EntraMode::SecretsExpired);
    let expired = check(&pki, &c, &target).await;
    assert!(
        matches!(&expired, Verdict::Rejected { detail, .. } if detail.starts_with("invalid_client: AADSTS7000222: The provided client secret keys")),
        "{expired:?}"
    );
    assert!(!format!("{expired:?}").contains("Trace ID"));
    assert_eq!(code(expired), "AADSTS7000222");
    entra.set_mode(EntraMode::Normal);
    let wrong = ws.write("wrong", WRONG);
    let (w, _) = credential(
        &ws,
        &url,
        &entra_table(
            &url,
            &format!("client_secret_file = \"{}\"", wrong.display()),
        ),
    );
    assert_eq!(code(check(&pki, &w, &target).await), "AADSTS7000215");
    assert_eq!(
        entra.seen(),
        [SecretCheck::Good, SecretCheck::Expired, SecretCheck::Wrong].map(EntraSaw::Secret)
    );
    assert_eq!(entra.requests(), 3);
}

#[tokio::test]
async fn entra_scope_tenant_and_outages_are_not_rejections() {
    let ws = Workspace::new();
    let pki = pki(&[LOGIN]).expect("pki");
    let entra = Entra::start(&pki, LOGIN, TENANT).await.expect("entra");
    entra.add_secret(CLIENT, CANARY);
    let url = entra.token_url();
    let good = ws.write("secret", CANARY);
    let line = format!("client_secret_file = \"{}\"", good.display());
    let (c, target) = credential(&ws, &url, &entra_table(&url, &line));
    entra.set_mode(EntraMode::InvalidScope);
    let v = check(&pki, &c, &target).await;
    assert!(
        matches!(&v, Verdict::Misconfigured(d) if d.contains("invalid_scope: AADSTS70011")),
        "{v:?}"
    );
    entra.set_mode(EntraMode::Unavailable { retry_after: None });
    let v = check(&pki, &c, &target).await;
    assert!(
        matches!(&v, Verdict::Failed(d) if d.contains("HTTP 503") && d.contains("temporarily_unavailable")),
        "{v:?}"
    );
    entra.set_mode(EntraMode::Unavailable {
        retry_after: Some(1),
    });
    let v = check(&pki, &c, &target).await;
    assert!(
        matches!(v, Verdict::BackOff { after, .. } if after == Duration::from_secs(1)),
        "{v:?}"
    );
    entra.set_mode(EntraMode::Normal);
    let other = url.replace(&format!("/{TENANT}/"), "/fabrikam/");
    let (t, _) = credential(&ws, &url, &entra_table(&other, &line));
    let v = check(&pki, &t, &target).await;
    assert!(
        matches!(&v, Verdict::Misconfigured(d) if d.contains("AADSTS90002")),
        "{v:?}"
    );
    assert_eq!(
        entra.seen(),
        [
            EntraSaw::InvalidScope,
            EntraSaw::Unavailable,
            EntraSaw::Unavailable,
            EntraSaw::UnknownTenant
        ]
    );
}

#[tokio::test]
async fn an_entra_certificate_credential_is_proven_by_a_verified_ps256_assertion() {
    let ws = Workspace::new();
    let pki = pki(&[LOGIN]).expect("pki");
    let entra = Entra::start(&pki, LOGIN, TENANT).await.expect("entra");
    let (cert, key, der) = rsa_cert(&ws, "app");
    entra.add_certificate(CLIENT, &der);
    let url = entra.token_url();
    let line = format!("client_cert = \"{cert}\"\nclient_key = \"{key}\"");
    let (c, target) = credential(&ws, &url, &entra_table(&url, &line));
    assert_eq!(
        check(&pki, &c, &target).await,
        Verdict::Proven("access token issued (HTTP 200)".into())
    );
    // The same assertion with its signature changed: the stand-in verifies.
    let loaded = provider::load(&c).expect("load");
    let call = provider::first(&c, &loaded, &target, SystemTime::now()).expect("first");
    let body = String::from_utf8(call.body.to_vec()).expect("form");
    let (head, sig) = body.rsplit_once('.').expect("signed");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let forged = Call {
        body: Bytes::from(format!("{head}.{flipped}{}", &sig[1..])),
        ..call
    };
    let v = provider::next(
        &c,
        &loaded,
        &target,
        0,
        &forged,
        &send(&pki.ca_pem, &forged).await,
    );
    assert!(
        matches!(v, Step::Done(Verdict::Rejected { ref code, .. }) if code == "AADSTS50012"),
        "{v:?}"
    );
    let (other_cert, other_key, _) = rsa_cert(&ws, "other");
    let line = format!("client_cert = \"{other_cert}\"\nclient_key = \"{other_key}\"");
    let (unknown, _) = credential(&ws, &url, &entra_table(&url, &line));
    let v = check(&pki, &unknown, &target).await;
    assert!(
        matches!(&v, Verdict::Rejected { detail, .. } if detail.contains("not registered on application")),
        "{v:?}"
    );
    assert_eq!(code(v), "AADSTS700027");
    assert_eq!(
        entra.seen(),
        [
            AssertionCheck::Good,
            AssertionCheck::BadSignature,
            AssertionCheck::UnknownCertificate
        ]
        .map(EntraSaw::Assertion)
    );
}

fn twilio_table(auth: &str) -> String {
    format!("kind = \"twilio\"\naccount_sid = \"{SID}\"\n{auth}\n")
}

#[tokio::test]
async fn twilio_auth_tokens_and_api_keys_are_proven_or_rejected_with_20003() {
    let ws = Workspace::new();
    let pki = pki(&[TWILIO]).expect("pki");
    let twilio = Twilio::start(&pki).await.expect("twilio");
    twilio.add_account(SID, TOKEN);
    twilio.add_api_key(SID, KEY_SID, KEY_SECRET);
    let url = format!("https://{TWILIO}:{}/", twilio.addr().port());
    let token = ws.write("token", &format!("{TOKEN}\n"));
    let (c, target) = credential(
        &ws,
        &url,
        &twilio_table(&format!("auth_token_file = \"{}\"", token.display())),
    );
    assert_eq!(
        check(&pki, &c, &target).await,
        Verdict::Proven("account read (HTTP 200)".into())
    );
    let key = ws.write("key", KEY_SECRET);
    let (k, _) = credential(
        &ws,
        &url,
        &twilio_table(&format!(
            "api_key_sid = \"{KEY_SID}\"\napi_key_secret_file = \"{}\"",
            key.display()
        )),
    );
    assert_eq!(
        check(&pki, &k, &target).await,
        Verdict::Proven("balance read (HTTP 200)".into())
    );
    let wrong = ws.write("wrong", WRONG);
    let (w, _) = credential(
        &ws,
        &url,
        &twilio_table(&format!("auth_token_file = \"{}\"", wrong.display())),
    );
    assert_eq!(
        check(&pki, &w, &target).await,
        Verdict::Rejected {
            code: "20003".into(),
            detail: "Authenticate".into()
        }
    );
    twilio.set_mode(TwilioMode::Suspended);
    assert_eq!(code(check(&pki, &c, &target).await), "20403");
    twilio.set_mode(TwilioMode::Unavailable {
        retry_after: Some(2),
    });
    let v = check(&pki, &c, &target).await;
    assert!(
        matches!(v, Verdict::BackOff { after, .. } if after == Duration::from_secs(2)),
        "{v:?}"
    );
    assert_eq!(
        twilio.seen(),
        [
            TwilioSaw::AccountRead,
            TwilioSaw::BalanceRead,
            TwilioSaw::WrongCredentials,
            TwilioSaw::Suspended,
            TwilioSaw::Unavailable
        ]
    );
    assert_eq!(twilio.requests(), 5);
}
