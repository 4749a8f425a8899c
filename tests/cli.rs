//! The built binary: `verify` exit codes (0 all pass, 1 a check failed,
//! 2 usage or config error), its table and JSON reports, baselines, and
//! `check-config` errors that name file, line, column and key.

mod support;

use std::process::Output;

use support::config::{Route, Target, Toml};
use support::proxy::{Mode, ScriptProxy};
use support::upstream::Opts;
use support::{Workspace, binary};

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .await
        .expect("run the binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(proxy: &str, port: u16) -> String {
    Toml::new()
        .probe(|p| p.timeout("3s"))
        .resolve("push.test", "127.0.0.1")
        .route(Route::proxy("provider", proxy))
        .target(
            Target::new("push", &format!("https://push.test:{port}/"))
                .routes(&["provider", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_0_when_every_check_passes_and_prints_an_aligned_table() {
    let up = Opts::new("push.test").start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let path = ws.write("config.toml", &config(&proxy.url(), up.port()));
    let out = run(&["verify", "--config", path.to_str().expect("utf8")]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("TARGET  ROUTE     RESULT  REASON"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("push    provider  PASS    ok"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("push    direct    PASS    ok"),
        "{stdout}"
    );
    // Columns line up: DETAIL starts at the same offset on every row.
    let col = lines[0].find("DETAIL").expect("DETAIL column");
    assert!(
        lines[1][col..].starts_with("HTTP 200 OK over h2, CONNECT 200"),
        "{stdout}"
    );
    assert!(stdout.contains("2 checks, 2 passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_1_on_a_failed_check_and_json_names_the_reason() {
    let up = Opts::new("push.test").start().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let path = ws.write("config.toml", &config(&proxy.url(), up.port()));
    let p = path.to_str().expect("utf8");
    let out = run(&["verify", "--config", p, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let checks = json.as_array().expect("array of checks");
    assert_eq!(checks.len(), 2);
    let proxy_check = &checks[0];
    assert_eq!(proxy_check["target"], "push");
    assert_eq!(proxy_check["route"], "provider");
    assert_eq!(proxy_check["ok"], false);
    assert_eq!(proxy_check["reason"], "proxy_upstream_error");
    assert_eq!(proxy_check["connect_status"], 502);
    assert_eq!(proxy_check["http_status"], serde_json::Value::Null);
    assert!(proxy_check["phases"]["tunnel"].as_f64().is_some());
    assert!(
        proxy_check["detail"]
            .as_str()
            .expect("detail")
            .contains("502 Bad Gateway")
    );
    let direct = &checks[1];
    assert_eq!(direct["reason"], "ok");
    assert_eq!(direct["alpn"], "h2");
    assert_eq!(direct["http_status"], 200);
    for key in ["resolve", "connect", "tls", "first_byte", "body"] {
        assert!(
            direct["phases"][key].as_f64().is_some(),
            "phase {key} missing: {direct}"
        );
    }
    assert!(
        direct["peer_cert"]["sha256"]
            .as_str()
            .expect("sha256")
            .len()
            == 64
    );
    assert!(
        direct["peer_cert"]["not_after"]
            .as_str()
            .expect("not_after")
            .ends_with('Z')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_with_a_baseline_recorded_before_the_change() {
    let up = Opts::new("push.test").start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let path = ws.write("config.toml", &config(&proxy.url(), up.port()));
    let (p, base) = (path.to_str().expect("utf8"), ws.path("baseline.json"));
    let b = base.to_str().expect("utf8");
    let out = run(&["verify", "--config", p, "--record-baseline", b]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    proxy.set_mode(Mode::Status(403, "Forbidden"));
    let out = run(&["verify", "--config", p, "--baseline", b]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("push/provider: REGRESSED: ok -> proxy_denied"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("push/direct"),
        "unchanged checks are not listed: {stderr}"
    );
}

#[tokio::test]
async fn verify_and_check_config_exit_2_with_file_line_column_and_key() {
    let ws = Workspace::new();
    let path = ws.write(
        "config.toml",
        "[[route]]\nname = \"provider\"\nproxy = \"http://proxy.test:3128\"\n\n[[target]]\nname = \"push\"\nurl = \"https://push.test/\"\nroutes = [\"provider\", \"drect\"]\n",
    );
    let p = path.to_str().expect("utf8");
    for cmd in ["verify", "check-config"] {
        let out = run(&[cmd, "--config", p]).await;
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{p}:8:23: key `target[0].routes`: no route named \"drect\": expected one of \"direct\", \"provider\""
            )),
            "{cmd}: {stderr}"
        );
    }
    let out = run(&["verify"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --config is a usage error"
    );
    let out = run(&["verify", "--config", "/nonexistent/egress.toml"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open /nonexistent/egress.toml"));
}

#[tokio::test]
async fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/egress-sentinel.toml");
    let out = run(&["check-config", "--config", example]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Configs that cannot work, and hostile files: exit 2 with the place and
/// what is wrong, never a panic (the exit code of a panic is 101).
#[tokio::test]
async fn hostile_and_useless_configs_exit_2_with_the_place_never_a_panic() {
    let ws = Workspace::new();
    let target =
        "[[target]]\nname = \"push\"\nurl = \"https://push.test/\"\nroutes = [\"direct\"]\n";
    let mut garbage = b"[probe]\ninterval = \"1s\"\n".to_vec();
    garbage.extend_from_slice(&[0xff, 0xfe, 0x00, 0x9f, b'\n']);
    let cases: Vec<(&str, Vec<u8>, &str)> =
        vec![
        ("empty", Vec::new(), "no target"),
        ("no target", b"[probe]\ninterval = \"5s\"\n".to_vec(), "no target"),
        ("binary garbage", garbage, ":3:1: not UTF-8 text"),
        (
            "10 MB",
            format!("# {}\n{target}", "x".repeat(10 * 1024 * 1024)).into_bytes(),
            "larger than",
        ),
        (
            "deep nesting",
            format!("a = {}\n", "[".repeat(100_000)).into_bytes(),
            ":1:",
        ),
        (
            "wrong type",
            format!("[probe]\nfall = \"two\"\n\n{target}").into_bytes(),
            ":2:8: key `probe.fall`",
        ),
        (
            "duplicate target",
            format!("{target}\n{target}").into_bytes(),
            ":7:8: key `target[1].name`",
        ),
        (
            "unknown route",
            b"[[target]]\nname = \"push\"\nurl = \"https://push.test/\"\nroutes = [\"provider\"]\n"
                .to_vec(),
            ":4:11: key `target[0].routes`: no route named \"provider\"",
        ),
    ];
    for (what, bytes, says) in cases {
        let path = ws.path("hostile.toml");
        std::fs::write(&path, &bytes).expect("write");
        let p = path.to_str().expect("utf8");
        let out = run(&["check-config", "--config", p]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(p), "{what} names the file: {stderr}");
        assert!(
            stderr.contains(says),
            "{what}: expected {says:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    // `run` also needs something to serve on.
    let off = Toml::new()
        .listen("metrics", "off")
        .listen("admin", "off")
        .listen("proxy", "off")
        .target(Target::new("push", "https://push.test/").routes(&["direct"]));
    let path = ws.write("off.toml", &off.to_string());
    let p = path.to_str().expect("utf8");
    let out = run(&["check-config", "--config", p]).await;
    assert_eq!(out.status.code(), Some(0), "valid for verify");
    let out = run(&["run", "--config", p]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("every listener is \"off\""));
}
