//! `verify --watch` as an operator runs it during a provider change: in a
//! real terminal (tmux), the table is drawn and redrawn in place; the
//! provider's proxy starts answering CONNECT with 502 and the screen shows
//! it within two intervals; Ctrl-C prints the summary of every change and
//! exits 0. Without a terminal, only the changes are printed, one line each.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::Workspace;
use support::proxy::{Mode, ScriptProxy};
use support::scenario;
use support::tmux::Tmux;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const INTERVAL: Duration = Duration::from_millis(500);

/// The table line of `target`/`route` on `screen`.
fn row<'a>(screen: &'a str, target: &str, route: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(target) && words.next() == Some(route)
    })
}

fn state<'a>(screen: &'a str, target: &str, route: &str) -> Option<&'a str> {
    row(screen, target, route).and_then(|l| l.split_whitespace().nth(2))
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_change_window_in_tmux_shows_the_502_within_two_intervals_and_ctrl_c_summarises() {
    let Some(_) = support::tools::available("/usr/bin/tmux", "EGRESS_REQUIRE_TMUX", "tmux") else {
        return;
    };
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let config = ws.write(
        "config.toml",
        &scenario::config(&proxy.url(), up.port()).to_string(),
    );
    let exit_file = ws.path("exit-code");
    let command = format!(
        "{} verify --watch --interval 500ms --config {}; echo $? > {}; sleep 600",
        shell_quote(support::binary()),
        shell_quote(&config),
        shell_quote(&exit_file)
    );
    let tmux = Tmux::start("live", &command).await;

    let screen = tmux
        .wait_for(
            Duration::from_secs(20),
            "table with every pair passing",
            |s| {
                [
                    ("apns", "provider"),
                    ("apns", "direct"),
                    ("sms", "provider"),
                ]
                .iter()
                .all(|(t, r)| state(s, t, r) == Some("PASS"))
            },
        )
        .await;
    assert!(
        screen.contains("TARGET") && screen.contains("REASON") && screen.contains("DETAIL"),
        "{screen}"
    );
    assert!(screen.contains("first result: PASS ok"), "{screen}");

    // The provider's change: CONNECT now answers 502.
    proxy.set_mode(Mode::Status(502, "Bad Gateway"));
    let broke = Instant::now();
    let screen = tmux
        .wait_for(Duration::from_secs(10), "the 502 on screen", |s| {
            state(s, "apns", "provider") == Some("FAIL")
                && state(s, "sms", "provider") == Some("FAIL")
        })
        .await;
    let shown = broke.elapsed();
    assert!(
        shown <= INTERVAL * 2,
        "the change took {shown:?} to show (interval {INTERVAL:?}):\n{screen}"
    );
    let provider = row(&screen, "apns", "provider").unwrap_or_default();
    assert!(
        provider.contains("proxy_upstream_error") && provider.contains("502 Bad Gateway"),
        "{provider}"
    );
    assert_eq!(state(&screen, "apns", "direct"), Some("PASS"), "{screen}");
    assert!(
        screen.contains("apns/provider: PASS ok (CONNECT 200, HTTP 200) -> FAIL proxy_upstream_error (CONNECT 502)"),
        "the change log under the table:\n{screen}"
    );
    // Redrawn in place: one table, not one per refresh.
    assert_eq!(
        screen.matches("TARGET").count(),
        1,
        "the table scrolled instead of being redrawn:\n{screen}"
    );

    tmux.keys("C-c").await;
    let start = Instant::now();
    let code = loop {
        if let Ok(c) = std::fs::read_to_string(&exit_file) {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after Ctrl-C:\n{}",
            tmux.screen().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code.trim(), "0", "exit code");
    let screen = tmux.screen().await;
    for expected in [
        "Summary: watched 3 target/route pairs",
        "2 changes; 2 failing now.",
        "Changes:\n",
        "apns/provider: PASS ok (CONNECT 200, HTTP 200) -> FAIL proxy_upstream_error (CONNECT 502)",
        "sms/provider: PASS ok (CONNECT 200, HTTP 200) -> FAIL proxy_upstream_error (CONNECT 502)",
        "  apns/direct: PASS ok (HTTP 200) since",
    ] {
        assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_only_changes_are_printed_one_line_each() {
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let config = ws.write(
        "config.toml",
        &scenario::config(&proxy.url(), up.port()).to_string(),
    );
    let mut child = Command::new(support::binary())
        .args(["verify", "--watch", "--interval", "200ms", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen: Vec<String> = Vec::new();
    let mut next_until = async |seen: &mut Vec<String>, what: &str, pred: &dyn Fn(&str) -> bool| {
        tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(l) = lines.next_line().await.expect("read") {
                seen.push(l.clone());
                if pred(&l) {
                    return;
                }
            }
            panic!("stdout ended before {what}: {seen:#?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within 15 s: {seen:#?}"));
    };
    // Three first results, then nothing while nothing changes.
    while seen.iter().filter(|l| l.contains("first result")).count() < 3 {
        next_until(&mut seen, "three first results", &|l| {
            l.contains("first result")
        })
        .await;
    }
    tokio::time::sleep(INTERVAL * 2).await;
    proxy.set_mode(Mode::Status(502, "Bad Gateway"));
    next_until(&mut seen, "the change", &|l| {
        l.contains(
            "apns/provider: PASS ok (CONNECT 200, HTTP 200) -> FAIL proxy_upstream_error (CONNECT 502)",
        )
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().expect("pid").to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    while let Ok(Some(l)) = lines.next_line().await {
        seen.push(l);
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGINT")
        .expect("wait");
    assert_eq!(exit.code(), Some(0), "{seen:#?}");
    let text = seen.join("\n");
    assert!(!text.contains('\x1b'), "terminal codes in a pipe: {text:?}");
    assert!(
        !text.contains("TARGET"),
        "a table was printed without a terminal:\n{text}"
    );
    // Between the first results and the break, a steady state printed nothing.
    let before_break: Vec<&String> = seen
        .iter()
        .take_while(|l| !l.contains("proxy_upstream_error"))
        .filter(|l| !l.starts_with("egress-sentinel verify --watch"))
        .collect();
    assert_eq!(before_break.len(), 3, "{before_break:#?}");
    assert!(
        text.contains("Summary: watched 3 target/route pairs"),
        "{text}"
    );
    assert!(text.contains("Changes:\n  "), "{text}");
}
