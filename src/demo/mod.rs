//! `egress-sentinel demo`: the outbound-proxy incident replayed on loopback.
//! Stand-ins for push (APNs), SMS and Azure AD and for the provider's proxy;
//! the sidecar in front of an app that calls each upstream every 200 ms;
//! the provider's change makes the proxy answer CONNECT with 502; the
//! sidecar detects it, names it, moves push and Azure AD direct (SMS may
//! not go direct and is reported down); the change is reverted and traffic
//! returns. Then Entra ID starts refusing the app's client secret as
//! expired, and the operator's `POST /verify` names it (`AADSTS7000222`)
//! while nothing fails over: a credential is not a route. Prints a live
//! timeline and what it measured; checks its story.
//!
//! Watches the sidecar the way an operator would: through `/status`.
//!
//! # Layout
//! - [`stand_ins`]: the demo CA, the upstreams and the provider's proxy.
//! - [`providers`]: credential providers' stand-ins (Entra ID, Twilio)
//!   that check real secrets and signatures.
//! - `app`: the app, calling each upstream through the sidecar.
//! - `operator`: `/status` watched, each change on the timeline.
//! - `story`: the summary, and whether the story held.

mod app;
mod operator;
pub mod providers;
pub mod stand_ins;
mod story;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::config::{Config, ConfigError};
use crate::sidecar::{Hooks, Listeners, run_with};
use app::{Answer, App, AppError};
use operator::{Watch, fetch_status, post_verify};
use stand_ins::{DemoPki, ProviderProxy, Running, StandInError};
use story::{Timeline, summarize};

/// When the provider breaks its proxy, fixes it, and the demo ends.
const BREAK_AT: Duration = Duration::from_secs(3);
const FIX_AT: Duration = Duration::from_secs(10);
/// When Entra ID starts refusing the app's client secret as expired, and
/// when the operator asks the sidecar to verify everything now.
const EXPIRE_AT: Duration = Duration::from_millis(12_500);
const VERIFY_AT: Duration = Duration::from_millis(13_000);
const END_AT: Duration = Duration::from_secs(15);
/// The app's Entra ID registration (the stand-in's tenant, client id and
/// client secret: a demo value, never a real one).
const DEMO_TENANT: &str = "demo";
const DEMO_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000dead";
const DEMO_SECRET: &str = "demo-client-secret-not-a-real-one";
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
        let mut out = lock(&self.out);
        let _ = writeln!(out, "{t:>5.1}s  {text}");
        let _ = out.flush();
    }

    fn plain(&self, text: &str) {
        let mut out = lock(&self.out);
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Why the demo could not run, or why its story did not hold.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A stand-in could not start.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// The app could not be set up.
    #[error(transparent)]
    App(#[from] AppError),
    /// The scratch folder for the sidecar's files could not be created.
    #[error("creating {}: {source}", dir.display())]
    ScratchDir {
        /// The folder.
        dir: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The demo CA file could not be written, or a sidecar listener bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The demo's own config did not load.
    #[error("demo config: {0}")]
    Config(#[source] ConfigError),
    /// The sidecar did not do what the story says.
    #[error("{}", problems.join("; "))]
    StoryFailed {
        /// Every part of the story that did not hold, in the summary's order.
        problems: Vec<String>,
    },
}

/// Runs the demo, printing to `out`. `Ok` when the story held.
pub async fn run(out: Box<dyn Write + Send>) -> Result<(), DemoError> {
    crate::dial::tls::install_default_provider();
    let stand_ins = StandIns::start().await?;
    let (config, _cleanup) = write_config(&stand_ins)?;
    let sidecar = Sidecar::start(config).await?;
    let clock = Arc::new(Clock {
        start: Instant::now(),
        out: Mutex::new(out),
    });
    introduce(&clock, &stand_ins, &sidecar);

    let app = Arc::new(App::new(sidecar.forward, &stand_ins.pki.ca_pem)?);
    let log = AppLog::default();
    let ports = stand_ins.ports();
    let app_tasks: Vec<_> = (0..UPSTREAMS.len())
        .map(|i| {
            let (app, clock, log) = (app.clone(), clock.clone(), log.clone());
            tokio::spawn(call_upstream(app, i, ports[i], clock, log))
        })
        .collect();
    let (watch, timeline) = replay(&clock, &stand_ins, sidecar.admin).await;
    for t in app_tasks {
        let _ = t.await;
    }
    let final_status = fetch_status(sidecar.admin).await.unwrap_or(Value::Null);
    sidecar.stop().await;

    let log = lock(&log).clone();
    summarize(&clock, &log, &watch, &timeline, &final_status)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The stand-ins, running: the demo CA, the three upstreams, Entra ID's
/// token endpoint and the provider's proxy.
struct StandIns {
    /// The demo CA and the upstreams' identity.
    pki: DemoPki,
    /// The upstreams, in [`UPSTREAMS`]' order.
    upstreams: [Running; 3],
    /// Entra ID's token endpoint, which knows the app's client secret.
    entra: providers::Entra,
    /// The provider's forward proxy.
    proxy: ProviderProxy,
}

impl StandIns {
    async fn start() -> Result<Self, StandInError> {
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
        let entra = providers::Entra::start(&pki, "login.demo.test", DEMO_TENANT).await?;
        entra.add_secret(DEMO_CLIENT_ID, DEMO_SECRET);
        let proxy = ProviderProxy::start().await?;
        Ok(Self {
            pki,
            upstreams: [push, sms, login],
            entra,
            proxy,
        })
    }

    /// The upstreams' ports, in [`UPSTREAMS`]' order.
    fn ports(&self) -> [u16; 3] {
        self.upstreams.each_ref().map(|u| u.addr.port())
    }
}

/// Writes the demo CA into a scratch folder (removed when the guard drops)
/// and loads the sidecar's config, which names it.
fn write_config(stand_ins: &StandIns) -> Result<(Config, RemoveOnDrop), DemoError> {
    let dir = std::env::temp_dir().join(format!("egress-sentinel-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::ScratchDir {
        dir: dir.clone(),
        source,
    })?;
    let cleanup = RemoveOnDrop(dir.clone());
    std::fs::write(dir.join("demo-ca.pem"), &stand_ins.pki.ca_pem)?;
    std::fs::write(dir.join("azure-client-secret"), DEMO_SECRET)?;
    let text = demo_config(
        stand_ins.proxy.addr,
        stand_ins.ports(),
        &stand_ins.entra.token_url(),
    );
    let config = Config::parse(&dir.join("demo.toml"), &text).map_err(DemoError::Config)?;
    Ok((config, cleanup))
}

/// The sidecar, running in this process on 127.0.0.1.
struct Sidecar {
    /// The admin listener (`/status`).
    admin: SocketAddr,
    /// The forward proxy: the app's `HTTPS_PROXY`.
    forward: SocketAddr,
    /// The metrics listener.
    metrics: SocketAddr,
    /// Stops it (so does dropping it).
    stop: tokio::sync::oneshot::Sender<()>,
    /// The sidecar itself.
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    async fn start(config: Config) -> Result<Self, DemoError> {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (m, a, p) = (bind().await?, bind().await?, bind().await?);
        let (admin, forward) = (a.local_addr()?, p.local_addr()?);
        let metrics = m.local_addr()?;
        let listeners = Listeners {
            metrics: Some(m),
            admin: Some(a),
            proxy: Some(p),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            // How it ends shows in /status and the summary, not here.
            let _ = run_with(config, listeners, shutdown, Hooks::default()).await;
        });
        Ok(Self {
            admin,
            forward,
            metrics,
            stop,
            task,
        })
    }

    /// Stops it and waits for it, at most 10 s.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Says what runs where before the story starts.
fn introduce(clock: &Clock, stand_ins: &StandIns, sidecar: &Sidecar) {
    let ports = stand_ins.ports();
    let Sidecar {
        admin,
        forward,
        metrics,
        ..
    } = sidecar;
    clock.plain("egress-sentinel demo: the outbound-proxy incident, replayed on 127.0.0.1");
    clock.plain(&format!(
        "  upstreams (stand-ins): push.demo.test:{} (APNs), sms.demo.test:{} (SMS), login.demo.test:{} (Azure AD)",
        ports[0], ports[1], ports[2]
    ));
    clock.plain(&format!(
        "  the hosting provider's forward proxy: {}",
        stand_ins.proxy.addr
    ));
    clock.plain(&format!(
        "  the sidecar: forward proxy {forward} (the app's HTTPS_PROXY), metrics http://{metrics}/metrics, admin http://{admin}/status"
    ));
    clock.plain("  policy: push and azure-ad may go direct; sms only through the provider's proxy (it allowlists the proxy's IP)");
    clock.plain(&format!(
        "  the app calls each upstream every {} ms\n",
        APP_EVERY.as_millis()
    ));
}

/// What the app got: when, from which upstream (its index in
/// [`UPSTREAMS`]), and the answer.
type AppLog = Arc<Mutex<Vec<(Duration, usize, Answer)>>>;

/// The app calling upstream `i` every [`APP_EVERY`] until [`END_AT`],
/// saying so whenever its requests start or stop succeeding.
async fn call_upstream(app: Arc<App>, i: usize, port: u16, clock: Arc<Clock>, log: AppLog) {
    let (name, _, host) = UPSTREAMS[i];
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
            clock.say(&app_saw(name, &answer));
            last = Some(ok);
        }
        lock(&log).push((clock.start.elapsed(), i, answer));
    }
}

/// The timeline's line when the app's requests to `name` change.
fn app_saw(name: &str, answer: &Answer) -> String {
    match answer {
        Answer::Ok(code) => format!("app      {name}: requests succeed (upstream answers {code})"),
        Answer::Refused(code, ps) => format!(
            "app      {name}: requests FAIL: the sidecar answers {code}, Proxy-Status: {ps}"
        ),
        Answer::Failed(e) => format!("app      {name}: requests FAIL: {e}"),
    }
}

/// Plays the provider until [`END_AT`]: breaks its proxy at [`BREAK_AT`]
/// and fixes it at [`FIX_AT`]; Entra ID refuses the app's secret as
/// expired from [`EXPIRE_AT`], and the operator runs `POST /verify` at
/// [`VERIFY_AT`]; `/status` is watched meanwhile.
async fn replay(clock: &Clock, stand_ins: &StandIns, admin: SocketAddr) -> (Watch, Timeline) {
    let mut watch = Watch::default();
    let (mut broke, mut fixed, mut verified) = (None, None, None);
    let mut expired = false;
    while clock.start.elapsed() < END_AT {
        let now = clock.start.elapsed();
        if broke.is_none() && now >= BREAK_AT {
            stand_ins.proxy.set_broken(true);
            broke = Some(now);
            clock.say("PROVIDER  a configuration change: the proxy now answers CONNECT with 502 Bad Gateway");
        }
        if fixed.is_none() && now >= FIX_AT {
            stand_ins.proxy.set_broken(false);
            fixed = Some(now);
            clock.say("PROVIDER  the change is reverted: the proxy tunnels again");
        }
        if !expired && now >= EXPIRE_AT {
            stand_ins
                .entra
                .set_mode(providers::EntraMode::SecretsExpired);
            expired = true;
            clock.say("ENTRA ID  the app's client secret reaches its end date: token requests are refused");
        }
        if verified.is_none() && now >= VERIFY_AT {
            clock.say("operator POST /verify: every probe and every credential check, now");
            let report = post_verify(admin).await.unwrap_or(Value::Null);
            clock.say(&story::verify_words(&report));
            verified = Some(report);
        }
        if let Some(status) = fetch_status(admin).await {
            watch.update(&status, clock);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timeline = Timeline {
        broke: broke.unwrap_or(BREAK_AT),
        fixed: fixed.unwrap_or(FIX_AT),
        expired: EXPIRE_AT,
        verified: verified.unwrap_or(Value::Null),
    };
    (watch, timeline)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn demo_config(proxy: SocketAddr, ports: [u16; 3], token_url: &str) -> String {
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

[target.credential]
kind = "azure-ad"
tenant = "{DEMO_TENANT}"
client_id = "{DEMO_CLIENT_ID}"
client_secret_file = "azure-client-secret"
token_url = "{token_url}"

[forward]
default = "deny"
"#,
        ports[0], ports[1], ports[2]
    )
}
