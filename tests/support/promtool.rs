//! `promtool check metrics` on an exposition (Debian's `prometheus`
//! package). Skipped with a note when promtool is missing, unless
//! `EGRESS_REQUIRE_PROMTOOL=1` (CI) makes that a failure.

use tokio::io::AsyncWriteExt;

/// Asserts promtool finds nothing to say about `text`.
pub async fn check(text: &str) {
    let promtool = std::path::Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        assert_ne!(
            std::env::var("EGRESS_REQUIRE_PROMTOOL").as_deref(),
            Ok("1"),
            "EGRESS_REQUIRE_PROMTOOL=1 but promtool is missing: apt-get install prometheus"
        );
        eprintln!(
            "SKIPPED promtool check: /usr/bin/promtool not installed (apt-get install prometheus)"
        );
        return;
    }
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
