//! Debian tools some tests drive (tmux, Chromium): found, or skipped with a
//! printed reason unless CI requires them (`EGRESS_REQUIRE_<NAME>=1`, set by
//! `.ci/run`), which makes a missing tool a failure.

use std::path::Path;

/// `path` when it exists; else `None` after saying why the test skips, or a
/// panic when `require` (an environment variable) is `1`.
pub fn available(path: &'static str, require: &str, package: &str) -> Option<&'static Path> {
    let p = Path::new(path);
    if p.exists() {
        return Some(p);
    }
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{require}=1 but {path} is missing: apt-get install {package}");
    }
    eprintln!(
        "SKIPPED: {path} not installed (apt-get install {package}); set {require}=1 to fail instead"
    );
    None
}
