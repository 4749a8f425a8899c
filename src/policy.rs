//! The address policy for destinations dialed directly: which IP addresses
//! the sidecar refuses to connect to (loopback, link-local — cloud metadata —,
//! private, shared, unique-local, multicast, unspecified) unless a target
//! lists the range in `allow_addresses`.
//!
//! Pure functions only: nothing here dials. Tests of refusal run here, never
//! by connecting to a real non-loopback address. The policy never applies to
//! the configured proxies themselves.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    addr: IpAddr,
    /// The prefix length.
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a network: {why} (expected e.g. \"127.0.0.1/32\" or \"fd00::/8\")")]
pub struct CidrError {
    input: String,
    why: &'static str,
}

impl Cidr {
    /// The network `addr/prefix`. `prefix` must fit the family.
    pub const fn new_v4(a: [u8; 4], prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            prefix,
        }
    }

    /// True when `ip` lies inside this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_bits::<32>(self.prefix) as u32;
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_bits::<128>(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn mask_bits<const BITS: u32>(prefix: u8) -> u128 {
    let prefix = u32::from(prefix).min(BITS);
    if prefix == 0 {
        0
    } else {
        (u128::MAX << (128 - prefix)) >> (128 - BITS)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| CidrError {
            input: s.to_string(),
            why,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("bad prefix length"))?,
            None => max,
        };
        let cidr = Cidr { addr, prefix };
        if !cidr.contains(addr) || cleared(addr, prefix) != addr {
            return Err(err("host bits are set below the prefix"));
        }
        Ok(cidr)
    }
}

fn cleared(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a) & mask_bits::<32>(prefix) as u32,
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_bits::<128>(prefix))),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A range the sidecar refuses by default, with the name a report shows.
struct DeniedRange {
    net: Cidr,
    name: &'static str,
}

const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
    let [a, b, c, d, e, f, g, h] = segments;
    Cidr {
        addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
        prefix,
    }
}

const DENIED: &[DeniedRange] = &[
    DeniedRange {
        net: Cidr::new_v4([0, 0, 0, 0], 8),
        name: "unspecified/this-network",
    },
    DeniedRange {
        net: Cidr::new_v4([127, 0, 0, 0], 8),
        name: "loopback",
    },
    DeniedRange {
        net: Cidr::new_v4([169, 254, 0, 0], 16),
        name: "link-local (cloud metadata)",
    },
    DeniedRange {
        net: Cidr::new_v4([10, 0, 0, 0], 8),
        name: "private",
    },
    DeniedRange {
        net: Cidr::new_v4([172, 16, 0, 0], 12),
        name: "private",
    },
    DeniedRange {
        net: Cidr::new_v4([192, 168, 0, 0], 16),
        name: "private",
    },
    DeniedRange {
        net: Cidr::new_v4([100, 64, 0, 0], 10),
        name: "shared (carrier-grade NAT)",
    },
    DeniedRange {
        net: Cidr::new_v4([192, 0, 0, 0], 24),
        name: "IETF protocol assignments",
    },
    DeniedRange {
        net: Cidr::new_v4([198, 18, 0, 0], 15),
        name: "benchmarking",
    },
    DeniedRange {
        net: Cidr::new_v4([224, 0, 0, 0], 4),
        name: "multicast",
    },
    DeniedRange {
        net: Cidr::new_v4([240, 0, 0, 0], 4),
        name: "reserved/broadcast",
    },
    DeniedRange {
        net: v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
        name: "unspecified",
    },
    DeniedRange {
        net: v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        name: "loopback",
    },
    DeniedRange {
        net: v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        name: "link-local",
    },
    DeniedRange {
        net: v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        name: "unique-local",
    },
    DeniedRange {
        net: v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        name: "multicast",
    },
];

/// A refusal by the address policy, naming the address and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "address {ip} is {range}; refused by the address policy (list it in the target's allow_addresses to permit it)"
)]
pub struct AddressDenied {
    /// The address as checked (IPv4-mapped IPv6 unwrapped).
    pub ip: IpAddr,
    /// The name of the denied range.
    pub range: &'static str,
}

/// Unwraps IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible addresses, so a
/// private IPv4 address can't slip through in IPv6 clothing.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Decides whether `ip` may be dialed directly, given a target's explicit
/// `allow_addresses`. The address is canonicalised first.
pub fn check_address(ip: IpAddr, allow: &[Cidr]) -> Result<(), AddressDenied> {
    let ip = canonical(ip);
    if allow.iter().any(|net| net.contains(ip)) {
        return Ok(());
    }
    match DENIED.iter().find(|d| d.net.contains(ip)) {
        Some(d) => Err(AddressDenied { ip, range: d.name }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn refuses_the_ranges_an_attacker_would_aim_at() {
        for (addr, range) in [
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("10.1.2.3", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.1", "private"),
            ("127.0.0.2", "loopback"),
            ("0.0.0.0", "unspecified/this-network"),
            ("100.100.100.200", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "unique-local"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let denied = check_address(ip(addr), &[]).expect_err(addr);
            assert_eq!(denied.range, range, "{addr}");
        }
    }

    #[test]
    fn allows_public_addresses_and_explicitly_listed_ranges() {
        assert!(check_address(ip("17.188.143.1"), &[]).is_ok());
        assert!(check_address(ip("2620:149:a44::1"), &[]).is_ok());
        assert!(check_address(ip("172.32.0.1"), &[]).is_ok());
        let allow: Vec<Cidr> = vec!["127.0.0.1/32".parse().expect("cidr")];
        assert!(check_address(ip("127.0.0.1"), &allow).is_ok());
        assert!(check_address(ip("::ffff:127.0.0.1"), &allow).is_ok());
        assert!(check_address(ip("127.0.0.2"), &allow).is_err());
    }

    #[test]
    fn cidr_parsing_rejects_nonsense() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("fd00::/8".parse::<Cidr>().is_ok());
        assert!("10.0.0.1".parse::<Cidr>().is_ok());
        assert!("10.0.0.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert!("::/0".parse::<Cidr>().is_ok());
        let any: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(any.contains(ip("8.8.8.8")));
    }
}
