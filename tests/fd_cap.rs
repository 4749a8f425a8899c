//! The forward proxy under a low descriptor limit (`prlimit`): connections
//! are capped below what the limit allows, the surplus gets a prompt 503
//! instead of an EMFILE storm, the process does not spin, and service
//! resumes when tunnels close. In its own binary: it opens many sockets.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::proxy::{Mode, ScriptProxy};
use support::scenario::{config, upstream};
use support::sidecar::eventually;
use support::{Workspace, binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// CPU time (user + system, in clock ticks) of `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

async fn open_tunnel(proxy: u16, port: u16) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy))
        .await
        .expect("connect");
    s.write_all(format!("CONNECT push.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = [0u8; 12];
    let status = match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await {
        Ok(Ok(_)) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        _ => 0,
    };
    (status, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_fd_limit_the_surplus_gets_503_and_nothing_spins() {
    let prlimit = std::path::Path::new("/usr/bin/prlimit");
    if !prlimit.exists() {
        eprintln!("SKIPPED: /usr/bin/prlimit (util-linux) not installed");
        return;
    }
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let forward = free_port();
    let extra = format!(
        "\n[listen]\nmetrics = \"off\"\nadmin = \"off\"\nproxy = \"127.0.0.1:{forward}\"\n\n[shutdown]\ndrain = \"0s\"\ndeadline = \"1s\"\n"
    );
    let path = ws.write("config.toml", &config(&proxy.url(), up.port(), &extra));
    // 300 descriptors: the cap is (300 - 128 reserved) / 2 = 86 tunnels.
    let mut child = tokio::process::Command::new(prlimit)
        .arg("--nofile=300:300")
        .arg(binary())
        .args(["run", "--config", path.to_str().expect("utf8")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    eventually(
        Duration::from_secs(10),
        "the forward proxy listening",
        || async {
            TcpStream::connect(("127.0.0.1", forward))
                .await
                .ok()
                .map(drop)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut held = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let (status, s) = open_tunnel(forward, up.port()).await;
        statuses.push(status);
        held.push(s);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok, 86, "{statuses:?}");
    assert_eq!(refused, 14, "{statuses:?}");
    assert!(statuses[..86].iter().all(|s| *s == 200), "{statuses:?}");

    // Full, yet idle: no spinning on accept errors.
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = cpu_ticks(pid) - before;
    assert!(
        spent < 20,
        "the sidecar used {spent} ticks of CPU in 1 s while idle at its cap"
    );

    // Tunnels close; service resumes.
    drop(held);
    let (status, _s) = eventually(
        Duration::from_secs(5),
        "a tunnel after the others closed",
        || async {
            let (status, s) = open_tunnel(forward, up.port()).await;
            (status == 200).then_some((status, s))
        },
    )
    .await;
    assert_eq!(status, 200);
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exit")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
}
