//! Configuration checks: presets fill and are overridden field by field,
//! defaults hold, and each kind of mistake is refused with its place.

mod support;

use egress_sentinel::config::{Config, ConfigError, ForwardDefault, Http2Mode};
use std::time::Duration;
use support::Workspace;
use support::config::{Route, Target, Toml};

fn parse(ws: &Workspace, text: &str) -> Result<Config, ConfigError> {
    let p = ws.write("config.toml", text);
    Config::load(&p)
}

#[test]
fn presets_fill_every_field_and_keys_override_them_one_by_one() {
    let ws = Workspace::new();
    let text = Toml::new()
        .target(
            Target::named("apns")
                .preset("apns")
                .routes(&["direct"])
                .url("https://push.test:8443/3/device/abc"),
        )
        .target(Target::named("ad").preset("azure-ad").routes(&["direct"]));
    let cfg = parse(&ws, &text.to_string()).expect("valid");
    let apns = cfg.target("apns").expect("apns");
    assert_eq!(apns.endpoint.host, "push.test");
    assert_eq!(apns.endpoint.port, 8443);
    assert_eq!(apns.method, http::Method::POST);
    assert_eq!(apns.http2, Http2Mode::Required);
    assert!(apns.expect_status.contains(403) && apns.expect_status.contains(400));
    assert!(!apns.expect_status.contains(200));
    let ad = cfg.target("ad").expect("ad");
    assert_eq!(
        ad.endpoint.url(),
        "https://login.microsoftonline.com:443/common/v2.0/.well-known/openid-configuration"
    );
    assert!(
        ad.expect_body
            .as_ref()
            .expect("body")
            .matches(b"{\"issuer\":\"x\"}")
    );
    // Defaults.
    assert_eq!(cfg.probe.interval, Duration::from_secs(10));
    assert_eq!((cfg.probe.fall, cfg.probe.rise), (2, 2));
    assert_eq!(
        cfg.listen.proxy,
        Some("127.0.0.1:3128".parse().expect("addr"))
    );
    assert_eq!(cfg.forward.default, ForwardDefault::Proxy);
    assert_eq!(cfg.forward.allow_ports, vec![443]);
}

#[test]
fn targets_default_to_the_proxy_routes_and_never_to_direct() {
    let ws = Workspace::new();
    let t = || Target::new("t", "https://t.test/");
    let text = Toml::new()
        .route(Route::proxy("a", "http://a.test:3128"))
        .route(Route::proxy("b", "https://b.test"))
        .target(t());
    let cfg = parse(&ws, &text.to_string()).expect("valid");
    let names: Vec<_> = cfg.targets[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(!cfg.targets[0].allows_direct());
    assert_eq!(
        cfg.route("b")
            .and_then(|r| r.proxy())
            .map(|p| p.display())
            .as_deref(),
        Some("https://b.test:443")
    );
    let err = parse(&ws, &Toml::new().target(t()).to_string()).expect_err("no route");
    assert!(err.message.contains("no routes"), "{err}");
}

#[test]
fn each_mistake_is_located_and_explained() {
    let ws = Workspace::new();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "[probe]\ninterval = \"10 seconds\"\n",
            "probe.interval",
            (2, 12),
            "not a duration",
        ),
        (
            "[probe]\nfall = 0\n",
            "probe.fall",
            (2, 8),
            "between 1 and 100",
        ),
        (
            "[listen]\nproxy = \"localhost\"\n",
            "listen.proxy",
            (2, 9),
            "not a listen address",
        ),
        (
            "[[target]]\nname = \"t\"\npreset = \"apn\"\nroutes = [\"direct\"]\n",
            "target[0].preset",
            (3, 10),
            "unknown preset",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"ftp://x\"\nroutes = [\"direct\"]\n",
            "target[0].url",
            (3, 7),
            "scheme",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"https://x/\"\nroutes = [\"direct\"]\nexpect_status = [200, 999]\n",
            "target[0].expect_status",
            (5, 17),
            "999 is not an HTTP status",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"https://x/\"\nroutes = [\"direct\"]\nallow_addresses = [\"10.0.0.1/8\"]\n",
            "target[0].allow_addresses",
            (5, 20),
            "host bits",
        ),
        (
            "[[target]]\nname = \"bad name\"\nurl = \"https://x/\"\n",
            "target[0].name",
            (2, 8),
            "not a valid name",
        ),
        (
            "[[route]]\nname = \"direct\"\nproxy = \"http://p:1\"\n",
            "route[0].name",
            (2, 8),
            "built in",
        ),
        (
            "[[route]]\nname = \"p\"\nproxy = \"socks5://p:1\"\n",
            "route[0].proxy",
            (3, 9),
            "http:// or https://",
        ),
        (
            "[[route]]\nname = \"p\"\nproxy = \"http://p:1\"\ncredentials_file = \"missing\"\n",
            "route[0].credentials_file",
            (4, 20),
            "cannot open",
        ),
        (
            "[forward]\ndefault = \"allow\"\n",
            "forward.default",
            (2, 11),
            "\"proxy\" or \"deny\"",
        ),
        (
            "[forward]\ndefault_routes = [\"direct\"]\n",
            "forward.default_routes",
            (2, 19),
            "never go direct",
        ),
        (
            "[forward]\nallow_ports = [0]\n",
            "forward.allow_ports",
            (2, 15),
            "not a port",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"https://x/\"\nroutes = [\"direct\"]\nclient_cert = \"c.pem\"\nclient_key = \"c.key\"\nclient_cert_password_file = \"pw\"\n",
            "target[0].client_cert_password_file",
            (7, 29),
            "PKCS#12 client_cert holds its own key",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"https://x/\"\nroutes = [\"direct\"]\nhttps2 = true\n",
            "target[0].https2",
            (5, 1),
            "unknown field",
        ),
        (
            "[tls]\nroots = \"system\"\n",
            "tls.roots",
            (2, 9),
            "\"native\", \"webpki\" or \"none\"",
        ),
        (
            "[[target]]\nname = \"t\"\nurl = \"https://x/\"\nroutes = [\"direct\"]\nca_file = \"nope.pem\"\n",
            "target[0].ca_file",
            (5, 11),
            "cannot open",
        ),
    ];
    for (text, key, (line, col), needle) in cases {
        let err = parse(&ws, text).expect_err(text);
        assert_eq!(err.key, *key, "{text}\n{err}");
        assert_eq!(
            (err.line, err.column),
            (Some(*line), Some(*col)),
            "{text}\n{err}"
        );
        assert!(err.message.contains(needle), "{text}\n{err}");
        assert!(err.to_string().contains("config.toml:"), "{err}");
    }
}

#[test]
fn hosts_patterns_match_subdomains_only() {
    let ws = Workspace::new();
    let text = Toml::new().target(
        Target::new("apns", "https://api.push.apple.com/")
            .routes(&["direct"])
            .hosts(&["*.push.apple.com"]),
    );
    let cfg = parse(&ws, &text.to_string()).expect("valid");
    let t = &cfg.targets[0];
    assert!(t.matches_destination("api.push.apple.com", 443));
    assert!(t.matches_destination("API.development.push.apple.com.", 443));
    assert!(!t.matches_destination("push.apple.com", 443));
    assert!(!t.matches_destination("evilpush.apple.com", 443));
    assert!(!t.matches_destination("api.push.apple.com.evil.test", 443));
}

#[test]
fn the_readme_configuration_reference_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read");
    let start = readme
        .find("```toml\nstate_dir")
        .expect("the reference block")
        + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("end of block");
    let ws = Workspace::new();
    ws.write("credentials", "egress:password\n");
    ws.write("extra-ca.pem", &support::pki::ca().cert_pem);
    let toml = readme[start..end]
        .replace("/var/run/secrets/egress/proxy-credentials", "credentials")
        .replace("/etc/egress/extra-ca.pem", "extra-ca.pem");
    parse(&ws, &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
}

#[test]
fn durations_and_listen_addresses_take_the_forms_people_write_and_stay_in_range() {
    let ws = Workspace::new();
    let text = Toml::new()
        .listen("metrics", ":9464")
        .listen("admin", "off")
        .probe(|p| p.interval("1.5s").timeout("0.5s"))
        .target(Target::new("apns", "https://push.test/").routes(&["direct"]));
    let cfg = parse(&ws, &text.to_string()).expect("valid");
    assert_eq!(
        cfg.listen.metrics,
        Some("0.0.0.0:9464".parse().expect("addr"))
    );
    assert_eq!(cfg.listen.admin, None);
    assert_eq!(cfg.probe.interval, Duration::from_millis(1500));
    assert_eq!(cfg.probe.timeout, Duration::from_millis(500));
    // Out of range, or too large to hold: refused with the key, never an
    // overflow at run time.
    for (key, value, says) in [
        ("interval", "25h", "at most 1d"),
        ("timeout", "99999999999999999999h", "far too long"),
        ("hold_down_max", "36500d", "at most 1d"),
        ("unhealthy_interval", "0s", "greater than zero"),
    ] {
        let text = format!(
            "[probe]\n{key} = \"{value}\"\n\n[[target]]\nname = \"a\"\nurl = \"https://a.test/\"\nroutes = [\"direct\"]\n"
        );
        let e = parse(&ws, &text).expect_err(value).to_string();
        assert!(e.contains(&format!("probe.{key}")), "{e}");
        assert!(e.contains(says), "{value}: {e}");
        assert!(e.contains("config.toml:2:"), "located: {e}");
    }
}
