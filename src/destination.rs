//! The one canonical destination parser. Every host the sidecar is asked to
//! reach — a `CONNECT` authority, an absolute `http://` URL, a target's URL,
//! a `[resolve]` key — goes through [`parse_host`], so the address policy
//! judges the address a spelling *means*, not the spelling.
//!
//! Recognised, and mapped to the address they mean:
//! - every IPv4 form `inet_aton` accepts: one to four parts, each decimal,
//!   hex (`0x7f`) or octal (`0177`), the last part filling the remaining
//!   bytes (`2130706434`, `0x7F000002`, `0177.0.0.02`, `127.2`, `127.0.2`),
//!   with or without one trailing dot;
//! - IPv6 as `inet_pton` reads it, bare or in brackets, with a zone id
//!   (`fe80::1%eth0`, or `%25eth0` inside brackets as RFC 6874 writes it).
//!   The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4...) is
//!   the policy's business: see [`crate::policy::embedded_ipv4`];
//! - `localhost` and `*.localhost` (RFC 6761): always loopback, never asked
//!   of DNS.
//!
//! Everything else must be a DNS name in ASCII (Punycode `xn--` labels pass;
//! one trailing dot is accepted and dropped). A name whose last label is a
//! number (`1.2.3.4.5`, `foo.0x7f`) is neither a name nor an address and is
//! refused, as are whitespace, empty labels and any other character.
//!
//! Pure functions only: nothing here resolves or dials.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest DNS name (without the trailing dot).
const MAX_NAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;
/// The longest zone id kept (an interface name or index).
const MAX_ZONE: usize = 64;

/// A destination host, in the one form the rest of the sidecar uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: ASCII, lower case, no trailing dot.
    Name(String),
    /// An IP address, however it was spelled.
    Ip {
        /// The address.
        addr: IpAddr,
        /// The IPv6 zone id (`eth0`, `2`), if one was given.
        zone: Option<String>,
    },
    /// `localhost` or a name under `.localhost` (lower case, no trailing
    /// dot): loopback by definition (RFC 6761).
    Localhost(String),
}

/// The addresses `localhost` means.
pub const LOCALHOST: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Why a host or authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is neither a DNS name nor an IP address: {why}")]
pub struct HostError {
    /// The input, sanitised and shortened for a message.
    pub input: String,
    /// What is wrong with it.
    pub why: String,
}

fn refuse(input: &str, why: impl Into<String>) -> HostError {
    HostError {
        input: printable(input),
        why: why.into(),
    }
}

/// Printable ASCII only, at most 100 characters: the input is hostile.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if s.chars().count() > 100 {
        out.push('…');
    }
    out
}

// === impl Host ===

impl Host {
    /// The addresses this host means without asking DNS: the address of a
    /// literal, loopback for `localhost`; `None` for a DNS name.
    pub fn literal_addresses(&self) -> Option<Vec<IpAddr>> {
        match self {
            Self::Name(_) => None,
            Self::Ip { addr, .. } => Some(vec![*addr]),
            Self::Localhost(_) => Some(LOCALHOST.to_vec()),
        }
    }

    /// `host:port`, with brackets around an IPv6 address (the zone written
    /// as RFC 6874 does, `%25eth0`).
    pub fn authority(&self, port: u16) -> String {
        match self {
            Self::Ip {
                addr: IpAddr::V6(a),
                zone,
            } => match zone {
                Some(z) => format!("[{a}%25{z}]:{port}"),
                None => format!("[{a}]:{port}"),
            },
            other => format!("{other}:{port}"),
        }
    }
}

impl fmt::Display for Host {
    /// The canonical text: parsing it again gives the same `Host`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) | Self::Localhost(n) => f.write_str(n),
            Self::Ip { addr, zone: None } => write!(f, "{addr}"),
            Self::Ip {
                addr,
                zone: Some(z),
            } => write!(f, "{addr}%{z}"),
        }
    }
}

// === parsing ===

/// Parses a host: a DNS name, an IPv4 address in any `inet_aton` spelling,
/// an IPv6 address (bare or bracketed, optionally with a zone id), or
/// `localhost`.
pub fn parse_host(input: &str) -> Result<Host, HostError> {
    if input.is_empty() {
        return Err(refuse(input, "it is empty"));
    }
    if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            input,
            format!("it contains whitespace or a control character ({c:?})"),
        ));
    }
    if let Some(inner) = input.strip_prefix('[') {
        return bracketed_ipv6(input, inner);
    }
    if input.contains(':') {
        let (addr, zone) = match input.split_once('%') {
            Some((a, z)) => (a, Some(z)),
            None => (input, None),
        };
        return ipv6_with_zone(input, addr, zone);
    }
    if !input.is_ascii() {
        return Err(refuse(
            input,
            "it is not ASCII: send an internationalised name in Punycode (xn--...)",
        ));
    }
    // One trailing dot names the root: `api.push.apple.com.` is
    // `api.push.apple.com`. Two are an empty label.
    let body = input.strip_suffix('.').unwrap_or(input);
    if body.is_empty() {
        return Err(refuse(input, "it has no labels"));
    }
    if let Some(v4) = parse_ipv4(body) {
        return Ok(Host::Ip {
            addr: IpAddr::V4(v4),
            zone: None,
        });
    }
    dns_name(input, body)
}

/// `[addr]` or `[addr%25zone]`; `inner` is what follows the `[`.
fn bracketed_ipv6(input: &str, inner: &str) -> Result<Host, HostError> {
    let inner = inner
        .strip_suffix(']')
        .ok_or_else(|| refuse(input, "an opening '[' without its closing ']'"))?;
    // RFC 6874: a zone id inside brackets is written `%25zone`.
    let (addr, zone) = match inner.split_once('%') {
        Some((a, z)) => (a, Some(z.strip_prefix("25").unwrap_or(z))),
        None => (inner, None),
    };
    ipv6_with_zone(input, addr, zone)
}

/// `body` (`input` without its trailing dot), which is not an IPv4 address,
/// as a DNS name or `localhost`.
fn dns_name(input: &str, body: &str) -> Result<Host, HostError> {
    let labels: Vec<&str> = body.split('.').collect();
    if labels.last().is_some_and(|l| looks_numeric(l)) {
        return Err(refuse(
            input,
            "its last label is a number, so it would be read as an IPv4 address, but it is not a valid one",
        ));
    }
    if body.len() > MAX_NAME {
        return Err(refuse(
            input,
            format!("a DNS name has at most {MAX_NAME} characters"),
        ));
    }
    for label in &labels {
        check_label(input, label)?;
    }
    let name = body.to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Ok(Host::Localhost(name));
    }
    Ok(Host::Name(name))
}

/// One DNS label: not empty, not too long, letters, digits, `-` and `_`.
fn check_label(input: &str, label: &str) -> Result<(), HostError> {
    if label.is_empty() {
        return Err(refuse(input, "it has an empty label (\"..\")"));
    }
    if label.len() > MAX_LABEL {
        return Err(refuse(
            input,
            format!("a DNS label has at most {MAX_LABEL} characters"),
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(refuse(
            input,
            format!("{c:?} is not allowed in a DNS name (letters, digits, '-' and '_' only)"),
        ));
    }
    Ok(())
}

fn ipv6_with_zone(input: &str, addr: &str, zone: Option<&str>) -> Result<Host, HostError> {
    let addr = parse_ipv6(addr).ok_or_else(|| {
        refuse(
            input,
            "it has a ':' but is not an IPv6 address (an IPv6 host needs brackets with a port: [::1]:443)",
        )
    })?;
    let zone = match zone {
        None => None,
        Some(z) => {
            let ok = !z.is_empty()
                && z.len() <= MAX_ZONE
                && z.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
            if !ok {
                return Err(refuse(
                    input,
                    "the zone id after '%' must be an interface name or index",
                ));
            }
            Some(z.to_string())
        }
    };
    Ok(Host::Ip {
        addr: IpAddr::V6(addr),
        zone,
    })
}

/// True when a label would make a URL parser read the host as IPv4: all
/// decimal digits, or `0x` followed by hex digits.
fn looks_numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Parses `host:port` (a `CONNECT` target, a URL's authority). Without a
/// port, `default_port` is used when given; otherwise the port is required.
pub fn parse_authority(input: &str, default_port: Option<u16>) -> Result<(Host, u16), HostError> {
    let (host, port) = if input.starts_with('[') {
        match input.find(']') {
            Some(end) => {
                let (h, rest) = input.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None if rest.is_empty() => (h, None),
                    None => return Err(refuse(input, "junk after the ']'")),
                }
            }
            None => return Err(refuse(input, "an opening '[' without its closing ']'")),
        }
    } else {
        match input.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(refuse(
                    input,
                    "an IPv6 address needs brackets with a port: [::1]:443",
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (input, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => parse_port(p).ok_or_else(|| {
            refuse(
                input,
                format!(
                    "the port {:?} is not a number from 1 to 65535",
                    printable(p)
                ),
            )
        })?,
        (None, Some(d)) => d,
        (None, None) => return Err(refuse(input, "a port is required: host:port")),
    };
    Ok((parse_host(host)?, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Parses IPv4 exactly as glibc's `inet_aton` does when nothing may follow
/// the address: one to four parts separated by dots, each decimal, hex
/// (`0x`) or octal (leading `0`); all parts but the last are one byte, the
/// last fills the bytes that remain (`127.1` is 127.0.0.1).
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in s.split('.') {
        if count == 4 {
            return None;
        }
        parts[count] = parse_ipv4_part(part)?;
        count += 1;
    }
    let (last, leading) = parts[..count].split_last()?;
    if leading.iter().any(|p| *p > 0xff) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if room < 32 && *last >> room != 0 {
        return None;
    }
    let mut word = *last;
    for (i, p) in leading.iter().enumerate() {
        word |= p << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(word))
}

/// One part, as `strtoul(part, &end, 0)` with nothing left over: `None`
/// when it is empty, has a digit its base does not have, or exceeds 32 bits.
fn parse_ipv4_part(part: &str) -> Option<u32> {
    if !part.bytes().next()?.is_ascii_digit() {
        return None;
    }
    let (digits, radix) =
        if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            // strtoul reads "0x" with no hex digit after it as "0" followed by
            // junk: refused.
            if h.is_empty() {
                return None;
            }
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    let mut value: u64 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value * u64::from(radix) + u64::from(d);
        if value > u64::from(u32::MAX) {
            // Keep checking the digits (junk still makes it junk), but the
            // value is already out of range.
            value = u64::from(u32::MAX) + 1;
        }
    }
    u32::try_from(value).ok()
}

/// Parses IPv6 as `inet_pton(AF_INET6)` does (no zone id, no brackets).
pub fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    // The standard library's parser follows RFC 4291 as inet_pton does:
    // groups of one to four hex digits, one "::", a dotted-decimal IPv4
    // tail without leading zeros (the property tests hold it to the
    // platform's inet_pton).
    s.parse::<Ipv6Addr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip {
            addr: s.parse().expect("test address"),
            zone: None,
        }
    }

    #[test]
    fn every_inet_aton_spelling_of_the_metadata_address_is_that_address() {
        for spelling in [
            "169.254.169.254",
            "2852039166",
            "0xA9FEA9FE",
            "0xa9fea9fe",
            "0251.0376.0251.0376",
            "0251.254.43518",
            "169.254.43518",
            "169.16689662",
            "0xa9.0xfe.0xa9.0xfe",
            "0xA9.0376.169.0xfe",
            "169.254.169.254.",
            "00000000251.0376.0251.0376",
            "0x00000000a9fea9fe",
        ] {
            assert_eq!(
                parse_host(spelling),
                Ok(ip("169.254.169.254")),
                "{spelling}"
            );
        }
        assert_eq!(parse_host("127.1"), Ok(ip("127.0.0.1")));
        assert_eq!(parse_host("127.0.2"), Ok(ip("127.0.0.2")));
        assert_eq!(parse_host("0"), Ok(ip("0.0.0.0")));
    }

    #[test]
    fn what_inet_aton_refuses_is_refused() {
        for bad in [
            "256.1.1.1",
            "1.256.1.1",
            "1.2.3.256",
            "1.2.65536",
            "1.16777216",
            "4294967296",
            "08.1.1.1",
            "0x.1.1.1",
            "0x",
            "1..2",
            ".1.2.3",
            "1.2.3.4.5",
            "1.2.3.4..",
            "0xfoo.1",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.4\t",
            "1.2.3.4\0",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{bad:?}");
            assert!(parse_host(bad).is_err(), "{bad:?} -> {:?}", parse_host(bad));
        }
    }

    #[test]
    fn ipv6_in_brackets_bare_and_with_zones() {
        assert_eq!(parse_host("[::1]"), Ok(ip("::1")));
        assert_eq!(parse_host("::1"), Ok(ip("::1")));
        assert_eq!(
            parse_host("[::ffff:a9fe:a9fe]"),
            Ok(ip("::ffff:169.254.169.254"))
        );
        assert_eq!(
            parse_host("[64:ff9b::169.254.169.254]"),
            Ok(ip("64:ff9b::a9fe:a9fe"))
        );
        let zoned = Host::Ip {
            addr: "fe80::1".parse().expect("addr"),
            zone: Some("eth0".into()),
        };
        assert_eq!(parse_host("[fe80::1%25eth0]"), Ok(zoned.clone()));
        assert_eq!(parse_host("[fe80::1%eth0]"), Ok(zoned.clone()));
        assert_eq!(parse_host("fe80::1%eth0"), Ok(zoned.clone()));
        assert_eq!(zoned.to_string(), "fe80::1%eth0");
        assert_eq!(zoned.authority(443), "[fe80::1%25eth0]:443");
        for bad in [
            "[::1",
            "[127.0.0.1]",
            "[fe80::1%]",
            "fe80::1%a/b",
            ":::1",
            "[::1]x",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_normalised_and_junk_is_refused_with_a_reason() {
        assert_eq!(
            parse_host("API.push.apple.com."),
            Ok(Host::Name("api.push.apple.com".into()))
        );
        assert_eq!(
            parse_host("xn--bcher-kva.example"),
            Ok(Host::Name("xn--bcher-kva.example".into()))
        );
        assert_eq!(
            parse_host("LocalHost."),
            Ok(Host::Localhost("localhost".into()))
        );
        assert_eq!(
            parse_host("metadata.localhost"),
            Ok(Host::Localhost("metadata.localhost".into()))
        );
        assert_eq!(
            parse_host("_acme.example"),
            Ok(Host::Name("_acme.example".into()))
        );
        for (bad, why) in [
            ("bücher.example", "Punycode"),
            ("a..b", "empty label"),
            ("a.b..", "empty label"),
            (".", "no labels"),
            ("", "empty"),
            ("a b", "whitespace"),
            ("evil.example%2f", "not allowed"),
            ("user@evil.example", "not allowed"),
            ("1.2.3.4.5", "last label is a number"),
            ("foo.0x7f", "last label is a number"),
            ("foo.123", "last label is a number"),
        ] {
            let e = parse_host(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(parse_host(&long).is_err());
        let too_long = vec!["abcdefghi"; 26].join(".");
        assert!(parse_host(&too_long).is_err());
    }

    #[test]
    fn authorities_need_a_port_unless_one_is_defaulted() {
        assert_eq!(
            parse_authority("2130706434:443", None),
            Ok((ip("127.0.0.2"), 443))
        );
        assert_eq!(
            parse_authority("[::ffff:7f00:2]:8443", None),
            Ok((ip("::ffff:127.0.0.2"), 8443))
        );
        assert_eq!(
            parse_authority("example.test", Some(80)),
            Ok((Host::Name("example.test".into()), 80))
        );
        assert_eq!(parse_authority("[::1]", Some(80)), Ok((ip("::1"), 80)));
        for bad in [
            "example.test",
            "example.test:",
            "example.test:0",
            "example.test:65536",
            "example.test:+443",
            "example.test: 443",
            "::1:443",
            "[::1]443",
            "[::1",
        ] {
            assert!(parse_authority(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_host() {
        for s in [
            "0x7f.1",
            "[::ffff:7f00:2]",
            "fe80::1%eth0",
            "Example.TEST.",
            "localhost",
            "2002:a9fe:a9fe::",
        ] {
            let h = parse_host(s).expect(s);
            assert_eq!(parse_host(&h.to_string()), Ok(h.clone()), "{s}");
            let (back, port) = parse_authority(&h.authority(443), None).expect("authority");
            assert_eq!((back, port), (h, 443), "{s}");
        }
    }
}
