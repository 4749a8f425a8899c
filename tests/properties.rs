//! Properties of the parsers that read hostile input, over generated
//! inputs: the configuration, a proxy's CONNECT reply, the app's request
//! head, destinations and the address policy. The invariants themselves
//! live in `support/invariants.rs`, which the `cargo fuzz` targets share:
//! here they run on every `cargo test`, there for as long as one likes.
//!
//! Each case must also end quickly: a parser that takes seconds on one
//! input is a denial of service. (The destination parser's agreement with
//! `inet_aton`/`inet_pton` and the policy on every spelling of a denied
//! address are `tests/destinations.rs`'.)

#[path = "support/invariants.rs"]
mod invariants;
// The config builder alone (the rest of `support` is not needed here).
#[allow(dead_code)]
#[path = "support/config.rs"]
mod toml_config;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use egress_sentinel::destination::Host;
use proptest::prelude::*;
use toml_config::{Route, Target, Toml};

/// One case's bound: generous for a loaded 2-core machine, far below what
/// a quadratic blow-up on a 16 KiB input would take.
const BOUND: Duration = Duration::from_secs(2);

fn timed(what: &str, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let took = start.elapsed();
    assert!(took < BOUND, "{what} took {took:?}");
}

// === configuration ===

/// A TOML value of the kinds the schema uses, valid or nearly.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Durations, sizes, counts.
        "\"[0-9]{0,4}(\\.[0-9]{0,3})?(ms|s|m|h|d|us|parsecs)?\"",
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..70_000).prop_map(|n| n.to_string()),
        // URLs and addresses.
        "\"(https?|ftp)://[a-z0-9.:\\[\\]@-]{0,20}(/[a-z]{0,5})?\"",
        "\"[0-9.:]{0,12}(/[0-9]{1,3})?\"",
        "\"(proxy|deny|off|direct|provider|apns)\"",
        // Lists of the same.
        prop::collection::vec("\"[a-z0-9*.:/\\[\\]-]{0,12}\"", 0..4)
            .prop_map(|v| format!("[{}]", v.join(", "))),
        prop::collection::vec(0u32..70_000, 0..4).prop_map(|v| format!("{v:?}")),
        Just("true".to_string()),
        Just("{ a = 1 }".to_string()),
        "[^\\n]{0,12}",
    ]
}

/// A section header the schema knows, or one it does not.
fn toml_section() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[listen]"),
        Just("[probe]"),
        Just("[dns]"),
        Just("[resolve]"),
        Just("[tls]"),
        Just("[[route]]"),
        Just("[[target]]"),
        Just("[forward]"),
        Just("[shutdown]"),
        Just("[admin]"),
        Just("[nonsense]"),
        Just("[[target.headers]]"),
        Just(""),
    ]
    .prop_map(str::to_string)
}

/// A key the schema uses somewhere, or not.
fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "url",
            "proxy",
            "routes",
            "preset",
            "hosts",
            "allow_addresses",
            "interval",
            "timeout",
            "fall",
            "rise",
            "degraded_window",
            "degraded_failures",
            "nameservers",
            "metrics",
            "admin",
            "default",
            "allow_ports",
            "failback_grace",
            "drain",
            "deadline",
            "expect_status",
            "method",
            "connect_timeout",
            "warn_before",
            "fail_before",
            "max_connections",
            "header_timeout",
            "\"push.test\"",
            "state_dir",
        ])
        .prop_map(str::to_string),
        "[a-z_\"]{1,10}",
    ]
}

/// A config: a valid one's lines shuffled with generated sections and keys.
fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        3 => (toml_key(), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => toml_section(),
        1 => "[^\\n]{0,20}",
    ];
    let valid = Toml::new()
        .route(Route::proxy("provider", "http://proxy.test:3128"))
        .target(Target::new("apns", "https://push.test/").routes(&["provider", "direct"]))
        .to_string();
    let prefix = valid.clone();
    prop_oneof![
        prop::collection::vec(line.clone(), 0..24).prop_map(|l| l.join("\n")),
        prop::collection::vec(line, 0..8).prop_map(move |l| format!("{prefix}{}", l.join("\n"))),
        (0usize..valid.len(), "[^\\n]{0,6}").prop_map(move |(at, junk)| {
            let at = (0..=at)
                .rev()
                .find(|i| valid.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}{junk}{}", &valid[..at], &valid[at..])
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_config_text_is_a_config_or_a_located_error(text in config_text()) {
        timed("Config::parse", || invariants::config(&text));
    }
}

// === CONNECT reply ===

/// A reply head as a proxy might send it, hostile or not.
fn connect_reply() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        (100u16..1000).prop_map(|c| c.to_string()),
        Just("200".to_string()),
        "[0-9a-z ]{0,5}",
    ];
    let header = prop_oneof![
        "(Via|Server|Proxy-Status|X-Squid-Error|Content-Length|[A-Za-z-]{1,12}): [ -~]{0,40}",
        "[^\\r\\n]{0,30}",
        "[ -~]{200,400}",
    ];
    let end = prop::sample::select(vec!["\r\n", "\n", "\r", ""]);
    (
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "SSH-2.0", ""]),
        status,
        "[ -~\\x80-\\xff]{0,20}",
        prop::collection::vec((header, end.clone()), 0..80),
        end,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(version, status, reason, headers, close, body)| {
            let mut out = format!("{version} {status} {reason}\r\n").into_bytes();
            for (h, e) in headers {
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            out.extend_from_slice(close.as_bytes());
            out.extend_from_slice(&body);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_connect_reply_ends_in_a_reply_or_a_typed_error(
        reply in prop_oneof![connect_reply(), prop::collection::vec(any::<u8>(), 0..20_000)],
        chunk in prop_oneof![Just(1usize), 2usize..64, Just(2048), Just(1 << 20)],
    ) {
        timed("the CONNECT reply reader", || {
            invariants::runtime().block_on(invariants::connect_reply(&reply, chunk));
        });
    }
}

// === the app's request ===

/// A request head as an app (or an attacker on loopback) might send it.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["CONNECT", "GET", "POST", "connect", "PRI", "G ET", ""]);
    let target = prop_oneof![
        "[a-zA-Z0-9.-]{0,20}:[0-9]{0,6}",
        "\\[[0-9a-fA-F:.%a-z]{0,30}\\]:[0-9]{1,5}",
        "http://[a-zA-Z0-9.@:\\[\\]%-]{0,25}(/[ -~]{0,10})?",
        "https://[a-z.]{1,10}/",
        "[ -~]{0,30}",
        "[0-9]{1,12}:443",
    ];
    let header = prop_oneof![
        "(Host|Content-Length|Transfer-Encoding|Proxy-Authorization|[A-Za-z-]{1,10}): [ -~]{0,30}",
        "[^\\r\\n]{0,30}",
    ];
    (
        method,
        target,
        prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""]),
        prop::collection::vec(header, 0..70),
        prop::sample::select(vec!["\r\n\r\n", "\r\n", "\n\n", ""]),
        // What follows the head: a TLS ClientHello, a body, more than one
        // read's worth.
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..32),
            prop::collection::vec(any::<u8>(), 2000..6000),
        ],
    )
        .prop_map(|(method, target, version, headers, end, rest)| {
            let mut out = format!("{method} {target} {version}").into_bytes();
            for h in headers {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(h.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(&rest);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_request_head_is_a_canonical_ask_or_a_4xx(
        head in prop_oneof![
            4 => request_head(),
            1 => prop::collection::vec(any::<u8>(), 0..20_000),
        ],
    ) {
        timed("the request reader", || {
            invariants::runtime().block_on(invariants::request_head(&head));
        });
    }
}

// === destinations and the address policy ===

/// Hosts of every kind, built as values (so valid ones are common).
fn host() -> impl Strategy<Value = Host> {
    let label = "[a-z0-9_]([a-z0-9_-]{0,10}[a-z0-9_])?";
    prop_oneof![
        (prop::collection::vec(label, 1..5), "[a-z]{1,6}")
            .prop_map(|(labels, tld)| Host::Name(format!("{}.{tld}", labels.join(".")))),
        any::<u32>().prop_map(|n| Host::Ip {
            addr: IpAddr::V4(Ipv4Addr::from(n)),
            zone: None
        }),
        (any::<u128>(), prop::option::of("[a-zA-Z0-9._~-]{1,12}")).prop_map(|(n, zone)| {
            Host::Ip {
                addr: IpAddr::V6(Ipv6Addr::from(n)),
                zone,
            }
        }),
        "([a-z0-9]{1,8}\\.)?localhost".prop_map(Host::Localhost),
    ]
}

/// Text that parses as something, nearly, or not at all.
fn host_spelling() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,30}\\.?",
        "\\[[0-9a-fA-F:.]{2,40}(%(25)?[a-z0-9]{0,6})?\\]",
        "[0-9a-fA-F:.]{2,40}(%[a-z0-9]{0,6})?",
        "(0[xX])?[0-9a-fA-F]{1,10}(\\.(0[xX])?[0-9a-fA-F]{1,4}){0,4}",
        "[^\\x00]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_host_prints_in_a_form_that_parses_back_to_itself(
        host in host(),
        port in 1u16..,
    ) {
        timed("the host round trip", || invariants::host_round_trip(&host, port));
    }

    #[test]
    fn any_spelling_parses_to_a_host_that_round_trips(
        text in host_spelling(),
        port in prop_oneof![Just(String::new()), "[0-9]{0,6}".prop_map(|p| format!(":{p}"))],
    ) {
        timed("the destination parser", || {
            invariants::host_text(&text);
            invariants::authority_text(&format!("{text}{port}"));
        });
    }

    #[test]
    fn a_network_prints_as_itself(
        addr in prop_oneof![
            any::<u32>().prop_map(|n| IpAddr::V4(n.into())),
            any::<u128>().prop_map(|n| IpAddr::V6(n.into())),
        ],
        prefix in any::<u8>(),
        noise in "[ /0-9a-f:.]{0,4}",
    ) {
        let net = invariants::network(addr, prefix).to_string();
        invariants::cidr_text(&net);
        invariants::cidr_text(&format!("{net}{noise}"));
        invariants::cidr_text(&format!("{noise}{net}"));
    }

    #[test]
    fn the_policy_is_consistent_across_clothing_and_allow_lists(
        raw in prop::collection::vec(any::<u8>(), 0..90),
        v4 in any::<u32>(),
        v6 in any::<u128>(),
    ) {
        invariants::policy_bytes(&raw);
        invariants::policy(IpAddr::V4(v4.into()), &[]);
        invariants::policy(IpAddr::V6(v6.into()), &[]);
        // IPv4 in each IPv6 clothing, explicitly (random 128-bit values
        // rarely land in those prefixes).
        let v4 = Ipv4Addr::from(v4);
        for clothed in [
            v4.to_ipv6_mapped(),
            v4.to_ipv6_compatible(),
            Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(u32::from(v4))),
            Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(u32::from(v4)) << 80)),
            Ipv6Addr::from((0xffff_0000_u128 << 32) | u128::from(u32::from(v4))),
        ] {
            invariants::policy(IpAddr::V6(clothed), &[]);
        }
    }
}

/// Found by the `request` fuzz target (an invariant's mistake, not the
/// reader's): a head followed by more than one read's worth of bytes. The
/// reader hands on what it read past the head; the rest stays in the
/// stream, in order.
#[test]
fn a_head_followed_by_more_than_one_read_keeps_every_byte_in_order() {
    let mut data = b"POST http://x.test/ HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec();
    data.extend((0..5000u32).map(|i| (i % 251) as u8));
    invariants::runtime().block_on(invariants::request_head(&data));
}

/// The fuzz targets' seed corpus passes the same invariants, so a seed
/// that stops parsing the way it did is noticed here first.
#[test]
fn the_fuzz_seed_corpus_passes_the_invariants() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for target in ["config", "connect_reply", "request", "destination"] {
        let mut count = 0;
        let dir = seeds.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("seed entry").path();
            let data = std::fs::read(&path).expect("seed");
            match target {
                "config" => {
                    invariants::config(std::str::from_utf8(&data).expect("a UTF-8 config seed"))
                }
                "connect_reply" => {
                    let (chunk, reply) = data.split_first().expect("a chunk byte");
                    invariants::runtime()
                        .block_on(invariants::connect_reply(reply, usize::from(*chunk)));
                }
                "request" => invariants::runtime().block_on(invariants::request_head(&data)),
                _ => invariants::destination_bytes(&data),
            }
            count += 1;
        }
        assert!(count > 0, "no seeds for {target}");
    }
}
