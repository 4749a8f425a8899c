//! The status page as an on-call engineer opens it: headless Chromium
//! loads `/` of a sidecar whose provider proxy answers CONNECT with 502.
//! The grid names the failing route with its reason and the proxy's status
//! line, and the healthy direct route as active; "Verify now", clicked with
//! the mouse, calls `POST /verify` and shows the report; the page refreshes
//! itself when the proxy recovers; under a token, the buttons work once the
//! token is pasted. The page requests nothing from any host but the
//! sidecar. A screenshot is saved in the test's temp dir, and with
//! `EGRESS_WRITE_SCREENSHOT=1` also as `docs/status-page.png`. With 1 s
//! cells, a proxy failing for 20 s shows in the last hour's strip as
//! failing cells naming the reason on hover and on focus, with a probe-time
//! point per cell, and `GET /history` says the same per cell (its
//! screenshot, with `EGRESS_WRITE_SCREENSHOT=1`, is
//! `docs/status-page-history.png`).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::Workspace;
use support::chromium::{Browser, CHROMIUM};
use support::config::Toml;
use support::proxy::{Mode, ScriptProxy};
use support::scenario;
use support::sidecar::{Running, eventually, request};

fn chromium() -> bool {
    support::tools::available(CHROMIUM, "EGRESS_REQUIRE_CHROMIUM", "chromium").is_some()
}

/// Waits until both proxy pairs failed and apns moved to direct.
async fn failed_over(sidecar: &Running) {
    eventually(
        Duration::from_secs(15),
        "apns failed over to direct",
        || async {
            let s = sidecar.status().await;
            let t = &s["targets"];
            (t[0]["active_route"] == "direct"
                && t[0]["routes"][0]["healthy"] == false
                && t[0]["routes"][1]["healthy"] == true
                && t[1]["routes"][0]["healthy"] == false)
                .then_some(())
        },
    )
    .await;
}

/// The scenario with one-second cells in the last hour's strip.
fn one_second_cells(toml: Toml) -> Toml {
    toml.raw("\n[status]\nhistory_cell = \"1s\"\n")
}

/// Every `src`, `href` and `action` in `html` is relative (or `data:`):
/// nothing names another host.
fn only_relative_references(html: &str) -> Result<(), String> {
    for attr in ["src=", "href=", "action=", "formaction=", "poster="] {
        for (i, _) in html.match_indices(attr) {
            let value = html[i + attr.len()..]
                .trim_start_matches(['"', '\''])
                .split(['"', '\'', ' ', '>'])
                .next()
                .unwrap_or("");
            if value.contains("//") || value.contains(':') && !value.starts_with("data:") {
                return Err(format!("{attr}{value}"));
            }
        }
    }
    for bad in ["url(", "@import", "<iframe", "<object", "<embed"] {
        if html.contains(bad) {
            return Err(bad.to_string());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_names_the_failing_proxy_route_and_verify_now_shows_the_report() {
    if !chromium() {
        return;
    }
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let config = one_second_cells(scenario::config(&proxy.url(), up.port()));
    let sidecar = Running::start(ws.config(config)).await;
    failed_over(&sidecar).await;
    let origin = format!("http://{}", sidecar.admin);

    let mut browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    let row = |t: &str, r: &str| format!("tbody[data-target=\"{t}\"] tr[data-route=\"{r}\"]");
    let provider = row("apns", "provider");
    let direct = row("apns", "direct");
    // The grid: state in words, the reason, the CONNECT status line.
    let attr = |sel: &str, a: &str| format!("document.querySelector('{sel}').dataset.{a}");
    let text = |sel: &str| format!("document.querySelector('{sel}').innerText");
    assert_eq!(browser.eval(&attr(&provider, "state")).await, "failing");
    assert_eq!(browser.eval(&attr(&provider, "active")).await, "false");
    let failing = browser.eval(&text(&provider)).await;
    let failing = failing.as_str().unwrap_or("");
    for expected in [
        "failing",
        "proxy_upstream_error",
        "HTTP/1.1 502 Bad Gateway",
        "1.1 script-proxy",
        "tunnel",
    ] {
        assert!(
            failing.contains(expected),
            "{expected:?} not in the row: {failing}"
        );
    }
    assert_eq!(browser.eval(&attr(&direct, "state")).await, "healthy");
    assert_eq!(browser.eval(&attr(&direct, "active")).await, "true");
    let healthy = browser.eval(&text(&direct)).await;
    let healthy = healthy.as_str().unwrap_or("");
    assert!(
        healthy.contains("active") && healthy.contains("days left"),
        "{healthy}"
    );
    let sms = browser.eval(&text(&row("sms", "provider"))).await;
    assert!(
        sms.as_str().unwrap_or("").contains("502 Bad Gateway"),
        "{sms}"
    );
    let heading = browser
        .eval("document.querySelector('tbody[data-target=\"apns\"] tr.target').innerText")
        .await;
    assert!(
        heading
            .as_str()
            .unwrap_or("")
            .contains("failed over from provider"),
        "{heading}"
    );
    // The incident the proxy opened, in the log's own columns.
    let incidents = browser.eval(&text("#incidents")).await;
    let incidents = incidents.as_str().unwrap_or("");
    assert!(
        incidents.contains("Incident window")
            && incidents.contains("open")
            && (incidents.contains("apns, sms") || incidents.contains("sms, apns"))
            && incidents.contains("proxy_upstream_error"),
        "{incidents}"
    );
    assert!(
        browser
            .eval(&text("#fds"))
            .await
            .as_str()
            .unwrap_or("")
            .contains("egress-sentinel")
    );

    // "Verify now", clicked: the report appears with every check.
    browser.click("#verify-now").await;
    browser
        .wait_for(
            "the verify report",
            "document.querySelector('#verify-report tbody')",
            Duration::from_secs(30),
        )
        .await;
    let report = browser.eval(&text("#verify-report")).await;
    let report = report.as_str().unwrap_or("").to_string();
    assert!(
        report.contains("3 checks, 1 passed, 2 failed (fail)"),
        "{report}"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#verify-report tr[data-target=\"apns\"][data-route=\"provider\"]').innerText")
            .await
            .as_str()
            .map(|s| s.contains("FAIL") && s.contains("proxy_upstream_error") && s.contains("502 Bad Gateway")),
        Some(true),
        "{report}"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#verify-report tr[data-target=\"apns\"][data-route=\"direct\"]').dataset.ok")
            .await,
        "true"
    );
    let shot = browser.screenshot(&ws.path("status-page.png")).await;
    if std::env::var("EGRESS_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs/");
        std::fs::copy(&shot, docs.join("status-page.png")).expect("copy the screenshot");
    }

    // On a phone: no sideways scrolling, every cell labelled.
    browser.viewport(390, 844, true).await;
    browser
        .wait_for(
            "the phone layout",
            "document.documentElement.scrollWidth <= 392",
            Duration::from_secs(5),
        )
        .await;
    browser.screenshot(&ws.path("status-page-phone.png")).await;
    browser.viewport(1280, 900, false).await;

    // The proxy recovers: the open page follows without a reload.
    proxy.set_mode(Mode::Tunnel);
    browser
        .wait_for(
            "the refreshed grid",
            &format!("document.querySelector('{provider}').dataset.state === 'healthy' && document.querySelector('{provider}').dataset.active === 'true'"),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(browser.eval("document.URL").await, format!("{origin}/"));

    // Nothing but the sidecar itself, in the markup or on the wire.
    let html = browser.dom().await;
    only_relative_references(&html).unwrap_or_else(|r| panic!("external reference {r}"));
    let urls = browser.requested_urls();
    assert!(
        urls.iter().any(|u| u == &format!("{origin}/verify")),
        "{urls:?}"
    );
    for u in &urls {
        assert!(
            u.starts_with(&format!("{origin}/")) || u.starts_with("data:"),
            "the page requested {u}"
        );
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_token_the_buttons_work_once_it_is_pasted_and_it_never_enters_a_url() {
    if !chromium() {
        return;
    }
    const TOKEN: &str = "page-token-0123456789abcdef";
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    ws.write("admin-token", TOKEN);
    let text = scenario::config(&proxy.url(), up.port()).admin(|a| a.token_file("admin-token"));
    let sidecar = Running::start(ws.config(&text)).await;
    let origin = format!("http://{}", sidecar.admin);
    let mut browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;

    browser.click("#verify-now").await;
    browser
        .wait_for(
            "the refusal",
            "document.querySelector('#verify-out .refused')",
            Duration::from_secs(15),
        )
        .await;
    let out = browser
        .eval("document.querySelector('#verify-out').innerText")
        .await;
    assert!(
        out.as_str().unwrap_or("").contains("Refused (403)"),
        "{out}"
    );

    browser.type_into("#token-in", TOKEN).await;
    browser.click("#token-save").await;
    assert_eq!(
        browser
            .eval("document.querySelector('#token-in').value")
            .await,
        "",
        "the field is cleared"
    );
    browser.click("#verify-now").await;
    browser
        .wait_for(
            "the verify report",
            "document.querySelector('#verify-report tbody')",
            Duration::from_secs(30),
        )
        .await;

    // An override from the page, for ten minutes.
    browser
        .eval("document.getElementById('ov-apns-force').value = 'direct'; document.getElementById('ov-apns-ttl').value = ''; true")
        .await;
    browser.type_into("#ov-apns-ttl", "10m").await;
    browser.click("button[data-override=\"apns\"]").await;
    browser
        .wait_for(
            "the override applied",
            "document.getElementById('ov-apns-result').innerText.startsWith('Now direct')",
            Duration::from_secs(15),
        )
        .await;
    let s = sidecar.status().await;
    assert_eq!(s["targets"][0]["force"], "direct");
    let left = s["targets"][0]["force_expires_in_seconds"]
        .as_f64()
        .unwrap_or(0.0);
    assert!((590.0..=600.0).contains(&left), "{left}");

    let urls = browser.requested_urls();
    assert!(urls.iter().all(|u| !u.contains(TOKEN)), "{urls:?}");
    assert!(
        !browser.dom().await.contains(TOKEN),
        "the token is in the page's markup"
    );
    sidecar.stop().await;
}

/// The states of a pair's strip on the page, by cell start (Unix seconds).
async fn strip_states(browser: &mut Browser, target: &str, route: &str) -> Vec<(i64, String)> {
    let js = format!(
        "JSON.stringify(Array.from(document.querySelectorAll('div.history[data-target=\"{target}\"][data-route=\"{route}\"] g.cell')).map(g => [Number(g.dataset.start), g.dataset.state]))"
    );
    let v = browser.eval(&js).await;
    serde_json::from_str(v.as_str().unwrap_or("[]")).expect("cells")
}

/// `GET /history`'s states of a pair, by cell start.
fn history_states(history: &Value, target: &str, route: &str) -> Vec<(i64, String)> {
    let pair = history["pairs"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| p["target"] == target && p["route"] == route)
        })
        .unwrap_or_else(|| panic!("{target}/{route} in /history"));
    pair["cells"]
        .as_array()
        .map(|cells| {
            cells
                .iter()
                .map(|c| {
                    let start = c["start"].as_i64().unwrap_or(0);
                    (start, c["state"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_failing_for_20s_shows_in_the_last_hour_strip_and_history_agrees() {
    if !chromium() {
        return;
    }
    let up = scenario::upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let config = one_second_cells(scenario::config(&proxy.url(), up.port()));
    let sidecar = Running::start(ws.config(config)).await;
    let origin = format!("http://{}", sidecar.admin);
    eventually(
        Duration::from_secs(15),
        "apns healthy on the proxy",
        || async {
            let s = sidecar.status().await;
            (s["targets"][0]["routes"][0]["healthy"] == true).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_mode(Mode::Status(502, "Bad Gateway"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    proxy.set_mode(Mode::Tunnel);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    let (code, body) = request(sidecar.admin, "GET", "/history").await;
    assert_eq!(code, 200, "{body}");
    let history: Value = serde_json::from_str(&body).expect("/history JSON");
    let strip = "div.history[data-target=\"apns\"][data-route=\"provider\"]";

    // The strip: 60 cells, the failing ones among them, about 20 of them.
    let page = strip_states(&mut browser, "apns", "provider").await;
    assert_eq!(page.len(), 60, "{page:?}");
    let failing = page.iter().filter(|(_, s)| s == "fail").count();
    assert!(
        (15..=22).contains(&failing),
        "{failing} failing cells: {page:?}"
    );
    assert!(page.iter().any(|(_, s)| s == "pass"), "{page:?}");
    // The reason on hover (the SVG <title>) and on focus (the label).
    let fail = format!("{strip} g.cell[data-state=\"fail\"]");
    let title = browser
        .eval(&format!("Array.from(document.querySelectorAll('{fail} > title')).every(t => t.textContent.includes('proxy_upstream_error') && t.textContent.includes('502 Bad Gateway'))"))
        .await;
    assert_eq!(title, true, "every failing cell's title names the reason");
    let focused = browser
        .eval(&format!("document.querySelector('{fail}').focus(); document.activeElement.getAttribute('aria-label')"))
        .await;
    let focused = focused.as_str().unwrap_or("").to_string();
    assert!(
        focused.contains("fail") && focused.contains("proxy_upstream_error"),
        "{focused}"
    );
    // A probe-time point per cell with data, on the p50 and the max line.
    let with_data = page.iter().filter(|(_, s)| s != "none").count();
    for series in ["p50", "max"] {
        let n = browser
            .eval(&format!("document.querySelector('{strip} polyline[data-series=\"{series}\"]').points.numberOfItems"))
            .await;
        assert_eq!(n.as_u64(), Some(with_data as u64), "{series}");
    }
    let circles = browser
        .eval(&format!(
            "document.querySelectorAll('{strip} circle.h-pt').length"
        ))
        .await;
    assert_eq!(circles.as_u64(), Some(with_data as u64));
    // The incident window, on the same axis; the sentence for a terminal.
    let band = browser
        .eval(&format!(
            "document.querySelectorAll('{strip} rect.h-incident').length"
        ))
        .await;
    assert!(band.as_u64().unwrap_or(0) >= 1, "no incident band");
    let summary = browser
        .eval(&format!(
            "document.querySelector('{strip} .summary').innerText"
        ))
        .await;
    let summary = summary.as_str().unwrap_or("");
    assert!(
        summary.starts_with("last hour: ") && summary.contains("fail (proxy_upstream_error "),
        "{summary}"
    );

    // `/history` agrees with the page, cell by cell (the page's newest cell
    // may still have been filling when `/history` was read).
    let json = history_states(&history, "apns", "provider");
    assert_eq!(json.len(), 60);
    assert_eq!(history["cell_seconds"], 1.0);
    let (newest, _) = page[page.len() - 1];
    for (start, state) in page.iter().filter(|(s, _)| *s < newest) {
        if let Some((_, j)) = json.iter().find(|(s, _)| s == start) {
            assert_eq!(j, state, "cell {start}: page {state}, /history {j}");
        }
    }
    let overlap = page
        .iter()
        .filter(|(s, _)| json.iter().any(|(j, _)| j == s))
        .count();
    assert!(overlap >= 55, "{overlap}");
    let incidents = history["incidents"].as_array().map_or(0, Vec::len);
    assert!(incidents >= 1, "{history}");

    // Nothing from another origin, in the markup or on the wire.
    let html = browser.dom().await;
    only_relative_references(&html).unwrap_or_else(|r| panic!("external reference {r}"));
    for u in &browser.requested_urls() {
        assert!(
            u.starts_with(&format!("{origin}/")) || u.starts_with("data:"),
            "the page requested {u}"
        );
    }
    let shot = browser
        .screenshot(&ws.path("status-page-history.png"))
        .await;
    if std::env::var("EGRESS_WRITE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::copy(&shot, docs.join("status-page-history.png")).expect("copy the screenshot");
    }
    sidecar.stop().await;
}
