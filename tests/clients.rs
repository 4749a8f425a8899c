//! The forward proxy as the clients an SSO service really runs use it:
//! Python's `http.client` and `requests` and `openssl s_client -proxy`
//! (all send `CONNECT … HTTP/1.0`), and plain `http://` as curl and
//! browsers send it with `http_proxy` — through real Squid with its stock
//! `deny CONNECT !SSL_ports`, and direct. Pipelined requests are each
//! checked; a request that went out is never retried on another route.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::Workspace;
use support::config::{Route, Target, Toml};
use support::sidecar::{Running, eventually, sample};
use support::squid::{self, Squid};
use support::upstream::Opts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A plain HTTP origin that records every request head (and body) it gets
/// and answers 200 "plain".
struct Origin {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            let (n, v) = l.split_once(':')?;
                            n.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match tcp.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    s.lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned());
                    buf.drain(..end + 4 + len);
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                        .await;
                }
            });
        }
    });
    Origin { port, seen }
}

impl Origin {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

fn plain_config(port: u16, routes: &[&str], proxy: &str) -> Toml {
    Toml::new()
        .probe(|p| p.interval("1s").unhealthy_interval("200ms").timeout("2s"))
        .resolve("plain.test", "127.0.0.1")
        .route(Route::proxy("provider", proxy))
        .target(
            Target::new("plain", &format!("http://plain.test:{port}/health"))
                .routes(routes)
                .allow_addresses(&["127.0.0.1/32"]),
        )
        .forward(|f| f.deny_unmatched())
}

/// Sends `bytes` to the sidecar and reads until it closes (or `wait`).
async fn exchange(proxy: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    support::app::raw_exchange(proxy, bytes, wait).await
}

/// Squid's stock config refuses `CONNECT plain.test:<port>`; a plain
/// request goes to it in absolute form instead: 200 from the origin,
/// Squid's log shows the `GET http://…`, no failover, nothing direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_goes_through_squid_in_absolute_form_despite_its_ssl_ports_rule() {
    let Some(bin) = squid::available() else {
        return;
    };
    let origin = origin().await;
    let squid = Squid::start_with(
        bin,
        &["plain.test"],
        &[],
        &squid::Opts {
            connect_443_only: true,
            ..Default::default()
        },
    );
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(plain_config(
        origin.port,
        &["provider", "direct"],
        &squid.url(),
    )))
    .await;
    eventually(
        Duration::from_secs(10),
        "the probe passes via squid",
        || async {
            let m = sidecar.metrics_text().await;
            (sample(
                &m,
                "egress_probe_success",
                &[("target", "plain"), ("route", "provider")],
            ) == Some(1.0))
            .then_some(())
        },
    )
    .await;
    let port = origin.port;
    let reply = exchange(
        sidecar.proxy,
        format!("GET http://plain.test:{port}/x?y=1 HTTP/1.1\r\nHost: plain.test:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("plain"), "{reply}");
    // Squid writes its access log a moment later; it logs the query as `?`.
    let wanted = format!("GET http://plain.test:{port}/x?");
    let log = eventually(Duration::from_secs(5), "squid's log line", || async {
        let log = squid.access_log();
        log.contains(&wanted).then_some(log)
    })
    .await;
    assert!(!log.contains("CONNECT plain.test"), "no CONNECT: {log}");
    let m = sidecar.metrics_text().await;
    assert_eq!(
        sample(
            &m,
            "egress_route_active",
            &[("target", "plain"), ("route", "provider")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "egress_forward_connections_total",
            &[("target", "plain"), ("route", "direct")]
        ),
        None,
        "nothing went direct:\n{m}"
    );
    sidecar.stop().await;
}

/// Direct: origin form, `Host` from the URL even when the app sent another,
/// hop-by-hop headers and the app's proxy credentials dropped, `Via` added.
/// Two pipelined requests, the second to a denied destination: the second
/// is refused, and the origin sees only the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_plain_http_is_origin_form_and_every_pipelined_request_is_checked() {
    let origin = origin().await;
    let ws = Workspace::new();
    let sidecar =
        Running::start(ws.config(plain_config(origin.port, &["direct"], "http://127.0.0.1:9")))
            .await;
    let port = origin.port;
    let first = format!(
        "GET http://plain.test:{port}/x?y=1 HTTP/1.1\r\nHost: other.example\r\nProxy-Authorization: Basic YXBwOnNlY3JldA==\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n"
    );
    let second = "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n";
    let reply = exchange(
        sidecar.proxy,
        format!("{first}{second}").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let second_reply = &reply[reply.find("plain").expect("first body") + 5..];
    assert!(
        second_reply.starts_with("HTTP/1.1 403"),
        "the pipelined request is checked too: {reply}"
    );
    assert!(
        second_reply.contains("denied.test matches no target"),
        "{reply}"
    );
    let seen: Vec<String> = origin
        .seen()
        .into_iter()
        .filter(|h| h.starts_with("GET /x"))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /x?y=1 http/1.1\r\n"),
        "origin form: {head}"
    );
    assert!(
        head.contains(&format!("host: plain.test:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("x-keep: 2\r\n"), "{head}");
    assert!(head.contains("via: 1.1 egress-sentinel\r\n"), "{head}");
    for gone in [
        "proxy-authorization",
        "proxy-connection",
        "x-hop",
        "other.example",
    ] {
        assert!(!head.contains(gone), "{gone} reached the origin: {head}");
    }
    sidecar.stop().await;
}

/// A "proxy" that takes the whole request and closes without answering.
async fn swallowing_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&got).into_owned());
            });
        }
    });
    (addr, seen)
}

/// A POST whose proxy route breaks after the request went out: the app gets
/// the failure (502, `proxy_protocol`), the request reached the proxy once,
/// and it was not sent again on the direct route the target allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_went_out_is_never_retried_on_another_route() {
    let origin = origin().await;
    let (proxy, swallowed) = swallowing_proxy().await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(plain_config(
        origin.port,
        &["provider", "direct"],
        &format!("http://{proxy}"),
    )))
    .await;
    let port = origin.port;
    let reply = exchange(
        sidecar.proxy,
        format!("POST http://plain.test:{port}/pay HTTP/1.1\r\nHost: plain.test:{port}\r\nContent-Length: 11\r\nConnection: close\r\n\r\namount=100\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    assert!(
        reply.contains("proxy_protocol") || reply.contains("http_response_incomplete"),
        "{reply}"
    );
    let posts = swallowed
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.starts_with("POST http://plain.test"))
        .count();
    assert_eq!(posts, 1, "the proxy got the POST once");
    assert!(
        !origin.seen().iter().any(|h| h.starts_with("POST")),
        "never retried direct: {:?}",
        origin.seen()
    );
    sidecar.stop().await;
}

fn tunnel_config(port: u16) -> Toml {
    Toml::new()
        .resolve("push.test", "127.0.0.1")
        .target(
            Target::new("apns", &format!("https://push.test:{port}/"))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .forward(|f| f.deny_unmatched())
}

/// Python's `http.client` (HTTP/1.0 CONNECT) and `requests` with
/// `HTTPS_PROXY`, against an rcgen TLS upstream through the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_client_and_requests_tunnel_through_the_sidecar() {
    let up = Opts::new("push.test").h1_only().start().await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(tunnel_config(up.port()))).await;
    let ca = ws.path("ca.pem");
    let script = format!(
        r#"
import http.client, ssl, sys, os
ctx = ssl.create_default_context(cafile={ca:?})
c = http.client.HTTPSConnection("127.0.0.1", {proxy}, context=ctx, timeout=10)
c.set_tunnel("push.test", {port})
c.request("GET", "/from-http-client")
print("http.client", c.getresponse().status)
import requests
os.environ["HTTPS_PROXY"] = "http://127.0.0.1:{proxy}"
r = requests.get("https://push.test:{port}/from-requests", verify={ca:?}, timeout=10)
print("requests", r.status_code)
"#,
        ca = ca.display().to_string(),
        proxy = sidecar.proxy.port(),
        port = up.port(),
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("http.client 200"), "{stdout}");
    assert!(stdout.contains("requests 200"), "{stdout}");
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.contains(&"/from-http-client".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/from-requests".to_string()), "{paths:?}");
    sidecar.stop().await;
}

/// `openssl s_client -proxy` (HTTP/1.0 CONNECT) verifies the upstream's
/// certificate through the sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_tunnels_through_the_sidecar() {
    let up = Opts::new("push.test").h1_only().start().await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(tunnel_config(up.port()))).await;
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-proxy"])
        .arg(sidecar.proxy.to_string())
        .arg("-connect")
        .arg(format!("push.test:{}", up.port()))
        .args([
            "-servername",
            "push.test",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ws.path("ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"GET /from-openssl HTTP/1.1\r\nHost: push.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("openssl finishes")
        .expect("output");
    drop(stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    assert!(stdout.contains("HTTP/1.1 200"), "{stdout}");
    assert!(
        up.requests().iter().any(|r| r.path == "/from-openssl"),
        "the upstream saw the request"
    );
    sidecar.stop().await;
}

/// curl with `-x` (as `https_proxy`/`http_proxy` set it), both an HTTPS
/// tunnel and a plain request; and Java's `HttpClient`, which ignores
/// `HTTPS_PROXY` and takes the JDK's `https.proxyHost`/`https.proxyPort`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_java_httpclient_use_the_sidecar() {
    let up = Opts::new("push.test").h1_only().start().await;
    let origin = origin().await;
    let ws = Workspace::new();
    let text = Toml::new()
        .resolve("push.test", "127.0.0.1")
        .resolve("plain.test", "127.0.0.1")
        .target(
            Target::new("apns", &format!("https://push.test:{}/", up.port()))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .target(
            Target::new("plain", &format!("http://plain.test:{}/", origin.port))
                .routes(&["direct"])
                .allow_addresses(&["127.0.0.1/32"]),
        )
        .forward(|f| f.deny_unmatched());
    let sidecar = Running::start(ws.config(&text)).await;
    let proxy = format!("http://{}", sidecar.proxy);
    let curl = |url: String| {
        let proxy = proxy.clone();
        let ca = ws.path("ca.pem");
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-x",
                ])
                .arg(&proxy)
                .arg("--cacert")
                .arg(ca)
                .arg(url)
                .output()
                .await
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(
        curl(format!("https://push.test:{}/from-curl", up.port())).await,
        "200"
    );
    assert_eq!(
        curl(format!("http://plain.test:{}/from-curl", origin.port)).await,
        "200"
    );
    assert!(up.requests().iter().any(|r| r.path == "/from-curl"));
    assert!(
        origin
            .seen()
            .iter()
            .any(|h| h.starts_with("GET /from-curl"))
    );

    let java = ws.write(
        "Probe.java",
        r#"
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class Probe {
    public static void main(String[] args) throws Exception {
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null);
        try (InputStream in = new FileInputStream(args[0])) {
            ks.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        HttpClient client = HttpClient.newBuilder().sslContext(ctx).version(HttpClient.Version.HTTP_1_1).build();
        HttpResponse<String> r = client.send(HttpRequest.newBuilder(URI.create(args[1])).build(), HttpResponse.BodyHandlers.ofString());
        System.out.println("java " + r.statusCode());
    }
}
"#,
    );
    let Ok(out) = tokio::process::Command::new("java")
        .arg(format!("-Dhttps.proxyHost={}", sidecar.proxy.ip()))
        .arg(format!("-Dhttps.proxyPort={}", sidecar.proxy.port()))
        .arg(java)
        .arg(ws.path("ca.pem"))
        .arg(format!("https://push.test:{}/from-java", up.port()))
        .output()
        .await
    else {
        eprintln!("SKIPPED the Java part: no java on PATH");
        sidecar.stop().await;
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("java 200"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(up.requests().iter().any(|r| r.path == "/from-java"));
    sidecar.stop().await;
}
