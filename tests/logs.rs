//! The sidecar's logs as a log pipeline and an on-call engineer read them:
//! the binary's stderr, JSON lines whose `target`/`route`/`reason` are ours
//! (the module path apart), no ANSI colours in a pipe, every config error
//! once, targets without a name named after their preset or host, no
//! secret (proxy credentials, the app's URL userinfo) in any line, and an
//! incident file too large to read moved aside instead of stopping the
//! start.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::Workspace;
use support::config::{Route, Target, Toml};
use support::proxy::{Mode, ScriptProxy};
use support::scenario::daemon_config;
use support::spawned::Spawned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy's password, in the credentials file only.
const PROXY_PASSWORD: &str = "pr0xy-pw-7431";
/// The app's URL password, in its request only.
const APP_PASSWORD: &str = "app-s3cret-9902";

/// Sends `request` to the forward proxy; returns the answer's status line.
async fn ask(proxy: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_our_names_and_no_secret() {
    let up = support::scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    ws.write("credentials", &format!("egress:{PROXY_PASSWORD}\n"));
    let port = up.port();
    // An unnamed target: it is called after its URL's host.
    let unnamed = Target::unnamed()
        .url(&format!("https://login.test:{port}/"))
        .routes(&["provider"])
        .ca_file("ca.pem");
    let text = daemon_config(&proxy.url(), port)
        .target(unnamed)
        .edit_route("provider", |r| r.credentials_file("credentials"));
    let config = ws.write("config.toml", &text.to_string());
    // Every level: no secret may hide in a debug or trace line either.
    let mut sidecar = Spawned::run_at(&config, &[], Some("trace"));
    let forward = sidecar.addr("forward proxy").await;
    for target in ["apns", "login.test"] {
        sidecar
            .logged(
                Duration::from_secs(10),
                &format!("{target}'s route unhealthy"),
                |v| v["message"] == "route unhealthy" && v["target"] == target,
            )
            .await;
    }
    // The app puts credentials in its URLs: refused, and never logged.
    let refused = [
        ask(
            forward,
            &format!("GET http://alice:{APP_PASSWORD}@push.test:{port}/ HTTP/1.1\r\nHost: push.test\r\n\r\n"),
        )
        .await,
        ask(
            forward,
            &format!("CONNECT alice:{APP_PASSWORD}@push.test:{port} HTTP/1.1\r\n\r\n"),
        )
        .await,
    ];
    for status in &refused {
        assert!(status.starts_with("HTTP/1.1 4"), "{status}");
    }
    // Give the refusals' log lines a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, lines) = sidecar.stop().await;
    assert!(status.success(), "{status}");
    let all = lines.join("\n");

    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        json.iter().any(|v| v["level"] == "DEBUG"),
        "debug lines expected:\n{all}"
    );
    let unhealthy = json
        .iter()
        .find(|v| v["message"] == "route unhealthy" && v["target"] == "apns")
        .expect("apns unhealthy");
    assert_eq!(unhealthy["route"], "provider");
    assert_eq!(unhealthy["reason"], "proxy_upstream_error");
    assert_eq!(unhealthy["level"], "WARN");
    assert!(
        unhealthy["module"]
            .as_str()
            .is_some_and(|m| m.starts_with("egress_sentinel")),
        "{unhealthy}"
    );
    for v in &json {
        // Where there is a target, it is one of ours, never a module path.
        if let Some(t) = v.get("target") {
            let t = t.as_str().expect("a string");
            assert!(!t.contains("::"), "module path as target: {v}");
        }
        assert!(v.get("target_name").is_none(), "{v}");
    }
    assert!(!all.contains('\u{1b}'), "ANSI in a pipe:\n{all}");
    // Without a state_dir the trail is off, said once.
    let off = json
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("compliance trail off"))
        })
        .count();
    assert_eq!(off, 1, "{all}");
    // No secret in any line.
    let basic = base64_of(&format!("egress:{PROXY_PASSWORD}"));
    for secret in [PROXY_PASSWORD, APP_PASSWORD, basic.as_str()] {
        assert!(!all.contains(secret), "{secret} in the logs:\n{all}");
    }
    // The refusals were logged, redacted.
    assert!(all.contains("***@push.test"), "{all}");
}

fn base64_of(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_in_a_pipe_have_no_colours_and_name_our_target() {
    let up = support::scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let config = ws.write(
        "config.toml",
        &daemon_config(&proxy.url(), up.port()).to_string(),
    );
    let sidecar = Spawned::run(&config, &["--log-format", "text"]);
    support::sidecar::eventually(
        Duration::from_secs(10),
        "a text line about apns",
        || async {
            sidecar
                .lines()
                .iter()
                .any(|l| l.contains("route unhealthy") && l.contains("target=apns"))
                .then_some(())
        },
    )
    .await;
    let (_, lines) = sidecar.stop().await;
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "{all:?}");
    assert!(
        !all.contains("egress_sentinel::"),
        "no module paths:\n{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("reason=proxy_upstream_error")),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_config_error_is_printed_once() {
    let ws = Workspace::new();
    let path = ws.write(
        "config.toml",
        "[[route]]\nname = \"provider\"\nproxy = \"http://proxy.test:3128\"\n\n[[target]]\nname = \"push\"\nurl = \"https://push.test/\"\nroutes = [\"provider\", \"drect\"]\n",
    );
    let p = path.to_str().expect("utf8");
    for args in [
        vec!["run", "--config", p],
        vec!["run", "--config", p, "--log-format", "text"],
        vec!["verify", "--config", p],
        vec!["check-config", "--config", p],
    ] {
        let out = std::process::Command::new(support::binary())
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("no route named").count(),
            1,
            "{args:?}:\n{stderr}"
        );
        assert!(stderr.contains(":8:23: key `target[0].routes`"), "{stderr}");
    }
}

#[test]
fn unnamed_targets_are_named_after_their_preset_or_their_host() {
    let ws = Workspace::new();
    let provider = || Toml::new().route(Route::proxy("provider", "http://127.0.0.1:9"));
    let config = ws.config(
        provider()
            .target(Target::unnamed().preset("apns"))
            .target(Target::unnamed().url("https://api.sms.example/v1/health"))
            .target(Target::new("named", "https://login.example/")),
    );
    let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["apns", "api.sms.example", "named"]);
    // Two unnamed targets that would share a name: told to name one.
    let p = ws.write(
        "twice.toml",
        &provider()
            .target(Target::unnamed().url("https://a.example/"))
            .target(Target::unnamed().url("https://a.example/other"))
            .to_string(),
    );
    let err = egress_sentinel::config::Config::load(&p)
        .expect_err("a duplicate derived name")
        .to_string();
    assert!(
        err.contains("target[1].name") && err.contains("give it a `name`"),
        "{err}"
    );
}

#[test]
fn a_target_debug_shows_no_header_value_or_body() {
    let ws = Workspace::new();
    let config = ws.config(
        Toml::new()
            .route(Route::proxy("provider", "http://127.0.0.1:9"))
            .target(
                Target::new("sms", "https://api.sms.example/")
                    .method("POST")
                    .body(r#"{"api_key": "body-secret-123"}"#)
                    .headers(&[("Authorization", "Bearer header-secret-456")]),
            ),
    );
    let debug = format!("{:?}", config.targets[0]);
    for secret in ["body-secret-123", "header-secret-456"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("authorization: <redacted>"), "{debug}");
    let whole = format!("{config:?}");
    assert!(!whole.contains("header-secret-456"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mib_incident_file_is_moved_aside_and_the_sidecar_starts() {
    let up = support::scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let state = ws.path("state");
    std::fs::create_dir(&state).expect("mkdir");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(state.join("incidents.jsonl")).expect("create"),
        );
        let line = format!(
            "{{\"id\":1,\"start\":0,\"end\":1,\"route\":\"provider\",\"reason\":\"timeout\",\"detail\":\"{}\",\"impact\":[\"apns\"],\"open_targets\":[]}}\n",
            "x".repeat(900)
        );
        let mut written = 0;
        while written < 40 * 1024 * 1024 {
            f.write_all(line.as_bytes()).expect("write");
            written += line.len();
        }
    }
    let config = ws.write(
        "config.toml",
        &daemon_config(&proxy.url(), up.port())
            .state_dir("state")
            .to_string(),
    );
    let mut sidecar = Spawned::run(&config, &[]);
    let metrics = sidecar.addr("metrics").await;
    let moved = sidecar
        .logged(Duration::from_secs(10), "the file moved aside", |v| {
            v["message"] == "incident file moved aside; starting a new one"
        })
        .await;
    assert!(
        moved["why"]
            .as_str()
            .is_some_and(|w| w.contains("larger than")),
        "{moved}"
    );
    // The move is logged while starting; ready follows once listeners serve.
    support::sidecar::eventually(Duration::from_secs(10), "the sidecar started", || async {
        let (code, _) = support::sidecar::request(metrics, "GET", "/readyz").await;
        (code == 200).then_some(())
    })
    .await;
    let names: Vec<String> = std::fs::read_dir(&state)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("incidents.jsonl.oversized-")),
        "{names:?}"
    );
    let kept = std::fs::metadata(state.join("incidents.jsonl"))
        .expect("a new incident file")
        .len();
    assert!(kept < 1024 * 1024, "{kept} bytes");
    let (status, _) = sidecar.stop().await;
    assert!(status.success());
}
