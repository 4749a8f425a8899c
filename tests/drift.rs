//! "Nobody could say what had changed": a baseline recorded before the
//! provider's migration, compared after each change the migration brings
//! — another proxy identity, a renewed upstream certificate, interception,
//! a refused CONNECT, a slower tunnel, another proxy address — with the
//! exact lines in each group, and the exit codes `verify` has without a
//! baseline.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::config::{Route, Target, Toml};
use support::mitm::{MitmProxy, Mode, restart_upstream};
use support::pki;
use support::upstream::Opts;
use support::{Workspace, binary};

/// Push via the provider (`proxy.test`, resolved by the caller) or
/// direct; chains must end in the real CA.
fn config(proxy_port: u16, port: u16) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("3s"))
        .tls(|t| t.ca_file("both-cas.pem"))
        .resolve("push.test", "127.0.0.1")
        .route(Route::proxy(
            "provider",
            &format!("http://proxy.test:{proxy_port}"),
        ))
        .target(
            Target::new("push", &format!("https://push.test:{port}/"))
                .routes(&["provider", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .expect_ca("real-ca.pem"),
        )
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn verify(ws: &Workspace, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(binary())
        .arg("verify")
        .arg("--config")
        .arg(ws.path("config.toml"))
        .args(args)
        .output()
        .await
        .expect("verify");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The drift report's groups and their lines. SLOWER is kept apart: on a
/// busy machine any phase may happen to be slower.
fn groups(stderr: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in stderr.lines() {
        if let Some(item) = line.strip_prefix("  ") {
            if let Some(g) = &current {
                out.entry(String::clone(g))
                    .or_default()
                    .push(item.to_string());
            }
        } else if ["REGRESSIONS", "FIXES", "CHANGES TO NOTE", "SLOWER"].contains(&line) {
            current = Some(line.to_string());
        } else {
            current = None;
        }
    }
    let slower = out.remove("SLOWER").unwrap_or_default();
    (out, slower)
}

fn expect(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(g, lines)| (g.to_string(), lines.iter().map(|l| l.to_string()).collect()))
        .collect()
}

fn short(hex: &str) -> &str {
    &hex[..16]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_shows_up_as_grouped_differences_from_the_baseline() {
    let (leaf, _) = pki::ca().server_expiring(&["push.test"], 300);
    let up = Opts::new("push.test").leaf(leaf.clone()).start().await;
    let proxy = MitmProxy::start(Mode::Tunnel).await;
    proxy.set_via(Some("1.1 provider-a"));
    proxy.set_server(Some("edge/1"));
    let ws = Workspace::new();
    ws.write(
        "both-cas.pem",
        &format!("{}{}", pki::ca().cert_pem, pki::rogue_ca().cert_pem),
    );
    ws.write("real-ca.pem", &pki::ca().cert_pem);
    let pport = proxy.addr.port();
    ws.write(
        "config.toml",
        &config(pport, up.port())
            .resolve("proxy.test", "127.0.0.1")
            .to_string(),
    );
    let base = ws.path("baseline.json");
    let b = base.to_str().expect("utf8");

    // Before the change.
    let r = verify(&ws, &["--record-baseline", b]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&base).expect("baseline")).expect("JSON");
    assert_eq!(file["format"], "egress-sentinel-baseline");
    assert_eq!(file["version"], 1);
    let c = &file["checks"][0];
    assert_eq!(
        (c["target"].as_str(), c["route"].as_str()),
        (Some("push"), Some("provider"))
    );
    assert_eq!(c["reason"], "ok");
    assert_eq!(c["connect_status"], 200);
    assert_eq!(c["proxy_via"], "1.1 provider-a");
    assert_eq!(c["proxy_server"], "edge/1");
    assert_eq!(c["proxy_addresses"][0], format!("127.0.0.1:{pport}"));
    assert_eq!(c["http_status"], 200);
    assert_eq!(c["alpn"], "h2");
    assert_eq!(c["peer_issuer"], "CN=egress-sentinel test CA");
    assert_eq!(c["anchor"]["subject"], "CN=egress-sentinel test CA");
    assert_eq!(c["intercepted"], false);
    for phase in ["resolve", "connect", "tunnel", "tls", "first_byte", "body"] {
        assert!(c["phases"][phase].as_f64().is_some(), "{phase}: {c}");
    }
    assert_eq!(file["checks"][1]["route"], "direct");
    assert_eq!(file["checks"][1]["proxy_addresses"], serde_json::json!([]));
    let old_sha = c["peer_sha256"].as_str().expect("sha").to_string();
    let old_expiry = c["peer_not_after"].as_str().expect("expiry").to_string();

    // Nothing changed yet.
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(r.code, Some(0));
    let (g, _) = groups(&r.stderr);
    assert!(g.is_empty(), "{}", r.stderr);

    // 1. Another proxy answers: its Via changes.
    proxy.set_via(Some("1.1 provider-b"));
    let via_line = "push/provider: proxy Via changed: 1.1 provider-a -> 1.1 provider-b (another proxy, or another version, answers)";
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        groups(&r.stderr).0,
        expect(&[("CHANGES TO NOTE", &[via_line])])
    );
    // JSON carries it on the check.
    let r = verify(&ws, &["--baseline", b, "--format", "json"]).await;
    let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(json[0]["drift"][0]["group"], "note");
    assert_eq!(json[0]["drift"][0]["field"], "proxy_via");
    assert_eq!(json[0]["drift"][0]["message"], via_line);
    assert_eq!(json[1]["drift"], serde_json::json!([]));

    // 2. The upstream renews its certificate (same CA).
    let (renewed, renewed_at) = pki::ca().server_expiring(&["push.test"], 400);
    let up = restart_upstream(up, Opts::new("push.test").leaf(renewed)).await;
    let new_sha = {
        let r = verify(&ws, &["--format", "json"]).await;
        let json: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
        json[1]["peer_cert"]["sha256"]
            .as_str()
            .expect("sha")
            .to_string()
    };
    let renewed_line = |route: &str| {
        format!(
            "push/{route}: certificate replaced, same issuer: sha256 {} -> {}, expiry {old_expiry} -> {} (usually a routine renewal)",
            short(&old_sha),
            short(&new_sha),
            egress_sentinel::dial::tls::rfc3339(renewed_at)
        )
    };
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        groups(&r.stderr).0,
        expect(&[(
            "CHANGES TO NOTE",
            &[&renewed_line("provider"), via_line, &renewed_line("direct")]
        )])
    );

    // 3. The proxy starts intercepting, with a CA the pod trusts.
    proxy.set_mode(Mode::Intercept(pki::rogue_ca()));
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(
        r.code,
        Some(0),
        "interception warns, the checks pass: {}",
        r.stderr
    );
    let (g, _) = groups(&r.stderr);
    assert_eq!(
        g["REGRESSIONS"],
        [
            "push/provider: NEWLY INTERCEPTED: the chain now validates through CN=Intercepting Proxy CA (was CN=egress-sentinel test CA); issuer CN=Intercepting Proxy CA"
        ]
    );
    let notes = &g["CHANGES TO NOTE"];
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "push/provider: certificate issuer changed: CN=egress-sentinel test CA -> CN=Intercepting Proxy CA (sha256 {} -> ",
            short(&old_sha)
        )),
        "{}",
        notes[0]
    );
    assert_eq!(notes[1], via_line);
    assert_eq!(notes[2], renewed_line("direct"));
    assert!(!g.contains_key("FIXES"));

    // 4. The proxy refuses CONNECT.
    proxy.set_mode(Mode::Refuse(403, "Forbidden"));
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(r.code, Some(1), "a failed check fails, baseline or not");
    assert_eq!(
        groups(&r.stderr).0,
        expect(&[
            (
                "REGRESSIONS",
                &["push/provider: REGRESSED: ok -> proxy_denied (CONNECT 200 -> 403)"]
            ),
            ("CHANGES TO NOTE", &[via_line, &renewed_line("direct")]),
        ])
    );
    // The report itself is still all there.
    assert!(
        r.stdout.contains("2 checks, 1 passed, 1 failed"),
        "{}",
        r.stdout
    );

    // 5. The tunnel gets slow; and DNS gives the proxy name another address.
    proxy.set_mode(Mode::Tunnel);
    proxy.set_delay(Duration::from_millis(300));
    ws.write(
        "config.toml",
        &config(pport, up.port())
            .resolve_all("proxy.test", &["127.0.0.1", "127.0.0.3"])
            .to_string(),
    );
    let r = verify(&ws, &["--baseline", b]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (g, slower) = groups(&r.stderr);
    assert_eq!(
        g,
        expect(&[(
            "CHANGES TO NOTE",
            &[
                &renewed_line("provider"),
                via_line,
                &format!(
                    "push/provider: proxy addresses changed: [127.0.0.1:{pport}] -> [127.0.0.1:{pport}, 127.0.0.3:{pport}]"
                ),
                &renewed_line("direct"),
            ]
        )])
    );
    assert!(
        slower
            .iter()
            .any(|l| l.starts_with("push/provider: tunnel ") && l.ends_with("x)")),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_foreign_and_newer_baselines_are_refused_with_exit_2() {
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    ws.write("both-cas.pem", &pki::ca().cert_pem);
    ws.write("real-ca.pem", &pki::ca().cert_pem);
    ws.write(
        "config.toml",
        &config(1, up.port())
            .resolve("proxy.test", "127.0.0.1")
            .edit_target("push", |t| t.routes(&["direct"]))
            .to_string(),
    );
    let cases = [
        (
            "old.json",
            r#"[{"target":"push","route":"direct","reason":"ok"}]"#,
            "a report from an older egress-sentinel",
        ),
        (
            "foreign.json",
            r#"{"checks": []}"#,
            "is not an egress-sentinel baseline",
        ),
        (
            "newer.json",
            r#"{"format": "egress-sentinel-baseline", "version": 2, "checks": []}"#,
            "written by a newer egress-sentinel",
        ),
        ("text.json", "hello", "not JSON"),
    ];
    for (name, text, words) in cases {
        let p = ws.write(name, text);
        let r = verify(&ws, &["--baseline", p.to_str().expect("utf8")]).await;
        assert_eq!(r.code, Some(2), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(words), "{name}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("record a new one with `verify --record-baseline FILE`")
                || name == "newer.json",
            "{name}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "nothing is probed: {}", r.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_can_be_recorded_to_standard_output_from_a_container() {
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    ws.write("both-cas.pem", &pki::ca().cert_pem);
    ws.write("real-ca.pem", &pki::ca().cert_pem);
    ws.write(
        "config.toml",
        &config(1, up.port())
            .resolve("proxy.test", "127.0.0.1")
            .edit_target("push", |t| t.routes(&["direct"]))
            .to_string(),
    );
    let r = verify(&ws, &["--record-baseline", "-"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("1 checks, 1 passed, 0 failed"),
        "the report: {}",
        r.stderr
    );
    let file = ws.write("from-stdout.json", &r.stdout);
    let again = verify(&ws, &["--baseline", file.to_str().expect("utf8")]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(groups(&again.stderr).0.is_empty(), "{}", again.stderr);
}
