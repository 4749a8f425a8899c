//! What the system's resolver configuration says: resolv.conf (nameservers,
//! search list, ndots, timeout, attempts) and the hosts file (Kubernetes
//! writes `hostAliases` there), read once per generation by `config`. A
//! file that cannot be read is not a config error: names in `[resolve]`
//! still work, and every other name fails with the reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_resolver::config::{ResolverConfig, ResolverOpts};

use crate::dial::route::ResolveOverrides;

/// The system's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The system's static host table.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// The most bytes read from either file.
const MAX_FILE: u64 = 1024 * 1024;

/// Why resolv.conf gave no resolver configuration.
#[derive(Debug, thiserror::Error)]
pub enum NoResolvConf {
    /// The file could not be read.
    #[error(transparent)]
    Unreadable(#[from] crate::files::ReadError),
    /// hickory could not use what it says.
    #[error("{}: {source}", path.display())]
    Unusable {
        /// The resolv.conf read.
        path: PathBuf,
        /// What hickory said.
        source: hickory_resolver::ResolveError,
    },
}

/// resolv.conf and the hosts file, as read.
#[derive(Debug)]
pub struct SystemDns {
    /// The resolv.conf read.
    pub path: PathBuf,
    /// The resolver configuration, or why there is none.
    conf: Result<(ResolverConfig, ResolverOpts), NoResolvConf>,
    /// The hosts file's names (empty when it cannot be read).
    hosts: ResolveOverrides,
}

impl SystemDns {
    /// Reads `resolv_conf` and `hosts`.
    pub fn read(resolv_conf: &Path, hosts: &Path) -> Self {
        let conf = crate::files::read_bytes(resolv_conf, MAX_FILE)
            .map_err(NoResolvConf::from)
            .and_then(|bytes| {
                hickory_resolver::system_conf::parse_resolv_conf(bytes).map_err(|source| {
                    NoResolvConf::Unusable {
                        path: resolv_conf.to_path_buf(),
                        source,
                    }
                })
            });
        // No hosts file is an empty one, as for glibc.
        let hosts = crate::files::read_bytes(hosts, MAX_FILE)
            .map(|bytes| parse_hosts(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default();
        Self {
            path: resolv_conf.to_path_buf(),
            conf,
            hosts,
        }
    }

    /// The resolver configuration, or why there is none.
    pub(super) fn conf(&self) -> Result<&(ResolverConfig, ResolverOpts), &NoResolvConf> {
        self.conf.as_ref()
    }

    /// The hosts file's addresses for `name` (lower case, no trailing dot).
    pub fn host(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts.get(name)
    }

    /// The nameservers resolv.conf lists, each once.
    pub fn nameservers(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        if let Ok((config, _)) = &self.conf {
            for ns in config.name_servers() {
                if !out.contains(&ns.socket_addr) {
                    out.push(ns.socket_addr);
                }
            }
        }
        out
    }

    /// resolv.conf's `options timeout:N` (5 s when absent).
    pub fn timeout(&self) -> Option<Duration> {
        let (_, opts) = self.conf.as_ref().ok()?;
        Some(opts.timeout.max(Duration::from_secs(1)))
    }

    /// resolv.conf's `options attempts:N` (2 when absent).
    pub fn attempts(&self) -> Option<u32> {
        let (_, opts) = self.conf.as_ref().ok()?;
        Some(u32::try_from(opts.attempts).unwrap_or(u32::MAX).clamp(1, 5))
    }
}

/// `address name [alias...]` lines, `#` comments; lines whose address is
/// not a plain IP address (glibc's inet_pton) are skipped. The addresses of
/// a name are every line's that names it, in file order.
fn parse_hosts(text: &str) -> ResolveOverrides {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let ips = map.entry(name).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }
    ResolveOverrides(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_nameservers_search_and_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("resolv.conf");
        std::fs::write(
            &conf,
            "search ns1.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n\
             options ndots:5 timeout:3 attempts:4\n",
        )
        .expect("write");
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            "127.0.0.1 localhost\n10.1.2.3 Pinned.Example. alias # comment\n\
             not-an-ip other.example\nfd00::3 pinned.example\n",
        )
        .expect("write");
        let sys = SystemDns::read(&conf, &hosts);
        assert_eq!(
            sys.nameservers(),
            vec!["10.96.0.10:53".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(sys.timeout(), Some(Duration::from_secs(3)));
        assert_eq!(sys.attempts(), Some(4));
        let (config, opts) = sys.conf().expect("parsed");
        assert_eq!(opts.ndots, 5);
        assert_eq!(config.search().len(), 2);
        let ips =
            |s: &[&str]| -> Vec<IpAddr> { s.iter().map(|a| a.parse().expect("ip")).collect() };
        assert_eq!(
            sys.host("pinned.example"),
            Some(&ips(&["10.1.2.3", "fd00::3"])[..])
        );
        assert_eq!(sys.host("alias"), Some(&ips(&["10.1.2.3"])[..]));
        assert_eq!(sys.host("comment"), None);
        assert_eq!(sys.host("other.example"), None);
    }

    #[test]
    fn a_missing_resolv_conf_is_a_reason_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = SystemDns::read(&dir.path().join("none"), &dir.path().join("none"));
        let why = sys.conf().expect_err("nothing to read").to_string();
        assert!(why.contains("cannot open"), "{why}");
        assert!(sys.nameservers().is_empty());
        assert_eq!(sys.timeout(), None);
    }

    #[test]
    fn resolv_conf_without_a_nameserver_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("resolv.conf");
        std::fs::write(&conf, "search example\n").expect("write");
        let sys = SystemDns::read(&conf, &dir.path().join("none"));
        let why = sys.conf().expect_err("no nameserver").to_string();
        assert!(why.contains("no nameservers"), "{why}");
    }
}
