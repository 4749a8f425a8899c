//! `run` restarts itself once with `MALLOC_ARENA_MAX=1` and
//! `GLIBC_TUNABLES=glibc.malloc.tcache_count=0` (memory flat for weeks,
//! benches/README.md "Soak"): same PID and arguments, and the values the
//! user set are kept.

mod support;

use std::process::Command;

use support::Workspace;
use support::config::{Target, Toml};
use support::spawned::Spawned;

/// The variable `name` in the environment of process `pid`.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .map(str::to_string)
}

/// The sidecar started with `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES` as
/// given (unset when `None`), the arena count its PID ended up with, and
/// its stderr once stopped (the tunables glibc read are logged there:
/// `/proc/PID/environ` shows only the first of them, as glibc rewrites it).
async fn started(
    ws: &Workspace,
    arena: Option<&str>,
    tunables: Option<&str>,
) -> (Option<String>, Option<String>, Vec<String>) {
    let text = Toml::new()
        .resolve("t.test", "127.0.0.1")
        .target(Target::new("t", "https://t.test:1/").routes(&["direct"]))
        .daemon("1s");
    let path = ws.write("config.toml", &text.to_string());
    let mut command = Command::new(support::binary());
    command.args(["run", "--config"]).arg(&path);
    for (name, value) in [("MALLOC_ARENA_MAX", arena), ("GLIBC_TUNABLES", tunables)] {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let mut sidecar = Spawned::spawn(command);
    // Listening: the arguments (the config) came through the restart.
    sidecar.addr("forward proxy").await;
    let arena = env_of(sidecar.pid(), "MALLOC_ARENA_MAX");
    // Restarted under its own name, not `exe` (what `ps` and `top` show).
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", sidecar.pid())).expect("comm");
    assert_eq!(comm.trim(), "egress-sentinel");
    let (code, lines) = sidecar.stop().await;
    assert_eq!(code.code(), Some(0), "{}", lines.join("\n"));
    (arena, tunables_logged(&lines), lines)
}

/// The `GLIBC_TUNABLES` the sidecar logged it runs with.
fn tunables_logged(lines: &[String]) -> Option<String> {
    let line = lines.iter().find(|l| l.contains("malloc settings"))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["glibc_tunables"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_restarts_itself_with_one_arena_without_caches_and_keeps_a_users_values() {
    let ws = Workspace::new();
    let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
    let (arena, tunables, lines) = started(&ws, None, None).await;
    assert_eq!(
        arena.as_deref(),
        glibc.then_some("1"),
        "the spawned PID itself"
    );
    assert_eq!(
        tunables.as_deref(),
        Some(if glibc {
            "glibc.malloc.tcache_count=0"
        } else {
            "(unset)"
        }),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("cannot restart")),
        "{lines:?}"
    );

    // The user's arena count is kept; their other tunables too.
    let (arena, tunables, lines) =
        started(&ws, Some("4"), Some("glibc.malloc.trim_threshold=65536")).await;
    assert_eq!(arena.as_deref(), Some("4"));
    assert_eq!(
        tunables.as_deref(),
        Some(if glibc {
            "glibc.malloc.trim_threshold=65536:glibc.malloc.tcache_count=0"
        } else {
            "glibc.malloc.trim_threshold=65536"
        }),
        "{lines:?}"
    );

    // Both set by the user: started as it is.
    let (arena, tunables, lines) =
        started(&ws, Some("2"), Some("glibc.malloc.tcache_count=3")).await;
    assert_eq!(arena.as_deref(), Some("2"));
    assert_eq!(
        tunables.as_deref(),
        Some("glibc.malloc.tcache_count=3"),
        "{lines:?}"
    );
}
