//! One test per failure reason that loopback can produce: each breaks the
//! path in one place and asserts the exact reason, the phase that failed and
//! the detail an operator would read.

mod support;

use egress_sentinel::reason::{FailureReason, Phase};
use support::config::{Route, Target, Toml};
use support::pki;
use support::proxy::{Mode, ScriptProxy};
use support::upstream::{Behavior, Opts};
use support::{Workspace, check_one};

/// A config with one proxy route `provider` at `proxy` and one target
/// `push`, finished by `target`.
fn via_proxy(proxy: &str, target: impl FnOnce(Target) -> Target) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("3s"))
        .resolve("proxy.test", "127.0.0.1")
        .route(Route::proxy("provider", proxy).connect_timeout("1s"))
        .target(target(
            Target::named("push")
                .routes(&["provider"])
                .ca_file("ca.pem"),
        ))
}

/// A config with one target `push` on `direct`, finished by `target`.
fn direct(target: impl FnOnce(Target) -> Target) -> Toml {
    Toml::new()
        .probe(|p| p.timeout("2s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("decoy.test", "127.0.0.2")
        .resolve_all("nowhere.test", &[])
        .target(target(
            Target::named("push").routes(&["direct"]).ca_file("ca.pem"),
        ))
}

/// The probe's URL on the upstream at `port`.
fn url(port: u16) -> String {
    format!("https://push.test:{port}/3/device/abc")
}

#[tokio::test]
async fn healthy_path_through_the_proxy_is_ok_with_every_phase_timed() {
    let up = Opts::new("push.test")
        .h2_only()
        .reply(403, r#"{"reason":"MissingProviderToken"}"#)
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let cfg = ws.config(via_proxy(&proxy.url(), |t| {
        t.preset("apns").url(&url(up.port()))
    }));
    let o = check_one(&cfg).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert!(o.ok);
    assert_eq!(o.connect_status, Some(200));
    assert_eq!(o.http_status, Some(403));
    assert_eq!(o.alpn.as_deref(), Some("h2"));
    for phase in [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tunnel,
        Phase::Tls,
        Phase::FirstByte,
        Phase::Body,
    ] {
        assert!(o.phases.get(phase).is_some(), "phase {phase} not timed");
    }
    let cert = o.peer_cert.expect("peer certificate recorded");
    assert!(
        cert.issuer.contains("egress-sentinel test CA"),
        "{}",
        cert.issuer
    );
    // The proxy was asked for the host name, never an address.
    let r = proxy.received();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].authority, format!("push.test:{}", up.port()));
    assert_eq!(r[0].host_header.as_deref(), Some(r[0].authority.as_str()));
    assert!(r[0].authorization.is_none());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].version, "HTTP/2.0");
}

#[tokio::test]
async fn direct_http1_upstream_is_ok() {
    let up = Opts::new("push.test").h1_only().start().await;
    let ws = Workspace::new();
    let cfg = ws.config(direct(|t| {
        t.url(&url(up.port())).allow_addresses(&["127.0.0.1/32"])
    }));
    let o = check_one(&cfg).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert_eq!(o.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(o.connect_status, None);
    assert!(o.phases.tunnel.is_none());
    assert_eq!(up.requests()[0].version, "HTTP/1.1");
}

#[tokio::test]
async fn unresolvable_proxy_is_proxy_resolve() {
    let ws = Workspace::new();
    let text = Toml::new()
        .probe(|p| p.timeout("3s"))
        .resolve_all("broken-proxy.test", &[])
        .route(Route::proxy("provider", "http://broken-proxy.test:3128").connect_timeout("1s"))
        .target(
            Target::named("push")
                .routes(&["provider"])
                .ca_file("ca.pem")
                .url(&url(443)),
        );
    let o = check_one(&ws.config(&text)).await;
    assert_eq!(o.reason, FailureReason::ProxyResolve, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Resolve));
    assert!(o.detail.contains("broken-proxy.test"), "{}", o.detail);
}

#[tokio::test]
async fn proxy_port_with_nothing_listening_is_proxy_connect() {
    let port = support::free_port();
    let ws = Workspace::new();
    let o = check_one(
        &ws.config(via_proxy(&format!("http://proxy.test:{port}"), |t| {
            t.url(&url(443))
        })),
    )
    .await;
    assert_eq!(o.reason, FailureReason::ProxyConnect, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Connect));
    assert!(o.detail.contains("refused"), "{}", o.detail);
}

#[tokio::test]
async fn proxy_that_never_answers_connect_is_proxy_timeout() {
    let proxy = ScriptProxy::start(Mode::Hang).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(443))))).await;
    assert_eq!(o.reason, FailureReason::ProxyTimeout, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Tunnel));
    // connect_timeout (1 s) bounds it, not the 3 s probe timeout.
    assert!(o.duration.as_secs_f64() < 2.0, "{:?}", o.duration);
}

#[tokio::test]
async fn connect_answered_407_is_proxy_auth_required() {
    let proxy = ScriptProxy::start(Mode::RequireAuth("Basic nope".into())).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(443))))).await;
    assert_eq!(o.reason, FailureReason::ProxyAuthRequired, "{}", o.detail);
    assert_eq!(o.connect_status, Some(407));
    assert_eq!(o.failed_phase, Some(Phase::Tunnel));
}

#[tokio::test]
async fn connect_answered_403_is_proxy_denied_with_the_status_line_and_via() {
    let proxy = ScriptProxy::start(Mode::Status(403, "Forbidden")).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(8443))))).await;
    assert_eq!(o.reason, FailureReason::ProxyDenied, "{}", o.detail);
    assert_eq!(o.connect_status, Some(403));
    assert_eq!(o.failed_phase, Some(Phase::Tunnel));
    assert!(
        o.detail
            .starts_with("CONNECT push.test:8443 -> 403 Forbidden, Via: 1.1 script-proxy"),
        "{}",
        o.detail
    );
    assert!(
        o.detail
            .contains("Proxy-Status: script-proxy; error=http_request_denied"),
        "{}",
        o.detail
    );
}

#[tokio::test]
async fn connect_answered_502_is_proxy_upstream_error() {
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(443))))).await;
    assert_eq!(o.reason, FailureReason::ProxyUpstreamError, "{}", o.detail);
    assert_eq!(o.connect_status, Some(502));
    assert!(o.detail.contains("502 Bad Gateway"), "{}", o.detail);
}

#[tokio::test]
async fn proxy_closing_garbage_or_endless_headers_is_proxy_protocol() {
    for (mode, needle) in [
        (Mode::Close, "closed the connection"),
        (Mode::Garbage, "malformed"),
        (Mode::EndlessHeader, "larger than"),
    ] {
        let proxy = ScriptProxy::start(mode.clone()).await;
        let ws = Workspace::new();
        let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(443))))).await;
        assert_eq!(
            o.reason,
            FailureReason::ProxyProtocol,
            "{mode:?}: {}",
            o.detail
        );
        assert_eq!(o.failed_phase, Some(Phase::Tunnel), "{mode:?}");
        assert!(o.detail.contains(needle), "{mode:?}: {}", o.detail);
    }
}

#[tokio::test]
async fn unresolvable_destination_on_direct_is_resolve() {
    let ws = Workspace::new();
    let o = check_one(&ws.config(direct(|t| t.url("https://nowhere.test/")))).await;
    assert_eq!(o.reason, FailureReason::Resolve, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Resolve));
}

#[tokio::test]
async fn closed_port_on_direct_is_connect() {
    let port = support::free_port();
    let ws = Workspace::new();
    let o = check_one(&ws.config(direct(|t| {
        t.url(&url(port)).allow_addresses(&["127.0.0.1/32"])
    })))
    .await;
    assert_eq!(o.reason, FailureReason::Connect, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Connect));
}

#[tokio::test]
async fn intercepting_proxy_certificate_is_tls_untrusted_and_names_the_issuer() {
    let leaf = pki::rogue_ca().server(&["push.test"], false);
    let up = Opts::new("push.test").leaf(leaf).start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::TlsUntrusted, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Tls));
    assert!(o.detail.contains("Intercepting Proxy CA"), "{}", o.detail);
    assert!(
        o.peer_cert
            .expect("cert kept")
            .issuer
            .contains("Intercepting Proxy CA")
    );
}

#[tokio::test]
async fn certificate_for_another_name_is_tls_untrusted() {
    let leaf = pki::ca().server(&["other.test"], false);
    let up = Opts::new("push.test").leaf(leaf).start().await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(direct(|t| {
        t.url(&url(up.port())).allow_addresses(&["127.0.0.1/32"])
    })))
    .await;
    assert_eq!(o.reason, FailureReason::TlsUntrusted, "{}", o.detail);
}

#[tokio::test]
async fn expired_certificate_is_tls_expired_with_its_expiry() {
    let leaf = pki::ca().server(&["push.test"], true);
    let up = Opts::new("push.test").leaf(leaf).start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::TlsExpired, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Tls));
    assert!(o.detail.contains("2021-01-01T00:00:00Z"), "{}", o.detail);
    assert_eq!(o.peer_cert.expect("cert").not_after, "2021-01-01T00:00:00Z");
}

#[tokio::test]
async fn plain_http_where_tls_was_expected_is_tls_handshake() {
    let up = Opts::new("push.test")
        .behavior(Behavior::Plaintext)
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::TlsHandshake, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Tls));
}

#[tokio::test]
async fn apns_preset_against_an_http1_only_upstream_is_tls_handshake() {
    let up = Opts::new("push.test").h1_only().start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let cfg = via_proxy(&proxy.url(), |t| t.preset("apns").url(&url(up.port())));
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::TlsHandshake, "{}", o.detail);
}

#[tokio::test]
async fn upstream_demanding_a_client_certificate_is_client_cert_rejected() {
    let mut opts = Opts::new("push.test");
    opts.client_ca = Some(pki::ca().cert_pem.clone());
    let up = opts.start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    // No client certificate at all.
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::ClientCertRejected, "{}", o.detail);
    // A client certificate from a CA the upstream does not trust.
    let rogue = pki::rogue_ca().client("app");
    ws.write("client.pem", &rogue.cert_pem);
    ws.write("client.key", &rogue.key_pem);
    let cfg = via_proxy(&proxy.url(), |t| {
        t.url(&url(up.port()))
            .client_pem("client.pem", "client.key")
    });
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::ClientCertRejected, "{}", o.detail);
    // The right one passes.
    let good = pki::ca().client("app");
    ws.write("client.pem", &good.cert_pem);
    ws.write("client.key", &good.key_pem);
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
}

#[tokio::test]
async fn unexpected_status_is_http_status() {
    let up = Opts::new("push.test")
        .reply(500, "nginx: worker_connections are not enough")
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::HttpStatus, "{}", o.detail);
    assert_eq!(o.http_status, Some(500));
    assert!(
        o.detail
            .starts_with("HTTP 500 Internal Server Error, expected 200-399"),
        "{}",
        o.detail
    );
    assert!(o.detail.contains("worker_connections"), "{}", o.detail);
}

#[tokio::test]
async fn body_without_the_expected_text_is_http_body() {
    let up = Opts::new("push.test")
        .reply(200, "{\"hello\":1}")
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let cfg = via_proxy(&proxy.url(), |t| {
        t.url(&url(up.port())).expect_body(r#""issuer""#)
    });
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::HttpBody, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Body));
    let cfg = via_proxy(&proxy.url(), |t| {
        t.url(&url(up.port())).expect_body_regex("hel+o")
    });
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
}

#[tokio::test]
async fn upstream_silent_after_the_tunnel_is_timeout_in_tls() {
    let up = Opts::new("push.test")
        .behavior(Behavior::Silent)
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let cfg = via_proxy(&proxy.url(), |t| t.url(&url(up.port())).timeout("500ms"));
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::Timeout, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::Tls));
    assert_eq!(o.connect_status, Some(200));
}

#[tokio::test]
async fn upstream_closing_after_tls_is_io() {
    let up = Opts::new("push.test")
        .h1_only()
        .behavior(Behavior::CloseAfterTls)
        .start()
        .await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let o = check_one(&ws.config(via_proxy(&proxy.url(), |t| t.url(&url(up.port()))))).await;
    assert_eq!(o.reason, FailureReason::Io, "{}", o.detail);
    assert_eq!(o.failed_phase, Some(Phase::FirstByte));
}

#[tokio::test]
async fn name_resolving_to_a_denied_loopback_address_is_policy_denied_and_never_dialed() {
    // A decoy listens where the name points; it must see no connection.
    let decoy = Opts::new("decoy.test").h1_only();
    let mut decoy = decoy;
    decoy.bind = "127.0.0.2:0".parse().expect("addr");
    let decoy = decoy.start().await;
    let ws = Workspace::new();
    // The target lifts 127.0.0.1 only: 127.0.0.2 stays refused.
    let cfg = direct(|t| {
        t.url(&format!("https://decoy.test:{}/", decoy.port()))
            .allow_addresses(&["127.0.0.1/32"])
    });
    let o = check_one(&ws.config(&cfg)).await;
    assert_eq!(o.reason, FailureReason::PolicyDenied, "{}", o.detail);
    assert!(o.detail.contains("127.0.0.2 is loopback"), "{}", o.detail);
    assert_eq!(decoy.connections(), 0, "the decoy was dialed");
}

/// A TLS front for a proxy: terminates TLS for `proxy.test` and relays the
/// plaintext to `behind`, making an `https://` forward proxy.
async fn tls_front(behind: std::net::SocketAddr) -> (u16, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    let leaf = pki::ca().server(&["proxy.test"], false);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(behind).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn an_https_proxy_is_reached_over_tls_and_tunnels() {
    let up = Opts::new("push.test").start().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let (port, front) = tls_front(proxy.addr).await;
    let ws = Workspace::new();
    let text = via_proxy(&format!("https://proxy.test:{port}"), |t| {
        t.url(&url(up.port()))
    })
    .edit_route("provider", |r| r.ca_file("ca.pem"));
    let o = check_one(&ws.config(&text)).await;
    assert_eq!(o.reason, FailureReason::Ok, "{}", o.detail);
    assert_eq!(o.connect_status, Some(200));
    assert_eq!(proxy.received().len(), 1);
    // A proxy certificate we do not trust is a failure to reach the proxy.
    let untrusted = via_proxy(&format!("https://proxy.test:{port}"), |t| {
        t.url(&url(up.port()))
    })
    .tls(|t| t.roots("webpki"));
    let o = check_one(&ws.config(&untrusted)).await;
    assert_eq!(o.reason, FailureReason::ProxyConnect, "{}", o.detail);
    assert!(
        o.detail.contains("TLS to proxy https://proxy.test:"),
        "{}",
        o.detail
    );
    front.abort();
}
