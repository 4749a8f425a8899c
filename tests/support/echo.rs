//! An upstream that echoes, a tunnel to it through the forward proxy proven
//! with a byte there and back, and a process's CPU time: what the tests of
//! many tunnels and of exhaustion share.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CPU time (user + system, in clock ticks) of `pid`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

/// An upstream that echoes every connection until it ends; counts the
/// connections it has open.
pub async fn echo_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// One tunnel to the echo upstream, proven with a byte there and back.
pub async fn echo_tunnel(proxy: std::net::SocketAddr, port: u16) -> Result<TcpStream, String> {
    let work = async {
        let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
        s.write_all(format!("CONNECT echo.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                other => return Err(format!("reply cut: {other:?}")),
            }
        }
        if !head.starts_with(b"HTTP/1.1 200 ") {
            return Err(String::from_utf8_lossy(&head).into_owned());
        }
        s.write_all(b"e").await.map_err(|e| e.to_string())?;
        s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        (byte == *b"e")
            .then_some(s)
            .ok_or_else(|| "echo".to_string())
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| Err("no tunnel within 30 s".into()))
}
