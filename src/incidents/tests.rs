//! Incident windows and their file, on a fixed clock and a temp folder.
#![cfg(test)]
use super::*;

/// The provider refuses CONNECT for `target` from `when`.
fn refused(log: &mut IncidentLog, target: &str, when: SystemTime) {
    log.open_target(target, "provider", FailureReason::ProxyDenied, "403", when);
}

fn at(h: u64, m: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + h * 3600 + m * 60)
}

#[test]
fn one_outage_on_one_route_is_one_window_with_every_impact() {
    let mut log = IncidentLog::in_memory();
    let detail = "CONNECT api.push.apple.com:443 -> 502 Bad Gateway, Via: 1.1 egress-proxy";
    assert!(matches!(
        log.open_target(
            "apns",
            "provider",
            FailureReason::ProxyUpstreamError,
            detail,
            at(11, 47)
        ),
        Change::Opened(_)
    ));
    assert!(matches!(
        log.open_target(
            "sms",
            "provider",
            FailureReason::ProxyUpstreamError,
            "other",
            at(11, 48)
        ),
        Change::Joined(_)
    ));
    assert!(matches!(
        log.open_target(
            "azure-ad",
            "provider",
            FailureReason::ProxyUpstreamError,
            "x",
            at(11, 48)
        ),
        Change::Joined(_)
    ));
    // A different cause is a different window.
    assert!(matches!(
        log.open_target(
            "fcm",
            "provider",
            FailureReason::TlsUntrusted,
            "y",
            at(11, 50)
        ),
        Change::Opened(_)
    ));
    assert!(matches!(
        log.close_target("apns", at(12, 30)),
        Some(Change::Joined(_))
    ));
    assert!(matches!(
        log.close_target("sms", at(12, 59)),
        Some(Change::Joined(_))
    ));
    let Some(Change::Closed(w)) = log.close_target("azure-ad", at(13, 0)) else {
        panic!("window should close with its last target");
    };
    assert_eq!(
        w.render(),
        "Incident window: 11:47:00 -> 13:00:00 · cause: proxy_upstream_error (CONNECT api.push.apple.com:443 -> 502 Bad Gateway, Via: 1.1 egress-proxy) · impact: apns, sms, azure-ad"
    );
    assert_eq!(w.duration(at(14, 0)), Duration::from_secs(73 * 60));
    assert_eq!(log.windows().count(), 2);
    assert!(log.close_target("apns", at(13, 1)).is_none());
}

#[test]
fn windows_survive_a_restart_through_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = IncidentLog::open(dir.path()).expect("open");
        refused(&mut log, "apns", at(10, 17));
        refused(&mut log, "sms", at(10, 18));
        log.close_target("apns", at(10, 20));
    }
    let mut log = IncidentLog::open(dir.path()).expect("reopen");
    let w: Vec<_> = log.windows().cloned().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].impact, ["apns", "sms"]);
    assert_eq!(w[0].open_targets, BTreeSet::from(["sms".to_string()]));
    // The reopened window closes when its last target recovers, and new ids do not collide.
    assert!(matches!(
        log.close_target("sms", at(10, 30)),
        Some(Change::Closed(_))
    ));
    let Change::Opened(n) =
        log.open_target("fcm", "provider", FailureReason::Timeout, "t", at(11, 0))
    else {
        panic!("new window");
    };
    assert_eq!(n.id, 1);
    // A torn last line (crash mid-write) is skipped, not fatal.
    let file = dir.path().join(FILE_NAME);
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str("{\"id\": 7, \"sta");
    std::fs::write(&file, text).expect("write");
    let log = IncidentLog::open(dir.path()).expect("reopen torn");
    assert_eq!(log.windows().count(), 2);
    assert!(
        only_file(dir.path()),
        "a torn last line is no reason to move the file aside"
    );
}

/// True when the state folder holds the incident file and nothing else.
fn only_file(dir: &Path) -> bool {
    let names: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names == [std::ffi::OsString::from(FILE_NAME)]
}

fn aside(dir: &Path, word: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{FILE_NAME}.{word}-")))
        })
        .collect()
}

#[test]
fn incident_times_are_to_the_second() {
    let mut log = IncidentLog::in_memory();
    let t = at(11, 47) + Duration::from_secs(5);
    let Change::Opened(w) =
        log.open_target("apns", "provider", FailureReason::ProxyDenied, "403", t)
    else {
        panic!("opened");
    };
    assert!(
        w.render()
            .starts_with("Incident window: 11:47:05 -> (open)"),
        "{}",
        w.render()
    );
}

#[test]
fn a_corrupt_file_is_moved_aside_and_its_readable_windows_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = IncidentLog::open(dir.path()).expect("open");
        refused(&mut log, "apns", at(9, 0));
    }
    let file = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&file).expect("read");
    bytes.extend_from_slice(b"\x00\xff not json at all\n");
    bytes.extend_from_slice(
        serde_json::to_string(&IncidentWindow {
            id: 5,
            start: 0,
            end: Some(1),
            route: "provider".into(),
            reason: FailureReason::Timeout,
            detail: String::new(),
            impact: vec!["sms".into()],
            open_targets: BTreeSet::new(),
        })
        .expect("json")
        .as_bytes(),
    );
    bytes.push(b'\n');
    std::fs::write(&file, bytes).expect("write");
    let log = IncidentLog::open(dir.path()).expect("the sidecar starts");
    assert_eq!(log.windows().count(), 2);
    assert_eq!(aside(dir.path(), "corrupt").len(), 1);
    // The new file holds the windows kept, one line each.
    let text = std::fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 2);
}

#[test]
fn an_oversized_file_is_moved_aside_and_its_latest_windows_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(FILE_NAME);
    {
        let mut f = std::fs::File::create(&file).expect("create");
        let filler = format!("{}\n", "x".repeat(1023));
        for _ in 0..(MAX_FILE / 1024 + 10) {
            f.write_all(filler.as_bytes()).expect("write");
        }
        let w = IncidentWindow {
            id: 41,
            start: 100,
            end: None,
            route: "provider".into(),
            reason: FailureReason::ProxyUpstreamError,
            detail: "502".into(),
            impact: vec!["apns".into()],
            open_targets: BTreeSet::from(["apns".to_string()]),
        };
        writeln!(f, "{}", serde_json::to_string(&w).expect("json")).expect("write");
    }
    let mut log = IncidentLog::open(dir.path()).expect("the sidecar starts");
    assert_eq!(aside(dir.path(), "oversized").len(), 1);
    let kept: Vec<_> = log.windows().map(|w| w.id).collect();
    assert_eq!(kept, [41]);
    assert!(std::fs::metadata(&file).expect("new file").len() < 4096);
    // The open window still closes, and ids go on from it.
    assert!(matches!(
        log.close_target("apns", at(10, 0)),
        Some(Change::Closed(_))
    ));
    let Change::Opened(n) =
        log.open_target("sms", "provider", FailureReason::Timeout, "t", at(11, 0))
    else {
        panic!("opened");
    };
    assert_eq!(n.id, 42);
}

#[test]
fn the_file_is_compacted_as_it_grows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(FILE_NAME);
    let mut log = IncidentLog::open(dir.path()).expect("open");
    let detail = "d".repeat(1000);
    // Each flap appends two lines of ~1.2 kB: 1 500 flaps would be ~3.6 MB.
    for i in 0..1500u64 {
        let t = at(0, 0) + Duration::from_secs(i * 10);
        log.open_target("apns", "provider", FailureReason::ProxyDenied, &detail, t);
        log.close_target("apns", t + Duration::from_secs(5));
    }
    let size = std::fs::metadata(&file).expect("file").len();
    let live: u64 = log
        .windows()
        .map(|w| serde_json::to_string(w).expect("json").len() as u64 + 1)
        .sum();
    assert_eq!(log.windows().count(), MAX_WINDOWS);
    assert!(
        size <= 2 * live + COMPACT_FLOOR + 2048,
        "file {size} bytes for {live} bytes of windows"
    );
    let reopened = IncidentLog::open(dir.path()).expect("reopen");
    assert_eq!(reopened.windows().count(), MAX_WINDOWS);
    assert!(only_file(dir.path()));
}

#[test]
fn a_credential_window_is_keyed_by_its_cause_and_only_a_proof_closes_it() {
    let mut log = IncidentLog::in_memory();
    let Change::Opened(c) = log.open_credential("entra", "provider", "AADSTS7000222", at(1, 0))
    else {
        panic!("opened");
    };
    assert_eq!(c.reason, FailureReason::CredentialRejected);
    assert!(!c.is_route_window());
    // A second rejection joins it.
    assert!(matches!(
        log.open_credential("entra", "direct", "again", at(1, 5)),
        Change::Joined(_)
    ));
    // The route flaps: a route window of its own opens and closes...
    assert!(matches!(
        log.open_target(
            "entra",
            "provider",
            FailureReason::ProxyUpstreamError,
            "502",
            at(1, 10)
        ),
        Change::Opened(_)
    ));
    assert!(matches!(
        log.close_target("entra", at(1, 12)),
        Some(Change::Closed(w)) if w.is_route_window()
    ));
    // ...and the credential window is still open.
    assert_eq!(log.open_credential_targets(), vec!["entra".to_string()]);
    // Another target's rejection is its own window, not merged.
    assert!(matches!(
        log.open_credential("sms", "provider", "20003", at(1, 15)),
        Change::Opened(w) if w.impact == vec!["sms".to_string()]
    ));
    let Some(Change::Closed(w)) = log.close_credential("entra", at(2, 0)) else {
        panic!("closed");
    };
    assert_eq!(w.id, c.id);
    assert_eq!(w.end, Some(unix(at(2, 0))));
    assert!(log.close_credential("entra", at(2, 1)).is_none());
    assert_eq!(log.open_credential_targets(), vec!["sms".to_string()]);
}
