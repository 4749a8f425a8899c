//! `run` restarts itself once with `MALLOC_ARENA_MAX=1` (memory flat for
//! weeks, benches/README.md "Soak"): same PID and arguments, and a value
//! the user set is kept.

mod support;

use std::process::Command;

use support::Workspace;
use support::config::{Target, Toml};
use support::spawned::Spawned;

/// `MALLOC_ARENA_MAX` in the environment of process `pid`.
fn arena_max(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("MALLOC_ARENA_MAX="))
        .map(str::to_string)
}

async fn started(ws: &Workspace, arena: Option<&str>) -> (Spawned, Option<String>) {
    let text = Toml::new()
        .resolve("t.test", "127.0.0.1")
        .target(Target::new("t", "https://t.test:1/").routes(&["direct"]))
        .daemon("1s");
    let path = ws.write("config.toml", &text.to_string());
    let mut command = Command::new(support::binary());
    command.args(["run", "--config"]).arg(&path);
    match arena {
        Some(v) => command.env("MALLOC_ARENA_MAX", v),
        None => command.env_remove("MALLOC_ARENA_MAX"),
    };
    let mut sidecar = Spawned::spawn(command);
    // Listening: the arguments (the config) came through the restart.
    sidecar.addr("forward proxy").await;
    let seen = arena_max(sidecar.pid());
    (sidecar, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_restarts_itself_with_one_arena_and_keeps_a_users_value() {
    let ws = Workspace::new();
    let (sidecar, seen) = started(&ws, None).await;
    let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
    assert_eq!(
        seen.as_deref(),
        glibc.then_some("1"),
        "the spawned PID itself"
    );
    let (code, lines) = sidecar.stop().await;
    assert_eq!(code.code(), Some(0), "{}", lines.join("\n"));
    assert!(
        !lines.iter().any(|l| l.contains("cannot restart")),
        "{lines:?}"
    );

    let (sidecar, seen) = started(&ws, Some("4")).await;
    assert_eq!(seen.as_deref(), Some("4"));
    let (code, _) = sidecar.stop().await;
    assert_eq!(code.code(), Some(0));
}
