//! One accept loop's trouble, summarised: connections refused at the cap
//! and accepts that failed (EMFILE, ENFILE, ENOBUFS: this process or the
//! machine out of descriptors or buffers). A storm of either makes one log
//! line a second at most, with counts and the latest error, instead of one
//! line per connection or per back-off step.
//!
//! [`Pressure`] is pure (the time comes in as an argument); the accept loop
//! feeds it, writes the line it returns and wakes for the tail of a storm.

use std::io;

use tokio::time::Instant;

use crate::throttle::Throttle;

/// Counts since the last line.
#[derive(Debug, Default)]
pub struct Pressure {
    refused: u64,
    failed: u64,
    last_error: Option<String>,
    gate: Throttle,
}

/// One summary line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Connections refused at the cap since the last line.
    pub refused: u64,
    /// Accepts that failed since the last line.
    pub failed: u64,
    /// The latest failed accept's error: the errno's name and its words.
    pub last_error: Option<String>,
}

/// An accept error as the line shows it: `EMFILE (Too many open files)`.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let name = format!("{:?}", nix::errno::Errno::from_raw(code));
            let words = e.to_string();
            let words = words.split(" (os error").next().unwrap_or(&words);
            format!("{name} ({words})")
        }
        None => e.to_string(),
    }
}

impl Pressure {
    /// A connection was refused at the cap at `now`; returns the line to
    /// write when one is due (the first at once, then at most one per
    /// [`crate::throttle::EVERY`]).
    pub fn refused(&mut self, now: Instant) -> Option<Line> {
        self.refused += 1;
        self.flush(now)
    }

    /// An accept failed with `error` at `now`; as [`Self::refused`].
    pub fn failed(&mut self, now: Instant, error: &io::Error) -> Option<Line> {
        self.failed += 1;
        self.last_error = Some(describe(error));
        self.flush(now)
    }

    /// When the counts not written yet are due (`None`: nothing waits).
    pub fn next_due(&self) -> Option<Instant> {
        if self.refused + self.failed == 0 {
            return None;
        }
        Some(self.gate.next())
    }

    /// The line for the counts not written yet, when one is due at `now`.
    pub fn flush(&mut self, now: Instant) -> Option<Line> {
        let pending = self.refused + self.failed > 0;
        self.gate.line(now, pending, || Line {
            refused: std::mem::take(&mut self.refused),
            failed: std::mem::take(&mut self.failed),
            last_error: self.last_error.take(),
        })
    }
}

impl Line {
    /// Writes the line for `listener`, whose cap is `cap`.
    pub fn log(&self, listener: &str, cap: usize) {
        tracing::warn!(
            listener,
            cap,
            refused_at_cap = self.refused,
            failed_accepts = self.failed,
            last_error = self.last_error.as_deref().unwrap_or(""),
            "{listener}: {} connections refused at the cap of {cap} and {} accepts failed since the last such line{}",
            self.refused,
            self.failed,
            match &self.last_error {
                Some(e) => format!(" (last: {e}; backing off up to 1 s between accepts)"),
                None => String::new(),
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn a_storm_makes_one_line_a_second_with_counts_and_the_errno() {
        let t0 = Instant::from_std(std::time::Instant::now());
        let mut p = Pressure::default();
        let first = p.failed(t0, &emfile()).expect("the first at once");
        assert_eq!(first.failed, 1);
        assert_eq!(
            first.last_error.as_deref(),
            Some("EMFILE (Too many open files)")
        );
        let mut lines = Vec::new();
        // 2 500 events over 2.5 s: refusals and failed accepts mixed.
        for ms in 1..=2500u64 {
            let now = t0 + Duration::from_millis(ms);
            let line = if ms % 5 == 0 {
                p.failed(now, &emfile())
            } else {
                p.refused(now)
            };
            lines.extend(line);
        }
        assert_eq!(lines.len(), 2, "at 1 s and 2 s: {lines:?}");
        assert_eq!(lines[0].refused + lines[0].failed, 1000);
        assert_eq!(lines[0].failed, 200);
        // The tail waits for its second, then is written once.
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(p.flush(t0 + Duration::from_millis(2600)), None);
        let tail = p.flush(t0 + Duration::from_secs(3)).expect("tail");
        assert_eq!(tail.refused + tail.failed, 500);
        assert_eq!(p.next_due(), None, "nothing left");
        assert_eq!(p.flush(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn refusals_alone_name_no_error() {
        let t0 = Instant::from_std(std::time::Instant::now());
        let mut p = Pressure::default();
        let line = p.refused(t0).expect("first");
        assert_eq!((line.refused, line.failed, line.last_error), (1, 0, None));
    }
}
