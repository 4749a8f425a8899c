//! The fault matrix's tunnel rows, against the binary as users run it: an
//! upstream that resets the connection mid-tunnel, a client that half-closes
//! (and an upstream that does), and a client that never reads a 10 MiB
//! response. Each tunnel must end promptly, pass the FIN on, and hold no
//! more than its bounded buffers; afterwards the sidecar's descriptors,
//! memory and active-connection gauge are back where they were.
//!
//! The upstream is a plain TCP server here: a tunnel carries bytes, and
//! the faults are TCP's.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::Workspace;
use support::config::{Target, Toml};
use support::scenario::upstream;
use support::sidecar::{eventually, request, sample, tasks_at_rest, tasks_settle_to};
use support::spawned::Spawned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The app never reads for longer than this.
const IDLE: Duration = Duration::from_secs(3);

/// Push (direct only) and a raw-TCP destination `raw.test` that belongs to it.
fn config(tls_port: u16, raw_port: u16) -> String {
    Toml::new()
        .daemon("2s")
        .probe(|p| p.interval("1s").timeout("1s"))
        .resolve("push.test", "127.0.0.1")
        .resolve("raw.test", "127.0.0.1")
        .target(
            Target::new("apns", &format!("https://push.test:{tls_port}/"))
                .routes(&["direct"])
                .hosts(&["raw.test"])
                .allow_addresses(&["127.0.0.1/32"])
                .ca_file("ca.pem"),
        )
        .forward(|f| {
            f.deny_unmatched()
                .allow_ports(&[raw_port])
                .idle_timeout(&format!("{}s", IDLE.as_secs()))
        })
        .to_string()
}

/// CONNECT `raw.test:port` through the sidecar; the stream after the 200.
async fn tunnel(proxy: SocketAddr, port: u16, socket: TcpSocket) -> TcpStream {
    let mut s = socket.connect(proxy).await.expect("connect to the sidecar");
    s.write_all(
        format!("CONNECT raw.test:{port} HTTP/1.1\r\nHost: raw.test:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.expect("reply");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    s
}

fn v4_socket() -> TcpSocket {
    TcpSocket::new_v4().expect("socket")
}

/// The next read's result within `within`: `Ok(n)`, `Err` for a reset.
async fn read_within(
    s: &mut TcpStream,
    buf: &mut [u8],
    within: Duration,
) -> std::io::Result<usize> {
    tokio::time::timeout(within, s.read(buf))
        .await
        .unwrap_or_else(|_| panic!("no read result within {within:?}: the tunnel hangs"))
}

struct Fixture {
    ws: Workspace,
    sidecar: Spawned,
    proxy: SocketAddr,
    metrics: SocketAddr,
    raw: TcpListener,
    raw_port: u16,
    _tls: support::upstream::Upstream,
}

async fn fixture() -> Fixture {
    let tls = upstream().await;
    let raw = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let raw_port = raw.local_addr().expect("addr").port();
    let ws = Workspace::new();
    let path = ws.write("config.toml", &config(tls.port(), raw_port));
    let mut sidecar = Spawned::run(&path, &[]);
    let proxy = sidecar.addr("forward proxy").await;
    let metrics = sidecar.addr("metrics").await;
    Fixture {
        ws,
        sidecar,
        proxy,
        metrics,
        raw,
        raw_port,
        _tls: tls,
    }
}

impl Fixture {
    /// Waits until no tunnel is open and the descriptors and live tasks
    /// are back to `rest`.
    async fn settles(&self, rest: Rest, what: &str) {
        eventually(Duration::from_secs(5), what, || async {
            let (_, m) = request(self.metrics, "GET", "/metrics").await;
            let open = sample(&m, "egress_forward_active_connections", &[]).unwrap_or(0.0);
            (open == 0.0).then_some(())
        })
        .await;
        self.sidecar
            .fds_settle_to(rest.fds, Duration::from_secs(5), what)
            .await;
        tasks_settle_to(self.metrics, rest.tasks, Duration::from_secs(5), what).await;
    }
}

/// Descriptors and live tasks at rest.
#[derive(Debug, Clone, Copy)]
struct Rest {
    fds: u64,
    tasks: f64,
}

/// Warm up (one tunnel end to end, so lazily opened descriptors exist) and
/// return the settled descriptor and task counts.
async fn baseline(f: &Fixture) -> Rest {
    let mut app = tunnel(f.proxy, f.raw_port, v4_socket()).await;
    let (mut up, _) = f.raw.accept().await.expect("accept");
    app.write_all(b"hi").await.expect("write");
    let mut buf = [0u8; 2];
    up.read_exact(&mut buf).await.expect("read");
    drop((app, up));
    tokio::time::sleep(Duration::from_millis(500)).await;
    Rest {
        fds: f.sidecar.steady_fds().await,
        tasks: tasks_at_rest(f.metrics).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_tunnel_closes_the_app_side_at_once() {
    let f = fixture().await;
    let rest = baseline(&f).await;

    let mut app = tunnel(f.proxy, f.raw_port, v4_socket()).await;
    let (mut up, _) = f.raw.accept().await.expect("accept");
    app.write_all(b"request").await.expect("write");
    let mut buf = [0u8; 64];
    let n = up.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"request");
    up.write_all(b"partial answer").await.expect("write");
    let n = read_within(&mut app, &mut buf, Duration::from_secs(2))
        .await
        .expect("the partial answer");
    assert_eq!(&buf[..n], b"partial answer");
    // RST: linger 0, then close.
    up.set_zero_linger().expect("linger");
    drop(up);
    let reset = Instant::now();
    // The app sees the end (EOF or a reset of its own) promptly — long
    // before the idle timeout would have ended the tunnel.
    let r = read_within(&mut app, &mut buf, Duration::from_secs(2)).await;
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(reset.elapsed() < IDLE / 3, "{:?}", reset.elapsed());
    drop(app);
    f.settles(rest, "the reset tunnel's descriptors closed")
        .await;
    let (status, _) = f.sidecar.stop().await;
    assert_eq!(status.code(), Some(0));
    drop(f.ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_passed_on_each_way_and_the_other_side_may_still_answer() {
    let f = fixture().await;
    let rest = baseline(&f).await;
    let mut buf = [0u8; 64];

    // The app finishes its request first (shutdown(SHUT_WR)).
    let mut app = tunnel(f.proxy, f.raw_port, v4_socket()).await;
    let (mut up, _) = f.raw.accept().await.expect("accept");
    app.write_all(b"whole request").await.expect("write");
    app.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        let n = read_within(&mut up, &mut buf, Duration::from_secs(2))
            .await
            .expect("upstream read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"whole request");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the FIN took {:?}",
        start.elapsed()
    );
    // The upstream answers after the app's FIN; the answer arrives whole.
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.write_all(b"answer after FIN").await.expect("write");
    drop(up);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), app.read_to_end(&mut answer))
        .await
        .expect("the tunnel ends after the answer")
        .expect("read");
    assert_eq!(answer, b"answer after FIN");

    // The upstream finishes first; the app may still send.
    let mut app = tunnel(f.proxy, f.raw_port, v4_socket()).await;
    let (mut up, _) = f.raw.accept().await.expect("accept");
    up.write_all(b"banner").await.expect("write");
    up.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), app.read_to_end(&mut got))
        .await
        .expect("the upstream's FIN reaches the app")
        .expect("read");
    assert_eq!(got, b"banner");
    app.write_all(b"late words").await.expect("write");
    app.shutdown().await.expect("half-close");
    let mut late = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), up.read_to_end(&mut late))
        .await
        .expect("the app's late words and FIN reach the upstream")
        .expect("read");
    assert_eq!(late, b"late words");
    drop((app, up));

    f.settles(rest, "both half-closed tunnels closed").await;
    let (status, _) = f.sidecar.stop().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_reads_a_10_mib_answer_holds_bounded_memory_until_the_idle_timeout() {
    const ANSWER: usize = 10 * 1024 * 1024;
    let f = fixture().await;
    let rest = baseline(&f).await;
    let rss_before = f.sidecar.rss_kib();

    // The app's receive buffer is small, and it never reads.
    let socket = v4_socket();
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let app = tunnel(f.proxy, f.raw_port, socket).await;
    let (up, _) = f.raw.accept().await.expect("accept");
    let (mut up_r, mut up_w) = up.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut sent = 0usize;
        while sent < ANSWER {
            match up_w.write(&chunk[..chunk.len().min(ANSWER - sent)]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n,
            }
        }
        (sent, Instant::now())
    });
    // While the answer is stuck, the sidecar's memory stays put: it holds
    // a bounded buffer per direction, and the rest waits in the kernel (or
    // at the upstream, which the sidecar stops reading).
    let mut rss_peak = rss_before;
    let stuck = Instant::now();
    while stuck.elapsed() < IDLE - Duration::from_millis(500) {
        rss_peak = rss_peak.max(f.sidecar.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        rss_peak < rss_before + 4 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB for a 10 MiB answer nobody reads"
    );
    // The idle timeout ends the tunnel: the upstream's side is closed.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(IDLE + Duration::from_secs(3), up_r.read(&mut buf))
        .await
        .expect("the upstream side closed after the idle timeout");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let ended = stuck.elapsed();
    assert!(
        ended >= IDLE - Duration::from_millis(500) && ended < IDLE + Duration::from_secs(3),
        "closed after {ended:?}, idle timeout {IDLE:?}"
    );
    let (sent, _) = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the upstream's writes end")
        .expect("writer");
    eprintln!(
        "the upstream got {sent} of {ANSWER} bytes in before the tunnel closed; sidecar RSS {rss_before} -> peak {rss_peak} KiB"
    );
    drop(app);
    f.settles(rest, "the stuck tunnel's descriptors closed")
        .await;
    let (status, _) = f.sidecar.stop().await;
    assert_eq!(status.code(), Some(0));
}
