//! Never the hop to loopback or a metadata service, in any spelling.
//!
//! 127.0.0.2 stands in for 169.254.169.254: a decoy listens there and must
//! see no connection from the sidecar, while real Squid, asked directly
//! with the same spellings, does reach it — so a miss would show. Squid
//! here refuses anything off loopback before dialing, so a NAT64 or 6to4
//! spelling can never leave the machine even if something let it through.
//! The real metadata spellings are tested on the pure parser and policy,
//! and property tests hold the parser to the platform's own `inet_aton` and
//! `inet_pton`.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use egress_sentinel::config::Config;
use egress_sentinel::destination::{Host, parse_host, parse_ipv4, parse_ipv6};
use egress_sentinel::forward::plan;
use egress_sentinel::forward::request::{self, Ask};
use egress_sentinel::policy::check_address;
use proptest::prelude::*;
use support::Workspace;
use support::config::{Route, Target, Toml};
use support::sidecar::{Running, eventually};
use support::squid::{self, Squid};
use support::upstream::{Opts, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Spellings of 127.0.0.2, and whether Squid alone may be asked with it:
/// only spellings the kernel reaches on loopback. (A trailing dot makes
/// Squid look the text up as a name; NAT64, 6to4 and IPv4-compatible
/// addresses would be routed off this machine.)
const SPELLINGS: &[(&str, bool)] = &[
    ("127.0.0.2", true),
    ("2130706434", true),
    ("0x7F000002", true),
    ("0x7f000002", true),
    ("0177.0.0.02", true),
    ("0177.0.0.2", true),
    ("0x7f.0.0.2", true),
    ("0x7f.2", true),
    ("127.2", true),
    ("127.0.2", true),
    ("127.0.0.2.", false),
    ("[::ffff:7f00:2]", true),
    ("[::ffff:127.0.0.2]", true),
    ("[0:0:0:0:0:FFFF:7F00:0002]", true),
    ("[64:ff9b::7f00:2]", false),
    ("[64:ff9b::127.0.0.2]", false),
    ("[2002:7f00:2::]", false),
    ("[::7f00:2]", false),
    ("localhost", true),
    ("LocalHost.", false),
    ("decoy.localhost", true),
];

/// Names Squid's hosts file maps to the decoy.
const SQUID_MAPS_TO_DECOY: &[(&str, &str)] = &[
    ("127.0.0.2", "localhost"),
    ("127.0.0.2", "decoy.localhost"),
    ("127.0.0.2", "metadata.test"),
];

/// Squid that knows push.test, maps the names above to the decoy, and
/// refuses anything off loopback.
fn start_squid(bin: &std::path::Path) -> Squid {
    Squid::start_guarded(bin, &["push.test"], SQUID_MAPS_TO_DECOY)
}

async fn decoy() -> Upstream {
    let mut opts = Opts::new("decoy.test");
    opts.bind = "127.0.0.2:0".parse().expect("addr");
    opts.start().await
}

/// The sidecar in front of Squid, with `default = "proxy"`: the setting
/// under which unmatched destinations reach the proxy at all.
fn sidecar_config(squid: &Squid, push_port: u16, decoy_port: u16) -> Toml {
    Toml::new()
        .probe(|p| p.interval("5s").timeout("5s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("metadata.test", "127.0.0.2")
        .resolve_all("nowhere.test", &[])
        .route(Route::proxy("squid", &squid.url()).connect_timeout("5s"))
        .target(
            Target::new("push", &format!("https://push.test:{push_port}/"))
                .routes(&["squid"])
                .ca_file("ca.pem"),
        )
        .forward(|f| {
            f.proxy_unmatched(&["squid"])
                .allow_ports(&[443, decoy_port])
                .header_timeout("2s")
        })
}

/// Sends `request` to `proxy`; the reply: everything up to the close for a
/// refusal, the head alone for a tunnel (which stays open).
async fn ask(proxy: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            }
            if reply.starts_with(b"HTTP/1.1 200") && reply.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a reply within 10 s");
    String::from_utf8_lossy(&reply).into_owned()
}

fn connect(authority: &str) -> String {
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n")
}

/// Asserts the sidecar itself refused with 403 `policy_denied`.
fn assert_refused_by_us(reply: &str, what: &str, why: &str) {
    assert!(
        reply.starts_with("HTTP/1.1 403 "),
        "{what}: expected our 403, got:\n{reply}"
    );
    // Header names are case-insensitive (hyper writes them in lower case).
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("proxy-status: egress-sentinel;"),
        "{what}: the 403 is not ours:\n{reply}"
    );
    assert!(
        reply.contains("policy_denied") && reply.contains(why),
        "{what}: expected policy_denied and {why:?}:\n{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_metadata_stand_in_is_refused_although_squid_would_reach_it() {
    let Some(bin) = squid::available() else {
        return;
    };
    let decoy = decoy().await;
    let push = Opts::new("push.test").start().await;
    let squid = start_squid(bin);
    let ws = Workspace::new();
    let sidecar =
        Running::start(ws.config(sidecar_config(&squid, push.port(), decoy.port()))).await;
    let port = decoy.port();

    for (spelling, _) in SPELLINGS {
        let reply = ask(sidecar.proxy, &connect(&format!("{spelling}:{port}"))).await;
        assert_refused_by_us(&reply, spelling, "is loopback");
    }
    // The same through an absolute-form http:// request.
    for spelling in ["2130706434", "0x7f.2", "[::ffff:7f00:2]", "localhost"] {
        let reply = ask(
            sidecar.proxy,
            &format!("GET http://{spelling}:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        )
        .await;
        assert_refused_by_us(&reply, spelling, "is loopback");
    }
    // What is neither a name nor an address gets 400, saying why.
    for (bad, why) in [
        ("127.0.0.2.5", "last label is a number"),
        ("decoy..test", "empty label"),
    ] {
        let reply = ask(sidecar.proxy, &connect(&format!("{bad}:{port}"))).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{bad}: {reply}");
        assert!(reply.contains(why), "{bad}: {reply}");
    }
    assert_eq!(decoy.connections(), 0, "the sidecar let a spelling through");
    // Squid's log holds the push probes (and the readiness check's empty
    // connection), nothing else.
    let log = squid.access_log();
    assert!(
        log.lines()
            .filter(|l| !l.contains("error:transaction-end-before-headers"))
            .all(|l| l.contains("CONNECT push.test:")),
        "squid was asked for more than the push probes:\n{log}"
    );

    // Squid alone reaches the decoy with the loopback spellings: without
    // the sidecar's parser these would all have got through.
    let mut reached = 0;
    for (spelling, kernel_reaches) in SPELLINGS {
        if !kernel_reaches {
            continue;
        }
        let reply = ask(squid.addr, &connect(&format!("{spelling}:{port}"))).await;
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "squid did not tunnel {spelling}, so this test proves nothing for it:\n{reply}\n{}",
            squid.log()
        );
        reached += 1;
        eventually(
            Duration::from_secs(5),
            &format!("the decoy to see squid's connection for {spelling}"),
            || async { (decoy.connections() >= reached).then_some(()) },
        )
        .await;
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_points_at_the_stand_in_is_refused_before_squid_resolves_it() {
    let Some(bin) = squid::available() else {
        return;
    };
    let decoy = decoy().await;
    let push = Opts::new("push.test").start().await;
    let squid = start_squid(bin);
    let ws = Workspace::new();
    let sidecar =
        Running::start(ws.config(sidecar_config(&squid, push.port(), decoy.port()))).await;
    let port = decoy.port();

    for name in ["metadata.test", "METADATA.test.", "metadata.test."] {
        let reply = ask(sidecar.proxy, &connect(&format!("{name}:{port}"))).await;
        assert_refused_by_us(&reply, name, "resolves to a refused address");
        assert!(reply.contains("127.0.0.2 is loopback"), "{reply}");
    }
    // A name the sidecar cannot resolve cannot be checked: refused too.
    let reply = ask(sidecar.proxy, &connect(&format!("nowhere.test:{port}"))).await;
    assert_refused_by_us(&reply, "nowhere.test", "could not be resolved here");
    assert_eq!(decoy.connections(), 0, "the sidecar let the name through");
    // The target's own name still goes through Squid.
    let reply = ask(
        sidecar.proxy,
        &connect(&format!("push.test:{}", push.port())),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        !squid.access_log().contains("metadata.test"),
        "squid was asked for the name:\n{}",
        squid.access_log()
    );

    // Squid alone resolves the name from its hosts file and reaches the decoy.
    let reply = ask(squid.addr, &connect(&format!("metadata.test:{port}"))).await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{reply}\n{}",
        squid.log()
    );
    eventually(
        Duration::from_secs(5),
        "the decoy to see squid's connection",
        || async { (decoy.connections() >= 1).then_some(()) },
    )
    .await;
    sidecar.stop().await;
}

// === the config uses the same parser ===

/// `resolve` entries (each name to one address) and one direct target
/// `t` probing `url`.
fn config_text(resolve: &[(&str, &str)], url: &str) -> String {
    resolve
        .iter()
        .fold(Toml::new(), |t, (name, address)| t.resolve(name, address))
        .target(Target::new("t", url).routes(&["direct"]))
        .to_string()
}

#[test]
fn the_config_reads_hosts_with_the_same_parser() {
    let ws = Workspace::new();
    let path = ws.path("config.toml");
    let cfg = Config::parse(
        &path,
        &Toml::new()
            .resolve("Push.Test.", "0x7f.1")
            .resolve_all("sms.test", &["127.0.0.1", "[::1]"])
            .target(Target::new("t", "https://2130706433:8443/health").routes(&["direct"]))
            .to_string(),
    )
    .expect("valid");
    assert_eq!(
        cfg.resolve.get("push.test"),
        Some(&[IpAddr::V4(Ipv4Addr::LOCALHOST)][..])
    );
    assert_eq!(
        cfg.resolve.get("sms.test"),
        Some(
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ][..]
        )
    );
    let t = cfg.target("t").expect("target");
    assert_eq!(t.endpoint.host, "127.0.0.1");
    assert_eq!(t.endpoint.url(), "https://127.0.0.1:8443/health");
    let cfg = Config::parse(&path, &config_text(&[], "https://API.example.:443/"))
        .expect("a trailing dot is fine");
    assert_eq!(cfg.target("t").expect("t").endpoint.host, "api.example");

    for (resolve, url, key, why) in [
        (
            &[("127.0.0.1", "127.0.0.1")][..],
            "https://x.test/",
            "resolve.\"127.0.0.1\"",
            "needs no [resolve] entry",
        ),
        (
            &[("localhost", "127.0.0.2")],
            "https://x.test/",
            "resolve.\"localhost\"",
            "always means loopback",
        ),
        (
            &[("a..test", "127.0.0.2")],
            "https://x.test/",
            "resolve.\"a..test\"",
            "empty label",
        ),
        (
            &[("a.test", "a.test")],
            "https://x.test/",
            "resolve.\"a.test\"",
            "not an IP address",
        ),
        (
            &[("a.test", "1"), ("A.test.", "2")],
            "https://x.test/",
            "resolve.",
            "mapped twice",
        ),
        (
            &[],
            "https://1.2.3.4.5/",
            "target[0].url",
            "last label is a number",
        ),
    ] {
        let e = Config::parse(&path, &config_text(resolve, url))
            .expect_err(&format!("{resolve:?} {url}"))
            .to_string();
        assert!(e.contains(key) && e.contains(why), "{resolve:?} {url}: {e}");
    }
}

// === property tests ===

/// Text shaped like IPv4 in `inet_aton`'s forms, valid or nearly.
fn ipv4ish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        (0u32..256).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| format!("0x{n:x}")),
        any::<u32>().prop_map(|n| format!("0X{n:08X}")),
        (0u32..256).prop_map(|n| format!("0{n:o}")),
        any::<u32>().prop_map(|n| format!("0{n:o}")),
        (0usize..25, 0u32..400).prop_map(|(z, n)| format!("{}{n}", "0".repeat(z))),
        "0[xX]?[0-9a-fA-F]{0,10}",
        "[0-9a-gxX+-]{0,6}",
    ];
    prop::collection::vec(part, 1..6).prop_map(|p| p.join("."))
}

/// Text shaped like IPv6, valid or nearly (embedded IPv4, "::", long groups).
fn ipv6ish() -> impl Strategy<Value = String> {
    let group = prop_oneof![
        "[0-9a-fA-F]{1,4}",
        "[0-9a-fA-F]{0,6}",
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}(\\.[0-9]{1,4})?",
    ];
    (
        prop::collection::vec(group, 0..10),
        prop::option::of(0usize..10),
    )
        .prop_map(|(groups, gap)| {
            let mut text = groups.join(":");
            if let Some(at) = gap {
                let pos = text
                    .match_indices(':')
                    .map(|(i, _)| i)
                    .nth(at)
                    .unwrap_or(text.len());
                text.insert(pos, ':');
                if text.ends_with(':') && !text.ends_with("::") {
                    text.push(':');
                }
            }
            text
        })
}

/// Anything without whitespace (and without NUL, which no C string holds).
fn anything() -> impl Strategy<Value = String> {
    prop_oneof!["[^\\s\\x00]{0,24}", "[0-9a-fA-FxX.:%]{0,30}"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_parser_reads_literals_exactly_as_inet_aton_and_inet_pton_do(
        batch in prop::collection::vec(prop_oneof![ipv4ish(), ipv6ish(), anything()], 300..500)
    ) {
        let platform = support::platform::inet(&batch);
        for (text, (v4, v6)) in batch.iter().zip(platform) {
            prop_assert_eq!(parse_ipv4(text), v4, "inet_aton({:?})", text);
            prop_assert_eq!(parse_ipv6(text), v6, "inet_pton({:?})", text);
            if let Some(addr) = v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)) {
                prop_assert_eq!(
                    parse_host(text),
                    Ok(Host::Ip { addr, zone: None }),
                    "parse_host({:?})", text
                );
            }
        }
    }
}

/// Networks the policy refuses, as (network, prefix length).
const DENIED_V4: &[([u8; 4], u32)] = &[
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([10, 0, 0, 0], 8),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
    ([100, 64, 0, 0], 10),
    ([0, 0, 0, 0], 8),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
    ([192, 0, 0, 0], 24),
    ([198, 18, 0, 0], 15),
];

fn denied_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..DENIED_V4.len(), any::<u32>()).prop_map(|(i, host)| {
        let (net, prefix) = DENIED_V4[i];
        let mask = u32::MAX << (32 - prefix);
        Ipv4Addr::from((u32::from(Ipv4Addr::from(net)) & mask) | (host & !mask))
    })
}

/// One `inet_aton` spelling of `addr`: 1–4 parts, each in decimal, hex or
/// octal with extra zeros, in either case.
fn spell_v4(addr: Ipv4Addr) -> impl Strategy<Value = String> {
    (
        1usize..=4,
        prop::collection::vec((0u8..3, 0usize..4, any::<bool>()), 4),
    )
        .prop_map(move |(parts, styles)| {
            let b = addr.octets();
            let mut values: Vec<u32> = b[..parts - 1].iter().map(|x| u32::from(*x)).collect();
            let rest = b[parts - 1..]
                .iter()
                .fold(0u32, |acc, x| (acc << 8) | u32::from(*x));
            values.push(rest);
            values
                .iter()
                .zip(&styles)
                .map(|(v, (radix, zeros, upper))| {
                    let z = "0".repeat(*zeros);
                    match radix {
                        0 => v.to_string(),
                        1 if *upper => format!("0X{z}{v:X}"),
                        1 => format!("0x{z}{v:x}"),
                        _ => format!("0{z}{v:o}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(".")
        })
}

/// One IPv6 spelling that carries `addr` (mapped, translated, compatible,
/// NAT64, 6to4), bracketed for an authority.
fn spell_v6(addr: Ipv4Addr) -> impl Strategy<Value = String> {
    let [a, b, c, d] = addr.octets();
    let hi = u16::from_be_bytes([a, b]);
    let lo = u16::from_be_bytes([c, d]);
    (0u8..9, any::<u16>(), any::<bool>()).prop_map(move |(form, r, upper)| {
        let text = match form {
            0 => format!("::ffff:{addr}"),
            1 => format!("::ffff:{hi:x}:{lo:x}"),
            2 => format!("0:0:0:0:0:ffff:{hi:04x}:{lo:04x}"),
            3 => format!("::ffff:0:{addr}"),
            4 => format!("::{addr}"),
            5 => format!("64:ff9b::{addr}"),
            6 => format!("0064:ff9b:0:0:0:0:{hi:x}:{lo:x}"),
            7 => format!("2002:{hi:x}:{lo:x}::"),
            _ => format!("2002:{hi:x}:{lo:x}:{r:x}::{r:x}"),
        };
        let text = if upper { text.to_uppercase() } else { text };
        format!("[{text}]")
    })
}

fn spelling_of_a_denied_address() -> impl Strategy<Value = (Ipv4Addr, String)> {
    denied_v4().prop_flat_map(|a| {
        let spelled = prop_oneof![
            3 => spell_v4(a),
            1 => spell_v4(a).prop_map(|s| format!("{s}.")),
            3 => spell_v6(a),
            1 => "(([a-z0-9-]{1,8}\\.){0,2})(localhost|LOCALHOST)\\.?",
        ];
        (Just(a), spelled)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn no_spelling_of_a_denied_address_is_ever_allowed(
        batch in prop::collection::vec(spelling_of_a_denied_address(), 100..200)
    ) {
        let ws = Workspace::new();
        let config = ws.config(
            Toml::new()
                .route(Route::proxy("provider", "http://proxy.test:3128"))
                .target(
                    Target::new("t", "https://api.example/")
                        .routes(&["provider"])
                        .allow_addresses(&["198.51.100.0/24"]),
                )
                .forward(|f| f.proxy_unmatched(&["provider"])),
        );
        // The IPv4 spellings mean the address to the platform too.
        let v4_spellings: Vec<String> = batch
            .iter()
            .filter(|(_, s)| {
                !s.to_ascii_lowercase().contains("localhost")
                    && !s.starts_with('[')
                    && !s.ends_with('.')
            })
            .map(|(_, s)| s.clone())
            .collect();
        let platform = support::platform::inet(&v4_spellings);
        for (s, (v4, _)) in v4_spellings.iter().zip(&platform) {
            let meant = batch.iter().find(|(_, t)| t == s).map(|(a, _)| *a);
            prop_assert_eq!(*v4, meant, "the generator's spelling {:?}", s);
        }
        for (addr, spelling) in &batch {
            let head = format!("CONNECT {spelling}:443 HTTP/1.1\r\n\r\n");
            let host = match request::parse(head.as_bytes()) {
                Ok(Ask::Connect { host, .. }) => host,
                other => return Err(TestCaseError::fail(format!(
                    "{spelling:?} (meaning {addr}) did not parse as a CONNECT: {other:?}"
                ))),
            };
            let refused = plan::plan(&config, &host, 443, |_| None)
                .expect_err(&format!("{spelling:?} (meaning {addr}, read as {host}) was allowed"));
            prop_assert!(refused.why.starts_with("policy_denied: "), "{}", refused.why);
            // And the pure policy on the parsed host, for good measure.
            let parsed = parse_host(&host).expect("canonical text parses");
            let addrs = parsed.literal_addresses().expect("a literal or localhost");
            prop_assert!(
                addrs.iter().any(|ip| check_address(*ip, &[]).is_err()),
                "{:?}: {:?} passed the policy", spelling, addrs
            );
        }
    }
}
