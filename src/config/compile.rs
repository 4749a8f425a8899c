//! Turns the raw schema into a checked [`Config`]: defaults,
//! cross-references (a target's routes exist), file loading (credentials,
//! CAs) and every value check, each failure located. Targets are compiled
//! in `targets.rs`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Uri};
use rustls::RootCertStore;
use toml::Spanned;

use super::error::Locator;
use super::raw::{AddressList, RawConfig, RawDns, RawForward, RawRoute};
use super::{
    AdminSettings, Config, ConfigError, DnsSettings, ForwardDefault, ForwardSettings, Listen,
    Nameservers, ProbeSettings, Proxy, RelayMode, ResolveOverrides, ResolveSettings, Route,
    RouteKind, RunSettings, RuntimeSettings, ShutdownSettings, Target, defaults, parse_duration,
};
use crate::destination::Host;
use crate::dial::tls::{self, RootsMode, TlsClient};
use crate::secret::Secret;

/// The most bytes read from a credentials or certificate file.
const MAX_SECRET_FILE: u64 = 256 * 1024;

/// Label values (route and target names) are kept short and plain.
pub(super) const MAX_NAME_LEN: usize = 64;

pub(super) type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn compile(path: &Path, text: &str) -> Result<Config> {
    let loc = Locator { file: path, text };
    let raw: RawConfig = {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> shows up in the path as a private field name.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            let key = if key == "." { String::new() } else { key };
            loc.error(inner.span(), key, inner.message().trim().to_string())
        })?
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tables: toml::Table = text.parse().unwrap_or_default();
    let c = Compiler {
        loc,
        base_dir,
        native_roots: None,
        tables,
        files: Default::default(),
    };
    c.config(raw)
}

pub(super) struct Compiler<'a> {
    pub(super) loc: Locator<'a>,
    base_dir: PathBuf,
    native_roots: Option<Arc<RootCertStore>>,
    /// The file as plain TOML values, for fingerprints.
    tables: toml::Table,
    /// Every file the config names, as read.
    files: std::cell::RefCell<std::collections::BTreeMap<PathBuf, Option<u64>>>,
}

fn hash_of(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Compiler<'_> {
    pub(super) fn err(&self, span: Range<usize>, key: &str, msg: impl Into<String>) -> ConfigError {
        self.loc.error(Some(span), key, msg)
    }

    fn config(mut self, raw: RawConfig) -> Result<Config> {
        let listen = self.listen(&raw)?;
        let probe = self.probe(&raw)?;
        let admin = self.admin(&raw)?;
        let resolve = Arc::new(ResolveSettings {
            overrides: self.resolve(&raw)?,
            dns: self.dns(&raw.dns)?,
        });
        let base_roots = self.base_roots(&raw)?;
        let mut routes = vec![Arc::new(Route {
            name: Route::DIRECT.to_string(),
            kind: RouteKind::Direct,
            connect_timeout: probe.timeout,
            fingerprint: 0,
        })];
        for (i, r) in raw.routes.iter().enumerate() {
            let route = self.route(i, r, &base_roots, &routes, probe.timeout)?;
            routes.push(Arc::new(route));
        }
        let mut targets: Vec<Arc<Target>> = Vec::new();
        for (i, t) in raw.targets.iter().enumerate() {
            let target = self.target(i, t, &raw.tls, &base_roots, &routes, &probe)?;
            if targets.iter().any(|o| o.name == target.name) {
                let msg = if t.name.is_some() {
                    format!(
                        "a target named \"{}\" is already defined; names must be unique",
                        target.name
                    )
                } else {
                    format!(
                        "this target has no name and would be called \"{}\" (after its preset or URL host), like an earlier one: give it a `name`",
                        target.name
                    )
                };
                return Err(self.err(
                    super::targets::span_of(t),
                    &format!("target[{i}].name"),
                    msg,
                ));
            }
            targets.push(Arc::new(target));
        }
        let forward = self.forward(&raw.forward, &routes)?;
        let state_dir = raw.state_dir.as_ref().map(|s| self.path(s.get_ref()));
        if let Some(old) = &raw.run.shutdown_timeout {
            return Err(self.err(
                old.span(),
                "run.shutdown_timeout",
                "replaced by [shutdown] drain (how long /readyz says 503 while listeners keep serving) and [shutdown] deadline (from SIGTERM to exit)",
            ));
        }
        let run = RunSettings {
            reload_poll: self.duration_or_off(
                raw.run.reload_poll.as_ref(),
                "run.reload_poll",
                defaults::RUN_RELOAD_POLL,
            )?,
        };
        let shutdown = self.shutdown(&raw)?;
        // Last: every located mistake is reported before this one.
        if targets.is_empty() {
            return Err(self.loc.error(
                None,
                "target",
                "no target: add at least one [[target]] (e.g. `name = \"apns\"`, `preset = \"apns\"`) — there is nothing to probe or route",
            ));
        }
        Ok(Config {
            file: self.loc.file.to_path_buf(),
            listen,
            probe,
            admin,
            resolve,
            routes,
            targets,
            forward,
            state_dir,
            run,
            shutdown,
            watch_processes: self.watch_processes(&raw)?,
            runtime: self.runtime(&raw)?,
            files: self.files.take().into_iter().collect(),
            config_hash: crate::files::content_hash_of(self.loc.text.as_bytes()),
        })
    }

    fn admin(&self, raw: &RawConfig) -> Result<AdminSettings> {
        let a = &raw.admin;
        let token = match &a.token_file {
            Some(f) => Some(self.admin_token(f)?),
            None => None,
        };
        let mut hosts = Vec::new();
        for h in a.hosts.iter().flatten() {
            let name = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
            let plain = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !plain {
                return Err(self.err(
                    h.span(),
                    "admin.hosts",
                    format!(
                        "`{}` is not a host name: expected a name such as \"egress-sentinel.sso.svc\" (no port, no scheme)",
                        h.get_ref()
                    ),
                ));
            }
            hosts.push(name);
        }
        Ok(AdminSettings {
            verify_cooldown: self
                .duration(a.verify_cooldown.as_ref(), "admin.verify_cooldown")?
                .unwrap_or(defaults::ADMIN_VERIFY_COOLDOWN),
            token,
            hosts,
        })
    }

    /// The admin token: one line of at least 16 visible characters. Read
    /// through [`Self::file`], so replacing the file rotates the token.
    fn admin_token(&self, f: &Spanned<String>) -> Result<Secret<String>> {
        let path = self.file(f.get_ref());
        let text = crate::files::read_text(&path, MAX_SECRET_FILE)
            .map_err(|m| self.err(f.span(), "admin.token_file", m))?;
        let token = text.trim_end_matches(['\r', '\n']);
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(
                f.span(),
                "admin.token_file",
                format!(
                    "{} must hold one line of at least 16 visible characters, no spaces, e.g. from `openssl rand -hex 32` (its content is not shown)",
                    path.display()
                ),
            ));
        }
        Ok(Secret::new(token.to_string()))
    }

    fn runtime(&self, raw: &RawConfig) -> Result<RuntimeSettings> {
        let worker_threads = match &raw.runtime.worker_threads {
            None => None,
            Some(n) => Some(
                usize::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| (1..=defaults::RUNTIME_WORKER_THREADS_MAX).contains(n))
                    .ok_or_else(|| {
                        self.err(
                            n.span(),
                            "runtime.worker_threads",
                            format!(
                                "must be between 1 and {}",
                                defaults::RUNTIME_WORKER_THREADS_MAX
                            ),
                        )
                    })?,
            ),
        };
        Ok(RuntimeSettings { worker_threads })
    }

    fn watch_processes(&self, raw: &RawConfig) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for p in raw.watch.processes.iter().flatten() {
            let n = p.get_ref();
            if n.is_empty() || n.len() > 15 || n.contains('/') || n == "egress-sentinel" {
                return Err(self.err(
                    p.span(),
                    "watch.processes",
                    format!("`{n}` is not a process command name: 1 to 15 bytes as in /proc/<pid>/comm, e.g. \"nginx\" (egress-sentinel itself is always watched)"),
                ));
            }
            names.push(n.clone());
        }
        Ok(names)
    }

    /// A fingerprint of the `index`th entry of the array `table` plus the
    /// tables every entry depends on.
    pub(super) fn fingerprint(&self, table: &str, index: usize, extra: &[u64]) -> u64 {
        let entry = self
            .tables
            .get(table)
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(index))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let shared = |k: &str| {
            self.tables
                .get(k)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let extra = format!("{extra:?}");
        hash_of(&[
            &entry,
            &shared("tls"),
            &shared("resolve"),
            &shared("dns"),
            &extra,
        ])
    }

    /// A file the config names, resolved against the config's folder and
    /// remembered: a change to it builds a new generation.
    pub(super) fn file(&self, p: &str) -> PathBuf {
        let path = self.path(p);
        // Hashed before it is read: a change after this point, even one
        // before the generation is in force, is seen by the next poll.
        self.files
            .borrow_mut()
            .entry(path.clone())
            .or_insert_with(|| crate::files::content_hash(&path));
        path
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A duration, or `"off"` (`None`), or `default` when absent.
    pub(super) fn duration_or_off(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Option<Duration>> {
        match v {
            Some(v) if v.get_ref() == "off" => Ok(None),
            other => Ok(Some(self.duration(other, key)?.unwrap_or(default))),
        }
    }

    fn shutdown(&self, raw: &RawConfig) -> Result<ShutdownSettings> {
        let s = &raw.shutdown;
        // A drain of zero is allowed: nothing in front of the pod to wait for.
        let drain = match &s.drain {
            Some(v) => {
                parse_duration(v.get_ref()).map_err(|m| self.err(v.span(), "shutdown.drain", m))?
            }
            None => defaults::SHUTDOWN_DRAIN,
        };
        let deadline = self
            .duration(s.deadline.as_ref(), "shutdown.deadline")?
            .unwrap_or(defaults::SHUTDOWN_DEADLINE);
        if deadline < drain {
            let span = s.deadline.as_ref().or(s.drain.as_ref()).map(Spanned::span);
            return Err(self.loc.error(
                span,
                "shutdown.deadline",
                format!(
                    "the deadline ({}) is shorter than the drain ({}): the deadline counts from SIGTERM and must cover the drain",
                    crate::dial::fmt_duration(deadline),
                    crate::dial::fmt_duration(drain)
                ),
            ));
        }
        Ok(ShutdownSettings { drain, deadline })
    }

    /// A duration greater than zero and at most a day: intervals, timeouts,
    /// holds and grace periods.
    pub(super) fn duration(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
    ) -> Result<Option<Duration>> {
        self.duration_up_to(v, key, defaults::MAX_SETTING_DURATION)
    }

    /// A duration greater than zero and at most `max`.
    pub(super) fn duration_up_to(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        max: Duration,
    ) -> Result<Option<Duration>> {
        let Some(v) = v else { return Ok(None) };
        let d = parse_duration(v.get_ref()).map_err(|m| self.err(v.span(), key, m))?;
        if d.is_zero() {
            return Err(self.err(v.span(), key, "must be greater than zero"));
        }
        if d > max {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "`{}` is out of range: at most {}",
                    v.get_ref(),
                    super::duration::describe(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    fn listen(&self, raw: &RawConfig) -> Result<Listen> {
        let one = |v: &Option<Spanned<String>>,
                   key: &str,
                   default: &str|
         -> Result<Option<SocketAddr>> {
            let (text, span) = match v {
                Some(s) => (s.get_ref().as_str(), Some(s.span())),
                None => (default, None),
            };
            if text == "off" {
                return Ok(None);
            }
            // ":9464" means every interface, as in Go and Prometheus.
            let full = match text.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => text.to_string(),
            };
            full.parse::<SocketAddr>().map(Some).map_err(|_| {
                self.loc.error(
                    span,
                    key,
                    format!("`{text}` is not a listen address: expected \"IP:port\" (e.g. \"127.0.0.1:3128\"), \":port\" (every interface) or \"off\""),
                )
            })
        };
        Ok(Listen {
            metrics: one(
                &raw.listen.metrics,
                "listen.metrics",
                defaults::LISTEN_METRICS,
            )?,
            admin: one(&raw.listen.admin, "listen.admin", defaults::LISTEN_ADMIN)?,
            proxy: one(&raw.listen.proxy, "listen.proxy", defaults::LISTEN_PROXY)?,
        })
    }

    fn probe(&self, raw: &RawConfig) -> Result<ProbeSettings> {
        let p = &raw.probe;
        let count = |v: &Option<Spanned<u32>>, key: &str, default: u32| -> Result<u32> {
            match v {
                Some(v) if (1..=100).contains(v.get_ref()) => Ok(*v.get_ref()),
                Some(v) => Err(self.err(v.span(), key, "must be between 1 and 100")),
                None => Ok(default),
            }
        };
        let max_body = match &p.max_body {
            Some(v) if (1..=16 * 1024 * 1024).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                return Err(self.err(
                    v.span(),
                    "probe.max_body",
                    "must be between 1 and 16777216 bytes",
                ));
            }
            None => defaults::PROBE_MAX_BODY,
        };
        let degraded_window = count(
            &p.degraded_window,
            "probe.degraded_window",
            defaults::PROBE_DEGRADED_WINDOW,
        )?;
        let degraded_failures = count(
            &p.degraded_failures,
            "probe.degraded_failures",
            defaults::PROBE_DEGRADED_FAILURES,
        )?;
        if degraded_failures > degraded_window {
            let span = p
                .degraded_failures
                .as_ref()
                .or(p.degraded_window.as_ref())
                .map(Spanned::span);
            return Err(self.loc.error(
                span,
                "probe.degraded_failures",
                format!("{degraded_failures} failures can never happen in a window of {degraded_window} attempts: make degraded_failures at most degraded_window"),
            ));
        }
        Ok(ProbeSettings {
            interval: self
                .duration(p.interval.as_ref(), "probe.interval")?
                .unwrap_or(defaults::PROBE_INTERVAL),
            unhealthy_interval: self
                .duration(p.unhealthy_interval.as_ref(), "probe.unhealthy_interval")?
                .unwrap_or(defaults::PROBE_UNHEALTHY_INTERVAL),
            timeout: self
                .duration(p.timeout.as_ref(), "probe.timeout")?
                .unwrap_or(defaults::PROBE_TIMEOUT),
            fall: count(&p.fall, "probe.fall", defaults::PROBE_FALL)?,
            rise: count(&p.rise, "probe.rise", defaults::PROBE_RISE)?,
            max_body,
            hold_down: self
                .duration(p.hold_down.as_ref(), "probe.hold_down")?
                .unwrap_or(defaults::PROBE_HOLD_DOWN),
            hold_down_max: self
                .duration(p.hold_down_max.as_ref(), "probe.hold_down_max")?
                .unwrap_or(defaults::PROBE_HOLD_DOWN_MAX),
            degraded_window,
            degraded_failures,
        })
    }

    fn resolve(&self, raw: &RawConfig) -> Result<ResolveOverrides> {
        let mut map = HashMap::new();
        for (name, addrs) in &raw.resolve {
            let key = format!("resolve.\"{name}\"");
            // Keys and values go through the forward proxy's parser, so a
            // key matches the name the app sends in any case, with or
            // without a trailing dot.
            let name = match crate::destination::parse_host(name) {
                Ok(Host::Name(n)) => n,
                Ok(Host::Localhost(_)) => {
                    return Err(self.err(
                        addrs.span(),
                        &key,
                        "localhost always means loopback and cannot be mapped".to_string(),
                    ));
                }
                Ok(Host::Ip { .. }) => {
                    return Err(self.err(
                        addrs.span(),
                        &key,
                        "an IP address needs no [resolve] entry: map a host name".to_string(),
                    ));
                }
                Err(e) => return Err(self.err(addrs.span(), &key, e.to_string())),
            };
            let texts: Vec<&str> = match addrs.get_ref() {
                AddressList::One(s) => vec![s.as_str()],
                AddressList::Many(v) => v.iter().map(String::as_str).collect(),
            };
            let mut ips = Vec::new();
            for t in texts {
                let ip: IpAddr = match crate::destination::parse_host(t) {
                    Ok(Host::Ip { addr, zone: None }) => addr,
                    _ => return Err(self.err(
                        addrs.span(),
                        &key,
                        format!("`{t}` is not an IP address: expected e.g. \"127.0.0.1\" or a list of them ([] makes the name fail to resolve)"),
                    )),
                };
                ips.push(ip);
            }
            if map.insert(name.clone(), ips).is_some() {
                return Err(self.err(
                    addrs.span(),
                    &key,
                    format!("{name} is mapped twice (names are compared in lower case, without a trailing dot)"),
                ));
            }
        }
        Ok(ResolveOverrides(map))
    }

    /// `[dns]`: the nameservers as written, or the system's resolv.conf
    /// (and hosts file), which then are files of the generation: a change
    /// to either builds a new one.
    fn dns(&self, raw: &RawDns) -> Result<DnsSettings> {
        let nameservers = match &raw.nameservers {
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.err(
                        list.span(),
                        "dns.nameservers",
                        "the list is empty: name at least one nameserver, or leave the key out to use /etc/resolv.conf",
                    ));
                }
                let mut addrs = Vec::new();
                for ns in list.get_ref() {
                    let addr = nameserver(ns.get_ref()).ok_or_else(|| {
                        self.err(
                            ns.span(),
                            "dns.nameservers",
                            format!("`{}` is not a nameserver address: expected \"IP\" (port 53) or \"IP:port\", e.g. \"10.96.0.10\", \"127.0.0.1:5353\" or \"[fd00::a]:53\"", ns.get_ref()),
                        )
                    })?;
                    if addrs.contains(&addr) {
                        return Err(self.err(
                            ns.span(),
                            "dns.nameservers",
                            format!("{addr} is listed twice"),
                        ));
                    }
                    addrs.push(addr);
                }
                Nameservers::Configured(addrs)
            }
            None => {
                let conf = self.file(crate::dial::resolve::RESOLV_CONF);
                let hosts = self.file(crate::dial::resolve::HOSTS_FILE);
                Nameservers::System(Box::new(crate::dial::resolve::SystemDns::read(
                    &conf, &hosts,
                )))
            }
        };
        let system = match &nameservers {
            Nameservers::System(s) => Some(s),
            Nameservers::Configured(_) => None,
        };
        let timeout = self
            .duration_up_to(
                raw.timeout.as_ref(),
                "dns.timeout",
                defaults::DNS_MAX_TIMEOUT,
            )?
            .or_else(|| system.and_then(|s| s.timeout()))
            .unwrap_or(defaults::DNS_TIMEOUT);
        let attempts = match &raw.attempts {
            Some(a) if (1..=defaults::DNS_MAX_ATTEMPTS).contains(a.get_ref()) => *a.get_ref(),
            Some(a) => {
                return Err(self.err(
                    a.span(),
                    "dns.attempts",
                    format!(
                        "must be between 1 and {} (tries per query, the first included)",
                        defaults::DNS_MAX_ATTEMPTS
                    ),
                ));
            }
            None => system
                .and_then(|s| s.attempts())
                .unwrap_or(defaults::DNS_ATTEMPTS),
        };
        Ok(DnsSettings {
            nameservers,
            timeout,
            attempts,
        })
    }

    fn base_roots(&mut self, raw: &RawConfig) -> Result<Arc<RootCertStore>> {
        let mode = match &raw.tls.roots {
            None => RootsMode::Native,
            Some(s) => match s.get_ref().as_str() {
                "native" => RootsMode::Native,
                "webpki" => RootsMode::Webpki,
                "none" => RootsMode::None,
                other => {
                    return Err(self.err(
                        s.span(),
                        "tls.roots",
                        format!("`{other}` is not a root set: expected \"native\", \"webpki\" or \"none\" (only ca_file)"),
                    ));
                }
            },
        };
        let mut store = tls::base_roots(mode);
        if let Some(ca) = &raw.tls.ca_file {
            self.add_ca(&mut store, ca, "tls.ca_file")?;
        }
        let store = Arc::new(store);
        self.native_roots = Some(store.clone());
        Ok(store)
    }

    pub(super) fn add_ca(
        &self,
        store: &mut RootCertStore,
        ca: &Spanned<String>,
        key: &str,
    ) -> Result<()> {
        let path = self.file(ca.get_ref());
        let certs = tls::load_ca_file(&path).map_err(|m| self.err(ca.span(), key, m))?;
        for c in certs {
            store.add(c).map_err(|e| {
                self.err(
                    ca.span(),
                    key,
                    format!(
                        "{} holds a certificate rustls cannot use as a root: {e}",
                        path.display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    pub(super) fn name(&self, s: &Spanned<String>, key: &str) -> Result<String> {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.len() <= MAX_NAME_LEN
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return Err(self.err(
                s.span(),
                key,
                format!("`{n}` is not a valid name: use 1 to {MAX_NAME_LEN} of a-z, A-Z, 0-9, '-', '_', '.'"),
            ));
        }
        Ok(n.clone())
    }

    fn route(
        &self,
        i: usize,
        r: &RawRoute,
        roots: &Arc<RootCertStore>,
        existing: &[Arc<Route>],
        default_timeout: Duration,
    ) -> Result<Route> {
        let key = |k: &str| format!("route[{i}].{k}");
        let name = self.name(&r.name, &key("name"))?;
        if existing.iter().any(|x| x.name == name) {
            let msg = if name == Route::DIRECT {
                "\"direct\" is built in and cannot be redefined; give this proxy route another name"
                    .to_string()
            } else {
                format!("a route named \"{name}\" is already defined; names must be unique")
            };
            return Err(self.err(r.name.span(), &key("name"), msg));
        }
        let (https, host, port) = self.proxy_url(&r.proxy, &key("proxy"))?;
        let tls = if https {
            let mut store = (**roots).clone();
            if let Some(ca) = &r.ca_file {
                self.add_ca(&mut store, ca, &key("ca_file"))?;
            }
            Some(
                TlsClient::new(Arc::new(store), None, vec![b"http/1.1".to_vec()])
                    .map_err(|m| self.err(r.proxy.span(), &key("proxy"), m))?,
            )
        } else {
            if let Some(ca) = &r.ca_file {
                return Err(self.err(
                    ca.span(),
                    &key("ca_file"),
                    "only an https:// proxy uses a ca_file",
                ));
            }
            None
        };
        let authorization = match &r.credentials_file {
            Some(f) => Some(self.credentials(f, &key("credentials_file"))?),
            None => None,
        };
        let connect_timeout = self
            .duration(r.connect_timeout.as_ref(), &key("connect_timeout"))?
            .unwrap_or(default_timeout);
        Ok(Route {
            fingerprint: self.fingerprint("route", i, &[default_timeout.as_millis() as u64]),
            name,
            kind: RouteKind::Proxy(Proxy {
                host,
                port,
                tls,
                authorization,
            }),
            connect_timeout,
        })
    }

    /// Parses a proxy URL. The message never echoes the URL: it may carry a password.
    fn proxy_url(&self, v: &Spanned<String>, key: &str) -> Result<(bool, String, u16)> {
        let err = |m: &str| self.err(v.span(), key, m.to_string());
        let text = v.get_ref();
        let uri: Uri = text.parse().map_err(|_| {
            err("not a URL: expected \"http://host:port\" or \"https://host:port\"")
        })?;
        let auth = uri.authority().ok_or_else(|| {
            err("no host: expected \"http://host:port\" or \"https://host:port\"")
        })?;
        if auth.as_str().contains('@') {
            return Err(err(
                "credentials in the proxy URL are refused: put \"user:password\" in a file and name it in credentials_file",
            ));
        }
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err("the scheme must be http:// or https://")),
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(err(
                "a proxy URL has no path or query: expected \"http://host:port\"",
            ));
        }
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 3128 });
        Ok((https, host, port))
    }

    fn credentials(&self, f: &Spanned<String>, key: &str) -> Result<Secret<HeaderValue>> {
        let path = self.file(f.get_ref());
        let text = crate::files::read_text(&path, MAX_SECRET_FILE)
            .map_err(|m| self.err(f.span(), key, m))?;
        let line = text.trim_end_matches(['\r', '\n']);
        let bad = || {
            self.err(
                f.span(),
                key,
                format!(
                    "{} must hold one line \"user:password\" (its content is not shown)",
                    path.display()
                ),
            )
        };
        match line.split_once(':') {
            Some((user, _)) if !user.is_empty() && !line.contains('\n') => {}
            _ => return Err(bad()),
        }
        let mut value = HeaderValue::from_str(&format!("Basic {}", base64(line.as_bytes())))
            .map_err(|_| bad())?;
        value.set_sensitive(true);
        Ok(Secret::new(value))
    }

    pub(super) fn route_list(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        routes: &[Arc<Route>],
        key: &str,
        fallback_span: Range<usize>,
    ) -> Result<Vec<Arc<Route>>> {
        let Some(list) = list else {
            let proxies: Vec<_> = routes.iter().filter(|r| !r.is_direct()).cloned().collect();
            if proxies.is_empty() {
                return Err(self.err(
                    fallback_span,
                    key,
                    "no routes: define a [[route]] with a proxy, or list routes = [\"direct\"] explicitly",
                ));
            }
            return Ok(proxies);
        };
        let mut out: Vec<Arc<Route>> = Vec::new();
        let mut seen = HashSet::new();
        for name in list.get_ref() {
            let route = routes
                .iter()
                .find(|r| r.name == *name.get_ref())
                .ok_or_else(|| {
                    let known: Vec<_> = routes.iter().map(|r| format!("\"{}\"", r.name)).collect();
                    self.err(
                        name.span(),
                        key,
                        format!(
                            "no route named \"{}\": expected one of {}",
                            name.get_ref(),
                            known.join(", ")
                        ),
                    )
                })?;
            if !seen.insert(route.name.clone()) {
                return Err(self.err(
                    name.span(),
                    key,
                    format!("route \"{}\" is listed twice", route.name),
                ));
            }
            out.push(route.clone());
        }
        if out.is_empty() {
            return Err(self.err(
                list.span(),
                key,
                "the list is empty: name at least one route",
            ));
        }
        Ok(out)
    }

    fn forward(&self, f: &RawForward, routes: &[Arc<Route>]) -> Result<ForwardSettings> {
        let default = match &f.default {
            None => ForwardDefault::Proxy,
            Some(d) => match d.get_ref().as_str() {
                "proxy" => ForwardDefault::Proxy,
                "deny" => ForwardDefault::Deny,
                other => {
                    return Err(self.err(
                        d.span(),
                        "forward.default",
                        format!("`{other}`: expected \"proxy\" or \"deny\""),
                    ));
                }
            },
        };
        let default_routes = match &f.default_routes {
            Some(list) => {
                let out =
                    self.route_list(Some(list), routes, "forward.default_routes", list.span())?;
                if let Some(d) = list.get_ref().iter().find(|n| n.get_ref() == Route::DIRECT) {
                    return Err(self.err(
                        d.span(),
                        "forward.default_routes",
                        "unmatched destinations never go direct (the sidecar is not an open proxy): list proxy routes only",
                    ));
                }
                out
            }
            None => routes.iter().filter(|r| !r.is_direct()).cloned().collect(),
        };
        let allow_ports = match &f.allow_ports {
            Some(p) => {
                let mut ports = Vec::new();
                for n in p.get_ref() {
                    let port = u16::try_from(*n).ok().filter(|p| *p != 0).ok_or_else(|| {
                        self.err(
                            p.span(),
                            "forward.allow_ports",
                            format!("{n} is not a port (1-65535)"),
                        )
                    })?;
                    ports.push(port);
                }
                ports
            }
            None => defaults::FORWARD_ALLOW_PORTS.to_vec(),
        };
        let max_connections = match &f.max_connections {
            Some(m) if (1..=1_000_000).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                return Err(self.err(
                    m.span(),
                    "forward.max_connections",
                    "must be between 1 and 1000000",
                ));
            }
            None => defaults::FORWARD_MAX_CONNECTIONS,
        };
        let trail_max_bytes = match &f.trail_max_bytes {
            Some(m) if (4096..=1024 * 1024 * 1024).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                return Err(self.err(
                    m.span(),
                    "forward.trail_max_bytes",
                    "must be between 4096 and 1073741824 (1 GiB) bytes",
                ));
            }
            None => defaults::FORWARD_TRAIL_MAX_BYTES,
        };
        let trail_keep = match &f.trail_keep {
            Some(k) if *k.get_ref() <= 100 => *k.get_ref(),
            Some(k) => {
                return Err(self.err(
                    k.span(),
                    "forward.trail_keep",
                    "must be between 0 and 100 rotated files",
                ));
            }
            None => defaults::FORWARD_TRAIL_KEEP,
        };
        let relay = match &f.relay {
            None => defaults::FORWARD_RELAY,
            Some(r) => match r.get_ref().as_str() {
                "copy" => RelayMode::Copy,
                "splice" => RelayMode::Splice,
                other => {
                    return Err(self.err(
                        r.span(),
                        "forward.relay",
                        format!("`{other}`: expected \"copy\" or \"splice\""),
                    ));
                }
            },
        };
        let buffer_pool = match &f.buffer_pool {
            None => defaults::FORWARD_BUFFER_POOL,
            Some(b) => u64::try_from(*b.get_ref())
                .ok()
                .filter(|b| *b <= defaults::FORWARD_BUFFER_POOL_MAX)
                .ok_or_else(|| {
                    self.err(
                        b.span(),
                        "forward.buffer_pool",
                        "bytes, between 0 (small buffers only) and 17179869184 (16 GiB); e.g. 67108864 for 64 MiB",
                    )
                })?,
        };
        Ok(ForwardSettings {
            relay,
            buffer_pool,
            trail: f.trail.unwrap_or(defaults::FORWARD_TRAIL),
            access_log: f.access_log.unwrap_or(defaults::FORWARD_ACCESS_LOG),
            trail_max_bytes,
            trail_keep,
            default,
            default_routes,
            allow_ports,
            idle_timeout: self
                .duration(f.idle_timeout.as_ref(), "forward.idle_timeout")?
                .unwrap_or(defaults::FORWARD_IDLE_TIMEOUT),
            header_timeout: self
                .duration(f.header_timeout.as_ref(), "forward.header_timeout")?
                .unwrap_or(defaults::FORWARD_HEADER_TIMEOUT),
            max_connections,
            failback_grace: self.duration_or_off(
                f.failback_grace.as_ref(),
                "forward.failback_grace",
                defaults::FORWARD_FAILBACK_GRACE,
            )?,
        })
    }
}

/// `10.96.0.10` (port 53), `127.0.0.1:5353`, `[fd00::a]:53` or `fd00::a`.
fn nameserver(text: &str) -> Option<SocketAddr> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => SocketAddr::new(text.parse::<IpAddr>().ok()?, 53),
    };
    (addr.port() != 0).then_some(addr)
}

/// Standard base64 with padding (RFC 4648), for Basic credentials (and
/// the status page's CSP hashes).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str =
        "\n[[target]]\nname = \"a\"\nurl = \"https://a.test/\"\nroutes = [\"direct\"]\n";

    #[test]
    fn relay_pool_and_worker_threads_take_their_values_and_name_the_key_when_wrong() {
        let path = std::path::Path::new("c.toml");
        let c = compile(path, TARGET).expect("defaults");
        assert_eq!(c.forward.relay, defaults::FORWARD_RELAY);
        assert_eq!(c.forward.buffer_pool, defaults::FORWARD_BUFFER_POOL);
        assert_eq!(c.runtime.worker_threads, None);
        assert!((1..=defaults::RUNTIME_WORKER_THREADS).contains(&c.runtime.workers()));
        let text = format!(
            "[runtime]\nworker_threads = 1\n\n[forward]\nrelay = \"splice\"\nbuffer_pool = 0\n{TARGET}"
        );
        let c = compile(path, &text).expect("set");
        assert_eq!(c.forward.relay, RelayMode::Splice);
        assert_eq!(c.forward.buffer_pool, 0);
        assert_eq!(c.runtime.workers(), 1);
        for (table, key, value, says) in [
            (
                "forward",
                "relay",
                "\"zero-copy\"",
                "expected \"copy\" or \"splice\"",
            ),
            ("forward", "buffer_pool", "-1", "between 0"),
            ("forward", "buffer_pool", "99999999999999", "16 GiB"),
            ("runtime", "worker_threads", "0", "between 1 and 64"),
            ("runtime", "worker_threads", "1000", "between 1 and 64"),
        ] {
            let text = format!("[{table}]\n{key} = {value}\n{TARGET}");
            let e = compile(path, &text).expect_err(value).to_string();
            assert!(e.contains(&format!("{table}.{key}")), "{e}");
            assert!(e.contains(says), "{value}: {e}");
            assert!(e.contains("c.toml:2:"), "located: {e}");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
