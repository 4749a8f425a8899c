//! `egress-sentinel demo`: the outbound-proxy incident replayed on loopback.
//! Stand-ins for push (APNs), SMS and Azure AD and for the provider's proxy;
//! the sidecar in front of an app that calls each upstream every 200 ms;
//! the provider's change makes the proxy answer CONNECT with 502; the
//! sidecar detects it, names it, moves push and Azure AD direct (SMS may
//! not go direct and is reported down); the change is reverted and traffic
//! returns. Prints a live timeline and what it measured; checks its story.
//!
//! Watches the sidecar the way an operator would: through `/status`.

mod app;
pub mod stand_ins;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::Config;
use crate::sidecar::{Listeners, run_with};
use app::{Answer, App};

/// When the provider breaks its proxy, fixes it, and the demo ends.
const BREAK_AT: Duration = Duration::from_secs(3);
const FIX_AT: Duration = Duration::from_secs(10);
const END_AT: Duration = Duration::from_secs(14);
/// How often the app calls each upstream.
const APP_EVERY: Duration = Duration::from_millis(200);

/// The three upstreams: display name, target name, host.
const UPSTREAMS: [(&str, &str, &str); 3] = [
    ("push (APNs)", "push", "push.demo.test"),
    ("sms", "sms", "sms.demo.test"),
    ("azure-ad", "azure-ad", "login.demo.test"),
];

struct Clock {
    start: Instant,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Clock {
    fn say(&self, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(out, "{t:>5.1}s  {text}");
        let _ = out.flush();
    }

    fn plain(&self, text: &str) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Runs the demo, printing to `out`. `Ok` when the story held.
pub async fn run(out: Box<dyn Write + Send>) -> Result<(), String> {
    crate::dial::tls::install_default_provider();
    let hosts: Vec<&str> = UPSTREAMS.iter().map(|u| u.2).collect();
    let pki = stand_ins::pki(&hosts)?;
    let push = stand_ins::upstream(&pki, 403, "{\"reason\":\"MissingProviderToken\"}").await?;
    let sms =
        stand_ins::upstream(&pki, 401, "{\"code\":20003,\"message\":\"Authenticate\"}").await?;
    let login = stand_ins::upstream(
        &pki,
        200,
        "{\"issuer\":\"https://login.demo.test/demo/v2.0\"}",
    )
    .await?;
    let proxy = stand_ins::ProviderProxy::start().await?;
    let ports = [push.addr.port(), sms.addr.port(), login.addr.port()];

    let dir = std::env::temp_dir().join(format!("egress-sentinel-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::write(dir.join("demo-ca.pem"), &pki.ca_pem).map_err(|e| e.to_string())?;
    let text = demo_config(proxy.addr, ports);
    let config =
        Config::parse(&dir.join("demo.toml"), &text).map_err(|e| format!("demo config: {e}"))?;

    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())
    };
    let (m, a, p) = (bind().await?, bind().await?, bind().await?);
    let (admin, forward) = (
        a.local_addr().map_err(|e| e.to_string())?,
        p.local_addr().map_err(|e| e.to_string())?,
    );
    let metrics = m.local_addr().map_err(|e| e.to_string())?;
    let listeners = Listeners {
        metrics: Some(m),
        admin: Some(a),
        proxy: Some(p),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sidecar = tokio::spawn(run_with(
        config,
        listeners,
        async move {
            let _ = stop_rx.await;
        },
        crate::sidecar::Hooks::default(),
    ));

    let clock = Arc::new(Clock {
        start: Instant::now(),
        out: Mutex::new(out),
    });
    clock.plain("egress-sentinel demo: the outbound-proxy incident, replayed on 127.0.0.1");
    clock.plain(&format!(
        "  upstreams (stand-ins): push.demo.test:{} (APNs), sms.demo.test:{} (SMS), login.demo.test:{} (Azure AD)",
        ports[0], ports[1], ports[2]
    ));
    clock.plain(&format!(
        "  the hosting provider's forward proxy: {}",
        proxy.addr
    ));
    clock.plain(&format!(
        "  the sidecar: forward proxy {forward} (the app's HTTPS_PROXY), metrics http://{metrics}/metrics, admin http://{admin}/status"
    ));
    clock.plain("  policy: push and azure-ad may go direct; sms only through the provider's proxy (it allowlists the proxy's IP)");
    clock.plain(&format!(
        "  the app calls each upstream every {} ms\n",
        APP_EVERY.as_millis()
    ));

    let app = Arc::new(App::new(forward, &pki.ca_pem)?);
    let log: Arc<Mutex<Vec<(Duration, usize, Answer)>>> = Arc::default();
    let mut app_tasks = Vec::new();
    for (i, (_, _, host)) in UPSTREAMS.iter().enumerate() {
        let (app, log, clock, port) = (app.clone(), log.clone(), clock.clone(), ports[i]);
        app_tasks.push(tokio::spawn(async move {
            let mut last: Option<bool> = None;
            let mut tick = tokio::time::interval(APP_EVERY);
            loop {
                tick.tick().await;
                if clock.start.elapsed() >= END_AT {
                    return;
                }
                let answer = app.get(host, port).await;
                let ok = matches!(answer, Answer::Ok(_));
                if last != Some(ok) {
                    let name = UPSTREAMS[i].0;
                    match &answer {
                        Answer::Ok(code) => clock.say(&format!("app      {name}: requests succeed (upstream answers {code})")),
                        Answer::Refused(code, ps) => clock.say(&format!("app      {name}: requests FAIL: the sidecar answers {code}, Proxy-Status: {ps}")),
                        Answer::Failed(e) => clock.say(&format!("app      {name}: requests FAIL: {e}")),
                    }
                    last = Some(ok);
                }
                log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((clock.start.elapsed(), i, answer));
            }
        }));
    }

    let mut watch = Watch::default();
    let mut broke = None;
    let mut fixed = None;
    while clock.start.elapsed() < END_AT {
        let now = clock.start.elapsed();
        if broke.is_none() && now >= BREAK_AT {
            proxy.set_broken(true);
            broke = Some(now);
            clock.say("PROVIDER  a configuration change: the proxy now answers CONNECT with 502 Bad Gateway");
        }
        if fixed.is_none() && now >= FIX_AT {
            proxy.set_broken(false);
            fixed = Some(now);
            clock.say("PROVIDER  the change is reverted: the proxy tunnels again");
        }
        if let Ok(status) = fetch_status(admin).await {
            watch.update(&status, &clock);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in app_tasks {
        let _ = t.await;
    }
    let final_status = fetch_status(admin).await.unwrap_or(Value::Null);
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), sidecar).await;

    let (broke, fixed) = (broke.unwrap_or(BREAK_AT), fixed.unwrap_or(FIX_AT));
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    summarize(&clock, &log, &watch, broke, fixed, &final_status)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo_config(proxy: SocketAddr, ports: [u16; 3]) -> String {
    format!(
        r#"
[listen]
metrics = "off"
admin = "off"
proxy = "off"

[probe]
interval = "1s"
unhealthy_interval = "200ms"
timeout = "1s"
fall = 2
rise = 2

[run]
reload_poll = "off"

[shutdown]
drain = "0s"
deadline = "2s"

[admin]
verify_cooldown = "1s"

[resolve]
"push.demo.test" = "127.0.0.1"
"sms.demo.test" = "127.0.0.1"
"login.demo.test" = "127.0.0.1"

[tls]
roots = "none"
ca_file = "demo-ca.pem"

[[route]]
name = "provider"
proxy = "http://{proxy}"
connect_timeout = "500ms"

[[target]]
name = "push"
preset = "apns"
url = "https://push.demo.test:{}/3/device/0000000000000000000000000000000000000000000000000000000000000000"
expect_ca = "demo-ca.pem"
routes = ["provider", "direct"]
allow_addresses = ["127.0.0.1/32"]

[[target]]
name = "sms"
preset = "twilio"
url = "https://sms.demo.test:{}/2010-04-01/Accounts.json"
expect_ca = "demo-ca.pem"
routes = ["provider"]

[[target]]
name = "azure-ad"
preset = "azure-ad"
url = "https://login.demo.test:{}/common/v2.0/.well-known/openid-configuration"
expect_ca = "demo-ca.pem"
routes = ["provider", "direct"]
allow_addresses = ["127.0.0.1/32"]

[forward]
default = "deny"
"#,
        ports[0], ports[1], ports[2]
    )
}

/// What the watcher saw, with times.
#[derive(Default)]
struct Watch {
    healthy: BTreeMap<(String, String), bool>,
    active: BTreeMap<String, String>,
    /// Targets reported down (every allowed route failing).
    down: std::collections::BTreeSet<String>,
    incidents: BTreeMap<u64, bool>,
    /// (time, target, route, healthy)
    health_changes: Vec<(Duration, String, String, bool)>,
    /// (time, target, from, to)
    moves: Vec<(Duration, String, String, String)>,
}

impl Watch {
    fn update(&mut self, status: &Value, clock: &Clock) {
        let now = clock.start.elapsed();
        for t in status["targets"].as_array().into_iter().flatten() {
            let name = t["target"].as_str().unwrap_or("").to_string();
            for r in t["routes"].as_array().into_iter().flatten() {
                let route = r["route"].as_str().unwrap_or("").to_string();
                let Some(h) = r["healthy"].as_bool() else {
                    continue;
                };
                let key = (name.clone(), route.clone());
                let before = self.healthy.insert(key, h);
                if before.is_some_and(|b| b != h) {
                    let what = if h {
                        "healthy again".to_string()
                    } else {
                        format!(
                            "UNHEALTHY: {} ({})",
                            r["last"]["reason"].as_str().unwrap_or("?"),
                            r["last"]["detail"].as_str().unwrap_or("")
                        )
                    };
                    clock.say(&format!("sidecar  {name} over {route}: {what}"));
                    self.health_changes.push((now, name.clone(), route, h));
                }
            }
            let active = t["active_route"].as_str().unwrap_or("").to_string();
            let down = t["down"].as_bool().unwrap_or(false);
            if let Some(before) = self.active.insert(name.clone(), active.clone()) {
                if before != active {
                    clock.say(&format!(
                        "sidecar  {name}: traffic moves {before} -> {active}"
                    ));
                    self.moves.push((now, name.clone(), before, active.clone()));
                }
            }
            if down
                && self.healthy.get(&(name.clone(), active.clone())) == Some(&false)
                && self.down.insert(name.clone())
            {
                clock.say(&format!(
                    "sidecar  {name}: DOWN: no allowed route works (direct is not allowed for it)"
                ));
            }
            if !down {
                self.down.remove(&name);
            }
        }
        for w in status["incidents"].as_array().into_iter().flatten() {
            let id = w["id"].as_u64().unwrap_or(0);
            let open = w["end"].is_null();
            let before = self.incidents.insert(id, open);
            if before != Some(open) && (before.is_some() || open) {
                let verb = if open {
                    "INCIDENT opened"
                } else {
                    "INCIDENT closed"
                };
                clock.say(&format!(
                    "sidecar  {verb}: {}",
                    w["text"].as_str().unwrap_or("")
                ));
            }
        }
    }
}

fn summarize(
    clock: &Clock,
    log: &[(Duration, usize, Answer)],
    watch: &Watch,
    broke: Duration,
    fixed: Duration,
    status: &Value,
) -> Result<(), String> {
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    clock.plain(&format!(
        "\nSummary\n  app requests during the incident ({} to {}):",
        secs(broke),
        secs(fixed)
    ));
    let mut problems = Vec::new();
    for (i, (name, target, _)) in UPSTREAMS.iter().enumerate() {
        let during: Vec<&Answer> = log
            .iter()
            .filter(|(t, u, _)| *u == i && *t >= broke && *t < fixed)
            .map(|(_, _, a)| a)
            .collect();
        let ok = during.iter().filter(|a| matches!(a, Answer::Ok(_))).count();
        let pct = if during.is_empty() {
            0.0
        } else {
            100.0 * ok as f64 / during.len() as f64
        };
        let note = if *target == "sms" {
            "direct not allowed: failed with a clear 502 naming proxy_upstream_error"
        } else {
            "failed over to direct"
        };
        clock.plain(&format!(
            "    {name:<12} {ok:>3}/{:<3} ok ({pct:.0}%)  {note}",
            during.len()
        ));
        match *target {
            "sms" if ok == during.len() => {
                problems.push("sms never failed although its only route broke".to_string())
            }
            "sms" => {}
            _ if ok != during.len() || during.is_empty() => {
                problems.push(format!("{name} lost {} requests", during.len() - ok))
            }
            _ => {}
        }
    }
    let detection = watch
        .health_changes
        .iter()
        .find(|(t, _, _, h)| *t >= broke && !h)
        .map(|(t, ..)| *t - broke);
    match detection {
        Some(d) => clock.plain(&format!(
            "  detection: {} after the change (first route marked unhealthy)",
            secs(d)
        )),
        None => problems.push("the sidecar never marked the proxy route unhealthy".into()),
    }
    for target in ["push", "azure-ad"] {
        let over = watch
            .moves
            .iter()
            .find(|(t, n, _, to)| *t >= broke && n == target && to == "direct");
        let back = watch
            .moves
            .iter()
            .find(|(t, n, _, to)| *t >= fixed && n == target && to == "provider");
        match (over, back) {
            (Some(o), Some(b)) => clock.plain(&format!(
                "  {target}: failover {} after the change, fail-back {} after the fix",
                secs(o.0 - broke),
                secs(b.0 - fixed)
            )),
            _ => problems.push(format!("{target} did not fail over and back")),
        }
    }
    if let Some(w) = status["incidents"].as_array().and_then(|a| a.first()) {
        let lasted = w["end"]
            .as_i64()
            .zip(w["start"].as_i64())
            .map(|(e, s)| e - s);
        clock.plain(&format!(
            "  {} (about {} s)",
            w["text"].as_str().unwrap_or(""),
            lasted.unwrap_or(0)
        ));
    } else {
        problems.push("no incident window was recorded".into());
    }
    if problems.is_empty() {
        clock.plain("\nThe sidecar caught the provider's change, named it, kept push and Azure AD logins working, reported SMS, and failed back.");
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `GET /status` on the admin listener, as JSON.
async fn fetch_status(admin: SocketAddr) -> Result<Value, String> {
    let work = async {
        let mut s = TcpStream::connect(admin).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        (&mut s)
            .take(4 * 1024 * 1024)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .map_err(|_| "status timed out".to_string())?
}
