//! Forward-proxy limits, in a test binary of their own so the process's
//! descriptor count is not disturbed by other tests running alongside.

mod support;

use std::time::{Duration, Instant};

use support::Workspace;
use support::app::{get_via, raw_exchange};
use support::proxy::{Mode, ScriptProxy};
use support::scenario::{config, upstream};
use support::sidecar::{Running, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_status_promptly_and_leave_no_descriptor_behind() {
    let up = upstream().await;
    let proxy = ScriptProxy::start(Mode::Tunnel).await;
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(config(&proxy.url(), up.port()))).await;
    // Warm up: one good request, so lazily created descriptors exist.
    assert_eq!(
        get_via(sidecar.proxy, "push.test", up.port()).await,
        Ok(200)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = egress_sentinel::watch::open_fds();
    let cases: &[(&[u8], &str)] = &[
        (b"CONNECT push.test HTTP/1.1\r\n\r\n", "400"),
        (b"CONNECT /x HTTP/1.1\r\n\r\n", "400"),
        (b"CONNECT * HTTP/1.1\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: push.test\r\n\r\n", "400"),
        (b"POST http://push.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", "400"),
    ];
    for (bytes, status) in cases {
        let start = Instant::now();
        let reply = raw_exchange(sidecar.proxy, bytes, Duration::from_secs(2)).await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {reply}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            reply.contains("Proxy-Status: egress-sentinel; error=http_request_error"),
            "{reply}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    let big = format!(
        "CONNECT push.test:443 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(
        raw_exchange(sidecar.proxy, big.as_bytes(), Duration::from_secs(2))
            .await
            .starts_with("HTTP/1.1 431 ")
    );
    for count in [100, 10_000] {
        let many: String = (0..count).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("CONNECT push.test:443 HTTP/1.1\r\n{many}\r\n");
        let reply = raw_exchange(sidecar.proxy, many.as_bytes(), Duration::from_secs(2)).await;
        assert!(
            reply.starts_with("HTTP/1.1 431 "),
            "{count} headers: {reply}"
        );
    }
    // 100 KiB of headers: refused at 16 KiB, the rest never read.
    let huge = format!(
        "CONNECT push.test:443 HTTP/1.1\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(100 * 1024)
    );
    let reply = raw_exchange(sidecar.proxy, huge.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    // A slow drip: header_timeout is 500 ms for the whole head.
    let start = Instant::now();
    let reply = raw_exchange(
        sidecar.proxy,
        b"CONNECT push.test:443 HTTP/1.1\r\nX-Slow: a",
        Duration::from_secs(3),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let after = eventually(
        Duration::from_secs(3),
        "descriptors back to where they were",
        || async {
            let now = egress_sentinel::watch::open_fds();
            (now <= before).then_some(now)
        },
    )
    .await;
    assert!(after <= before);
    sidecar.stop().await;
}
