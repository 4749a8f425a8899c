//! Proxy credentials never appear in a report, a log line or an error
//! message — in clear or in their base64 wire form — while still being sent
//! to the proxy that asks for them.

mod support;

use support::config::{Route, Target, Toml};
use support::proxy::{Mode, ScriptProxy};
use support::upstream::Opts;
use support::{Workspace, binary, free_port};

const PASSWORD: &str = "s3cr3t-Hunter2-pw";

/// `user:PASSWORD` as base64, the form it takes on the wire.
fn wire_form() -> &'static str {
    "ZWdyZXNzOnMzY3IzdC1IdW50ZXIyLXB3"
}

/// Two routes with the credentials file: one proxy that accepts them, one
/// that refuses them.
fn routes(toml: Toml, good: &ScriptProxy, refusing: &ScriptProxy) -> Toml {
    toml.route(Route::proxy("good", &good.url()).credentials_file("credentials"))
        .route(Route::proxy("refusing", &refusing.url()).credentials_file("credentials"))
}

/// The one target, at the upstream on `port`.
fn push_target(port: u16) -> Target {
    Target::new("push", &format!("https://push.test:{port}/")).ca_file("ca.pem")
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} leaks the password:\n{text}"
    );
    assert!(
        !text.contains(wire_form()),
        "{what} leaks the encoded credentials:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_the_proxy_and_nothing_else() {
    let up = Opts::new("push.test").start().await;
    let expected = format!("Basic {}", wire_form());
    let good = ScriptProxy::start(Mode::RequireAuth(expected.clone())).await;
    let refusing = ScriptProxy::start(Mode::RequireAuth("Basic other".into())).await;
    let ws = Workspace::new();
    ws.write("credentials", &format!("egress:{PASSWORD}\n"));
    let config = routes(Toml::new(), &good, &refusing)
        .route(Route::proxy("down", "http://127.0.0.1:1").credentials_file("credentials"))
        .target(push_target(up.port()));
    let path = ws.write("config.toml", &config.to_string());
    let p = path.to_str().expect("utf8");
    let cfg = ws.config(&config);
    assert_clean("Debug of the config", &format!("{cfg:?}"));

    for format in ["table", "json"] {
        let out = tokio::process::Command::new(binary())
            .args(["verify", "--config", p, "--format", format])
            .env("RUST_LOG", "trace")
            .output()
            .await
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stdout.contains("proxy_auth_required"), "{stdout}");
        assert!(stdout.contains("proxy_connect"), "{stdout}");
        assert_clean(&format!("{format} report"), &stdout);
        assert_clean("trace logs", &stderr);
    }
    // The proxy that wanted them got exactly the configured credentials.
    let sent: Vec<_> = good
        .received()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|a| *a == expected));
    assert!(
        up.requests().len() >= 2,
        "the authenticated route reached the upstream"
    );
}

#[tokio::test]
async fn config_errors_never_quote_credentials() {
    let ws = Workspace::new();
    ws.write("credentials", &format!("no-colon-{PASSWORD}\n"));
    let path = ws.write(
        "config.toml",
        "[[route]]\nname = \"p\"\nproxy = \"http://proxy.test:3128\"\ncredentials_file = \"credentials\"\n",
    );
    let err = egress_sentinel::config::Config::load(&path).expect_err("bad credentials file");
    assert!(
        err.to_string()
            .contains("must hold one line \"user:password\""),
        "{err}"
    );
    assert_clean("config error", &err.to_string());
    let inline = ws.write(
        "inline.toml",
        &format!("[[route]]\nname = \"p\"\nproxy = \"http://egress:{PASSWORD}@proxy.test:3128\"\n"),
    );
    let err = egress_sentinel::config::Config::load(&inline).expect_err("inline credentials");
    assert!(
        err.to_string()
            .contains("credentials in the proxy URL are refused"),
        "{err}"
    );
    assert_clean("config error", &err.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_sidecar_keeps_credentials_out_of_logs_metrics_and_status() {
    let up = Opts::new("push.test").start().await;
    let expected = format!("Basic {}", wire_form());
    let good = ScriptProxy::start(Mode::RequireAuth(expected.clone())).await;
    let refusing = ScriptProxy::start(Mode::RequireAuth("Basic other".into())).await;
    let ws = Workspace::new();
    ws.write("credentials", &format!("egress:{PASSWORD}\n"));
    let (metrics, admin, proxy) = (free_port(), free_port(), free_port());
    let config = Toml::new()
        .listen("metrics", &format!("127.0.0.1:{metrics}"))
        .listen("admin", &format!("127.0.0.1:{admin}"))
        .listen("proxy", &format!("127.0.0.1:{proxy}"))
        .probe(|p| p.interval("200ms").unhealthy_interval("100ms"))
        .shutdown("0s", "1s")
        .resolve("push.test", "127.0.0.1");
    let config = routes(config, &good, &refusing).target(push_target(up.port()));
    let path = ws.write("config.toml", &config.to_string());
    let mut child = tokio::process::Command::new(binary())
        .args([
            "run",
            "--config",
            path.to_str().expect("utf8"),
            "--log-format",
            "text",
        ])
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain the logs while it runs: a full pipe would block the sidecar.
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        err
    });
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let status = support::sidecar::eventually(
        std::time::Duration::from_secs(10),
        "a probe of both routes",
        || async {
            if tokio::net::TcpStream::connect(addr(admin)).await.is_err() {
                return None;
            }
            let (code, body) = support::sidecar::request(addr(admin), "GET", "/status").await;
            (code == 200
                && body.contains("proxy_auth_required")
                && body.contains("\"reason\": \"ok\""))
            .then_some(body)
        },
    )
    .await;
    // App traffic through the forward proxy, with the credentials in play.
    assert_eq!(
        support::app::get_via(addr(proxy), "push.test", up.port()).await,
        Ok(200)
    );
    let (_, metrics_text) = support::sidecar::request(addr(metrics), "GET", "/metrics").await;
    let (_, verify) = support::sidecar::request(addr(admin), "POST", "/verify").await;
    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = child.wait().await;
        logs.await.expect("logs")
    })
    .await
    .expect("stopped");
    assert!(
        out.contains("TRACE") || out.contains("DEBUG"),
        "trace logs expected:\n{out}"
    );
    for (what, text) in [
        ("trace logs", &out),
        ("/status", &status),
        ("/metrics", &metrics_text),
        ("POST /verify", &verify),
    ] {
        assert_clean(what, text);
    }
    assert!(
        good.received()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(expected.as_str()))
    );
}
