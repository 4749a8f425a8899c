//! The allocator settings `run` starts with: glibc's malloc with one arena
//! and no per-thread cache.
//!
//! Measured (benches/README.md, "Soak"): with glibc's default arenas the
//! sidecar's `RssAnon` crept 5–11 KiB a minute for as long as it ran
//! (fragmentation spread over the arenas its threads picked; the live heap
//! did not grow); with `MALLOC_ARENA_MAX=1` it crept 1–2 KiB a minute.
//! What was left was the per-thread caches (tcache: up to 7 freed chunks
//! of each of 64 sizes per thread, filled slowly by chunks one thread
//! frees and no thread asks for again); without them (`tcache_count=0`)
//! the same load holds 0.6 MiB less and flat, at the same CPU within the
//! bench's spread. The process has two worker threads, so one arena
//! without caches costs nothing measurable in contention.
//!
//! glibc reads these settings only when the process starts, and setting
//! them from inside would take `unsafe` (`mallopt`), so `run` re-executes
//! its own binary once with them in its environment: the same PID,
//! arguments, descriptors and limits (`prlimit`, PID 1 in a container and
//! signals are unaffected; no thread exists yet). A `MALLOC_ARENA_MAX` the
//! user set, to any value, is kept as it is, and so is a `tcache_count` in
//! their `GLIBC_TUNABLES` (other tunables there are kept too).

use std::ffi::{OsStr, OsString};

/// The arena count glibc reads.
pub const ARENA_MAX: &str = "MALLOC_ARENA_MAX";
/// glibc's tunables, `name=value` pairs joined by `:`.
pub const TUNABLES: &str = "GLIBC_TUNABLES";
/// The tunable for the per-thread cache's chunks per size.
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count";

/// What [`settle`] would set before it re-executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// `MALLOC_ARENA_MAX=1`: the user set none.
    pub arena: bool,
    /// The `GLIBC_TUNABLES` to run with, when the user's has no
    /// `tcache_count`.
    pub tunables: Option<OsString>,
}

/// Whether [`settle`] re-executes, and with what: on glibc, when the
/// user set no arena count or no `tcache_count`.
pub fn wanted(arena: Option<&OsStr>, tunables: Option<&OsStr>) -> Option<Restart> {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return None;
    }
    let has_tcache = tunables.is_some_and(|t| {
        t.as_encoded_bytes()
            .split(|b| *b == b':')
            .any(|kv| kv.starts_with(format!("{TCACHE_COUNT}=").as_bytes()))
    });
    let tunables = (!has_tcache).then(|| {
        let mut t = OsString::new();
        if let Some(user) = tunables.filter(|t| !t.is_empty()) {
            t.push(user);
            t.push(":");
        }
        t.push(format!("{TCACHE_COUNT}=0"));
        t
    });
    let restart = Restart {
        arena: arena.is_none(),
        tunables,
    };
    (restart.arena || restart.tunables.is_some()).then_some(restart)
}

/// Re-executes this binary with the settings [`wanted`] asks for; returns
/// only when none was wanted (`None`) or the exec failed (the error: the
/// caller goes on with glibc's defaults and says so).
pub fn settle() -> Option<std::io::Error> {
    let restart = wanted(
        std::env::var_os(ARENA_MAX).as_deref(),
        std::env::var_os(TUNABLES).as_deref(),
    )?;
    reexec(&restart)
}

/// Logs the settings this process runs with, as glibc read them.
/// (`/proc/PID/environ` is no witness: glibc 2.36 rewrites the
/// `GLIBC_TUNABLES` there as it parses it, and shows only the first.)
pub fn log_settings() {
    let show = |name| std::env::var(name).unwrap_or_else(|_| "(unset)".to_string());
    tracing::info!(
        malloc_arena_max = %show(ARENA_MAX),
        glibc_tunables = %show(TUNABLES),
        "malloc settings"
    );
}

#[cfg(unix)]
fn reexec(restart: &Restart) -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let args: Vec<OsString> = args.collect();
    // The running file by its own name (the process's name in `ps` and
    // `top` comes from it: through `/proc/self/exe` it would be `exe`),
    // else `/proc/self/exe`, which is that file however it was invoked,
    // even replaced on disk since.
    let named = std::env::current_exe().ok();
    let mut error = None;
    for program in named
        .iter()
        .map(|p| p.as_os_str())
        .chain([OsStr::new("/proc/self/exe")])
    {
        let mut command = std::process::Command::new(program);
        command.arg0(&arg0).args(&args);
        if restart.arena {
            command.env(ARENA_MAX, "1");
        }
        if let Some(t) = &restart.tunables {
            command.env(TUNABLES, t);
        }
        error = Some(command.exec());
    }
    error
}

#[cfg(not(unix))]
fn reexec(_: &Restart) -> Option<std::io::Error> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn both_settings_are_added_and_a_users_values_are_kept() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(wanted(None, None), None);
            return;
        }
        let tcache0 = Some(OsString::from("glibc.malloc.tcache_count=0"));
        assert_eq!(
            wanted(None, None),
            Some(Restart {
                arena: true,
                tunables: tcache0.clone()
            })
        );
        assert_eq!(
            wanted(os("8"), os("")),
            Some(Restart {
                arena: false,
                tunables: tcache0
            })
        );
        assert_eq!(
            wanted(None, os("glibc.malloc.trim_threshold=4096")),
            Some(Restart {
                arena: true,
                tunables: Some(OsString::from(
                    "glibc.malloc.trim_threshold=4096:glibc.malloc.tcache_count=0"
                ))
            })
        );
        // The user's own cache size, and their arena count: nothing to do
        // (and so no second restart: the first one's environment has both).
        assert_eq!(wanted(os("2"), os("glibc.malloc.tcache_count=7")), None);
        assert_eq!(
            wanted(os("1"), os("a.b=1:glibc.malloc.tcache_count=0")),
            None
        );
        // A name that only starts like it is not it.
        assert!(
            wanted(os("1"), os("glibc.malloc.tcache_count_x=1"))
                .is_some_and(|r| r.tunables.is_some())
        );
    }
}
