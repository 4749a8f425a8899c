//! The providers' checks without a network: every documented answer
//! classified, the files refused that must be, the assertion verified, and
//! no secret in any `Debug` or verdict.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;

use super::*;

const CANARY: &str = "canary-Secr3t~value";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";

fn token_url() -> Endpoint {
    Endpoint {
        tls: true,
        host: "login.test".into(),
        port: 443,
        path_and_query: "/contoso/oauth2/v2.0/token".into(),
    }
}

fn azure(secret: AzureSecret) -> Credential {
    Credential {
        kind: CredentialKind::AzureAd {
            tenant: "contoso".into(),
            client_id: "app-1".into(),
            scope: "https://graph.microsoft.com/.default".into(),
            secret,
        },
        every: Duration::from_secs(300),
        token_url: Some(token_url()),
        fingerprint: 0,
    }
}

fn twilio(auth: TwilioAuth) -> Credential {
    Credential {
        kind: CredentialKind::Twilio {
            account_sid: SID.into(),
            auth,
        },
        every: Duration::from_secs(300),
        token_url: None,
        fingerprint: 0,
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    Reply {
        status,
        headers: h,
        body: Bytes::from(body.to_string()),
    }
}

fn verdict(step: Step) -> Verdict {
    match step {
        Step::Done(v) => v,
        Step::Next(c) => panic!("unexpected next call {c:?}"),
    }
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, content).expect("write");
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// A self-signed RSA certificate and its PKCS#8 key, by openssl.
fn rsa_cert(dir: &Dir, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.path(&format!("{stem}.crt")),
        dir.path(&format!("{stem}.key")),
    );
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=app-1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl req failed");
    (cert, key)
}

// === classification: Entra ===

fn azure_verdict(r: &Reply) -> Verdict {
    let c = azure(AzureSecret::ClientSecret {
        file: "unused".into(),
    });
    let loaded = Loaded::new(Material::Secret(Secret::new(CANARY.into())));
    let call = first(&c, &loaded, &token_url(), SystemTime::now()).expect("call");
    verdict(next(&c, &loaded, &token_url(), 0, &call, r))
}

const EXPIRED: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app '6a1f2c3d-0000-4000-8000-000000000001' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds. Trace ID: 0f3a5d7e-1111-4222-8333-944455556666 Correlation ID: 2b4c6d8e-aaaa-4bbb-8ccc-dddd0000eeee Timestamp: 2026-01-27 10:15:02Z","error_codes":[7000222],"timestamp":"2026-01-27 10:15:02Z","trace_id":"0f3a5d7e-1111-4222-8333-944455556666","correlation_id":"2b4c6d8e-aaaa-4bbb-8ccc-dddd0000eeee","error_uri":"https://login.microsoftonline.com/error?code=7000222"}"#;

#[test]
fn an_expired_client_secret_is_rejected_with_its_aadsts_code_and_no_trace_ids() {
    let Verdict::Rejected { code, detail } = azure_verdict(&reply(401, &[], EXPIRED)) else {
        panic!("rejected")
    };
    assert_eq!(code, "AADSTS7000222");
    assert!(detail.starts_with("invalid_client: AADSTS7000222: The provided client secret keys"));
    assert!(!detail.contains("Trace ID") && !detail.contains("Timestamp"));
    assert!(detail.len() <= 200 + "invalid_client: ".len());
}

#[test]
fn entra_answers_are_classified_by_the_oauth_error_field() {
    let wrong = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'x'.\r\nTrace ID: a\r\nCorrelation ID: b\r\nTimestamp: c","error_codes":[7000215]}"#;
    let unknown_app = r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'x' was not found in the directory 'Contoso'."}"#;
    let scope = r#"{"error":"invalid_scope","error_description":"AADSTS70011: The provided request must include a 'scope' input parameter.","error_codes":[70011]}"#;
    let tenant = r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'nope' not found.","error_codes":[90002]}"#;
    let other = r#"{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain the following parameter: 'grant_type'.","error_codes":[900144]}"#;
    let busy = r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: The server is busy.","error_codes":[50196]}"#;
    let token =
        r#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0eXAi.secret-token"}"#;
    let v = azure_verdict(&reply(200, &[], token));
    assert_eq!(v, Verdict::Proven("access token issued (HTTP 200)".into()));
    assert!(!format!("{v:?}").contains("secret-token"));
    assert!(matches!(
        azure_verdict(&reply(200, &[], "{}")),
        Verdict::Failed(_)
    ));
    let code = |v: Verdict| match v {
        Verdict::Rejected { code, .. } => code,
        v => panic!("not rejected: {v:?}"),
    };
    assert_eq!(
        code(azure_verdict(&reply(401, &[], wrong))),
        "AADSTS7000215"
    );
    assert_eq!(
        code(azure_verdict(&reply(400, &[], unknown_app))),
        "AADSTS700016"
    );
    assert!(
        matches!(azure_verdict(&reply(400, &[], scope)), Verdict::Misconfigured(d) if d.contains("AADSTS70011"))
    );
    assert!(
        matches!(azure_verdict(&reply(400, &[], tenant)), Verdict::Misconfigured(d) if d.contains("AADSTS90002"))
    );
    assert!(
        matches!(azure_verdict(&reply(400, &[], other)), Verdict::Failed(d) if d.contains("HTTP 400"))
    );
    assert!(matches!(
        azure_verdict(&reply(503, &[], busy)),
        Verdict::Failed(_)
    ));
    assert_eq!(
        azure_verdict(&reply(503, &[("retry-after", "30")], busy)),
        Verdict::BackOff {
            after: Duration::from_secs(30),
            detail: "HTTP 503 with Retry-After (30s)".into()
        }
    );
    let html = azure_verdict(&reply(502, &[], "<html>\u{1b}bad gateway</html>"));
    assert_eq!(
        html,
        Verdict::Failed("token request: HTTP 502: <html>bad gateway</html>".into())
    );
}

#[test]
fn a_provider_echoing_the_secret_never_gets_it_into_a_verdict() {
    let echo = format!(
        r#"{{"error":"invalid_client","error_description":"AADSTS7000215: secret {CANARY} is wrong","error_codes":[7000215]}}"#
    );
    let v = azure_verdict(&reply(401, &[], &echo));
    assert!(!format!("{v:?}").contains(CANARY), "{v:?}");
    assert!(format!("{v:?}").contains("<redacted>"));
}

// === classification: Twilio ===

fn twilio_verdict(r: &Reply) -> Verdict {
    let c = twilio(TwilioAuth::AuthToken {
        file: "unused".into(),
    });
    let loaded = Loaded::new(Material::Secret(Secret::new(CANARY.into())));
    let target = Endpoint {
        path_and_query: "/".into(),
        ..token_url()
    };
    let call = first(&c, &loaded, &target, SystemTime::now()).expect("call");
    verdict(next(&c, &loaded, &target, 0, &call, r))
}

#[test]
fn twilio_answers_are_classified() {
    let auth = r#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
    let suspended = r#"{"code":20403,"message":"Forbidden: account suspended","status":403}"#;
    assert_eq!(
        twilio_verdict(&reply(200, &[], r#"{"sid":"AC","status":"active"}"#)),
        Verdict::Proven("account read (HTTP 200)".into())
    );
    assert_eq!(
        twilio_verdict(&reply(401, &[], auth)),
        Verdict::Rejected {
            code: "20003".into(),
            detail: "Authenticate".into()
        }
    );
    assert_eq!(
        twilio_verdict(&reply(401, &[], "")),
        Verdict::Rejected {
            code: "401".into(),
            detail: "HTTP 401".into()
        }
    );
    assert!(
        matches!(twilio_verdict(&reply(403, &[], suspended)), Verdict::Rejected { code, .. } if code == "20403")
    );
    assert!(matches!(
        twilio_verdict(&reply(403, &[], "{}")),
        Verdict::Failed(_)
    ));
    assert!(matches!(
        twilio_verdict(&reply(429, &[("retry-after", "5")], "{}")),
        Verdict::BackOff { after, .. } if after == Duration::from_secs(5)
    ));
    assert!(matches!(
        twilio_verdict(&reply(503, &[], "")),
        Verdict::Failed(_)
    ));
    assert!(
        matches!(twilio_verdict(&reply(404, &[], "{}")), Verdict::Failed(d) if d.contains("404"))
    );
}

#[test]
fn twilio_reads_the_account_or_with_a_key_its_balance_with_basic_auth() {
    let dir = Dir::new();
    let file = dir.write("token", &format!("  {CANARY}\n"));
    let target = Endpoint {
        tls: true,
        host: "api.twilio.com".into(),
        port: 443,
        path_and_query: "/".into(),
    };
    let c = twilio(TwilioAuth::AuthToken { file: file.clone() });
    let loaded = load(&c).expect("load");
    let call = first(&c, &loaded, &target, SystemTime::now()).expect("call");
    assert_eq!(
        call.endpoint.url(),
        format!("https://api.twilio.com:443/2010-04-01/Accounts/{SID}.json")
    );
    let (_, auth) = call
        .headers
        .iter()
        .find(|(k, _)| k == http::header::AUTHORIZATION)
        .expect("auth");
    assert!(auth.is_sensitive());
    let encoded = auth
        .to_str()
        .expect("ascii")
        .strip_prefix("Basic ")
        .expect("basic");
    assert_eq!(
        jwt::b64_decode(encoded).expect("b64"),
        format!("{SID}:{CANARY}").as_bytes()
    );
    for dbg in [format!("{loaded:?}"), format!("{call:?}"), format!("{c:?}")] {
        assert!(!dbg.contains(CANARY), "{dbg}");
    }
    let key = twilio(TwilioAuth::ApiKey {
        key_sid: KEY_SID.into(),
        secret_file: file,
    });
    let call = first(&key, &load(&key).expect("load"), &target, SystemTime::now()).expect("call");
    assert!(
        call.endpoint
            .path_and_query
            .ends_with(&format!("{SID}/Balance.json"))
    );
    assert_eq!(call.what, "balance read");
}

// === files ===

fn secret_error(path: &Path) -> String {
    let c = azure(AzureSecret::ClientSecret {
        file: path.to_path_buf(),
    });
    load(&c).expect_err("refused").0
}

#[test]
fn missing_empty_and_directory_secret_files_are_named_and_refused() {
    let dir = Dir::new();
    let missing = dir.path("nope/secret");
    let e = secret_error(&missing);
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("mounted"),
        "{e}"
    );
    let e = secret_error(&dir.write("empty", " \n"));
    assert!(e.contains("is empty"), "{e}");
    let e = secret_error(dir.0.path());
    assert!(e.contains("a directory"), "{e}");
    let e = secret_error(&dir.write("two", &format!("{CANARY}\n{CANARY}\n")));
    assert!(
        e.contains("more than one line") && !e.contains(CANARY),
        "{e}"
    );
}

#[test]
fn a_fifo_is_refused_without_opening_it() {
    let dir = Dir::new();
    let fifo = dir.path("secret");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let link = dir.path("link");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(secret_error(&link));
    });
    let e = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("load hung on a FIFO");
    assert!(e.contains("a FIFO") && e.contains("link"), "{e}");
}

// === certificate credentials ===

fn certificate(cert: &Path, key: &Path) -> Credential {
    azure(AzureSecret::Certificate {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    })
}

fn json_part(token: &str, i: usize) -> serde_json::Value {
    let part = token.split('.').nth(i).expect("part");
    serde_json::from_slice(&jwt::b64_decode(part).expect("b64")).expect("json")
}

#[test]
fn a_certificate_credential_sends_a_ps256_assertion_that_verifies() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let dir = Dir::new();
    let (cert, key) = rsa_cert(&dir, "app");
    let c = certificate(&cert, &key);
    let loaded = load(&c).expect("load");
    assert!(loaded.not_after().expect("not_after") > 0);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let call = first(&c, &loaded, &token_url(), now).expect("call");
    let body = String::from_utf8(call.body.to_vec()).expect("utf8");
    assert!(body.contains(
        "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    ));
    let token = body
        .split('&')
        .find_map(|p| p.strip_prefix("client_assertion="))
        .expect("assertion");
    let der = CertificateDer::pem_file_iter(&cert)
        .expect("pem")
        .next()
        .expect("one")
        .expect("der");
    let header = json_part(token, 0);
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["x5t#S256"], jwt::x5t_s256(der.as_ref()));
    let claims = json_part(token, 1);
    assert_eq!(
        claims["aud"],
        "https://login.test/contoso/oauth2/v2.0/token"
    );
    assert_eq!(
        (&claims["iss"], &claims["sub"]),
        (&"app-1".into(), &"app-1".into())
    );
    assert_eq!(
        (claims["nbf"].as_i64(), claims["exp"].as_i64()),
        (Some(1_799_999_940), Some(1_800_000_600))
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
    let spki = parsed.public_key().subject_public_key.data.to_vec();
    let (input, sig) = token.rsplit_once('.').expect("signed");
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PSS_2048_8192_SHA256, spki)
        .verify(input.as_bytes(), &jwt::b64_decode(sig).expect("b64"))
        .expect("the signature verifies with the certificate's key");
    assert!(!format!("{loaded:?} {call:?}").contains(token));
}

#[test]
fn certificate_keys_in_pkcs1_are_read_and_ec_or_foreign_keys_are_refused() {
    let dir = Dir::new();
    let (cert, key) = rsa_cert(&dir, "app");
    let pkcs1 = dir.path("pkcs1.key");
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pkcs1)
        .output()
        .expect("openssl rsa")
        .status
        .success();
    assert!(ok);
    assert!(
        std::fs::read_to_string(&pkcs1)
            .expect("pem")
            .contains("RSA PRIVATE KEY")
    );
    load(&certificate(&cert, &pkcs1)).expect("a PKCS#1 key");
    let ec = dir.write(
        "ec.key",
        &rcgen::KeyPair::generate().expect("p256").serialize_pem(),
    );
    let e = load(&certificate(&cert, &ec)).expect_err("ec").0;
    assert!(
        e.contains(
            "ec.key: not an RSA private key; Entra certificate credentials need RSA (PS256)"
        ),
        "{e}"
    );
    let e = load(&certificate(&cert, &dir.write("junk.key", "junk")))
        .expect_err("junk")
        .0;
    assert!(e.contains("not an RSA private key"), "{e}");
    let (_, other_key) = rsa_cert(&dir, "other");
    let e = load(&certificate(&cert, &other_key))
        .expect_err("foreign")
        .0;
    assert!(e.contains("is not the key of the certificate"), "{e}");
    let e = load(&certificate(&dir.write("no.crt", "nothing"), &key))
        .expect_err("no cert")
        .0;
    assert!(e.contains("no.crt: no CERTIFICATE block"), "{e}");
}
