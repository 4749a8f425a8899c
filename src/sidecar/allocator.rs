//! The allocator setting `run` starts with: glibc's malloc with one arena.
//!
//! Measured (benches/README.md, "Soak"): with glibc's default arenas the
//! sidecar's `RssAnon` crept 5–11 KiB a minute for as long as it ran
//! (fragmentation spread over the arenas its threads picked; the live heap
//! did not grow); with `MALLOC_ARENA_MAX=1` the same load held flat, at the
//! same CPU. The process has two worker threads, so one arena costs
//! nothing measurable in contention.
//!
//! glibc reads the setting only when the process starts, and setting it
//! from inside would take `unsafe` (`mallopt`), so `run` re-executes its
//! own binary once with the variable set: the same PID, arguments,
//! descriptors and limits (`prlimit`, PID 1 in a container and signals
//! are unaffected; no thread exists yet). A `MALLOC_ARENA_MAX` the user
//! set, to any value, is kept as it is.

/// The variable glibc reads.
pub const ARENA_MAX: &str = "MALLOC_ARENA_MAX";

/// Whether [`one_arena`] would re-execute: on glibc, when the user set no
/// arena count.
pub fn wanted(env: Option<&std::ffi::OsStr>) -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu")) && env.is_none()
}

/// Re-executes this binary with `MALLOC_ARENA_MAX=1` when [`wanted`];
/// returns only when it was not (`None`) or the exec failed (the error:
/// the caller goes on with the default arenas and says so).
pub fn one_arena() -> Option<std::io::Error> {
    if !wanted(std::env::var_os(ARENA_MAX).as_deref()) {
        return None;
    }
    reexec()
}

#[cfg(unix)]
fn reexec() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // /proc/self/exe: the running file, however it was invoked.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(ARENA_MAX, "1")
        .exec();
    Some(error)
}

#[cfg(not(unix))]
fn reexec() -> Option<std::io::Error> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_the_user_set_is_kept() {
        assert!(!wanted(Some(std::ffi::OsStr::new("8"))));
        assert!(!wanted(Some(std::ffi::OsStr::new(""))));
        assert_eq!(
            wanted(None),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
