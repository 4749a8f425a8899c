//! Happy Eyeballs (RFC 8305) for the dialer's TCP step: when a name has
//! several addresses, they are tried staggered — the next attempt starts
//! [`ATTEMPT_DELAY`] after the previous one if that has not connected, or at
//! once when it fails — the first to connect wins and the others are
//! closed. Address families are interleaved, starting with the first
//! address's family, so one dead family costs one delay, not one timeout
//! per address.
//!
//! Owns the record of every attempt ([`Attempts`]), written as the attempts
//! happen: when the caller's deadline cancels the step, the record still
//! says which addresses were tried and that they never answered.
//! Never bounds time itself: the caller's deadline does.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::fmt_duration;

/// How long an attempt has before the next one starts (RFC 8305's
/// recommended Connection Attempt Delay).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// What became of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptState {
    /// Started and not answered (yet, or before the deadline).
    Pending,
    /// This address gave the connection.
    Connected,
    /// The connection failed (refused, unreachable...).
    Failed(String),
    /// Closed unanswered because another address connected first.
    Abandoned,
}

/// One address tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The address.
    pub addr: SocketAddr,
    /// When it started, from the start of the TCP step.
    pub started: Duration,
    /// How long it ran until it connected, failed or was given up.
    pub took: Option<Duration>,
    /// What became of it.
    pub state: AttemptState,
}

/// Every address tried for one TCP step, in the order they started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts(pub Vec<Attempt>);

// === impl Attempts ===

impl Attempts {
    /// The address that gave the connection.
    pub fn answered(&self) -> Option<SocketAddr> {
        self.0
            .iter()
            .find(|a| a.state == AttemptState::Connected)
            .map(|a| a.addr)
    }

    /// The addresses that did not give the connection.
    pub fn failed(&self) -> impl Iterator<Item = &Attempt> {
        self.0.iter().filter(|a| a.state != AttemptState::Connected)
    }

    /// True when more than one address was tried: then a report names them.
    pub fn worth_reporting(&self) -> bool {
        self.0.len() > 1
    }

    /// Records an attempt to `addr` starting now (`started` into the
    /// step); returns its index.
    fn begin(&mut self, addr: SocketAddr, started: Duration) -> usize {
        self.0.push(Attempt {
            addr,
            started,
            took: None,
            state: AttemptState::Pending,
        });
        self.0.len() - 1
    }

    /// Records how attempt `index` ended, `now` into the step; returns its
    /// address.
    fn ended(&mut self, index: usize, now: Duration, state: AttemptState) -> SocketAddr {
        let a = &mut self.0[index];
        a.took = Some(now.saturating_sub(a.started));
        a.state = state;
        a.addr
    }

    /// Gives up the attempts still in flight when another one connected.
    fn abandon(&mut self, indexes: impl Iterator<Item = usize>, now: Duration) {
        for index in indexes {
            self.ended(index, now, AttemptState::Abandoned);
        }
    }
}

impl fmt::Display for Attempts {
    /// `127.0.0.3:3128 no answer in 250ms (abandoned), 127.0.0.1:3128 connected in 0.4ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let took = a.took.map(fmt_duration).unwrap_or_default();
            match &a.state {
                AttemptState::Pending => write!(f, "{} no answer", a.addr)?,
                AttemptState::Connected => write!(f, "{} connected in {took}", a.addr)?,
                AttemptState::Failed(why) => write!(f, "{} failed after {took}: {why}", a.addr)?,
                AttemptState::Abandoned => {
                    write!(f, "{} no answer in {took} (abandoned)", a.addr)?;
                }
            }
        }
        Ok(())
    }
}

/// `addrs` with the address families alternating, starting with the first
/// address's family; order within a family is kept (RFC 8305 §4).
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv4() == first.is_ipv4());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (same.pop(), other.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to one of `addrs`, staggered by `delay`, recording every
/// attempt into `attempts` as it goes. Returns the stream and the address
/// that answered, or the last failure when every address failed. Dropping
/// the future closes every attempt still open.
pub async fn connect(
    addrs: &[SocketAddr],
    delay: Duration,
    attempts: &mut Attempts,
) -> Result<(TcpStream, SocketAddr), (SocketAddr, io::Error)> {
    let order = interleave(addrs);
    let start = Instant::now();
    let mut queue = order.iter().copied();
    // (index in `attempts`, the connect in flight)
    let mut running = Vec::new();
    let mut last_failure = None;
    let mut next_at: Option<Pin<Box<Sleep>>> = None;
    loop {
        let due = next_at.is_none() || running.is_empty();
        if due {
            if let Some(addr) = queue.next() {
                let index = attempts.begin(addr, start.elapsed());
                running.push((index, Box::pin(TcpStream::connect(addr))));
                next_at = Some(Box::pin(tokio::time::sleep(delay)));
                continue;
            }
            if running.is_empty() {
                return Err(last_failure.unwrap_or_else(no_address));
            }
        }
        let (slot, result) = match next_event(&mut running, &mut next_at).await {
            Event::Finished(slot, result) => (slot, result),
            Event::NextDue => {
                next_at = None;
                continue;
            }
        };
        let (index, _) = running.swap_remove(slot);
        let now = start.elapsed();
        match result {
            Ok(stream) => {
                let winner = attempts.ended(index, now, AttemptState::Connected);
                // Latency matters more than packet count for handshakes.
                let _ = stream.set_nodelay(true);
                attempts.abandon(running.iter().map(|(i, _)| *i), start.elapsed());
                // Dropping `running` closes the other attempts.
                return Ok((stream, winner));
            }
            Err(e) => {
                let addr = attempts.ended(index, now, AttemptState::Failed(e.to_string()));
                last_failure = Some((addr, e));
                // A failure starts the next address at once.
                next_at = None;
            }
        }
    }
}

/// The failure when there was no address at all.
fn no_address() -> (SocketAddr, io::Error) {
    (
        SocketAddr::from(([0, 0, 0, 0], 0)),
        io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
    )
}

/// What the race waited for.
enum Event {
    /// The attempt in this slot of the running ones finished.
    Finished(usize, io::Result<TcpStream>),
    /// The delay passed with no answer: the next address is due.
    NextDue,
}

/// Waits for an attempt to finish, or for the next one to be due.
async fn next_event<F>(
    running: &mut [(usize, Pin<Box<F>>)],
    next_at: &mut Option<Pin<Box<Sleep>>>,
) -> Event
where
    F: Future<Output = io::Result<TcpStream>>,
{
    poll_fn(|cx| {
        for (slot, (_, attempt)) in running.iter_mut().enumerate() {
            if let Poll::Ready(result) = attempt.as_mut().poll(cx) {
                return Poll::Ready(Event::Finished(slot, result));
            }
        }
        if let Some(timer) = next_at.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::NextDue);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn families_alternate_starting_with_the_first() {
        let a = [
            addr("[2001:db8::1]:443"),
            addr("[2001:db8::2]:443"),
            addr("192.0.2.1:443"),
            addr("[2001:db8::3]:443"),
            addr("192.0.2.2:443"),
        ];
        assert_eq!(
            interleave(&a),
            vec![a[0], a[2], a[1], a[4], a[3]],
            "v6, v4, v6, v4, v6"
        );
        assert_eq!(interleave(&a[2..3]), vec![a[2]]);
        assert!(interleave(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_refused_address_starts_the_next_at_once() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let live_addr = live.local_addr().expect("addr");
        let mut attempts = Attempts::default();
        let started = std::time::Instant::now();
        let (_stream, peer) = connect(&[closed, live_addr], ATTEMPT_DELAY, &mut attempts)
            .await
            .expect("the second address answers");
        assert!(
            started.elapsed() < ATTEMPT_DELAY,
            "waited for the delay after a refusal: {:?}",
            started.elapsed()
        );
        assert_eq!(peer, live_addr);
        assert_eq!(attempts.answered(), Some(live_addr));
        assert!(
            matches!(attempts.0[0].state, AttemptState::Failed(_)),
            "{attempts}"
        );
        let text = attempts.to_string();
        assert!(
            text.contains(&format!("{closed} failed after"))
                && text.contains(&format!("{live_addr} connected in")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn every_address_refused_gives_the_last_failure_and_the_whole_record() {
        let closed: Vec<SocketAddr> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            })
            .collect();
        let mut attempts = Attempts::default();
        let (last, e) = connect(&closed, ATTEMPT_DELAY, &mut attempts)
            .await
            .expect_err("nothing listens");
        assert_eq!(last, closed[1]);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(attempts.0.len(), 2);
        assert_eq!(attempts.answered(), None);
        let mut none = Attempts::default();
        let (_, e) = connect(&[], ATTEMPT_DELAY, &mut none)
            .await
            .expect_err("no address");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
