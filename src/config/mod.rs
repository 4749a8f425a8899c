//! Configuration: the TOML schema (`raw`), presets, validation, and the
//! compiled [`Config`] every other module reads.
//!
//! Owns turning a file into a checked, immutable `Config`, with errors that
//! name the file, line, column and key. It reads the files the config points
//! at (credentials, CAs, client certificates) at load time, so a bad path is
//! a config error, not a probe failure; without `[dns] nameservers` it also
//! reads the system's resolv.conf and hosts file (an unreadable one is a
//! resolve failure of each name, not a config error). It never dials
//! anything.
//!
//! # Layout
//! - `raw`: the TOML schema as written; `presets`, `defaults`, `duration`.
//! - `compile`: parsing, the `Compiler` and its shared helpers, and the
//!   order the tables are compiled (and mistakes reported) in.
//! - `settings`: `[listen]`, `[probe]`, `[admin]`, `[forward]`,
//!   `[compliance]`, `[run]`, `[shutdown]`, `[runtime]`, `[watch]`.
//! - `resolve`: `[resolve]` and `[dns]`.
//! - `roots`: `[tls]` roots and CA files.
//! - `routes`: `[[route]]` and the route lists that name them.
//! - `targets`: `[[target]]`, step by step; `target_tls`: TLS toward a
//!   target's upstream and certificate expiry thresholds; `credential`:
//!   `[target.credential]`.
//! - `error`: located errors (file, line, column, key).

mod compile;
mod credential;
pub(crate) mod defaults;
mod duration;
mod error;
pub(crate) mod presets;
mod raw;
mod resolve;
mod restart;
mod roots;
mod routes;
mod settings;
mod target_tls;
mod targets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

pub use credential::{AzureSecret, Credential, CredentialKind, TwilioAuth};
pub use duration::parse_duration;
pub use error::ConfigError;
pub use restart::RestartKey;
pub(crate) use routes::base64;
pub use target_tls::{CertLevel, CertThresholds, human_duration};

pub use crate::dial::resolve::{DnsSettings, Nameservers, ResolveSettings};
pub use crate::dial::route::{Proxy, ResolveOverrides, Route, RouteKind, authority};
use crate::dial::tls::TlsClient;
use crate::policy::Cidr;
use crate::secret::Secret;

/// The largest configuration file accepted.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Listener addresses (`None`: that listener is off).
    pub listen: Listen,
    /// Probe scheduling and hysteresis.
    pub probe: ProbeSettings,
    /// Admin endpoint settings.
    pub admin: AdminSettings,
    /// How our own resolver finds addresses: the `[resolve]` overrides,
    /// then DNS (`[dns]`, or the system's resolv.conf).
    pub resolve: Arc<ResolveSettings>,
    /// Every route by name, `direct` included.
    pub routes: Vec<Arc<Route>>,
    /// The targets, in file order.
    pub targets: Vec<Arc<Target>>,
    /// Policy of the app-facing forward proxy.
    pub forward: ForwardSettings,
    /// Where the compliance trail goes besides its file.
    pub compliance: ComplianceSettings,
    /// The status page's last-hour strip and `/history`.
    pub status: StatusSettings,
    /// Where incident windows persist across restarts.
    pub state_dir: Option<PathBuf>,
    /// The sidecar's lifecycle settings.
    pub run: RunSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// Every file the config names (credentials, CAs, client certificates,
    /// resolv.conf), with a hash of its content taken before it was read: a
    /// change to any of them, like one to the config file, builds a new
    /// generation.
    pub files: Vec<(PathBuf, Option<u64>)>,
    /// A hash of the config text this was compiled from.
    pub config_hash: Option<u64>,
    /// Command names of other processes whose descriptors are exported.
    pub watch_processes: Vec<String>,
    /// The async runtime (read when the process starts).
    pub runtime: RuntimeSettings,
}

/// `[runtime]`: the async runtime, built once when the process starts (a
/// reload does not change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Worker threads (`None`: the default, at most the CPUs available).
    pub worker_threads: Option<usize>,
}

impl RuntimeSettings {
    /// The worker threads to start: the configured number, else
    /// [`defaults::RUNTIME_WORKER_THREADS`] or fewer when fewer CPUs are
    /// available to the process.
    pub fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            defaults::RUNTIME_WORKER_THREADS.min(cpus).max(1)
        })
    }
}

/// How tunnels move bytes (`[forward] relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Through user-space buffers (every route).
    Copy,
    /// With `splice(2)` between plain sockets, through pipes (tunnels over
    /// an `https://` proxy route, and any tunnel that finds no pipe free,
    /// use the copy relay).
    Splice,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: Option<SocketAddr>,
    /// `/status`, `POST /verify`.
    pub admin: Option<SocketAddr>,
    /// The forward proxy the app uses.
    pub proxy: Option<SocketAddr>,
}

/// `[probe]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between probes of a healthy route.
    pub interval: Duration,
    /// Time between probes of a failing or recovering route.
    pub unhealthy_interval: Duration,
    /// Default whole-probe timeout.
    pub timeout: Duration,
    /// Consecutive failures that make a route unhealthy.
    pub fall: u32,
    /// Consecutive successes that make it healthy again.
    pub rise: u32,
    /// The most body bytes a probe reads.
    pub max_body: usize,
    /// Hold after the second flap of a route; doubles per further flap.
    pub hold_down: Duration,
    /// The longest hold, and the window in which downs count as flaps.
    pub hold_down_max: Duration,
    /// How many of the latest attempts the degraded judgement looks at.
    pub degraded_window: u32,
    /// Failures among them that make a route degraded.
    pub degraded_failures: u32,
}

/// `[run]`: the sidecar's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// How often the config file and the files it names are checked for a
    /// change (`None`: never; SIGHUP still reloads).
    pub reload_poll: Option<Duration>,
}

/// `[shutdown]`: what SIGTERM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// `/readyz` says 503 while every listener keeps serving, this long.
    pub drain: Duration,
    /// From SIGTERM to exit: what is still open then is closed.
    pub deadline: Duration,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// How soon after one `POST /verify` another is accepted.
    pub verify_cooldown: Duration,
    /// `[admin] token_file`'s token: when set, every state-changing request
    /// needs `Authorization: Bearer <token>`; when not, such requests are
    /// accepted from loopback peers only.
    pub token: Option<Secret<String>>,
    /// Host names (beyond `localhost` and the listener's own address) that
    /// state-changing requests may name in `Host`, e.g. a Service's name.
    pub hosts: Vec<String>,
}

/// Where a target's probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` (true) or `http`.
    pub tls: bool,
    /// Host name or address, lower case, without brackets.
    pub host: String,
    /// Port (defaulted from the scheme).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path_and_query: String,
}

impl Endpoint {
    /// The URL as a browser writes it: the port only when it is not the
    /// scheme's (what a signed `aud` claim must equal).
    pub fn canonical_url(&self) -> String {
        let (scheme, default) = if self.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = if self.port == default {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            authority(&self.host, self.port)
        };
        format!("{scheme}://{host}{}", self.path_and_query)
    }

    /// The URL, for display.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{scheme}://{}{}",
            authority(&self.host, self.port),
            self.path_and_query
        )
    }
}

/// When a probe speaks HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2Mode {
    /// Offer `h2` and `http/1.1`; use what ALPN picks.
    Auto,
    /// Offer only `h2`; fail when the upstream does not pick it.
    Required,
    /// Offer only `http/1.1`.
    Never,
}

/// What the body must contain.
#[derive(Debug, Clone)]
pub enum BodyMatch {
    /// A literal substring.
    Substring(String),
    /// A regular expression, searched anywhere in the body.
    Regex(regex::Regex),
}

impl BodyMatch {
    /// True when `body` satisfies the expectation.
    pub fn matches(&self, body: &[u8]) -> bool {
        let text = String::from_utf8_lossy(body);
        match self {
            Self::Substring(s) => text.contains(s.as_str()),
            Self::Regex(r) => r.is_match(&text),
        }
    }

    /// The expectation, for a report.
    pub fn describe(&self) -> String {
        match self {
            Self::Substring(s) => format!("body containing {s:?}"),
            Self::Regex(r) => format!("body matching /{}/", r.as_str()),
        }
    }
}

/// A set of accepted status codes, as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    /// True when `code` is accepted.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }

    /// The set, for a report (`200-399`, `401`).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A destination host pattern: `api.sms.example` or `*.sms.example`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(pub String);

impl HostPattern {
    /// True when `host` (any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            None => host == self.0,
        }
    }
}

/// Something the app depends on: probed on each of its routes.
///
/// Its `Debug` shows header names but never their values, and the body's
/// length but never its bytes: probes carry API keys and tokens there.
pub struct Target {
    /// The target's name (a metric label).
    pub name: String,
    /// The preset it started from, if any.
    pub preset: Option<&'static str>,
    /// Where the probe goes.
    pub endpoint: Endpoint,
    /// The probe's method.
    pub method: Method,
    /// The probe's extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The probe's body.
    pub body: Bytes,
    /// Accepted statuses.
    pub expect_status: StatusSet,
    /// Body expectation, if any.
    pub expect_body: Option<BodyMatch>,
    /// Allowed routes, in preference order.
    pub routes: Vec<Arc<Route>>,
    /// Whole-probe timeout.
    pub timeout: Duration,
    /// TLS settings toward this upstream (trust, client certificate, ALPN).
    pub tls: TlsClient,
    /// When HTTP/2 is used.
    pub http2: Http2Mode,
    /// App destinations that belong to this target, beyond the URL's host.
    pub hosts: Vec<HostPattern>,
    /// Ranges lifted from the address policy for this target.
    pub allow_addresses: Vec<Cidr>,
    /// A degraded route loses this target's traffic (default: when the
    /// target may go direct).
    pub failover_on_degraded: bool,
    /// Expiry (Unix seconds) of the configured client certificate, when it
    /// could be read (the same as `client_cert`'s leaf).
    pub client_cert_not_after: Option<i64>,
    /// The configured client certificate: its files and what reading them
    /// gave (a file that cannot be read is kept here, not refused).
    pub client_cert: Option<crate::dial::identity::ClientCert>,
    /// How close to expiry a certificate (client or peer) warns, and fails.
    pub cert_thresholds: CertThresholds,
    /// The app's own credential, proven on its own schedule.
    pub credential: Option<Arc<Credential>>,
    /// Identifies the target's settings (and the trust and resolve tables):
    /// a reload keeps the health of pairs whose fingerprints did not change.
    pub fingerprint: u64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, _)| format!("{n}: <redacted>"))
            .collect();
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("preset", &self.preset)
            .field("url", &self.endpoint.url())
            .field("method", &self.method)
            .field("headers", &headers)
            .field(
                "body",
                &format_args!("<{} bytes redacted>", self.body.len()),
            )
            .field("expect_status", &self.expect_status.describe())
            .field("routes", &routes)
            .field("timeout", &self.timeout)
            .field("http2", &self.http2)
            .field("hosts", &self.hosts)
            .field("allow_addresses", &self.allow_addresses)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// True when the app destination `host:port` belongs to this target.
    pub fn matches_destination(&self, host: &str, port: u16) -> bool {
        let host_l = host.trim_end_matches('.').to_ascii_lowercase();
        (host_l == self.endpoint.host && port == self.endpoint.port)
            || self.hosts.iter().any(|p| p.matches(&host_l))
    }

    /// True when the target may use `direct`.
    pub fn allows_direct(&self) -> bool {
        self.routes.iter().any(|r| r.is_direct())
    }
}

/// What happens to app traffic that matches no target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardDefault {
    /// Through `default_routes` (proxy routes only).
    Proxy,
    /// Refused.
    Deny,
}

/// `[compliance]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceSettings {
    /// Where each trail line goes besides `state_dir/direct.jsonl` (the
    /// record, always written when the trail is on).
    pub sink: TrailSink,
}

/// `[status]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSettings {
    /// One cell of the last-hour strip: the history keeps
    /// [`crate::health::history::CELLS`] of them per target × route.
    pub history_cell: Duration,
}

/// `[compliance] sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailSink {
    /// The file only.
    File,
    /// The file, and a copy of each line on stdout (marked
    /// `"log":"compliance"`) for the cluster's log collector; the copy is
    /// best effort, the file is not.
    Both,
}

/// `[forward]`.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Unmatched destinations: proxy or deny.
    pub default: ForwardDefault,
    /// Routes for unmatched destinations, in order.
    pub default_routes: Vec<Arc<Route>>,
    /// Ports the app may CONNECT to (a target's own URL port is always allowed for it).
    pub allow_ports: Vec<u16>,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// The app must send its whole request head within this time.
    pub header_timeout: Duration,
    /// The most app connections at once.
    pub max_connections: u32,
    /// After fail-back to a proxy route, direct tunnels are closed this
    /// long later (`None`: kept until they end).
    pub failback_grace: Option<Duration>,
    /// The compliance trail of direct connections is written to
    /// `state_dir` (on by default; nothing is written without a `state_dir`).
    pub trail: bool,
    /// Every app connection is also written to `state_dir/access.jsonl`.
    pub access_log: bool,
    /// A trail or access-log file is rotated before it passes this size.
    pub trail_max_bytes: u64,
    /// Rotated trail and access-log files kept.
    pub trail_keep: u32,
    /// How tunnels move bytes (read at start).
    pub relay: RelayMode,
    /// The most bytes the relay holds in large buffers and pipes (read at start).
    pub buffer_pool: u64,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = crate::files::read_bytes(path, MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::whole_file(path, e.to_string()))?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Locate the first byte that is not UTF-8 in the valid part.
                let valid = e.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
                let loc = error::Locator {
                    file: path,
                    text: &prefix,
                };
                return Err(loc.error(
                    Some(valid..valid),
                    "",
                    "not UTF-8 text: a configuration is a TOML text file (is this the right file?)",
                ));
            }
        };
        Self::parse(path, &text)
    }

    /// The checks `run` adds to `check-config`'s: something to serve on.
    pub fn check_runnable(&self) -> Result<(), ConfigError> {
        let l = &self.listen;
        if l.metrics.is_none() && l.admin.is_none() && l.proxy.is_none() {
            return Err(ConfigError::whole_file(
                &self.file,
                "[listen]: every listener is \"off\": `run` would serve nothing (no metrics, no admin, no forward proxy); turn one on, or use `verify` for one-off checks",
            ));
        }
        Ok(())
    }

    /// Checks `text` as if read from `path` (relative file paths in it are
    /// taken from `path`'s folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        compile::compile(path, text)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.name == name)
    }
}
