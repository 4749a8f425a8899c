//! The address policy: which IP addresses the sidecar refuses to reach
//! (loopback, link-local — cloud metadata —, private, shared, unique-local,
//! multicast, unspecified) unless a target lists the range in
//! `allow_addresses`. It judges the address a destination *means*: an IPv6
//! address that carries an IPv4 address (IPv4-mapped, -translated,
//! -compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by that
//! IPv4 address too, and prefixes whose embedded address cannot be trusted
//! (NAT64 local-use `64:ff9b:1::/48`, Teredo `2001::/32`) are refused whole.
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
    // The embedded IPv4 address of these is whatever a translator or relay
    // we cannot see makes of it: refused whole unless a target lists them.
    DeniedRange {
        net: v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        name: "NAT64 local-use (embedded IPv4 address not checkable)",
    },
    DeniedRange {
        net: v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        name: "Teredo (embedded IPv4 address not checkable)",
    },
];

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291): the IPv4 address itself on a dual-stack socket.
    Mapped,
    /// `::ffff:0:a.b.c.d` (RFC 2765, SIIT).
    Translated,
    /// `::a.b.c.d` (RFC 4291, deprecated).
    Compatible,
    /// `64:ff9b::a.b.c.d` (RFC 6052): a NAT64 translator reaches the IPv4 address.
    Nat64,
    /// `2002:AABB:CCDD::/48` (RFC 3056): a 6to4 relay reaches AA.BB.CC.DD.
    SixToFour,
}

impl fmt::Display for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mapped => "IPv4-mapped",
            Self::Translated => "IPv4-translated",
            Self::Compatible => "IPv4-compatible",
            Self::Nat64 => "NAT64 64:ff9b::/96",
            Self::SixToFour => "6to4 2002::/16",
        })
    }
}

/// The IPv4 address `ip` carries, and how; `None` for an IPv6 address that
/// carries none (`::` and `::1` carry none: they are IPv6's own).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    let seg = ip.segments();
    match bits >> 32 {
        0xffff => return Some((low32, Embedding::Mapped)),
        0xffff_0000 => return Some((low32, Embedding::Translated)),
        0 if bits > 1 => return Some((low32, Embedding::Compatible)),
        0x0064_ff9b_0000_0000_0000_0000 => return Some((low32, Embedding::Nat64)),
        _ => {}
    }
    if seg[0] == 0x2002 {
        let v4 = (u32::from(seg[1]) << 16) | u32::from(seg[2]);
        return Some((Ipv4Addr::from(v4), Embedding::SixToFour));
    }
    None
}

/// A refusal by the address policy, naming the address and the range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "address {ip} is {range}{}; refused by the address policy (list it in the target's allow_addresses to permit it)",
    carried(carried_in)
)]
pub struct AddressDenied {
    /// The address judged: the IPv4 address an IPv6 address carries, when
    /// that is what was refused.
    pub ip: IpAddr,
    /// The name of the denied range.
    pub range: &'static str,
    /// The IPv6 address that carried `ip`, and how.
    pub carried_in: Option<(Ipv6Addr, Embedding)>,
}

fn carried(c: &Option<(Ipv6Addr, Embedding)>) -> String {
    match c {
        Some((v6, how)) => format!(" (carried in {v6}, {how})"),
        None => String::new(),
    }
}

/// The address `ip` stands for: an IPv4-mapped address unwrapped, so a
/// private IPv4 address can't slip through in IPv6 clothing. Other
/// embeddings are judged by [`check_address`] without unwrapping, since the
/// IPv6 address is what gets dialed.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Decides whether `ip` may be reached, given a target's explicit
/// `allow_addresses`. An IPv6 address is judged as itself and, when it
/// carries an IPv4 address, as that address too: both must pass (a range
/// listed in `allow_addresses` passes).
pub fn check_address(ip: IpAddr, allow: &[Cidr]) -> Result<(), AddressDenied> {
    let allowed = |ip: IpAddr| allow.iter().any(|net| net.contains(ip));
    let denied = |ip: IpAddr| DENIED.iter().find(|d| d.net.contains(ip));
    if allowed(ip) {
        return Ok(());
    }
    let v6 = match ip {
        IpAddr::V4(_) => {
            return match denied(ip) {
                Some(d) => Err(AddressDenied {
                    ip,
                    range: d.name,
                    carried_in: None,
                }),
                None => Ok(()),
            };
        }
        IpAddr::V6(v6) => v6,
    };
    if let Some(d) = denied(ip) {
        return Err(AddressDenied {
            ip,
            range: d.name,
            carried_in: None,
        });
    }
    let Some((v4, how)) = embedded_ipv4(v6) else {
        return Ok(());
    };
    let v4 = IpAddr::V4(v4);
    if allowed(v4) {
        return Ok(());
    }
    match denied(v4) {
        Some(d) => Err(AddressDenied {
            ip: v4,
            range: d.name,
            carried_in: Some((v6, how)),
        }),
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
    fn ipv6_addresses_are_judged_by_the_ipv4_address_they_carry() {
        for (addr, v4, how) in [
            ("::ffff:a9fe:a9fe", "169.254.169.254", Embedding::Mapped),
            (
                "::ffff:0:a9fe:a9fe",
                "169.254.169.254",
                Embedding::Translated,
            ),
            ("::a9fe:a9fe", "169.254.169.254", Embedding::Compatible),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254", Embedding::Nat64),
            ("2002:a9fe:a9fe::", "169.254.169.254", Embedding::SixToFour),
            (
                "2002:a9fe:a9fe:1234::99",
                "169.254.169.254",
                Embedding::SixToFour,
            ),
            ("64:ff9b::7f00:2", "127.0.0.2", Embedding::Nat64),
            ("2002:7f00:2::", "127.0.0.2", Embedding::SixToFour),
            ("::ffff:10.0.0.1", "10.0.0.1", Embedding::Mapped),
        ] {
            let denied = check_address(ip(addr), &[]).expect_err(addr);
            assert_eq!(denied.ip, ip(v4), "{addr}");
            assert_eq!(
                denied.carried_in,
                Some((addr.parse().expect("v6"), how)),
                "{addr}"
            );
            assert!(
                denied.to_string().contains(&format!("{v4} is ")),
                "{denied}"
            );
        }
        assert_eq!(embedded_ipv4("::1".parse().expect("v6")), None);
        assert_eq!(embedded_ipv4("::".parse().expect("v6")), None);
        assert_eq!(embedded_ipv4("2001:db8::1".parse().expect("v6")), None);
        // Public IPv4 in any clothing is fine.
        for addr in [
            "64:ff9b::11bc:8f01",
            "2002:11bc:8f01::",
            "::ffff:17.188.143.1",
        ] {
            assert!(check_address(ip(addr), &[]).is_ok(), "{addr}");
        }
        // The allow list lifts the carried address too.
        let allow: Vec<Cidr> = vec!["127.0.0.2/32".parse().expect("cidr")];
        assert!(check_address(ip("64:ff9b::7f00:2"), &allow).is_ok());
    }

    #[test]
    fn prefixes_whose_embedded_address_cannot_be_checked_are_refused_whole() {
        for (addr, range) in [
            ("64:ff9b:1::a9fe:a9fe", "NAT64 local-use"),
            ("64:ff9b:1:ffff::1", "NAT64 local-use"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ] {
            let denied = check_address(ip(addr), &[]).expect_err(addr);
            assert!(denied.range.starts_with(range), "{addr}: {denied}");
        }
        let allow: Vec<Cidr> = vec!["2001::/32".parse().expect("cidr")];
        assert!(check_address(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2"), &allow).is_ok());
        // Neighbours of those prefixes are ordinary addresses.
        assert!(check_address(ip("64:ff9b:2::1"), &[]).is_ok());
        assert!(check_address(ip("2001:4860::8888"), &[]).is_ok());
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
