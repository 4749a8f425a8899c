//! A migrated proxy that re-signs TLS with a CA the pod trusts: the
//! handshake succeeds, so only the trust anchor gives it away. Judged by
//! the anchor the chain validated through (the target's `expect_ca`, or
//! the public roots), never by the issuer; reported in `verify` (a row
//! naming the anchor and the issuer, both routes' anchors side by side),
//! `/status`, `egress_tls_intercepted` and one log line per change.

mod support;

use std::time::Duration;

use egress_sentinel::reason::FailureReason;
use support::config::{Route, Target, Tls, Toml};
use support::daemon::{Daemon, one_line, scrape};
use support::mitm::{MitmProxy, Mode};
use support::pki;
use support::sidecar::{Running, eventually, sample};
use support::upstream::Opts;
use support::{Workspace, binary, check_all};

/// Target `push` through `provider` (the proxy at `proxy`) and `direct`;
/// both CAs trusted through `[tls] ca_file`; `expect_ca` (when given) says
/// what is expected.
fn config(proxy: &str, port: u16, expect_ca: Option<&str>) -> Toml {
    let mut push = Target::new("push", &format!("https://push.test:{port}/"))
        .routes(&["provider", "direct"])
        .allow_addresses(&["127.0.0.1/32"]);
    if let Some(ca) = expect_ca {
        push = push.expect_ca(ca);
    }
    Toml::new()
        .probe(|p| p.timeout("3s"))
        .tls(|t| t.ca_file("both-cas.pem"))
        .resolve("push.test", "127.0.0.1")
        .route(Route::proxy("provider", proxy))
        .target(push)
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "both-cas.pem",
        &format!("{}{}", pki::ca().cert_pem, pki::rogue_ca().cert_pem),
    );
    ws.write("real-ca.pem", &pki::ca().cert_pem);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_re_signing_with_a_trusted_ca_is_intercepted_and_direct_is_not() {
    let up = Opts::new("push.test").start().await;
    let proxy = MitmProxy::start(Mode::Intercept(pki::rogue_ca())).await;
    let ws = workspace();
    let cfg = ws.config(config(&proxy.url(), up.port(), Some("real-ca.pem")));
    let checks = check_all(&cfg).await;
    let (via, direct) = (&checks[0], &checks[1]);
    // The handshake succeeded: nothing fails, one thing is wrong.
    assert_eq!(via.reason, FailureReason::Ok, "{}", via.detail);
    assert_eq!(direct.reason, FailureReason::Ok, "{}", direct.detail);
    assert_eq!(via.intercepted, Some(true));
    assert_eq!(direct.intercepted, Some(false));
    let anchor = via.anchor.as_ref().expect("anchor");
    assert_eq!(anchor.subject, "CN=Intercepting Proxy CA");
    assert!(!anchor.public);
    assert_eq!(
        via.peer_cert.as_ref().expect("peer").issuer,
        "CN=Intercepting Proxy CA"
    );
    let expected = format!("expect_ca {}", ws.path("real-ca.pem").display());
    assert_eq!(via.expected_anchor.as_deref(), Some(expected.as_str()));
    assert_eq!(
        direct.anchor.as_ref().expect("anchor").subject,
        "CN=egress-sentinel test CA"
    );
    assert_eq!(proxy.connects(), 1);

    // verify: exit 0 (every check passed), a WARN row, the anchors side by side.
    let out = tokio::process::Command::new(binary())
        .arg("verify")
        .arg("--config")
        .arg(ws.path("config.toml"))
        .output()
        .await
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("WARN"))
        .unwrap_or_else(|| panic!("a WARN row:\n{stdout}"));
    let words: Vec<&str> = row.split_whitespace().take(3).collect();
    assert_eq!(words, ["WARN", "push", "provider"], "{row}");
    let key = &anchor.spki_sha256[..16];
    assert!(
        row.ends_with(&format!(
            "INTERCEPTED: the chain validated through CN=Intercepting Proxy CA (not a public root, anchor key sha256 {key}), not {expected}; the leaf was issued by CN=Intercepting Proxy CA"
        )),
        "{row}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("WARN")).count(),
        1,
        "{stdout}"
    );
    let anchors: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("TARGET  ROUTE     TRUST ANCHOR"))
        .take(3)
        .map(|l| {
            l.split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect()
        })
        .collect();
    assert_eq!(anchors.len(), 3, "{stdout}");
    assert_eq!(
        anchors[1][..5],
        ["push", "provider", "CN=Intercepting Proxy CA", "no", "yes"],
        "{stdout}"
    );
    assert_eq!(
        anchors[2][..5],
        ["push", "direct", "CN=egress-sentinel test CA", "no", "no"],
        "{stdout}"
    );
    assert!(
        stdout.contains("1 certificate/trust warnings, 0 failures"),
        "{stdout}"
    );

    // The sidecar: the metric and /status.
    let sidecar = Running::start(ws.config(
        config(&proxy.url(), up.port(), Some("real-ca.pem")).probe(|p| p.interval("200ms")),
    ))
    .await;
    let m = eventually(Duration::from_secs(5), "both verdicts", || async {
        let m = sidecar.metrics_text().await;
        let v = |r| {
            sample(
                &m,
                "egress_tls_intercepted",
                &[("target", "push"), ("route", r)],
            )
        };
        (v("provider").is_some() && v("direct").is_some()).then_some(m)
    })
    .await;
    let v = |r| {
        sample(
            &m,
            "egress_tls_intercepted",
            &[("target", "push"), ("route", r)],
        )
    };
    assert_eq!(v("provider"), Some(1.0));
    assert_eq!(v("direct"), Some(0.0));
    let status = sidecar.status().await;
    let t = &status["targets"][0];
    let routes = t["routes"].as_array().expect("routes");
    assert_eq!(routes[0]["route"], "provider");
    assert_eq!(routes[0]["intercepted"], true);
    assert_eq!(routes[0]["anchor"]["subject"], "CN=Intercepting Proxy CA");
    assert_eq!(routes[1]["intercepted"], false);
    let findings = t["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "intercepted");
    assert_eq!(findings[0]["route"], "provider");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_root_that_only_ca_file_adds_is_not_a_public_one() {
    let up = Opts::new("push.test").start().await;
    let proxy = MitmProxy::start(Mode::Tunnel).await;
    let ws = workspace();
    // No expect_ca: the public roots are expected, and the test CA is not one.
    let checks = check_all(&ws.config(config(&proxy.url(), up.port(), None))).await;
    for c in &checks {
        assert_eq!(c.reason, FailureReason::Ok, "{}", c.detail);
        assert_eq!(c.intercepted, Some(true), "{}", c.route);
        assert_eq!(c.expected_anchor.as_deref(), Some("the public roots"));
        assert_eq!(
            c.anchor.as_ref().expect("anchor").subject,
            "CN=egress-sentinel test CA"
        );
    }
    // Naming the CA the upstream really uses clears it, on both routes.
    let checks = check_all(&ws.config(config(&proxy.url(), up.port(), Some("real-ca.pem")))).await;
    assert!(
        checks.iter().all(|c| c.intercepted == Some(false)),
        "{checks:?}"
    );
    // A chain that does not validate at all is tls_untrusted, not a verdict.
    let rogue_up = Opts::new("push.test")
        .leaf(pki::rogue_ca().server(&["push.test"], false))
        .start()
        .await;
    let ws2 = Workspace::new();
    ws2.write("real-ca.pem", &pki::ca().cert_pem);
    let text = config(&proxy.url(), rogue_up.port(), Some("real-ca.pem")).tls(|_| Tls::default());
    let checks = check_all(&ws2.config(&text)).await;
    for c in &checks {
        assert_eq!(c.reason, FailureReason::TlsUntrusted, "{}", c.detail);
        assert_eq!(c.intercepted, None);
        assert!(c.anchor.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interception_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let up = Opts::new("push.test").start().await;
    let proxy = MitmProxy::start(Mode::Intercept(pki::rogue_ca())).await;
    let ws = workspace();
    let text = config(&proxy.url(), up.port(), Some("real-ca.pem"))
        .probe(|p| p.interval("100ms"))
        .daemon("1s");
    let path = ws.write("config.toml", &text.to_string());
    let daemon = Daemon::start(&path, "info");
    let metrics = daemon.addr("metrics").await;
    let intercepted = |want: f64| {
        move || async move {
            let m = scrape(metrics).await?;
            (sample(
                &m,
                "egress_tls_intercepted",
                &[("target", "push"), ("route", "provider")],
            ) == Some(want))
            .then_some(())
        }
    };
    eventually(
        Duration::from_secs(10),
        "interception seen",
        intercepted(1.0),
    )
    .await;
    // Several more probes, still intercepted.
    let before = proxy.connects();
    eventually(Duration::from_secs(10), "more probes", || async {
        (proxy.connects() >= before + 3).then_some(())
    })
    .await;
    proxy.set_mode(Mode::Tunnel);
    eventually(
        Duration::from_secs(10),
        "interception gone",
        intercepted(0.0),
    )
    .await;
    let before = proxy.connects();
    eventually(Duration::from_secs(10), "more probes", || async {
        (proxy.connects() >= before + 3).then_some(())
    })
    .await;
    let logs = daemon.stop().await;
    one_line(
        &logs,
        "TLS intercepted",
        &[
            "WARN",
            "route=provider",
            "anchor=CN=Intercepting Proxy CA",
            "issuer=CN=Intercepting Proxy CA",
        ],
    );
    one_line(
        &logs,
        "TLS no longer intercepted",
        &[
            "INFO",
            "route=provider",
            "anchor=CN=egress-sentinel test CA",
        ],
    );
}
