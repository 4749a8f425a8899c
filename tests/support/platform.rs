//! The platform's own address parsers — glibc's `inet_aton` and
//! `inet_pton(AF_INET6)` — asked through python3's `socket` module, one
//! process per batch. The property tests hold our parser to them. Nothing
//! here resolves a name: both functions only read literals.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
import json, socket, sys
out = []
for s in json.load(sys.stdin):
    try:
        v4 = socket.inet_ntoa(socket.inet_aton(s))
    except (OSError, ValueError, UnicodeError):
        v4 = None
    try:
        v6 = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, s))
    except (OSError, ValueError, UnicodeError):
        v6 = None
    out.append([v4, v6])
json.dump(out, sys.stdout)
"#;

/// What the platform makes of each input: `(inet_aton, inet_pton)`.
pub fn inet(inputs: &[String]) -> Vec<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the platform's inet_aton/inet_pton (apt-get install python3)");
    let input = serde_json::to_vec(inputs).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(out.status.success(), "python3 failed: {}", out.status);
    let rows: Vec<(Option<String>, Option<String>)> =
        serde_json::from_slice(&out.stdout).expect("python3's answer is JSON");
    assert_eq!(rows.len(), inputs.len(), "one answer per input");
    rows.into_iter()
        .map(|(v4, v6)| {
            (
                v4.map(|a| a.parse().expect("inet_ntoa text")),
                v6.map(|a| a.parse().expect("inet_ntop text")),
            )
        })
        .collect()
}
