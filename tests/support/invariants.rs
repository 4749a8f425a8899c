//! What must hold for any input to the parsers that read hostile bytes:
//! the configuration, a proxy's CONNECT reply, the app's request head, a
//! destination and the address policy. One function per entry point, each
//! panicking when an invariant breaks.
//!
//! Shared by the property tests (`tests/properties.rs`, in `cargo test`)
//! and the `cargo fuzz` targets (`fuzz/fuzz_targets/`), which include this
//! file by path: a finding of either is a failure of the other. It uses
//! the library's public API only, and no other support module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use egress_sentinel::config::Config;
use egress_sentinel::destination::{Host, parse_authority, parse_host};
use egress_sentinel::dial::connect::{ConnectError, MAX_REPLY, exchange};
use egress_sentinel::forward::request::{self, Ask, MAX_HEAD};
use egress_sentinel::policy::{Cidr, canonical, check_address, embedded_ipv4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// === configuration ===

/// The folder config paths are read from: it does not exist, so every file
/// a config names fails to open.
const CONFIG_PATH: &str = "/nonexistent-egress-invariants/sidecar.toml";

/// True when `text` could name a device or a kernel file by an absolute
/// path (`/dev/stdin` would block a read), directly or through a TOML
/// `\u` escape: such inputs are not parsed.
pub fn config_may_name_a_device(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "/run", "\\u", "\\U"]
        .iter()
        .any(|p| text.contains(p))
}

/// `Config::parse` on `text`: a config whose targets all have a name and a
/// route, or an error that names the file and, when it has a place, a line
/// of the text and a column.
pub fn config(text: &str) {
    if config_may_name_a_device(text) {
        return;
    }
    match Config::parse(Path::new(CONFIG_PATH), text) {
        Ok(config) => {
            for target in &config.targets {
                assert!(!target.name.is_empty(), "{target:?}");
                assert!(!target.routes.is_empty(), "{target:?}");
            }
        }
        Err(e) => {
            let lines = text.split('\n').count();
            if let Some(line) = e.line {
                assert!(
                    (1..=lines).contains(&line),
                    "{e}: the text has {lines} lines"
                );
                assert!(e.column.is_some_and(|c| c >= 1), "{e}");
            }
            let message = e.to_string();
            assert!(message.starts_with(CONFIG_PATH), "{message}");
        }
    }
}

// === CONNECT reply ===

/// [`exchange`] against a proxy that writes `reply` in pieces of `chunk`
/// bytes and then closes: it ends, and on success the stream carries on
/// exactly after the reply head; every status line and detail is bounded
/// and printable.
pub async fn connect_reply(reply: &[u8], chunk: usize) {
    let (client, mut proxy) = tokio::io::duplex(4 * MAX_REPLY.max(reply.len()));
    let feed = async {
        for part in reply.chunks(chunk.max(1)) {
            if proxy.write_all(part).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = proxy.shutdown().await;
        proxy
    };
    let (proxy, result) = tokio::join!(feed, exchange(Box::new(client), "a.example:443", None));
    match result {
        Ok((mut stream, seen)) => {
            assert!((200..300).contains(&seen.status), "{seen:?}");
            assert!(seen.status_line.len() < 300, "{seen:?}");
            assert!(!seen.to_string().chars().any(char::is_control), "{seen}");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.expect("in-memory read");
            assert!(reply.ends_with(&rest), "the bytes after the head changed");
            let head = &reply[..reply.len() - rest.len()];
            assert!(head.len() <= MAX_REPLY, "{} bytes of head", head.len());
            assert!(
                head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        Err(ConnectError::Refused(r)) => {
            assert!(!(200..300).contains(&r.status), "{r:?}");
            assert!(r.status_line.len() < 300, "{r:?}");
            assert!(!r.to_string().chars().any(char::is_control), "{r}");
        }
        Err(ConnectError::Closed { received }) => assert!(received <= reply.len()),
        Err(ConnectError::Malformed(m)) => assert!(m.len() < 1024, "{m}"),
        Err(ConnectError::Oversized) => {}
        Err(ConnectError::Io(e)) => panic!("an in-memory stream failed: {e}"),
    }
    drop(proxy);
}

// === the app's request ===

fn canonical_host(host: &str, port: u16) {
    assert_ne!(port, 0);
    let again = parse_host(host)
        .unwrap_or_else(|e| panic!("the canonical host {host:?} does not parse again: {e}"));
    assert_eq!(again.to_string(), host);
    host_round_trip(&again, port);
}

/// [`request::parse`] on a complete head, and [`request::read`] on the same
/// bytes sent by an app that then stops writing: a request with a canonical
/// host, or a 400 or 431; the bytes after the head are handed on untouched.
pub async fn request_head(data: &[u8]) {
    match request::parse(data) {
        Ok(Ask::Connect { host, port }) => canonical_host(&host, port),
        Ok(Ask::Http { host, port, head }) => {
            canonical_host(&host, port);
            assert_eq!(head, data);
        }
        Err(r) => assert!(matches!(r.status, 400 | 431), "{r:?}"),
    }
    let (mut app, mut proxy) = tokio::io::duplex(2 * MAX_HEAD.max(data.len()));
    app.write_all(data).await.expect("fits the duplex");
    app.shutdown().await.expect("shutdown");
    match request::read(&mut proxy, Duration::from_secs(10)).await {
        Ok((_, rest)) => {
            assert!(data.ends_with(&rest), "the bytes after the head changed");
            let head = &data[..data.len() - rest.len()];
            assert!(head.ends_with(b"\r\n\r\n"));
            assert!(head.len() <= MAX_HEAD, "{} bytes of head", head.len());
        }
        Err(r) => assert!(matches!(r.status, 400 | 431), "{r:?}"),
    }
}

// === destinations and the address policy ===

/// A parsed host prints in a canonical form that parses back to the same
/// host, also as `host:port`; a literal's addresses obey [`policy`].
pub fn host_round_trip(host: &Host, port: u16) {
    let text = host.to_string();
    assert_eq!(parse_host(&text).as_ref(), Ok(host), "{text:?}");
    let authority = host.authority(port);
    assert_eq!(
        parse_authority(&authority, None),
        Ok((host.clone(), port)),
        "{authority:?}"
    );
    for ip in host.literal_addresses().unwrap_or_default() {
        policy(ip, &[]);
    }
}

/// `parse_host` on `text`: see [`host_round_trip`].
pub fn host_text(text: &str) {
    if let Ok(host) = parse_host(text) {
        host_round_trip(&host, 443);
    }
}

/// `parse_authority` on `text`, with and without a default port.
pub fn authority_text(text: &str) {
    for default in [None, Some(80)] {
        if let Ok((host, port)) = parse_authority(text, default) {
            assert_ne!(port, 0, "{text:?}");
            host_round_trip(&host, port);
        }
    }
}

/// A network that parsed prints as text that parses to the same network.
pub fn cidr_text(text: &str) {
    if let Ok(cidr) = text.parse::<Cidr>() {
        let printed = cidr.to_string();
        let again: Cidr = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}: {e}"));
        assert_eq!(again, cidr, "{text:?}");
    }
}

/// [`check_address`]: with no allow list, an address is refused exactly
/// when the address it stands for (`canonical`) is, and a refused IPv4
/// address stays refused in any IPv6 clothing (mapped, NAT64, 6to4);
/// listing an address allows it; allowing more never refuses more; a
/// refusal names the address or the IPv4 address it carries.
pub fn policy(ip: IpAddr, allow: &[Cidr]) {
    let verdict = check_address(ip, allow);
    let carried = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(|(v4, _)| IpAddr::V4(v4)),
        IpAddr::V4(_) => None,
    };
    if allow.is_empty() {
        let stands_for = canonical(ip);
        assert_eq!(
            verdict.is_ok(),
            check_address(stands_for, &[]).is_ok(),
            "{ip} and {stands_for}"
        );
        if let Some(v4) = carried {
            if check_address(v4, &[]).is_err() {
                assert!(verdict.is_err(), "{ip} carries the refused {v4}");
            }
        }
        if let IpAddr::V4(v4) = ip {
            if verdict.is_err() {
                for v6 in [v4.to_ipv6_mapped(), nat64(v4), six_to_four(v4)] {
                    assert!(
                        check_address(IpAddr::V6(v6), &[]).is_err(),
                        "{v6} carries the refused {v4}"
                    );
                }
            }
        }
    } else if check_address(ip, &[]).is_ok() {
        assert!(verdict.is_ok(), "allowing more refused {ip}");
    }
    if let Err(denied) = &verdict {
        assert!(
            denied.ip == ip || Some(denied.ip) == carried,
            "{ip}: {denied}"
        );
    }
    let exact: Cidr = match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
    .parse()
    .expect("an address is a network");
    assert!(
        check_address(ip, &[exact]).is_ok(),
        "{ip} listed, yet refused"
    );
}

fn nat64(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4)))
}

fn six_to_four(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(u32::from(v4)) << 80))
}

/// The network of `addr` with `prefix` bits (host bits cleared; the prefix
/// taken modulo the family's length + 1).
pub fn network(addr: IpAddr, prefix: u8) -> Cidr {
    let text = match addr {
        IpAddr::V4(a) => {
            let p = u32::from(prefix) % 33;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            format!("{}/{p}", Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let p = u32::from(prefix) % 129;
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            format!("{}/{p}", Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    text.parse()
        .unwrap_or_else(|e| panic!("the masked network {text}: {e}"))
}

/// Reads raw fuzz bytes as an address (IPv4 or IPv6 by the first byte) and
/// up to four allow-list networks of 17 bytes (prefix, 16 address bytes),
/// then checks [`policy`].
pub fn policy_bytes(mut data: &[u8]) {
    fn take<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = data.split_first_chunk::<N>()?;
        *data = rest;
        Some(*head)
    }
    let Some([family]) = take::<1>(&mut data) else {
        return;
    };
    let ip = if family % 2 == 0 {
        let Some(b) = take::<4>(&mut data) else {
            return;
        };
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let Some(b) = take::<16>(&mut data) else {
            return;
        };
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let mut allow = Vec::new();
    while allow.len() < 4 {
        let Some([prefix, bytes @ ..]) = take::<17>(&mut data) else {
            break;
        };
        let addr = if prefix % 2 == 0 {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(bytes))
        };
        allow.push(network(addr, prefix / 2));
    }
    policy(ip, &allow);
}

/// The destination fuzz target's input: the first byte picks the entry
/// point (host, authority, network, raw policy input), the rest is its input.
pub fn destination_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(rest);
    match (mode % 4, text) {
        (0, Ok(t)) => host_text(t),
        (1, Ok(t)) => authority_text(t),
        (2, Ok(t)) => cidr_text(t),
        (3, _) => policy_bytes(rest),
        _ => {}
    }
}

/// A current-thread runtime with the clock paused (timeouts fire at once
/// when nothing else can run), for the async invariants.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}
