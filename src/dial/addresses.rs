//! One bad node behind a proxy's name: when the name has several
//! addresses, each probe checks each of them (the first
//! [`MAX_CHECKED`]) through the route's own stages — TCP, TLS to an
//! `https://` proxy, the CONNECT to the probe's destination — so that a dead
//! or misconfigured node is named, and app connections try the addresses
//! that work first.
//!
//! Owns the per-generation memory of which addresses failed their last
//! check. Never decides health: the route table does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::Serialize;
use tokio::time::Instant;

use super::classify::{connect_reason, is_local_exhaustion};
use super::route::Proxy;
use super::{BoxStream, ConnectError, connect};
use crate::reason::FailureReason;

/// The most addresses of one proxy name checked per probe.
pub const MAX_CHECKED: usize = 8;

/// The check of one address of a proxy's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressCheck {
    /// The address.
    pub address: SocketAddr,
    /// True when it tunnelled to the probe's destination.
    pub up: bool,
    /// Why it failed (`ok` when it did not).
    pub reason: FailureReason,
    /// What happened (`tunnel stands`, or the failure).
    pub detail: String,
}

impl AddressCheck {
    /// `10.0.0.7:3128 (connect: Connection refused)`: as logs and `/status`
    /// show a failing address.
    pub fn describe_down(&self) -> String {
        format!("{} ({})", self.address, self.detail)
    }
}

/// Checks one address of a proxy's name through the route's own stages
/// (TCP, TLS to an `https://` proxy, the CONNECT to `target`), by
/// `deadline`. `None` when this process ran out of descriptors on the way:
/// that says nothing of the address.
pub async fn check(
    address: SocketAddr,
    proxy: &Proxy,
    target: &str,
    deadline: Instant,
) -> Option<AddressCheck> {
    let one = async {
        let tcp = match tokio::net::TcpStream::connect(address).await {
            Ok(tcp) => tcp,
            Err(e) if is_local_exhaustion(&e) => return Ok(false),
            Err(e) => return Err((FailureReason::ProxyConnect, format!("connect: {e}"))),
        };
        let stream: BoxStream = Box::new(tcp);
        let stream = match &proxy.tls {
            None => stream,
            Some(tls) => tls
                .handshake(stream, &proxy.host)
                .await
                .map(|(s, _)| s)
                .map_err(|f| (FailureReason::ProxyConnect, format!("TLS: {}", f.error)))?,
        };
        connect::exchange(stream, target, proxy.authorization.as_ref())
            .await
            .map(|_| true)
            .map_err(|e| {
                let reason = connect_reason(&e);
                let detail = match e {
                    ConnectError::Refused(reply) => format!("CONNECT -> {reply}"),
                    other => format!("CONNECT: {other}"),
                };
                (reason, detail)
            })
    };
    let (reason, detail) = match tokio::time::timeout_at(deadline, one).await {
        Ok(Ok(true)) => (FailureReason::Ok, "tunnel stands".to_string()),
        Ok(Ok(false)) => return None,
        Ok(Err(failed)) => failed,
        Err(_) => (FailureReason::ProxyTimeout, "no answer in time".to_string()),
    };
    Some(AddressCheck {
        address,
        up: reason == FailureReason::Ok,
        reason,
        detail,
    })
}

/// Which proxy addresses failed their last check.
#[derive(Debug, Default)]
pub struct AddressHealth {
    bad: Mutex<HashSet<SocketAddr>>,
}

impl AddressHealth {
    /// Remembers what a probe found.
    pub fn record(&self, checks: &[AddressCheck]) {
        let mut bad = self
            .bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in checks {
            if c.up {
                bad.remove(&c.address);
            } else {
                bad.insert(c.address);
            }
        }
    }

    /// `addrs` with the ones known to fail moved to the end (order kept
    /// otherwise): app connections try the nodes that work first.
    pub fn prefer_working(&self, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let bad = self
            .bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bad.is_empty() {
            return addrs;
        }
        let (good, known_bad): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| !bad.contains(a));
        good.into_iter().chain(known_bad).collect()
    }
}

/// `127.0.0.1:3128 up, 127.0.0.4:3128 DOWN (connection refused)`.
pub fn describe(checks: &[AddressCheck]) -> String {
    checks
        .iter()
        .map(|c| {
            if c.up {
                format!("{} up", c.address)
            } else {
                format!("{} DOWN ({})", c.address, c.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bad_addresses_go_last_and_come_back_when_they_work() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.4:1".parse().expect("addr");
        let c: SocketAddr = "127.0.0.5:1".parse().expect("addr");
        let h = AddressHealth::default();
        assert_eq!(h.prefer_working(vec![b, a, c]), vec![b, a, c]);
        let check = |address, up| AddressCheck {
            address,
            up,
            reason: if up {
                FailureReason::Ok
            } else {
                FailureReason::ProxyConnect
            },
            detail: String::new(),
        };
        h.record(&[check(b, false), check(a, true)]);
        assert_eq!(h.prefer_working(vec![b, a, c]), vec![a, c, b]);
        h.record(&[check(b, true)]);
        assert_eq!(h.prefer_working(vec![b, a, c]), vec![b, a, c]);
    }
}
