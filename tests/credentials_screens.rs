//! A rejected credential as the on-call engineer sees it (issue 26): the
//! app's Twilio auth token was rotated under it. In headless Chromium the
//! status page's credentials table shows the target `rejected` with
//! Twilio's code 20003; in a real terminal (tmux) `verify --watch` shows
//! the `direct credential` row failing with 20003 and, once the good token
//! is written, the next check (the credential's `every`, one minute) turns
//! it to PASS, with the change line under the table. No token appears on
//! either screen.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egress_sentinel::demo::providers::{Twilio, TwilioSaw};
use egress_sentinel::demo::stand_ins::{self, DemoPki};
use serde_json::Value;
use support::Workspace;
use support::chromium::{Browser, CHROMIUM};
use support::config::{Target, Toml};
use support::sidecar::{Running, eventually, request};
use support::tmux::{TMUX, Tmux};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Canaries: the token the account has, and the rotated-away one the app
/// still holds.
const GOOD: &str = "CANARY-screens-good-3f81c2";
const WRONG: &str = "CANARY-screens-wrong-e6079d";

/// The Twilio stand-in, knowing the account by its good token.
async fn twilio() -> (DemoPki, Twilio) {
    let pki = stand_ins::pki(&["api.twilio.test"]).expect("pki");
    let twilio = Twilio::start(&pki).await.expect("twilio");
    twilio.add_account(SID, GOOD);
    (pki, twilio)
}

/// Target `sms` direct to the stand-in, carrying the Twilio credential
/// read from `twilio-token` (which holds the wrong token).
fn config(ws: &Workspace, pki: &DemoPki, twilio: &Twilio) -> Toml {
    ws.write("demo-ca.pem", &pki.ca_pem);
    ws.write("twilio-token", WRONG);
    Toml::new()
        .probe(|p| p.timings("500ms", "200ms", "3s"))
        .resolve("api.twilio.test", "127.0.0.1")
        .target(
            Target::new(
                "sms",
                &format!("https://api.twilio.test:{}/", twilio.addr().port()),
            )
            .direct_to("127.0.0.1/32")
            .ca_file("demo-ca.pem")
            .expect_status(&["200-499"])
            .credential(&[
                ("kind", "twilio"),
                ("account_sid", SID),
                ("auth_token_file", "twilio-token"),
                ("every", "1m"),
            ]),
        )
}

fn no_canary(what: &str, text: &str) {
    for c in [GOOD, WRONG] {
        assert!(!text.contains(c), "{what} shows a token:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_rejected_credential_with_its_code() {
    if support::tools::available(CHROMIUM, "EGRESS_REQUIRE_CHROMIUM", "chromium").is_none() {
        return;
    }
    let (pki, twilio) = twilio().await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&ws, &pki, &twilio))).await;
    let credential = eventually(
        Duration::from_secs(30),
        "sms's credential rejected in /status",
        || async {
            let s = sidecar.status().await;
            let c: Value = s["targets"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["target"] == "sms"))
                .map(|t| t["credential"].clone())
                .unwrap_or(Value::Null);
            (c["state"] == "rejected").then_some(c)
        },
    )
    .await;
    assert_eq!(credential["code"], "20003", "{credential:#}");
    assert_eq!(twilio.seen(), vec![TwilioSaw::WrongCredentials]);

    let origin = format!("http://{}", sidecar.admin);
    let mut browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    let row = "tr[data-credential=\"sms\"]";
    browser
        .wait_for(
            "the credentials row",
            &format!("document.querySelector('{row}')"),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(
        browser
            .eval(&format!("document.querySelector('{row}').dataset.result"))
            .await,
        "rejected"
    );
    let text = browser
        .eval(&format!("document.querySelector('{row}').innerText"))
        .await;
    let text = text.as_str().unwrap_or("");
    for expected in ["sms", "twilio", "rejected", "20003", "direct"] {
        assert!(
            text.contains(expected),
            "{expected:?} not in the row: {text}"
        );
    }
    let cell = |label: &str| {
        format!("document.querySelector('{row} td[data-label=\"{label}\"]').innerText.trim()")
    };
    assert_eq!(browser.eval(&cell("Result")).await, "rejected");
    assert_eq!(browser.eval(&cell("Code")).await, "20003");
    browser.screenshot(&ws.path("credentials-page.png")).await;

    // No token: not in the live DOM, not in the markup as served, not in
    // any URL the page asked for, and nothing from another origin.
    no_canary("the page's DOM", &browser.dom().await);
    let (code, served) = request(sidecar.admin, "GET", "/").await;
    assert_eq!(code, 200);
    no_canary("the served page", &served);
    let urls = browser.requested_urls();
    for u in &urls {
        no_canary("a requested URL", u);
        assert!(
            u.starts_with(&format!("{origin}/")) || u.starts_with("data:"),
            "the page requested {u}"
        );
    }
    sidecar.stop().await;
}

/// The line of `target`'s `<route> credential` row on `screen`.
fn credential_row<'a>(screen: &'a str, target: &str, route: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(target)
            && words.next() == Some(route)
            && words.next() == Some("credential")
    })
}

/// That row's STATE column (`...`, `PASS`, `FAIL`).
fn credential_state<'a>(screen: &'a str, target: &str, route: &str) -> Option<&'a str> {
    credential_row(screen, target, route).and_then(|l| l.split_whitespace().nth(3))
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Waits for `file` to exist (the shell writes the exit code into it).
async fn read_when_written(file: &PathBuf, tmux: &Tmux) -> String {
    let start = Instant::now();
    loop {
        if let Ok(c) = std::fs::read_to_string(file) {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit after Ctrl-C:\n{}",
            tmux.screen().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_watch_in_tmux_shows_a_credential_change() {
    if support::tools::available(TMUX, "EGRESS_REQUIRE_TMUX", "tmux").is_none() {
        return;
    }
    let (pki, twilio) = twilio().await;
    let ws = Workspace::new();
    let config = ws.write("config.toml", &config(&ws, &pki, &twilio).to_string());
    let exit_file = ws.path("exit-code");
    let command = format!(
        "{} verify --watch --interval 500ms --config {}; echo $? > {}; sleep 600",
        shell_quote(support::binary()),
        shell_quote(&config),
        shell_quote(&exit_file)
    );
    let tmux = Tmux::start("credentials-screens", &command).await;

    let screen = tmux
        .wait_for(
            Duration::from_secs(30),
            "sms direct credential row failing with 20003",
            |s| {
                credential_state(s, "sms", "direct") == Some("FAIL")
                    && credential_row(s, "sms", "direct")
                        .is_some_and(|r| r.contains("credential_rejected 20003"))
            },
        )
        .await;
    assert!(
        screen.contains(
            "sms/direct credential: first result: FAIL credential_rejected (20003, HTTP 401)"
        ),
        "the first result under the table:\n{screen}"
    );
    no_canary("the watch", &screen);

    // The operator puts the current token in place; the next check (one
    // `every` after the first, so within a minute) proves it.
    ws.write("twilio-token", GOOD);
    let fixed = Instant::now();
    let screen = tmux
        .wait_for(
            Duration::from_secs(90),
            "sms direct credential row passing",
            |s| {
                credential_state(s, "sms", "direct") == Some("PASS")
                    && s.contains(
                        "sms/direct credential: FAIL credential_rejected (20003, HTTP 401) -> PASS ok",
                    )
            },
        )
        .await;
    assert!(
        fixed.elapsed() <= Duration::from_secs(75),
        "the change took {:?} to show (every = 1m):\n{screen}",
        fixed.elapsed()
    );
    no_canary("the watch", &screen);
    assert_eq!(
        twilio.seen(),
        vec![TwilioSaw::WrongCredentials, TwilioSaw::AccountRead],
        "one check each way, at the credential's own pace"
    );

    tmux.keys("C-c").await;
    let code = read_when_written(&exit_file, &tmux).await;
    assert_eq!(code.trim(), "0", "exit code");
    let history = tmux.history().await;
    assert!(
        history.contains("sms/direct credential: FAIL credential_rejected (20003, HTTP 401) -> PASS ok (HTTP 200)"),
        "the change in the summary:\n{history}"
    );
    no_canary("the watch's whole history", &history);
}
