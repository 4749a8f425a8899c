//! This process's own exhaustion (`local_exhausted`: EMFILE, ENFILE,
//! ENOBUFS, ENOMEM opening a socket or a file), summarised: it never moves
//! a route and never opens an incident, and a storm of it makes one log
//! line a second at most, with counts, instead of one per probe or app
//! connection.
//!
//! [`Summary`] is pure (the time comes in as an argument); the runtime
//! feeds it and writes the line it returns.

use tokio::time::Instant;

use crate::throttle::Throttle;

/// Who ran into the exhaustion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A probe.
    Probe,
    /// An app connection through the forward proxy.
    AppConnection,
}

/// Counts since the last line.
#[derive(Debug, Default)]
pub struct Summary {
    probes: u64,
    connections: u64,
    last_detail: String,
    gate: Throttle,
}

/// One summary line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Probes that failed `local_exhausted` since the last line.
    pub probes: u64,
    /// App connections that did.
    pub connections: u64,
    /// The latest failure's detail (the errno in words).
    pub detail: String,
}

impl Summary {
    /// Counts one failure at `now`; returns the line to write when one is
    /// due (the first at once, then at most one per [`crate::throttle::EVERY`]).
    pub fn record(&mut self, now: Instant, who: Who, detail: &str) -> Option<Line> {
        match who {
            Who::Probe => self.probes += 1,
            Who::AppConnection => self.connections += 1,
        }
        detail.clone_into(&mut self.last_detail);
        self.flush(now)
    }

    /// The line for the failures counted but not written yet, when one is
    /// due at `now` (the upkeep tick writes the tail of a storm).
    pub fn flush(&mut self, now: Instant) -> Option<Line> {
        let pending = self.probes + self.connections > 0;
        self.gate.line(now, pending, || Line {
            probes: std::mem::take(&mut self.probes),
            connections: std::mem::take(&mut self.connections),
            detail: std::mem::take(&mut self.last_detail),
        })
    }
}

impl Line {
    /// Writes the line.
    pub fn log(&self) {
        tracing::warn!(
            reason = "local_exhausted",
            probes = self.probes,
            app_connections = self.connections,
            last = %self.detail,
            "local_exhausted: this process ran out of descriptors or memory; {} probes and {} app connections failed since the last such line; not counted against any route",
            self.probes,
            self.connections
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_storm_makes_one_line_a_second_with_counts() {
        let t0 = Instant::from_std(std::time::Instant::now());
        let mut s = Summary::default();
        let first = s.record(t0, Who::Probe, "EMFILE");
        assert_eq!(
            first,
            Some(Line {
                probes: 1,
                connections: 0,
                detail: "EMFILE".into()
            })
        );
        let mut lines = Vec::new();
        // 3 000 failures over 2.5 s: one every ms.
        for ms in 1..=2500u64 {
            let who = if ms % 3 == 0 {
                Who::Probe
            } else {
                Who::AppConnection
            };
            let now = t0 + Duration::from_millis(ms);
            lines.extend(s.record(now, who, "ENFILE"));
        }
        assert_eq!(lines.len(), 2, "at 1 s and 2 s: {lines:?}");
        assert_eq!(lines[0].probes + lines[0].connections, 1000);
        // The tail is written by the tick, once due.
        assert_eq!(s.flush(t0 + Duration::from_millis(2600)), None);
        let tail = s.flush(t0 + Duration::from_millis(3000)).expect("tail");
        assert_eq!(tail.probes + tail.connections, 500);
        assert_eq!(s.flush(t0 + Duration::from_secs(10)), None, "nothing left");
    }
}
