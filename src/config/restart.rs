//! The settings a reload cannot apply: what they are, and keeping the ones
//! in force when a reloaded file changes them.
//!
//! Everything else in a config takes effect on reload (targets, routes,
//! probe timing, the forward proxy's rules and its connection cap, the
//! trail, the admin token, `reload_poll`, watched processes). These are
//! read once when the process starts: the listeners' sockets, the state
//! directory the incident log was opened in, the async runtime's threads,
//! and the relay's mode and pool (its pipes and buffers are opened at
//! start). A reload that changes one keeps the value in force, so the
//! running process stays consistent with itself, and names the key, so
//! `egress_config_restart_required`, `/status` and the page can say a
//! restart is due.

use super::Config;

/// A setting only a restart applies, by its name in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum RestartKey {
    /// `[listen] metrics`.
    #[serde(rename = "listen.metrics")]
    ListenMetrics,
    /// `[listen] admin`.
    #[serde(rename = "listen.admin")]
    ListenAdmin,
    /// `[listen] proxy`.
    #[serde(rename = "listen.proxy")]
    ListenProxy,
    /// `state_dir`.
    #[serde(rename = "state_dir")]
    StateDir,
    /// `[runtime] worker_threads`.
    #[serde(rename = "runtime.worker_threads")]
    WorkerThreads,
    /// `[forward] relay`.
    #[serde(rename = "forward.relay")]
    Relay,
    /// `[forward] buffer_pool`.
    #[serde(rename = "forward.buffer_pool")]
    BufferPool,
}

impl RestartKey {
    /// Every key, in the README's order.
    pub const ALL: [RestartKey; 7] = [
        RestartKey::ListenMetrics,
        RestartKey::ListenAdmin,
        RestartKey::ListenProxy,
        RestartKey::StateDir,
        RestartKey::WorkerThreads,
        RestartKey::Relay,
        RestartKey::BufferPool,
    ];

    /// The key as the file spells it: `[listen] proxy`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartKey::ListenMetrics => "[listen] metrics",
            RestartKey::ListenAdmin => "[listen] admin",
            RestartKey::ListenProxy => "[listen] proxy",
            RestartKey::StateDir => "state_dir",
            RestartKey::WorkerThreads => "[runtime] worker_threads",
            RestartKey::Relay => "[forward] relay",
            RestartKey::BufferPool => "[forward] buffer_pool",
        }
    }

    /// Whether `a` and `b` differ in this key.
    fn differs(self, a: &Config, b: &Config) -> bool {
        match self {
            RestartKey::ListenMetrics => a.listen.metrics != b.listen.metrics,
            RestartKey::ListenAdmin => a.listen.admin != b.listen.admin,
            RestartKey::ListenProxy => a.listen.proxy != b.listen.proxy,
            RestartKey::StateDir => a.state_dir != b.state_dir,
            RestartKey::WorkerThreads => a.runtime != b.runtime,
            RestartKey::Relay => a.forward.relay != b.forward.relay,
            RestartKey::BufferPool => a.forward.buffer_pool != b.forward.buffer_pool,
        }
    }

    /// Copies this key's value from `from` into `to`.
    fn keep(self, from: &Config, to: &mut Config) {
        match self {
            RestartKey::ListenMetrics => to.listen.metrics = from.listen.metrics,
            RestartKey::ListenAdmin => to.listen.admin = from.listen.admin,
            RestartKey::ListenProxy => to.listen.proxy = from.listen.proxy,
            RestartKey::StateDir => to.state_dir.clone_from(&from.state_dir),
            RestartKey::WorkerThreads => to.runtime.clone_from(&from.runtime),
            RestartKey::Relay => to.forward.relay = from.forward.relay,
            RestartKey::BufferPool => to.forward.buffer_pool = from.forward.buffer_pool,
        }
    }
}

impl std::fmt::Display for RestartKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// Makes this freshly loaded config one the running process can apply:
    /// every [`RestartKey`] whose value differs from `running`'s (the
    /// config in force, which holds the values the process started with)
    /// is set back to the running value. Returns the keys that differed,
    /// in [`RestartKey::ALL`]'s order: empty when a reload applies whole.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<RestartKey> {
        let differing: Vec<RestartKey> = RestartKey::ALL
            .into_iter()
            .filter(|k| k.differs(self, running))
            .collect();
        for k in &differing {
            k.keep(running, self);
        }
        differing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[[target]]\nname = \"t\"\nurl = \"https://t.example:443/\"\nroutes = [\"direct\"]\n"
        );
        match Config::parse(Path::new("/etc/egress.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    #[test]
    fn the_same_file_applies_whole() {
        let running = config("");
        let mut next = config("");
        assert!(next.keep_restart_only(&running).is_empty());
    }

    #[test]
    fn each_restart_key_is_named_and_kept_at_its_running_value() {
        let running = config("state_dir = \"/var/lib/a\"\n[listen]\nproxy = \"127.0.0.1:3128\"\n");
        let mut next = config(
            "state_dir = \"/var/lib/b\"\n[listen]\nproxy = \"127.0.0.1:3129\"\nmetrics = \"127.0.0.1:9999\"\nadmin = \"off\"\n[runtime]\nworker_threads = 3\n[forward]\nrelay = \"copy\"\nbuffer_pool = 1048576\nmax_connections = 7\n",
        );
        let keys = next.keep_restart_only(&running);
        assert_eq!(keys, RestartKey::ALL.to_vec());
        assert_eq!(next.listen, running.listen);
        assert_eq!(next.state_dir, running.state_dir);
        assert_eq!(next.runtime, running.runtime);
        assert_eq!(next.forward.relay, running.forward.relay);
        assert_eq!(next.forward.buffer_pool, running.forward.buffer_pool);
        // What a reload applies is left as the file says.
        assert_eq!(next.forward.max_connections, 7);
        // Pinned, the next reload of the same file names the same keys.
        let mut again = config(
            "state_dir = \"/var/lib/b\"\n[listen]\nproxy = \"127.0.0.1:3129\"\nmetrics = \"127.0.0.1:9999\"\nadmin = \"off\"\n[runtime]\nworker_threads = 3\n[forward]\nrelay = \"copy\"\nbuffer_pool = 1048576\n",
        );
        assert_eq!(again.keep_restart_only(&next), RestartKey::ALL.to_vec());
    }

    #[test]
    fn changing_a_key_back_clears_it() {
        let running = config("[forward]\nrelay = \"copy\"\n");
        let mut changed = config("[forward]\nrelay = \"splice\"\n");
        assert_eq!(changed.keep_restart_only(&running), vec![RestartKey::Relay]);
        let mut back = config("[forward]\nrelay = \"copy\"\n");
        assert!(back.keep_restart_only(&changed).is_empty());
    }

    #[test]
    fn keys_read_as_the_file_writes_them() {
        let json = serde_json::to_string(&RestartKey::ALL).expect("json");
        assert_eq!(
            json,
            r#"["listen.metrics","listen.admin","listen.proxy","state_dir","runtime.worker_threads","forward.relay","forward.buffer_pool"]"#
        );
        assert_eq!(RestartKey::ListenProxy.to_string(), "[listen] proxy");
    }
}
