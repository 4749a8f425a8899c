//! Compiling the sidecar's own settings: `[listen]`, `[probe]`, `[admin]`,
//! `[forward]`, `[compliance]`, `[run]`, `[shutdown]`, `[runtime]` and
//! `[watch]` — every
//! table that is not a target, a route, TLS trust or name resolution.
//!
//! Owns each key's default and range check, every failure located. It
//! reads no file but the admin token (through `Compiler::file`, so a new
//! token is a new generation), opens no socket, and compiles no route or
//! target: `[forward]` only names routes, through `route_list`.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use toml::Spanned;

use super::compile::{Compiler, MAX_SECRET_FILE, Result};
use super::raw::{RawConfig, RawForward};
use super::{
    AdminSettings, ComplianceSettings, ForwardDefault, ForwardSettings, Listen, ProbeSettings,
    RelayMode, Route, RunSettings, RuntimeSettings, ShutdownSettings, StatusSettings, TrailSink,
    defaults, parse_duration,
};
use crate::secret::Secret;

impl Compiler<'_> {
    pub(super) fn listen(&self, raw: &RawConfig) -> Result<Listen> {
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

    pub(super) fn probe(&self, raw: &RawConfig) -> Result<ProbeSettings> {
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

    pub(super) fn admin(&self, raw: &RawConfig) -> Result<AdminSettings> {
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
            .map_err(|e| self.err(f.span(), "admin.token_file", e.to_string()))?;
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

    /// `[forward]`. Keys are checked in this order, so the first mistake
    /// reported stays the same.
    pub(super) fn forward(&self, f: &RawForward, routes: &[Arc<Route>]) -> Result<ForwardSettings> {
        let default = self.either(
            f.default.as_ref(),
            "forward.default",
            [
                ("proxy", ForwardDefault::Proxy),
                ("deny", ForwardDefault::Deny),
            ],
            ForwardDefault::Proxy,
        )?;
        let default_routes = self.default_routes(f, routes)?;
        let allow_ports = self.allow_ports(f)?;
        let max_connections = self.in_range(
            f.max_connections.as_ref(),
            1..=1_000_000,
            "forward.max_connections",
            "must be between 1 and 1000000",
        )?;
        let trail_max_bytes = self.in_range(
            f.trail_max_bytes.as_ref(),
            4096..=1024 * 1024 * 1024,
            "forward.trail_max_bytes",
            "must be between 4096 and 1073741824 (1 GiB) bytes",
        )?;
        let trail_keep = self.in_range(
            f.trail_keep.as_ref(),
            0..=100,
            "forward.trail_keep",
            "must be between 0 and 100 rotated files",
        )?;
        let relay = self.either(
            f.relay.as_ref(),
            "forward.relay",
            [("copy", RelayMode::Copy), ("splice", RelayMode::Splice)],
            defaults::FORWARD_RELAY,
        )?;
        let buffer_pool = self.buffer_pool(f)?;
        Ok(ForwardSettings {
            relay,
            buffer_pool,
            trail: f.trail.unwrap_or(defaults::FORWARD_TRAIL),
            access_log: f.access_log.unwrap_or(defaults::FORWARD_ACCESS_LOG),
            trail_max_bytes: trail_max_bytes.unwrap_or(defaults::FORWARD_TRAIL_MAX_BYTES),
            trail_keep: trail_keep.unwrap_or(defaults::FORWARD_TRAIL_KEEP),
            default,
            default_routes,
            allow_ports,
            idle_timeout: self
                .duration(f.idle_timeout.as_ref(), "forward.idle_timeout")?
                .unwrap_or(defaults::FORWARD_IDLE_TIMEOUT),
            header_timeout: self
                .duration(f.header_timeout.as_ref(), "forward.header_timeout")?
                .unwrap_or(defaults::FORWARD_HEADER_TIMEOUT),
            max_connections: max_connections.unwrap_or(defaults::FORWARD_MAX_CONNECTIONS),
            failback_grace: self.duration_or_off(
                f.failback_grace.as_ref(),
                "forward.failback_grace",
                defaults::FORWARD_FAILBACK_GRACE,
            )?,
        })
    }

    /// `[compliance]`: where the trail goes besides its file.
    pub(super) fn compliance(&self, raw: &RawConfig) -> Result<ComplianceSettings> {
        let sink = self.either(
            raw.compliance.sink.as_ref(),
            "compliance.sink",
            [("file", TrailSink::File), ("both", TrailSink::Both)],
            defaults::COMPLIANCE_SINK,
        )?;
        Ok(ComplianceSettings { sink })
    }

    /// `[status]`: the last-hour strip's cell, whole seconds from 1 s.
    pub(super) fn status(&self, raw: &RawConfig) -> Result<StatusSettings> {
        let v = raw.status.history_cell.as_ref();
        let cell = self.duration_up_to(v, "status.history_cell", defaults::MAX_HISTORY_CELL)?;
        if let (Some(v), Some(d)) = (v, cell)
            && d.subsec_nanos() != 0
        {
            return Err(self.err(
                v.span(),
                "status.history_cell",
                "must be whole seconds (from \"1s\"; \"1m\" by default)",
            ));
        }
        Ok(StatusSettings {
            history_cell: cell.unwrap_or(defaults::STATUS_HISTORY_CELL),
        })
    }

    /// A number that must lie in `range`; `None` when the key is absent.
    fn in_range<T: PartialOrd + Copy>(
        &self,
        v: Option<&Spanned<T>>,
        range: RangeInclusive<T>,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>> {
        match v {
            Some(v) if range.contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(self.err(v.span(), key, expected)),
            None => Ok(None),
        }
    }

    /// `forward.default_routes`: proxy routes only, every proxy route when
    /// absent.
    fn default_routes(&self, f: &RawForward, routes: &[Arc<Route>]) -> Result<Vec<Arc<Route>>> {
        let Some(list) = &f.default_routes else {
            return Ok(routes.iter().filter(|r| !r.is_direct()).cloned().collect());
        };
        let out = self.route_list(Some(list), routes, "forward.default_routes", list.span())?;
        if let Some(d) = list.get_ref().iter().find(|n| n.get_ref() == Route::DIRECT) {
            return Err(self.err(
                d.span(),
                "forward.default_routes",
                "unmatched destinations never go direct (the sidecar is not an open proxy): list proxy routes only",
            ));
        }
        Ok(out)
    }

    /// `forward.allow_ports`: the ports an app may ask for.
    fn allow_ports(&self, f: &RawForward) -> Result<Vec<u16>> {
        let Some(p) = &f.allow_ports else {
            return Ok(defaults::FORWARD_ALLOW_PORTS.to_vec());
        };
        p.get_ref()
            .iter()
            .map(|n| {
                u16::try_from(*n).ok().filter(|p| *p != 0).ok_or_else(|| {
                    self.err(
                        p.span(),
                        "forward.allow_ports",
                        format!("{n} is not a port (1-65535)"),
                    )
                })
            })
            .collect()
    }

    /// One of two words, each meaning a value; `default` when the key is
    /// absent.
    fn either<T: Copy>(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        words: [(&str, T); 2],
        default: T,
    ) -> Result<T> {
        let Some(v) = v else { return Ok(default) };
        match words.iter().find(|(w, _)| w == v.get_ref()) {
            Some((_, value)) => Ok(*value),
            None => Err(self.err(
                v.span(),
                key,
                format!(
                    "`{}`: expected \"{}\" or \"{}\"",
                    v.get_ref(),
                    words[0].0,
                    words[1].0
                ),
            )),
        }
    }

    /// `forward.buffer_pool`: bytes, at most
    /// [`defaults::FORWARD_BUFFER_POOL_MAX`].
    fn buffer_pool(&self, f: &RawForward) -> Result<u64> {
        let Some(b) = &f.buffer_pool else {
            return Ok(defaults::FORWARD_BUFFER_POOL);
        };
        u64::try_from(*b.get_ref())
            .ok()
            .filter(|b| *b <= defaults::FORWARD_BUFFER_POOL_MAX)
            .ok_or_else(|| {
                self.err(
                    b.span(),
                    "forward.buffer_pool",
                    "bytes, between 0 (small buffers only) and 17179869184 (16 GiB); e.g. 67108864 for 64 MiB",
                )
            })
    }

    /// `[run]`: the reload poll; the old `shutdown_timeout` key is refused
    /// with what replaced it.
    pub(super) fn run(&self, raw: &RawConfig) -> Result<RunSettings> {
        if let Some(old) = &raw.run.shutdown_timeout {
            return Err(self.err(
                old.span(),
                "run.shutdown_timeout",
                "replaced by [shutdown] drain (how long /readyz says 503 while listeners keep serving) and [shutdown] deadline (from SIGTERM to exit)",
            ));
        }
        Ok(RunSettings {
            reload_poll: self.duration_or_off(
                raw.run.reload_poll.as_ref(),
                "run.reload_poll",
                defaults::RUN_RELOAD_POLL,
            )?,
        })
    }

    pub(super) fn shutdown(&self, raw: &RawConfig) -> Result<ShutdownSettings> {
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

    pub(super) fn runtime(&self, raw: &RawConfig) -> Result<RuntimeSettings> {
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

    pub(super) fn watch_processes(&self, raw: &RawConfig) -> Result<Vec<String>> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RelayMode;
    use crate::config::compile::compile;

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
            "[runtime]\nworker_threads = 1\n\n[forward]\nrelay = \"copy\"\nbuffer_pool = 0\n{TARGET}"
        );
        let c = compile(path, &text).expect("set");
        assert_eq!(c.forward.relay, RelayMode::Copy);
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
    fn the_history_cell_is_a_minute_unless_set_in_whole_seconds_from_one() {
        let path = std::path::Path::new("c.toml");
        let c = compile(path, TARGET).expect("defaults");
        assert_eq!(c.status.history_cell, std::time::Duration::from_secs(60));
        let text = format!("[status]\nhistory_cell = \"1s\"\n{TARGET}");
        let c = compile(path, &text).expect("1s");
        assert_eq!(c.status.history_cell, std::time::Duration::from_secs(1));
        for (value, says) in [
            ("\"500ms\"", "whole seconds"),
            ("\"1500ms\"", "whole seconds"),
            ("\"0s\"", "greater than zero"),
            ("\"1h\"", "at most"),
        ] {
            let text = format!("[status]\nhistory_cell = {value}\n{TARGET}");
            let e = compile(path, &text).expect_err(value).to_string();
            assert!(
                e.contains("status.history_cell") && e.contains(says),
                "{value}: {e}"
            );
            assert!(e.contains("c.toml:2:"), "located: {e}");
        }
    }
}
