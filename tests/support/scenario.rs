//! The scenario most sidecar tests share: push (may go direct) and SMS
//! (proxy only) behind one provider proxy, on one TLS upstream.

use super::config::{Route, Target, Toml};
use super::pki;
use super::upstream::{Opts, Upstream};

/// The config: `proxy` is the provider's proxy, `port` the upstream's.
pub fn config(proxy: &str, port: u16) -> Toml {
    Toml::new()
        .probe(|p| p.timings("1s", "100ms", "2s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("sms.test", "127.0.0.1")
        .resolve("decoy.test", "127.0.0.2")
        .route(Route::proxy("provider", proxy).connect_timeout("300ms"))
        .target(
            Target::new("apns", &format!("https://push.test:{port}/"))
                .routes(&["provider", "direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .hosts(&["push.test", "decoy.test"])
                .ca_file("ca.pem"),
        )
        .target(
            Target::new("sms", &format!("https://sms.test:{port}/"))
                .routes(&["provider"])
                .ca_file("ca.pem"),
        )
        .forward(|f| f.deny_unmatched().header_timeout("500ms"))
}

/// [`config`] for the binary: every listener on a loopback port 0 (found
/// with `Spawned::addr`), no drain, a 2 s deadline.
pub fn daemon_config(proxy: &str, port: u16) -> Toml {
    config(proxy, port).daemon("2s")
}

/// One upstream answering for push.test, sms.test and decoy.test.
pub async fn upstream() -> Upstream {
    let leaf = pki::ca().server(&["push.test", "sms.test", "decoy.test"], false);
    Opts::new("push.test").leaf(leaf).start().await
}
