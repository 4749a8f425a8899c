//! The expired iOS push certificate, prevented: client certificates read
//! from PEM or PKCS#12 (modern, and the legacy 3DES/RC2 a Keychain export
//! makes), their expiry exported exactly, `verify` rows and exit codes
//! inside `warn_before` and `fail_before`, a wrong password that is an error
//! metric and one log line (never a crash, never the password), and a
//! bundle swapped through a Kubernetes `..data` symlink read again.

mod support;

use std::path::Path;
use std::time::Duration;

use egress_sentinel::dial::identity::{self, CertReadReason, IdentityFiles, IdentityFormat};
use egress_sentinel::reason::FailureReason;
use support::config::{Route, Target, Toml};
use support::daemon::{Daemon, one_line, scrape};
use support::p12::{self, Encryption};
use support::pki;
use support::proxy::{Mode, ScriptProxy};
use support::sidecar::{Running, eventually, request, sample};
use support::upstream::Opts;
use support::{Workspace, binary, check_one};

const PASSWORD: &str = "Corr3ct-h0rse-PW";
const WRONG: &str = "Tr0ub4dor-wr0ng-PW";

/// One target `apns` on `direct` to the upstream on `port`, its chains
/// ending in the test CA.
fn direct_target(port: u16) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("3s"))
        .resolve("push.test", "127.0.0.1")
        .target(
            Target::new("apns", &format!("https://push.test:{port}/3/device/x"))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .expect_ca("ca.pem"),
        )
}

/// [`direct_target`] with the target edited by `f`.
fn direct_target_with(port: u16, f: impl FnOnce(Target) -> Target) -> String {
    direct_target(port).edit_target("apns", f).to_string()
}

fn write_bytes(ws: &Workspace, name: &str, bytes: &[u8]) {
    std::fs::write(ws.path(name), bytes).expect("write fixture");
}

async fn verify(ws: &Workspace, args: &[&str]) -> (Option<i32>, String, String) {
    let path = ws.path("config.toml");
    let out = tokio::process::Command::new(binary())
        .arg("verify")
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("run verify");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The findings rows of a verify table: `(level, target, route, text)`.
fn finding_rows(table: &str) -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in table.lines() {
        if line.starts_with("LEVEL") && line.contains("CERTIFICATES AND TRUST") {
            inside = true;
            continue;
        }
        if inside {
            if line.trim().is_empty() {
                break;
            }
            let mut parts = line.split_whitespace();
            let level = parts.next().unwrap_or_default().to_string();
            let target = parts.next().unwrap_or_default().to_string();
            let route = parts.next().unwrap_or_default().to_string();
            let text = parts.collect::<Vec<_>>().join(" ");
            rows.push((level, target, route, text));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_identities_pass_the_apns_stand_ins_client_certificate_check() {
    let mut opts = Opts::new("push.test")
        .h2_only()
        .reply(403, r#"{"reason":"MissingProviderToken"}"#);
    opts.client_ca = Some(pki::ca().cert_pem.clone());
    let up = opts.start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let (leaf, not_after) = pki::ca().client_expiring("apns-client", 60);
    let mut bundles = vec![
        ("aes", p12::bundle(&leaf, PASSWORD, Encryption::Modern)),
        ("3des", p12::bundle(&leaf, PASSWORD, Encryption::Legacy3Des)),
        ("rc2", p12::bundle(&leaf, PASSWORD, Encryption::LegacyRc2)),
    ];
    if let Some(b) = p12::openssl_bundle(&leaf, PASSWORD, &[]) {
        bundles.push(("openssl", b));
    }
    if let Some(b) = p12::openssl_bundle(&leaf, PASSWORD, &["-legacy"]) {
        bundles.push(("openssl-legacy", b));
    }
    ws.write("password", &format!("{PASSWORD}\n"));
    let config = |cert: &dyn Fn(Target) -> Target| {
        Toml::new()
            .probe(|p| p.timeout("3s"))
            .resolve("proxy.test", "127.0.0.1")
            .route(Route::proxy("provider", &proxy.url()))
            .target(cert(
                Target::named("apns")
                    .preset("apns")
                    .url(&format!("https://push.test:{}/3/device/x", up.port()))
                    .routes(&["provider"])
                    .ca_file("ca.pem"),
            ))
    };
    for (name, bytes) in &bundles {
        write_bytes(&ws, "cert.p12", bytes);
        let cfg = ws.config(config(&|t| t.client_p12("cert.p12", "password")));
        let cert = cfg.targets[0].client_cert.as_ref().expect("client cert");
        let (info, format) = cert.loaded.as_ref().expect("the bundle reads");
        assert_eq!(*format, IdentityFormat::Pkcs12, "{name}");
        assert_eq!(info.subject, "CN=apns-client", "{name}");
        assert_eq!(info.not_after_unix, not_after, "{name}");
        let o = check_one(&cfg).await;
        assert_eq!(o.reason, FailureReason::Ok, "{name}: {}", o.detail);
        assert_eq!(o.alpn.as_deref(), Some("h2"));
    }
    // PEM still works, and so does one PEM file holding the chain and the key.
    ws.write(
        "combined.pem",
        &format!("{}{}", leaf.cert_pem, leaf.key_pem),
    );
    let cfg = ws.config(config(&|t| t.client_cert("combined.pem")));
    let (_, format) = cfg.targets[0]
        .client_cert
        .as_ref()
        .expect("cert")
        .loaded
        .as_ref()
        .expect("reads");
    assert_eq!(*format, IdentityFormat::Pem);
    assert_eq!(check_one(&cfg).await.reason, FailureReason::Ok);
    // The wrong password: the identity is missing and the stand-in says so.
    ws.write("password", WRONG);
    let cfg = ws.config(config(&|t| t.client_p12("cert.p12", "password")));
    let e = cfg.targets[0]
        .client_cert
        .as_ref()
        .expect("cert")
        .error()
        .expect("error");
    assert_eq!(e.reason, CertReadReason::BadPassword);
    assert_eq!(
        check_one(&cfg).await.reason,
        FailureReason::ClientCertRejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_warns_inside_warn_before_and_fails_inside_fail_before_pem_and_pkcs12() {
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    ws.write("password", PASSWORD);
    // (days left, warn_before, fail_before, level, exit code, words in
    // the row)
    type Case<'a> = (i64, Option<&'a str>, Option<&'a str>, &'a str, i32, &'a str);
    let cases: &[Case<'_>] = &[
        (60, None, None, "OK", 0, "in 5"),
        (
            20,
            None,
            None,
            "WARN",
            0,
            "inside warn_before (30d): plan the renewal",
        ),
        (
            3,
            None,
            None,
            "FAIL",
            1,
            "inside fail_before (7d): renew it now",
        ),
        (-2, None, None, "FAIL", 1, "EXPIRED"),
        (60, Some("90d"), None, "WARN", 0, "inside warn_before (90d)"),
        (
            60,
            Some("120d"),
            Some("90d"),
            "FAIL",
            1,
            "inside fail_before (90d)",
        ),
    ];
    for (days, warn, fail, level, code, words) in cases {
        let extra = format!("warn_before {warn:?}, fail_before {fail:?}");
        let thresholds = |mut t: Target| {
            if let Some(w) = warn {
                t = t.warn_before(w);
            }
            if let Some(f) = fail {
                t = t.fail_before(f);
            }
            t
        };
        let (leaf, not_after) = pki::ca().client_expiring("apns-client", *days);
        ws.write("client.pem", &leaf.cert_pem);
        ws.write("client.key", &leaf.key_pem);
        write_bytes(
            &ws,
            "client.p12",
            &p12::bundle(&leaf, PASSWORD, Encryption::Legacy3Des),
        );
        let pem = |t: Target| t.client_pem("client.pem", "client.key");
        let p12 = |t: Target| t.client_p12("client.p12", "password");
        for cert in [&pem as &dyn Fn(Target) -> Target, &p12] {
            ws.write(
                "config.toml",
                &direct_target_with(up.port(), |t| thresholds(cert(t))),
            );
            let (status, stdout, stderr) = verify(&ws, &[]).await;
            assert_eq!(status, Some(*code), "{days}d {extra}: {stdout}{stderr}");
            assert!(
                stdout.contains("1 checks, 1 passed, 0 failed"),
                "the check itself passes: {stdout}"
            );
            let rows = finding_rows(&stdout);
            assert_eq!(rows.len(), 1, "{stdout}");
            let (l, target, route, text) = &rows[0];
            assert_eq!(
                (l.as_str(), target.as_str(), route.as_str()),
                (*level, "apns", "-"),
                "{stdout}"
            );
            assert!(
                text.starts_with("client certificate CN=apns-client ("),
                "{text}"
            );
            assert!(
                text.contains(&egress_sentinel::dial::tls::rfc3339(not_after)),
                "{text}"
            );
            assert!(text.contains(words), "{days}d {extra}: {text}");
            // JSON says the same, on the check.
            let (status, json, _) = verify(&ws, &["--format", "json"]).await;
            assert_eq!(status, Some(*code));
            let json: serde_json::Value = serde_json::from_str(&json).expect("json");
            let f = &json[0]["findings"][0];
            assert_eq!(f["level"], level.to_ascii_lowercase());
            assert_eq!(f["kind"], "client_cert_expiry");
        }
    }
    // fail_before longer than warn_before is a located config error.
    ws.write(
        "config.toml",
        &direct_target_with(up.port(), |t| t.warn_before("5d").fail_before("10d")),
    );
    let (status, _, stderr) = verify(&ws, &[]).await;
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "key `target[0].fail_before`: fail_before (10d) is longer than warn_before (5d)"
        ),
        "{stderr}"
    );
    // Thresholds up to three years are accepted; more is a mistake.
    ws.write(
        "config.toml",
        &direct_target_with(up.port(), |t| t.warn_before("1095d")),
    );
    assert_eq!(verify(&ws, &[]).await.0, Some(0));
    ws.write(
        "config.toml",
        &direct_target_with(up.port(), |t| t.warn_before("4000d")),
    );
    let (status, _, stderr) = verify(&ws, &[]).await;
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("key `target[0].warn_before`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_peer_expiry_and_thresholds_are_exported_exactly() {
    let (server_leaf, server_not_after) = pki::ca().server_expiring(&["push.test"], 45);
    let up = Opts::new("push.test").leaf(server_leaf).start().await;
    let ws = Workspace::new();
    let (soon, soon_at) = pki::ca().client_expiring("soon", 3);
    let (later, later_at) = pki::ca().client_expiring("later", 60);
    ws.write("soon.pem", &soon.cert_pem);
    ws.write("soon.key", &soon.key_pem);
    write_bytes(
        &ws,
        "later.p12",
        &p12::bundle(&later, PASSWORD, Encryption::Modern),
    );
    ws.write("password", PASSWORD);
    let port = up.port();
    let text = Toml::new()
        .probe(|p| p.interval("200ms").timeout("2s"))
        .tls(|t| t.warn_before("50d"))
        .resolve("push.test", "127.0.0.1")
        .target(
            Target::new("soon", &format!("https://push.test:{port}/"))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .expect_ca("ca.pem")
                .client_pem("soon.pem", "soon.key")
                .fail_before("10d"),
        )
        .target(
            Target::new("later", &format!("https://push.test:{port}/"))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .expect_ca("ca.pem")
                .client_p12("later.p12", "password"),
        );
    let sidecar = Running::start(ws.config(&text)).await;
    let m = eventually(Duration::from_secs(5), "peer certificates seen", || async {
        let m = sidecar.metrics_text().await;
        let peer = |t| {
            sample(
                &m,
                "egress_cert_not_after_timestamp_seconds",
                &[("target", t), ("route", "direct"), ("source", "peer")],
            )
        };
        (peer("soon").is_some() && peer("later").is_some()).then_some(m)
    })
    .await;
    let value = |labels: &[(&str, &str)], name: &str| sample(&m, name, labels);
    let client = |t| {
        value(
            &[("target", t), ("route", ""), ("source", "client")],
            "egress_cert_not_after_timestamp_seconds",
        )
    };
    assert_eq!(client("soon"), Some(soon_at as f64));
    assert_eq!(client("later"), Some(later_at as f64));
    for t in ["soon", "later"] {
        assert_eq!(
            value(
                &[("target", t), ("route", "direct"), ("source", "peer")],
                "egress_cert_not_after_timestamp_seconds"
            ),
            Some(server_not_after as f64)
        );
        assert_eq!(
            value(
                &[("target", t), ("level", "warn")],
                "egress_cert_threshold_seconds"
            ),
            Some(50.0 * 86_400.0)
        );
        for reason in ["bad_password", "unreadable", "no_key"] {
            assert_eq!(
                value(
                    &[("target", t), ("reason", reason)],
                    "egress_cert_read_errors_total"
                ),
                Some(0.0),
                "{t} {reason}"
            );
        }
    }
    let fail = |t| {
        value(
            &[("target", t), ("level", "fail")],
            "egress_cert_threshold_seconds",
        )
    };
    assert_eq!(fail("soon"), Some(10.0 * 86_400.0));
    assert_eq!(fail("later"), Some(7.0 * 86_400.0));
    // /status says what verify says.
    let status = sidecar.status().await;
    let target = |name: &str| {
        status["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["target"] == name)
            .cloned()
            .expect("target")
    };
    let soon_t = target("soon");
    assert_eq!(soon_t["client_cert"]["level"], "fail");
    assert_eq!(soon_t["client_cert"]["format"], "pem");
    assert_eq!(soon_t["client_cert"]["not_after_unix"], soon_at);
    // The upstream's certificate (45 days) is inside the 50-day warning too.
    let kinds: Vec<(&str, &str)> = soon_t["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["level"].as_str().unwrap_or(""),
                f["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("fail", "client_cert_expiry"), ("warn", "peer_cert_expiry")]
    );
    let later_t = target("later");
    assert_eq!(later_t["client_cert"]["level"], "ok");
    assert_eq!(later_t["client_cert"]["format"], "pkcs12");
    assert_eq!(
        later_t["cert_thresholds"]["fail_before_seconds"],
        7 * 86_400
    );
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_error_metric_and_one_log_line_never_a_crash_nor_the_password() {
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    let (leaf, _) = pki::ca().client_expiring("apns-client", 60);
    write_bytes(
        &ws,
        "cert.p12",
        &p12::bundle(&leaf, PASSWORD, Encryption::Modern),
    );
    ws.write("password", &format!("{WRONG}\n"));
    let text = direct_target(up.port())
        .edit_target("apns", |t| t.client_p12("cert.p12", "password"))
        .probe(|p| p.interval("100ms"))
        .daemon("1s");
    let path = ws.write("config.toml", &text.to_string());
    let daemon = Daemon::start(&path, "info");
    let metrics = daemon.addr("metrics").await;
    let admin = daemon.addr("admin").await;
    let m = eventually(Duration::from_secs(10), "the error metric", || async {
        let m = scrape(metrics).await?;
        sample(
            &m,
            "egress_cert_read_errors_total",
            &[("target", "apns"), ("reason", "bad_password")],
        )
        .is_some()
        .then_some(m)
    })
    .await;
    let count = |reason| {
        sample(
            &m,
            "egress_cert_read_errors_total",
            &[("target", "apns"), ("reason", reason)],
        )
    };
    assert_eq!(count("bad_password"), Some(1.0));
    assert_eq!(count("not_a_certificate"), Some(0.0));
    // Still serving, still probing (without the certificate).
    assert_eq!(request(metrics, "GET", "/healthz").await.0, 200);
    let (_, status) = request(admin, "GET", "/status").await;
    let doc: serde_json::Value = serde_json::from_str(&status).expect("status");
    let cert = &doc["targets"][0]["client_cert"];
    assert_eq!(cert["error"]["reason"], "bad_password");
    assert_eq!(cert["level"], "fail");
    let message = cert["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("cert.p12")
            && message.contains("the password in")
            && message.contains("password"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (verify_code, verify_out, verify_err) = verify(&ws, &[]).await;
    let logs = daemon.stop().await;
    one_line(
        &logs,
        "client certificate cannot be used",
        &["ERROR", "bad_password", "target=apns"],
    );
    assert_eq!(verify_code, Some(1), "{verify_out}");
    let rows = finding_rows(&verify_out);
    assert_eq!(rows.len(), 1, "{verify_out}");
    assert_eq!(rows[0].0, "FAIL");
    assert!(
        rows[0]
            .3
            .starts_with("client certificate cannot be used (bad_password): "),
        "{}",
        rows[0].3
    );
    for (what, text) in [
        ("logs", logs.as_str()),
        ("/status", status.as_str()),
        ("/metrics", m.as_str()),
        ("verify", verify_out.as_str()),
        ("verify stderr", verify_err.as_str()),
    ] {
        assert!(!text.contains(WRONG), "{what} leaks the password:\n{text}");
        assert!(
            !text.contains(PASSWORD),
            "{what} leaks the password:\n{text}"
        );
    }
}

/// Kubernetes' secret volume layout: `NAME -> ..data/NAME`, `..data ->
/// ..<timestamp>`, swapped by renaming a new `..data` link over the old.
fn mount_secret(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let real = dir.join(version);
    std::fs::create_dir_all(&real).expect("mkdir");
    for (name, bytes) in files {
        std::fs::write(real.join(name), bytes).expect("write");
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).expect("link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_swapped_through_a_data_symlink_is_read_again() {
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    let secret = ws.path("secret");
    std::fs::create_dir(&secret).expect("mkdir");
    let (old, old_at) = pki::ca().client_expiring("apns-client", 3);
    mount_secret(
        &secret,
        "..2026_01_01",
        &[
            ("cert.p12", &p12::bundle(&old, PASSWORD, Encryption::Modern)),
            ("password", PASSWORD.as_bytes()),
        ],
    );
    let text = direct_target_with(up.port(), |t| {
        t.client_p12("secret/cert.p12", "secret/password")
    });
    let cfg = ws.config(&text);
    let cert = cfg.targets[0].client_cert.as_ref().expect("cert");
    assert_eq!(cert.leaf().expect("read").not_after_unix, old_at);
    // The files a generation reload must watch: both, through the links.
    assert_eq!(
        cert.files.paths(),
        vec![
            secret.join("cert.p12").as_path(),
            secret.join("password").as_path()
        ]
    );
    let (code, out, _) = verify(&ws, &[]).await;
    assert_eq!(code, Some(1), "3 days left fails: {out}");
    // The renewal arrives: a new bundle with a new password, swapped at once.
    let (new, new_at) = pki::ca().client_expiring("apns-client", 90);
    mount_secret(
        &secret,
        "..2026_02_01",
        &[
            (
                "cert.p12",
                &p12::bundle(&new, WRONG, Encryption::Legacy3Des),
            ),
            ("password", WRONG.as_bytes()),
        ],
    );
    std::fs::remove_dir_all(secret.join("..2026_01_01")).expect("old version gone");
    let files = IdentityFiles {
        cert: secret.join("cert.p12"),
        key: None,
        password: Some(secret.join("password")),
    };
    let id = identity::load(&files).expect("the swapped bundle reads");
    assert_eq!(id.leaf.not_after_unix, new_at);
    let cfg = ws.config(&text);
    assert_eq!(cfg.targets[0].client_cert_not_after, Some(new_at));
    let (code, out, _) = verify(&ws, &[]).await;
    assert_eq!(code, Some(0), "90 days left passes: {out}");
    assert_eq!(finding_rows(&out)[0].0, "OK");
}

#[test]
fn broken_and_legacy_bundles_are_read_or_refused_with_the_reason() {
    egress_sentinel::dial::tls::install_default_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let password = put("password", format!("{PASSWORD}\r\n").as_bytes());
    let (leaf, _) = pki::ca().client_expiring("apns-client", 60);
    let load = |cert: &Path, key: Option<&Path>, pw: Option<&Path>| {
        identity::load(&IdentityFiles {
            cert: cert.to_path_buf(),
            key: key.map(Path::to_path_buf),
            password: pw.map(Path::to_path_buf),
        })
    };
    // Legacy encryption, as a macOS Keychain export makes it, is read.
    for enc in [Encryption::LegacyRc2, Encryption::Legacy3Des] {
        let p = put("legacy.p12", &p12::bundle(&leaf, PASSWORD, enc));
        let id = load(&p, None, Some(&password)).expect("legacy bundle");
        assert_eq!(id.leaf.subject, "CN=apns-client");
        assert!(
            !format!("{id:?}").contains("PRIVATE"),
            "the key is never printed"
        );
    }
    if let Some(b) = p12::openssl_bundle(&leaf, PASSWORD, &["-legacy"]) {
        let p = put("openssl-legacy.p12", &b);
        assert_eq!(
            identity::legacy_ciphers(&b),
            vec![
                "pbeWithSHAAnd40BitRC2-CBC",
                "pbeWithSHAAnd3-KeyTripleDES-CBC"
            ]
        );
        load(&p, None, Some(&password)).expect("openssl -legacy bundle");
    }
    // A scheme nobody should use any more is refused, named, with the fix.
    if let Some(b) = p12::openssl_bundle(
        &leaf,
        PASSWORD,
        &[
            "-legacy",
            "-certpbe",
            "PBE-SHA1-RC4-128",
            "-keypbe",
            "PBE-SHA1-RC4-128",
        ],
    ) {
        let p = put("rc4.p12", &b);
        let e = load(&p, None, Some(&password)).expect_err("RC4");
        assert_eq!(e.reason, CertReadReason::UnsupportedEncryption, "{e}");
        assert!(e.message.contains("pbeWithSHAAnd128BitRC4"), "{e}");
        assert!(
            e.message.contains(
                "openssl pkcs12 -in old.p12 -nodes -legacy | openssl pkcs12 -export -out new.p12"
            ),
            "{e}"
        );
    }
    let modern = put(
        "modern.p12",
        &p12::bundle(&leaf, PASSWORD, Encryption::Modern),
    );
    let wrong = put("wrong", WRONG.as_bytes());
    let cases: Vec<(&str, identity::IdentityError, CertReadReason, &str)> = vec![
        (
            "wrong password",
            load(&modern, None, Some(&wrong)).expect_err("wrong"),
            CertReadReason::BadPassword,
            "the password in",
        ),
        (
            "no password file",
            load(&modern, None, None).expect_err("empty password"),
            CertReadReason::BadPassword,
            "an empty password",
        ),
        (
            "missing password file",
            load(&modern, None, Some(&dir.path().join("nope"))).expect_err("missing"),
            CertReadReason::Unreadable,
            "cannot open",
        ),
        (
            "not a certificate",
            load(
                &put("junk.p12", b"\x00\x01 definitely not DER"),
                None,
                Some(&password),
            )
            .expect_err("junk"),
            CertReadReason::NotACertificate,
            "neither PEM nor PKCS#12",
        ),
        (
            "no key in the bundle",
            load(
                &put("nokey.p12", &p12::certificate_only(&leaf, PASSWORD)),
                None,
                Some(&password),
            )
            .expect_err("no key"),
            CertReadReason::NoKey,
            "holds no private key",
        ),
        (
            "PEM without a key",
            load(&put("cert.pem", leaf.cert_pem.as_bytes()), None, None).expect_err("no key"),
            CertReadReason::NoKey,
            "set client_key",
        ),
        (
            "a key of another certificate",
            load(
                &put("cert2.pem", leaf.cert_pem.as_bytes()),
                Some(&put(
                    "other.key",
                    pki::ca().client("other").key_pem.as_bytes(),
                )),
                None,
            )
            .expect_err("mismatch"),
            CertReadReason::KeyMismatch,
            "cannot be used with the certificate",
        ),
    ];
    for (what, e, reason, words) in cases {
        assert_eq!(e.reason, reason, "{what}: {e}");
        assert!(e.message.contains(words), "{what}: {e}");
        assert!(
            !e.message.contains(PASSWORD) && !e.message.contains(WRONG),
            "{what}: {e}"
        );
    }
}
