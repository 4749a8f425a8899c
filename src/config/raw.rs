//! The configuration file as written: the serde schema, with spans kept on
//! the values that validation may need to point at. Unknown keys are
//! rejected everywhere. Nothing here interprets a value; `config::compile`
//! does that.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Listener addresses.
    #[serde(default)]
    pub listen: RawListen,
    /// Probe scheduling and hysteresis.
    #[serde(default)]
    pub probe: RawProbe,
    /// Nameservers and how patiently they are asked.
    #[serde(default)]
    pub dns: RawDns,
    /// Host name overrides, like curl's `--resolve`.
    #[serde(default)]
    pub resolve: BTreeMap<String, Spanned<AddressList>>,
    /// Global trust settings.
    #[serde(default)]
    pub tls: RawTls,
    /// Named proxy routes.
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// What to probe and where the app's traffic goes.
    #[serde(default, rename = "target")]
    pub targets: Vec<RawTarget>,
    /// The app-facing forward proxy's policy.
    #[serde(default)]
    pub forward: RawForward,
    /// Admin listener settings.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Where the compliance trail goes besides its file.
    #[serde(default)]
    pub compliance: RawCompliance,
    /// The status page and `/history`.
    #[serde(default)]
    pub status: RawStatus,
    /// Where incident windows are kept across restarts.
    pub state_dir: Option<Spanned<String>>,
    /// Lifecycle of `run`.
    #[serde(default)]
    pub run: RawRun,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Other processes to watch.
    #[serde(default)]
    pub watch: RawWatch,
    /// The async runtime.
    #[serde(default)]
    pub runtime: RawRuntime,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub worker_threads: Option<Spanned<i64>>,
}

/// `[compliance]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCompliance {
    /// `"file"` (the default) or `"both"`: the file and a copy on stdout.
    pub sink: Option<Spanned<String>>,
}

/// `[status]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatus {
    /// One cell of the last-hour strip (`"1m"`; down to `"1s"` for tests).
    pub history_cell: Option<Spanned<String>>,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
    pub attempts: Option<Spanned<u32>>,
}

/// `[watch]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatch {
    pub processes: Option<Vec<Spanned<String>>>,
}

/// `[listen]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListen {
    pub metrics: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub proxy: Option<Spanned<String>>,
}

/// `[probe]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub interval: Option<Spanned<String>>,
    pub unhealthy_interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub fall: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
    pub max_body: Option<Spanned<u64>>,
    pub hold_down: Option<Spanned<String>>,
    pub hold_down_max: Option<Spanned<String>>,
    pub degraded_window: Option<Spanned<u32>>,
    pub degraded_failures: Option<Spanned<u32>>,
}

/// `[run]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRun {
    pub shutdown_timeout: Option<Spanned<String>>,
    pub reload_poll: Option<Spanned<String>>,
}

/// `[shutdown]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub drain: Option<Spanned<String>>,
    pub deadline: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub verify_cooldown: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub hosts: Option<Vec<Spanned<String>>>,
}

/// One address or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum AddressList {
    One(String),
    Many(Vec<String>),
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca_file: Option<Spanned<String>>,
    pub roots: Option<Spanned<String>>,
    /// Certificate expiry inside this window is a warning (default 30 days).
    pub warn_before: Option<Spanned<String>>,
    /// Certificate expiry inside this window fails `verify` (default 7 days).
    pub fail_before: Option<Spanned<String>>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Spanned<String>,
    pub proxy: Spanned<String>,
    pub credentials_file: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
}

/// `[[target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    /// Optional: an unnamed target is named after its preset, else its URL's host.
    pub name: Option<Spanned<String>>,
    pub preset: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    pub body: Option<String>,
    pub expect_status: Option<Spanned<Vec<StatusSpec>>>,
    pub expect_body: Option<Spanned<String>>,
    pub expect_body_regex: Option<Spanned<String>>,
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub client_cert_password_file: Option<Spanned<String>>,
    /// The CA (PEM) this target's chains must end in, instead of the public roots.
    pub expect_ca: Option<Spanned<String>>,
    /// Overrides `[tls] warn_before` for this target.
    pub warn_before: Option<Spanned<String>>,
    /// Overrides `[tls] fail_before` for this target.
    pub fail_before: Option<Spanned<String>>,
    pub http2: Option<Spanned<String>>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_addresses: Option<Vec<Spanned<String>>>,
    pub failover_on_degraded: Option<bool>,
    /// The app's own credential, checked on its own schedule.
    pub credential: Option<super::credential::RawCredential>,
}

/// An expected status: a code (`200`) or a range (`"200-399"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum StatusSpec {
    Code(i64),
    Range(String),
}

/// `[forward]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForward {
    pub default: Option<Spanned<String>>,
    pub default_routes: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_ports: Option<Spanned<Vec<i64>>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub header_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u32>>,
    pub failback_grace: Option<Spanned<String>>,
    /// The compliance trail in `state_dir` (default true).
    pub trail: Option<bool>,
    /// Every app connection to `state_dir/access.jsonl` too (default false).
    pub access_log: Option<bool>,
    /// Rotation size of the trail files, bytes.
    pub trail_max_bytes: Option<Spanned<u64>>,
    /// Rotated trail files kept.
    pub trail_keep: Option<Spanned<u32>>,
    /// How tunnels move bytes: "copy" or "splice".
    pub relay: Option<Spanned<String>>,
    /// The most bytes the relay holds in large buffers (and pipes).
    pub buffer_pool: Option<Spanned<i64>>,
}
