//! A loopback address that never answers: a listening socket with a backlog
//! of 0 whose accept queue is filled with connections nobody accepts. Linux
//! then drops further SYNs (`tcp_abort_on_overflow = 0`, the default), so a
//! connect there hangs until the client gives up — a dead proxy address,
//! without sending a packet off this machine. `bind` proves it: it fails
//! unless a probe connect really hangs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a connect must hang for the address to count as a blackhole.
const PROOF: Duration = Duration::from_millis(300);

/// A blackholed address; it stays dead while this lives.
pub struct Blackhole {
    /// The dead address.
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Blackholes `addr` (a loopback address; port 0 picks one).
    pub async fn bind(addr: SocketAddr) -> Blackhole {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("bind the blackhole at {addr}: {e}"));
        let listener = socket.listen(0).expect("listen with backlog 0");
        let addr = listener.local_addr().expect("addr");
        let mut fillers = Vec::new();
        // Connect until one hangs: that one proves the queue is full.
        for _ in 0..8 {
            match tokio::time::timeout(PROOF, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("a connect to the blackhole at {addr} failed: {e}"),
                Err(_) => {
                    return Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    };
                }
            }
        }
        panic!(
            "{addr} still accepts connections after {} unaccepted ones: no blackhole on this kernel",
            fillers.len()
        );
    }
}
