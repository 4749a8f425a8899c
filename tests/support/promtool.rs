//! `promtool check metrics` on an exposition, and any other promtool
//! command (Debian's `prometheus` package). Skipped with a note when
//! promtool is missing, unless `EGRESS_REQUIRE_PROMTOOL=1` (CI) makes that a
//! failure.

use tokio::io::AsyncWriteExt;

/// Where Debian installs promtool.
const PROMTOOL: &str = "/usr/bin/promtool";

/// The promtool binary, or `None` (with a printed reason) when the caller
/// should skip. Panics when `EGRESS_REQUIRE_PROMTOOL=1` and it is missing.
pub fn binary() -> Option<&'static std::path::Path> {
    let promtool = std::path::Path::new(PROMTOOL);
    if promtool.exists() {
        return Some(promtool);
    }
    assert_ne!(
        std::env::var("EGRESS_REQUIRE_PROMTOOL").as_deref(),
        Ok("1"),
        "EGRESS_REQUIRE_PROMTOOL=1 but promtool is missing: apt-get install prometheus"
    );
    eprintln!("SKIPPED promtool check: {PROMTOOL} not installed (apt-get install prometheus)");
    None
}

/// Runs `promtool ARGS` in `dir` and asserts it succeeds; returns what it
/// printed. `None` when promtool is missing (and not required).
pub fn run(args: &[&str], dir: &std::path::Path) -> Option<String> {
    let promtool = binary()?;
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} in {dir:?}:\n{said}"
    );
    Some(said)
}

/// Asserts promtool finds nothing to say about `text`.
pub async fn check(text: &str) {
    let Some(promtool) = binary() else { return };
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}
