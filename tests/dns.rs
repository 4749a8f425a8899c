//! DNS that says what failed: a stub nameserver on 127.0.0.1 answers
//! NXDOMAIN, SERVFAIL, REFUSED or nothing, and `verify` names each — for a
//! proxy's name (`proxy_resolve`) and a direct destination (`resolve`) —
//! with the nameserver asked, within the probe's timeout. Every test points
//! `[dns] nameservers` at its own stub: none asks the machine's resolver.

mod support;

#[allow(dead_code)]
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_sentinel::dial::resolve::{
    DnsFailure, DnsSettings, Nameservers, ResolveError, ResolveSettings, Resolver, SystemDns,
};
use egress_sentinel::reason::{FailureReason, Phase};
use support::config::{Route, Target, Toml};
use support::stub_dns::{Answer, StubDns};
use support::upstream::Opts;
use support::{Workspace, binary, check_all};

/// What each scripted name answers, and the word the report must say.
const KINDS: [(&str, &str); 4] = [
    ("nxdomain", "NXDOMAIN"),
    ("servfail", "SERVFAIL"),
    ("refused", "REFUSED"),
    ("silent", "timeout"),
];

fn answer(kind: &str) -> Answer {
    match kind {
        "nxdomain" => Answer::NxDomain,
        "servfail" => Answer::ServFail,
        "refused" => Answer::Refused,
        _ => Answer::Never,
    }
}

/// A proxy route per kind (`http://<kind>-proxy.test:3128`) all tried by
/// target `via-proxy`, and a direct target per kind (`https://<kind>.test/`).
fn every_kind_config(stub: &StubDns, timeout: &str) -> String {
    let mut toml = Toml::new()
        .probe(|p| p.timeout(timeout))
        .dns(|d| d.nameservers(&[&stub.addr().to_string()]));
    for (kind, _) in KINDS {
        toml = toml.route(Route::proxy(
            kind,
            &format!("http://{kind}-proxy.test:3128"),
        ));
    }
    let routes: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    toml = toml.target(Target::new("via-proxy", "https://push.test/").routes(&routes));
    for (kind, _) in KINDS {
        toml = toml.target(
            Target::new(&format!("direct-{kind}"), &format!("https://{kind}.test/"))
                .routes(&["direct"]),
        );
    }
    toml.to_string()
}

async fn run(args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .args(args)
        .output()
        .await
        .expect("run the binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_nxdomain_servfail_refused_and_timeout_with_the_nameserver_within_the_timeout()
{
    let stub = StubDns::start().await;
    for (kind, _) in KINDS {
        stub.set(&format!("{kind}-proxy.test"), answer(kind));
        stub.set(&format!("{kind}.test"), answer(kind));
    }
    let ws = Workspace::new();
    let path = ws.write("config.toml", &every_kind_config(&stub, "1s"));
    let started = Instant::now();
    let out = run(&[
        "verify",
        "--config",
        path.to_str().expect("utf8"),
        "--format",
        "json",
    ])
    .await;
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let checks = json.as_array().expect("array of checks");
    assert_eq!(checks.len(), 8, "{json:#}");
    let asked = stub.addr().to_string();
    for (kind, word) in KINDS {
        for (target, route, reason) in [
            ("via-proxy", kind.to_string(), "proxy_resolve"),
            (
                &format!("direct-{kind}")[..],
                "direct".to_string(),
                "resolve",
            ),
        ] {
            let check = checks
                .iter()
                .find(|c| c["target"] == target && c["route"] == route.as_str())
                .unwrap_or_else(|| panic!("no check {target}/{route}: {json:#}"));
            let detail = check["detail"].as_str().expect("detail");
            assert_eq!(check["reason"], reason, "{target}/{route}: {detail}");
            assert_eq!(check["failed_phase"], "resolve", "{target}/{route}");
            assert!(
                detail.contains(&format!("DNS {word}")),
                "{target}/{route} should name {word}: {detail}"
            );
            assert!(
                detail.contains(&format!("asked {asked}")),
                "{target}/{route} should name the nameserver: {detail}"
            );
            let seconds = check["duration_seconds"].as_f64().expect("duration");
            if kind == "silent" {
                // It waited for the answer, and gave up by the timeout.
                assert!(
                    (0.9..1.3).contains(&seconds),
                    "{target}/{route} took {seconds}s: {detail}"
                );
            } else {
                assert!(seconds < 0.5, "{target}/{route} took {seconds}s: {detail}");
            }
        }
        assert!(stub.count_a(&format!("{kind}-proxy.test")) > 0, "{kind}");
        assert!(stub.count_a(&format!("{kind}.test")) > 0, "{kind}");
    }
    // Eight checks at once: the whole run ends within about one timeout.
    assert!(took < Duration::from_secs(3), "verify took {took:?}");
}

#[tokio::test]
async fn dns_timeout_and_attempts_bound_a_silent_nameserver_before_the_probe_timeout() {
    let stub = StubDns::start().await;
    stub.set("silent-proxy.test", Answer::Never);
    let ws = Workspace::new();
    let config = ws.config(
        Toml::new()
            .probe(|p| p.timeout("5s"))
            .dns(|d| {
                d.nameservers(&[&stub.addr().to_string()])
                    .timeout("200ms")
                    .attempts(2)
            })
            .route(Route::proxy("provider", "http://silent-proxy.test:3128"))
            .target(Target::new("push", "https://push.test/").routes(&["provider"])),
    );
    let outcomes = check_all(&config).await;
    let o = &outcomes[0];
    assert_eq!(o.reason, FailureReason::ProxyResolve, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Resolve));
    assert!(o.detail.contains("DNS timeout"), "{}", o.detail);
    // Two tries of 200 ms, not the probe's 5 s.
    let resolve = o.phases.resolve.expect("resolve timed");
    assert!(
        resolve >= Duration::from_millis(380) && resolve < Duration::from_millis(1000),
        "resolve took {resolve:?}: {}",
        o.detail
    );
    // One lookup asks exactly `attempts` times per address family.
    let before = stub.count_a("silent-proxy.test");
    let started = Instant::now();
    let e = Resolver::new(config.resolve.clone())
        .resolve("silent-proxy.test", 3128)
        .await
        .expect_err("silent");
    let took = started.elapsed();
    assert!(matches!(e.dns(), Some(DnsFailure::Timeout(_))), "{e}");
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1000),
        "took {took:?}"
    );
    assert_eq!(
        stub.count_a("silent-proxy.test") - before,
        2,
        "{:?}",
        stub.asked()
    );
}

/// The resolver of a config asking `stub`, with `[resolve]` entries added
/// by `resolve`.
fn resolver_for(ws: &Workspace, stub: &StubDns, resolve: impl FnOnce(Toml) -> Toml) -> Resolver {
    let config = ws.config(
        resolve(Toml::new().dns(|d| d.nameservers(&[&stub.addr().to_string()])))
            .target(Target::new("push", "https://push.test/").routes(&["direct"])),
    );
    Resolver::new(config.resolve.clone())
}

fn dns_failure(r: Result<Vec<std::net::SocketAddr>, ResolveError>) -> DnsFailure {
    match r {
        Err(e) => e.dns().cloned().unwrap_or_else(|| panic!("not DNS: {e}")),
        Ok(a) => panic!("resolved to {a:?}"),
    }
}

#[tokio::test]
async fn a_deleted_record_shows_within_a_second_and_a_restored_one_too() {
    let stub = StubDns::start().await;
    stub.set("api.test", Answer::a("127.0.0.9"));
    let ws = Workspace::new();
    let resolver = resolver_for(&ws, &stub, |t| t);
    let addrs = resolver.resolve("api.test", 443).await.expect("resolves");
    assert_eq!(addrs, vec!["127.0.0.9:443".parse().expect("addr")]);
    // Within the cap the answer comes from the cache: a burst of app
    // connections asks once.
    resolver.resolve("api.test", 443).await.expect("cached");
    assert_eq!(stub.count_a("api.test"), 1);
    // The record is deleted; the stub's TTL says 300 s, the cap 1 s.
    stub.set("api.test", Answer::NxDomain);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        dns_failure(resolver.resolve("api.test", 443).await),
        DnsFailure::NxDomain
    );
    // And back: the negative answer (SOA minimum 300 s) is capped as well.
    stub.set("api.test", Answer::a("127.0.0.10"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let addrs = resolver.resolve("api.test", 443).await.expect("restored");
    assert_eq!(addrs, vec!["127.0.0.10:443".parse().expect("addr")]);
}

#[tokio::test]
async fn overrides_literals_and_localhost_never_ask_the_nameserver() {
    let stub = StubDns::start().await;
    stub.set("pinned.test", Answer::NxDomain);
    stub.set("gone.test", Answer::a("127.0.0.1"));
    let ws = Workspace::new();
    let resolver = resolver_for(&ws, &stub, |t| {
        t.resolve("pinned.test", "127.0.0.7")
            .resolve_all("gone.test", &[])
    });
    let addrs = resolver.resolve("Pinned.Test.", 443).await.expect("pinned");
    assert_eq!(addrs, vec!["127.0.0.7:443".parse().expect("addr")]);
    let gone = resolver.resolve("gone.test", 443).await;
    assert!(
        matches!(gone, Err(ResolveError::Blackholed(ref n)) if n == "gone.test"),
        "{gone:?}"
    );
    for literal in ["127.0.0.1", "0x7f.1", "[::1]", "localhost"] {
        resolver.resolve(literal, 443).await.expect("literal");
    }
    assert!(stub.asked().is_empty(), "{:?}", stub.asked());
}

#[tokio::test]
async fn a_name_without_an_address_is_nodata_and_ipv6_answers_count() {
    let stub = StubDns::start().await;
    stub.set("empty.test", Answer::Addresses(Vec::new()));
    stub.set(
        "dual.test",
        Answer::Addresses(vec![
            "127.0.0.1".parse().expect("ip"),
            "::1".parse().expect("ip"),
        ]),
    );
    let ws = Workspace::new();
    let resolver = resolver_for(&ws, &stub, |t| t);
    let e = resolver
        .resolve("empty.test", 443)
        .await
        .expect_err("no data");
    assert_eq!(e.dns(), Some(&DnsFailure::NoData));
    assert!(e.to_string().contains("DNS NODATA"), "{e}");
    let mut addrs = resolver.resolve("dual.test", 443).await.expect("both");
    addrs.sort();
    assert_eq!(
        addrs,
        vec![
            "127.0.0.1:443".parse().expect("addr"),
            "[::1]:443".parse().expect("addr"),
        ]
    );
}

#[tokio::test]
async fn a_name_the_stub_resolves_is_probed_end_to_end_on_direct() {
    let stub = StubDns::start().await;
    stub.set("push.test", Answer::a("127.0.0.1"));
    let up = Opts::new("push.test").start().await;
    let ws = Workspace::new();
    let config = ws.config(
        Toml::new()
            .probe(|p| p.timeout("3s"))
            .dns(|d| d.nameservers(&[&stub.addr().to_string()]))
            .target(
                Target::new("push", &format!("https://push.test:{}/", up.port()))
                    .routes(&["direct"])
                    .allow_addresses(&["127.0.0.1/32"])
                    .ca_file("ca.pem"),
            ),
    );
    let o = &check_all(&config).await[0];
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert_eq!(up.connections(), 1);
    assert!(stub.count_a("push.test") >= 1);
}

#[test]
fn dns_settings_are_checked_with_their_place() {
    let ws = Workspace::new();
    for (dns, needle) in [
        ("nameservers = []", "the list is empty"),
        (
            "nameservers = [\"dns.example\"]",
            "`dns.example` is not a nameserver address",
        ),
        (
            "nameservers = [\"127.0.0.1:0\"]",
            "`127.0.0.1:0` is not a nameserver address",
        ),
        (
            "nameservers = [\"127.0.0.1\", \"127.0.0.1:53\"]",
            "127.0.0.1:53 is listed twice",
        ),
        ("attempts = 0", "must be between 1 and 5"),
        ("timeout = \"0s\"", "must be greater than zero"),
        ("timeout = \"1m\"", "out of range"),
        ("search = [\"x\"]", "unknown field"),
    ] {
        let text = format!(
            "[dns]\n{dns}\n\n[[target]]\nname = \"push\"\nurl = \"https://push.test/\"\nroutes = [\"direct\"]\n"
        );
        let p = ws.write("config.toml", &text);
        let e = egress_sentinel::config::Config::load(&p)
            .expect_err(dns)
            .to_string();
        assert!(e.contains(needle), "{dns}: {e}");
        assert!(e.contains("config.toml:2:"), "{dns}: {e}");
        assert!(e.contains("dns"), "{dns}: {e}");
    }
}

#[test]
fn nameservers_take_a_default_port_and_ipv6() {
    let ws = Workspace::new();
    let push = || Target::new("push", "https://push.test/").routes(&["direct"]);
    let config = ws.config(
        Toml::new()
            .dns(|d| {
                d.nameservers(&["127.0.0.1", "[::1]:5353", "::1"])
                    .timeout("2s")
                    .attempts(3)
            })
            .target(push()),
    );
    let dns = &config.resolve.dns;
    match &dns.nameservers {
        egress_sentinel::config::Nameservers::Configured(list) => assert_eq!(
            list,
            &vec![
                "127.0.0.1:53".parse().expect("addr"),
                "[::1]:5353".parse().expect("addr"),
                "[::1]:53".parse().expect("addr"),
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(dns.timeout, Duration::from_secs(2));
    assert_eq!(dns.attempts, 3);
    // Without [dns], resolv.conf and the hosts file are files of the
    // generation: a change to either builds a new one.
    let system = ws.config(Toml::new().target(push()));
    assert!(matches!(
        system.resolve.dns.nameservers,
        egress_sentinel::config::Nameservers::System(_)
    ));
    for f in ["/etc/resolv.conf", "/etc/hosts"] {
        assert!(
            system.files.iter().any(|(p, _)| p.as_os_str() == f),
            "{f}: {:?}",
            system.files
        );
    }
}

#[tokio::test]
async fn a_nameserver_with_nothing_listening_fails_within_the_timeout() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let ws = Workspace::new();
    let config = ws.config(
        Toml::new()
            .probe(|p| p.timeout("1s"))
            .dns(|d| d.nameservers(&[&addr.to_string()]))
            .target(Target::new("push", "https://push.test/").routes(&["direct"])),
    );
    let started = Instant::now();
    let o = &check_all(&config).await[0];
    let took = started.elapsed();
    assert_eq!(o.reason, FailureReason::Resolve, "{}", o.detail);
    // Where the network says so (ICMP port unreachable) it is
    // `unreachable`; where it stays silent, a timeout.
    assert!(
        o.detail.contains("DNS timeout") || o.detail.contains("DNS unreachable"),
        "{}",
        o.detail
    );
    assert!(o.detail.contains(&format!("asked {addr}")), "{}", o.detail);
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn without_nameservers_resolv_conf_search_list_and_hosts_file_are_followed() {
    // resolv.conf names port 53 only: the stub takes a loopback address of
    // its own on port 53 (root, as in CI), never the machine's nameserver.
    let stub = match StubDns::start_on("127.0.0.153:53".parse().expect("addr")).await {
        Ok(stub) => stub,
        Err(e) => {
            eprintln!("skipped: cannot bind 127.0.0.153:53 ({e}); run as root");
            return;
        }
    };
    stub.set("proxy.corp.test", Answer::a("127.0.0.5"));
    let ws = Workspace::new();
    let conf = ws.write(
        "resolv.conf",
        "search corp.test\nnameserver 127.0.0.153\noptions ndots:2 timeout:1 attempts:1\n",
    );
    let hosts = ws.write("hosts", "127.0.0.77 pinned.test\n");
    let system = SystemDns::read(&conf, &hosts);
    let resolver = Resolver::new(Arc::new(ResolveSettings {
        overrides: Default::default(),
        dns: DnsSettings {
            timeout: system.timeout().expect("timeout"),
            attempts: system.attempts().expect("attempts"),
            nameservers: Nameservers::System(Box::new(system)),
        },
    }));
    // "proxy" has fewer dots than ndots: the search list comes first.
    let addrs = resolver.resolve("proxy", 3128).await.expect("via search");
    assert_eq!(addrs, vec!["127.0.0.5:3128".parse().expect("addr")]);
    assert_eq!(stub.count_a("proxy.corp.test"), 1);
    // The hosts file answers before DNS.
    let addrs = resolver.resolve("pinned.test", 443).await.expect("hosts");
    assert_eq!(addrs, vec!["127.0.0.77:443".parse().expect("addr")]);
    assert_eq!(stub.count_a("pinned.test"), 0);
    // A failure names the nameserver and the file it came from.
    let e = resolver
        .resolve("gone.test", 443)
        .await
        .expect_err("nxdomain");
    assert_eq!(e.dns(), Some(&DnsFailure::NxDomain));
    assert!(
        e.to_string()
            .contains(&format!("asked 127.0.0.153:53 from {}", conf.display())),
        "{e}"
    );
}
