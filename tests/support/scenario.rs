//! The scenario most sidecar tests share: push (may go direct) and SMS
//! (proxy only) behind one provider proxy, on one TLS upstream.

use super::pki;
use super::upstream::{Opts, Upstream};

/// The config: `proxy` is the provider's proxy, `port` the upstream's;
/// `extra` goes at the end of `[forward]`.
pub fn config(proxy: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[probe]
interval = "1s"
unhealthy_interval = "100ms"
timeout = "2s"
fall = 2
rise = 2

[resolve]
"push.test" = "127.0.0.1"
"sms.test" = "127.0.0.1"
"decoy.test" = "127.0.0.2"

[[route]]
name = "provider"
proxy = "{proxy}"
connect_timeout = "300ms"

[[target]]
name = "apns"
url = "https://push.test:{port}/"
routes = ["provider", "direct"]
allow_addresses = ["127.0.0.1/32"]
hosts = ["push.test", "decoy.test"]
ca_file = "ca.pem"

[[target]]
name = "sms"
url = "https://sms.test:{port}/"
routes = ["provider"]
ca_file = "ca.pem"

[forward]
default = "deny"
header_timeout = "500ms"
{extra}
"#
    )
}

/// One upstream answering for push.test, sms.test and decoy.test.
pub async fn upstream() -> Upstream {
    let leaf = pki::ca().server(&["push.test", "sms.test", "decoy.test"], false);
    Opts::new("push.test").leaf(leaf).start().await
}
