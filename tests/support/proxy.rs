//! A scriptable CONNECT proxy on 127.0.0.1, standing in for the hosting
//! provider's forward proxy: it tunnels (to 127.0.0.1 at the requested port,
//! whatever the host name), refuses with a chosen status, demands
//! credentials, hangs, closes, or sends garbage or an endless header. The
//! mode can change while it runs; it records every CONNECT it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use egress_sentinel::demo::stand_ins::read_connect_head;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does with a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200, then relay bytes.
    Tunnel,
    /// Answer with this status and reason, with `Via` and `Proxy-Status`.
    Status(u16, &'static str),
    /// 407 unless `Proxy-Authorization` equals this value; then tunnel.
    RequireAuth(String),
    /// Read the request, then say nothing.
    Hang,
    /// Read the request, then close.
    Close,
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// Answer with a status line and headers that never end.
    EndlessHeader,
    /// Every second CONNECT to this authority gets a 500 (counted per
    /// authority, so other traffic cannot change the pattern); the rest
    /// tunnel. Worker exhaustion behind the proxy, as seen from outside.
    EverySecondFails(String),
}

/// One CONNECT the proxy received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request line's authority (`host:port`).
    pub authority: String,
    /// The `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Host` header.
    pub host_header: Option<String>,
}

#[derive(Default)]
struct State {
    mode: Mutex<Option<Mode>>,
    received: Mutex<Vec<Received>>,
    /// CONNECTs seen per authority, for `EverySecondFails`.
    per_authority: Mutex<std::collections::HashMap<String, u64>>,
}

/// A running proxy; stops when dropped.
pub struct ScriptProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<JoinHandle<()>>,
}

impl Drop for ScriptProxy {
    fn drop(&mut self) {
        self.task.lock().expect("lock").abort();
    }
}

fn accept_loop(listener: TcpListener, st: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let st = st.clone();
            tokio::spawn(async move { handle(tcp, st).await });
        }
    })
}

impl ScriptProxy {
    /// Starts a proxy in `mode`.
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State::default());
        *state.mode.lock().expect("lock") = Some(mode);
        let task = Mutex::new(accept_loop(listener, state.clone()));
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode for the next connections.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("lock") = Some(mode);
    }

    /// Stops listening: connections are refused (the proxy is down).
    pub fn refuse_connections(&self) {
        self.task.lock().expect("lock").abort();
    }

    /// Listens again on the same address.
    pub async fn accept_connections(&self) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(self.addr).expect("rebind the proxy's port");
        let listener = socket.listen(128).expect("listen");
        *self.task.lock().expect("lock") = accept_loop(listener, self.state.clone());
    }

    /// The CONNECTs received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }
}

async fn handle(mut tcp: TcpStream, st: Arc<State>) {
    let Some((text, authority)) = read_connect_head(&mut tcp).await else {
        return;
    };
    let header = |name: &str| {
        text.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let received = Received {
        authority: authority.clone(),
        authorization: header("proxy-authorization"),
        host_header: header("host"),
    };
    st.received.lock().expect("lock").push(received.clone());
    let mode = st
        .mode
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or(Mode::Tunnel);
    let nth = {
        let mut counts = st.per_authority.lock().expect("lock");
        let n = counts.entry(authority.clone()).or_insert(0);
        *n += 1;
        *n
    };
    match mode {
        Mode::Tunnel => tunnel(tcp, &authority).await,
        Mode::EverySecondFails(which) if which == authority && nth % 2 == 0 => {
            let _ = tcp
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nVia: 1.1 script-proxy\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
        Mode::EverySecondFails(_) => tunnel(tcp, &authority).await,
        Mode::RequireAuth(expected) => {
            if received.authorization.as_deref() == Some(expected.as_str()) {
                tunnel(tcp, &authority).await;
            } else {
                let _ = tcp
                    .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"egress\"\r\nVia: 1.1 script-proxy\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        }
        Mode::Status(code, reason) => {
            let reply = format!(
                "HTTP/1.1 {code} {reason}\r\nVia: 1.1 script-proxy\r\nProxy-Status: script-proxy; error=http_request_denied\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::Close => {}
        Mode::Garbage => {
            let _ = tcp
                .write_all(b"\x16\x03\x01 definitely not http\r\n\r\n")
                .await;
        }
        Mode::EndlessHeader => {
            let _ = tcp
                .write_all(b"HTTP/1.1 200 Connection established\r\n")
                .await;
            let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
            for _ in 0..10_000 {
                if tcp.write_all(filler.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn tunnel(mut tcp: TcpStream, authority: &str) {
    let port: u16 = authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // Dial from 127.0.0.2, so an upstream can tell tunnelled connections
    // (peer 127.0.0.2) from direct ones (peer 127.0.0.1).
    let dialed = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse().expect("addr"))?;
        socket
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
    };
    let Ok(mut upstream) = dialed.await else {
        let _ = tcp
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nVia: 1.1 script-proxy\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    if tcp
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
}
