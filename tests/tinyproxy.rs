//! The probe and the app's traffic through real tinyproxy (Debian's
//! package) as the provider's proxy. Destinations are address literals so
//! tinyproxy never asks the machine's nameserver.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egress_sentinel::reason::{FailureReason, Phase};
use support::config::{Route, Target, Toml};
use support::upstream::Opts;
use support::{Workspace, check_all, pki};

struct Tinyproxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tinyproxy allowing CONNECT only to `allowed_port`.
fn start(allowed_port: u16) -> Option<Tinyproxy> {
    let bin = Path::new("/usr/bin/tinyproxy");
    if !bin.exists() {
        assert_ne!(
            std::env::var("EGRESS_REQUIRE_TINYPROXY").as_deref(),
            Ok("1"),
            "EGRESS_REQUIRE_TINYPROXY=1 but tinyproxy is missing: apt-get install tinyproxy"
        );
        eprintln!("SKIPPED: /usr/bin/tinyproxy not installed (apt-get install tinyproxy)");
        return None;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = support::free_port();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 100\nAllow 127.0.0.1\nConnectPort {allowed_port}\nLogLevel Critical\nUser nobody\nGroup nogroup\nViaProxyName \"tinyproxy-test\"\n"
        ),
    )
    .expect("conf");
    let mut child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tinyproxy");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("tinyproxy exited: {s}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tinyproxy did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Tinyproxy {
        child,
        port,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tinyproxy_tunnels_the_allowed_port_and_refuses_another() {
    let leaf = pki::ca().server(&["127.0.0.1"], false);
    let allowed = Opts::new("127.0.0.1").leaf(leaf.clone()).start().await;
    let other = Opts::new("127.0.0.1").leaf(leaf).start().await;
    let Some(tp) = start(allowed.port()) else {
        return;
    };
    let ws = Workspace::new();
    let cfg = ws.config(
        Toml::new()
            .probe(|p| p.timeout("5s"))
            .route(Route::proxy(
                "tinyproxy",
                &format!("http://127.0.0.1:{}", tp.port),
            ))
            .target(
                Target::new("allowed", &format!("https://127.0.0.1:{}/", allowed.port()))
                    .ca_file("ca.pem"),
            )
            .target(
                Target::new("other", &format!("https://127.0.0.1:{}/", other.port()))
                    .ca_file("ca.pem"),
            ),
    );
    let results = check_all(&cfg).await;
    let ok = &results[0];
    assert_eq!(ok.reason, FailureReason::Ok, "{}", ok.detail);
    assert_eq!(ok.connect_status, Some(200));
    let refused = &results[1];
    assert_eq!(
        refused.reason,
        FailureReason::ProxyDenied,
        "{}",
        refused.detail
    );
    assert_eq!(refused.failed_phase, Some(Phase::Tunnel));
    assert_eq!(refused.connect_status, Some(403));
    assert_eq!(other.connections(), 0);
}
