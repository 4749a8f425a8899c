//! Compiling `[resolve]` and `[dns]`: the fixed addresses of names, and
//! the nameservers our own resolver asks (as written, or the system's
//! resolv.conf and hosts file).
//!
//! Owns the checks of names, addresses and nameserver lists. It reads
//! resolv.conf and the hosts file (as files of the generation) but never
//! sends a query: resolving belongs to `dial::resolve`, at probe and
//! connect time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::compile::{Compiler, Result};
use super::raw::{AddressList, RawConfig, RawDns};
use super::{DnsSettings, Nameservers, ResolveOverrides, defaults};
use crate::destination::Host;

impl Compiler<'_> {
    pub(super) fn resolve(&self, raw: &RawConfig) -> Result<ResolveOverrides> {
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
    pub(super) fn dns(&self, raw: &RawDns) -> Result<DnsSettings> {
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
}

/// `10.96.0.10` (port 53), `127.0.0.1:5353`, `[fd00::a]:53` or `fd00::a`.
fn nameserver(text: &str) -> Option<SocketAddr> {
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => SocketAddr::new(text.parse::<IpAddr>().ok()?, 53),
    };
    (addr.port() != 0).then_some(addr)
}
