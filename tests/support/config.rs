//! The sidecar's TOML, built: every test that writes a config with a
//! `[[target]]` says what it needs in typed calls instead of a page of
//! text. Tables come out in one order (top-level keys, `[listen]`,
//! `[shutdown]`, `[probe]`, `[run]`, `[admin]`, `[watch]`, `[dns]`,
//! `[resolve]`, `[tls]`, `[[route]]`s, `[[target]]`s, `[forward]`, then the
//! raw tail); keys in the order they were set. The key names and their
//! meaning are DESIGN.md's; this file only spells them.
//!
//! `Toml::new().probe(|p| p.timeout("3s")).route(Route::proxy("provider",
//! url)).target(Target::new("push", url).routes(&["provider", "direct"]))`
//! is a whole config; `to_string()` is its text, and `Workspace::config`
//! takes it as it is. [`Toml::raw`] is the escape hatch; the config tests
//! that assert an error's line and column keep literal TOML.

use std::fmt::{self, Display, Write as _};

/// A TOML string literal (`"..."`), quotes and backslashes escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A TOML array of string literals.
fn list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Ordered `key = value` lines, values already TOML.
#[derive(Debug, Clone, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    /// Sets `key` (replacing an earlier value in place) to TOML `value`.
    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Whether its `name` key is `name`.
    fn has_name(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(k, v)| k == "name" && *v == quoted(name))
    }

    fn write(&self, out: &mut String, header: &str) {
        if self.0.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{header}");
        for (k, v) in &self.0 {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
}

/// Setters on a type wrapping a [`Table`], one a key: `str` (a TOML
/// string), `num`, `bool`, `strs` (an array of strings).
macro_rules! keys {
    ($ty:ty { $($(#[$doc:meta])* $name:ident: $kind:ident),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: keys!(@arg $kind)) -> Self {
                    self.0.set(stringify!($name), keys!(@val $kind, value));
                    self
                }
            )*
        }
    };
    (@arg str) => { &str };
    (@arg num) => { u64 };
    (@arg bool) => { bool };
    (@arg strs) => { &[&str] };
    (@val str, $v:expr) => { quoted($v) };
    (@val num, $v:expr) => { $v.to_string() };
    (@val bool, $v:expr) => { $v.to_string() };
    (@val strs, $v:expr) => { list($v) };
}

// === impl Toml ===

/// A whole config file.
#[derive(Debug, Clone, Default)]
pub struct Toml {
    top: Table,
    listen: Table,
    probe: Probe,
    run: Table,
    shutdown: Table,
    admin: Admin,
    watch: Table,
    dns: Dns,
    resolve: Table,
    tls: Tls,
    routes: Vec<Route>,
    targets: Vec<Target>,
    forward: Forward,
    raw: String,
}

impl Toml {
    /// An empty config (every default).
    pub fn new() -> Self {
        Self::default()
    }

    /// `state_dir` (a top-level key).
    pub fn state_dir(mut self, dir: &str) -> Self {
        self.top.set("state_dir", quoted(dir));
        self
    }

    /// `[listen]`: all three listeners on a loopback port 0 (the kernel
    /// picks; the binary logs where).
    pub fn listen_port_zero(self) -> Self {
        self.listen("metrics", "127.0.0.1:0")
            .listen("admin", "127.0.0.1:0")
            .listen("proxy", "127.0.0.1:0")
    }

    /// `[listen] listener = addr` (`metrics`, `admin`, `proxy`); `"off"`
    /// disables it.
    pub fn listen(mut self, listener: &str, addr: &str) -> Self {
        self.listen.set(listener, quoted(addr));
        self
    }

    /// `[probe]`, edited by `f`.
    pub fn probe(mut self, f: impl FnOnce(Probe) -> Probe) -> Self {
        self.probe = f(self.probe);
        self
    }

    /// `[run] reload_poll`.
    pub fn reload_poll(mut self, every: &str) -> Self {
        self.run.set("reload_poll", quoted(every));
        self
    }

    /// `[shutdown]`: `drain` then `deadline`.
    pub fn shutdown(mut self, drain: &str, deadline: &str) -> Self {
        self.shutdown.set("drain", quoted(drain));
        self.shutdown.set("deadline", quoted(deadline));
        self
    }

    /// The usual test daemon: every listener on port 0, no drain, and
    /// `deadline` from SIGTERM to exit.
    pub fn daemon(self, deadline: &str) -> Self {
        self.listen_port_zero().shutdown("0s", deadline)
    }

    /// `[shutdown] drain` alone (the deadline stays the default).
    pub fn drain(mut self, drain: &str) -> Self {
        self.shutdown.set("drain", quoted(drain));
        self
    }

    /// `[admin]`, edited by `f`.
    pub fn admin(mut self, f: impl FnOnce(Admin) -> Admin) -> Self {
        self.admin = f(self.admin);
        self
    }

    /// `[watch] processes`.
    pub fn watch_processes(mut self, names: &[&str]) -> Self {
        self.watch.set("processes", list(names));
        self
    }

    /// `[dns]`, edited by `f`.
    pub fn dns(mut self, f: impl FnOnce(Dns) -> Dns) -> Self {
        self.dns = f(self.dns);
        self
    }

    /// `[resolve] "name" = "address"`.
    pub fn resolve(mut self, name: &str, address: &str) -> Self {
        self.resolve.set(&quoted(name), quoted(address));
        self
    }

    /// `[resolve] "name" = ["a", "b"]` (`[]` makes the name fail).
    pub fn resolve_all(mut self, name: &str, addresses: &[&str]) -> Self {
        self.resolve.set(&quoted(name), list(addresses));
        self
    }

    /// `[tls]`, edited by `f`.
    pub fn tls(mut self, f: impl FnOnce(Tls) -> Tls) -> Self {
        self.tls = f(self.tls);
        self
    }

    /// One more `[[route]]`.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Edits the route named `name` (panics when there is none).
    pub fn edit_route(mut self, name: &str, f: impl FnOnce(Route) -> Route) -> Self {
        let i = self
            .routes
            .iter()
            .position(|r| r.0.has_name(name))
            .unwrap_or_else(|| panic!("no route {name:?} to edit"));
        let r = self.routes.remove(i);
        self.routes.insert(i, f(r));
        self
    }

    /// One more `[[target]]`.
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Edits the target named `name` (panics when there is none).
    pub fn edit_target(mut self, name: &str, f: impl FnOnce(Target) -> Target) -> Self {
        let i = self
            .targets
            .iter()
            .position(|t| t.0.has_name(name))
            .unwrap_or_else(|| panic!("no target {name:?} to edit"));
        let t = self.targets.remove(i);
        self.targets.insert(i, f(t));
        self
    }

    /// `[forward]`, edited by `f`.
    pub fn forward(mut self, f: impl FnOnce(Forward) -> Forward) -> Self {
        self.forward = f(self.forward);
        self
    }

    /// Text written after every table, as it is: the escape hatch for what
    /// no typed call covers (a table no test needs twice, or TOML that is
    /// wrong on purpose). Keys at its start belong to the last table
    /// written, so start it with a table header.
    pub fn raw(mut self, text: &str) -> Self {
        self.raw.push_str(text);
        self
    }
}

impl Display for Toml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        for (k, v) in &self.top.0 {
            let _ = writeln!(out, "{k} = {v}");
        }
        self.listen.write(&mut out, "[listen]");
        self.shutdown.write(&mut out, "[shutdown]");
        self.probe.0.write(&mut out, "[probe]");
        self.run.write(&mut out, "[run]");
        self.admin.0.write(&mut out, "[admin]");
        self.watch.write(&mut out, "[watch]");
        self.dns.0.write(&mut out, "[dns]");
        self.resolve.write(&mut out, "[resolve]");
        self.tls.0.write(&mut out, "[tls]");
        for r in &self.routes {
            r.0.write(&mut out, "[[route]]");
        }
        for t in &self.targets {
            // A target with no key at all still counts (`[[target]]`).
            if t.0.0.is_empty() {
                out.push_str("\n[[target]]\n");
            }
            t.0.write(&mut out, "[[target]]");
        }
        self.forward.0.write(&mut out, "[forward]");
        out.push_str(&self.raw);
        // Tables are separated by a blank line, not preceded by one.
        f.write_str(out.strip_prefix('\n').unwrap_or(&out))
    }
}

// === impl Probe ===

/// `[probe]`.
#[derive(Debug, Clone, Default)]
pub struct Probe(Table);

keys!(Probe {
    /// Between probes of a healthy route.
    interval: str,
    /// Between probes of a failing or recovering route.
    unhealthy_interval: str,
    /// The whole probe.
    timeout: str,
    /// Consecutive failures that make a route unhealthy.
    fall: num,
    /// Consecutive successes that make it healthy again.
    rise: num,
    /// Bytes of a body a probe reads.
    max_body: num,
    /// Hold of a route after its second flap.
    hold_down: str,
    /// The longest hold, and the flap window.
    hold_down_max: str,
    /// Attempts looked at for "degraded".
    degraded_window: num,
    /// Failures among them that make a route degraded.
    degraded_failures: num,
});

impl Probe {
    /// The timings most sidecar tests share: `interval`, then
    /// `unhealthy_interval`, `timeout`, fall 2, rise 2.
    pub fn timings(self, interval: &str, unhealthy_interval: &str, timeout: &str) -> Self {
        self.interval(interval)
            .unhealthy_interval(unhealthy_interval)
            .timeout(timeout)
            .fall(2)
            .rise(2)
    }
}

// === impl Admin ===

/// `[admin]`.
#[derive(Debug, Clone, Default)]
pub struct Admin(Table);

keys!(Admin {
    /// `POST /verify` is refused this long after a run.
    verify_cooldown: str,
    /// The bearer token's file.
    token_file: str,
    /// Host names the admin API answers to besides loopback.
    hosts: strs,
});

// === impl Dns ===

/// `[dns]`.
#[derive(Debug, Clone, Default)]
pub struct Dns(Table);

keys!(Dns {
    /// The nameservers asked instead of resolv.conf's.
    nameservers: strs,
    /// One try's wait.
    timeout: str,
    /// Tries per query.
    attempts: num,
});

// === impl Tls ===

/// `[tls]`.
#[derive(Debug, Clone, Default)]
pub struct Tls(Table);

keys!(Tls {
    /// "native", "webpki" or "none".
    roots: str,
    /// A CA added to the roots.
    ca_file: str,
    /// A certificate expiring within this warns.
    warn_before: str,
    /// ... within this fails verify.
    fail_before: str,
});

// === impl Route ===

/// One `[[route]]`: a proxy.
#[derive(Debug, Clone)]
pub struct Route(Table);

impl Route {
    /// Route `name` through the forward proxy at `url`.
    pub fn proxy(name: &str, url: &str) -> Self {
        let mut t = Table::default();
        t.set("name", quoted(name));
        t.set("proxy", quoted(url));
        Self(t)
    }
}

keys!(Route {
    /// Budget to reach the proxy and get its CONNECT reply.
    connect_timeout: str,
    /// One line `user:password`.
    credentials_file: str,
    /// Extra CA for an https:// proxy.
    ca_file: str,
});

// === impl Target ===

/// One `[[target]]`.
#[derive(Debug, Clone)]
pub struct Target(Table);

impl Target {
    /// Target `name` probing `url`.
    pub fn new(name: &str, url: &str) -> Self {
        Self::named(name).url(url)
    }

    /// Target `name` with no url yet (a preset's, or set later).
    pub fn named(name: &str) -> Self {
        let mut t = Table::default();
        t.set("name", quoted(name));
        Self(t)
    }

    /// A target with no name (the config names it from its url or preset).
    pub fn unnamed() -> Self {
        Self(Table::default())
    }

    /// `routes`, in preference order.
    pub fn routes(mut self, routes: &[&str]) -> Self {
        self.0.set("routes", list(routes));
        self
    }

    /// `routes = ["direct"]` and `allow_addresses = [range]`: a direct
    /// route to a loopback stand-in.
    pub fn direct_to(self, range: &str) -> Self {
        self.routes(&["direct"]).allow_addresses(&[range])
    }

    /// `expect_status`, each a code or a `"300-399"` range.
    pub fn expect_status(mut self, statuses: &[&str]) -> Self {
        let items: Vec<String> = statuses
            .iter()
            .map(|s| match s.parse::<u16>() {
                Ok(code) => code.to_string(),
                Err(_) => quoted(s),
            })
            .collect();
        self.0
            .set("expect_status", format!("[{}]", items.join(", ")));
        self
    }

    /// `headers = { name = "value" }`.
    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        let items: Vec<String> = headers
            .iter()
            .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
            .collect();
        self.0.set("headers", format!("{{ {} }}", items.join(", ")));
        self
    }

    /// `credential = { kind = "...", ... }`: the app's own credential
    /// (`[target.credential]`), string values.
    pub fn credential(mut self, keys: &[(&str, &str)]) -> Self {
        let items: Vec<String> = keys
            .iter()
            .map(|(k, v)| format!("{k} = {}", quoted(v)))
            .collect();
        self.0
            .set("credential", format!("{{ {} }}", items.join(", ")));
        self
    }

    /// A PEM client identity: `client_cert` and `client_key`.
    pub fn client_pem(self, cert: &str, key: &str) -> Self {
        self.client_cert(cert).client_key(key)
    }

    /// A PKCS#12 client identity: `client_cert` and
    /// `client_cert_password_file`.
    pub fn client_p12(self, bundle: &str, password_file: &str) -> Self {
        self.client_cert(bundle)
            .client_cert_password_file(password_file)
    }
}

keys!(Target {
    /// The probe's URL.
    url: str,
    /// A preset filling url, method, headers, body, expectations.
    preset: str,
    /// App destinations that belong to this target.
    hosts: strs,
    /// Ranges lifted from the address policy.
    allow_addresses: strs,
    /// Extra CA for this target.
    ca_file: str,
    /// The CA its chains must end in.
    expect_ca: str,
    /// Client certificate (PKCS#12 or PEM).
    client_cert: str,
    /// Client key (PEM).
    client_key: str,
    /// PKCS#12 password file.
    client_cert_password_file: str,
    /// The probe's method.
    method: str,
    /// The probe's body.
    body: str,
    /// A substring the body must contain.
    expect_body: str,
    /// A regex the body must match.
    expect_body_regex: str,
    /// This target's probe timeout.
    timeout: str,
    /// "auto", "required", "never".
    http2: str,
    /// Fail over when the preferred route is degraded.
    failover_on_degraded: bool,
    /// A certificate expiring within this warns.
    warn_before: str,
    /// ... within this fails verify.
    fail_before: str,
});

// === impl Forward ===

/// `[forward]`.
#[derive(Debug, Clone, Default)]
pub struct Forward(Table);

impl Forward {
    /// `default = "deny"`: destinations matching no target are refused.
    pub fn deny_unmatched(mut self) -> Self {
        self.0.set("default", quoted("deny"));
        self
    }

    /// `default = "proxy"` with `default_routes`.
    pub fn proxy_unmatched(mut self, routes: &[&str]) -> Self {
        self.0.set("default", quoted("proxy"));
        self.0.set("default_routes", list(routes));
        self
    }

    /// `allow_ports`.
    pub fn allow_ports(mut self, ports: &[u16]) -> Self {
        let items: Vec<String> = ports.iter().map(u16::to_string).collect();
        self.0.set("allow_ports", format!("[{}]", items.join(", ")));
        self
    }
}

keys!(Forward {
    /// A tunnel with no byte either way is closed.
    idle_timeout: str,
    /// The app's whole request head must arrive by then.
    header_timeout: str,
    /// App connections at once.
    max_connections: num,
    /// Direct tunnels closed this long after fail-back; "off".
    failback_grace: str,
    /// The compliance trail in state_dir.
    trail: bool,
    /// Every app connection, to state_dir/access.jsonl.
    access_log: bool,
    /// Each trail file rotated before this size.
    trail_max_bytes: num,
    /// Rotated files kept per log.
    trail_keep: num,
    /// How tunnels copy bytes.
    relay: str,
});
