//! `egress-sentinel demo` (the README's first command) tells the incident's
//! story end to end and exits 0: the proxy incident, then the expired
//! Azure AD secret named by `POST /verify` (`AADSTS7000222`) with nothing
//! failing over.

mod support;

#[tokio::test]
async fn the_demo_detects_fails_over_reports_sms_and_fails_back() {
    let out = tokio::process::Command::new(support::binary())
        .arg("demo")
        .output()
        .await
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for needle in [
        "PROVIDER  a configuration change: the proxy now answers CONNECT with 502 Bad Gateway",
        "sidecar  push over provider: UNHEALTHY: proxy_upstream_error (CONNECT push.demo.test:",
        "sidecar  push: traffic moves provider -> direct",
        "sidecar  azure-ad: traffic moves provider -> direct",
        "sidecar  sms: DOWN: no allowed route works",
        "app      sms: requests FAIL: the sidecar answers 502, Proxy-Status: egress-sentinel; error=destination_unavailable",
        "sidecar  INCIDENT opened: Incident window: ",
        "sidecar  push: traffic moves direct -> provider",
        "sidecar  INCIDENT closed: Incident window: ",
        "ok (100%)  failed over to direct",
        "detection: ",
        "push: failover ",
        "ENTRA ID  the app's client secret reaches its end date",
        "sidecar  verify: azure-ad credential rejected (credential_rejected, AADSTS7000222)",
        "azure-ad credential: POST /verify names it: credential_rejected, AADSTS7000222",
        "nothing failed over for it: going direct does not fix a credential",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // The summary's window (the last one printed): the window that opened
    // lists only the targets impacted at that moment.
    let impact = stdout
        .lines()
        .rev()
        .find_map(|l| l.split_once("· impact: ").map(|(_, i)| i))
        .expect("an impact list");
    let mut impacted: Vec<&str> = impact
        .split(" (")
        .next()
        .unwrap_or("")
        .split(", ")
        .collect();
    impacted.sort_unstable();
    assert_eq!(impacted, ["azure-ad", "push", "sms"], "{stdout}");
    assert!(!stdout.contains("lost"), "{stdout}");
    // After the secret expired, no traffic moved.
    let after: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("ENTRA ID  the app's client secret"))
        .filter(|l| l.contains("traffic moves"))
        .collect();
    assert!(after.is_empty(), "{after:?}");
    assert!(
        !stdout.contains("demo-client-secret-not-a-real-one"),
        "the secret never shows"
    );
}
