//! One summary line a second at most: the gate that the storm summaries
//! share (an accept loop's refusals and failed accepts, this process's own
//! exhaustion). Pure: the time comes in as an argument.

use std::time::Duration;

use tokio::time::Instant;

/// The shortest time between two lines that pass one gate.
pub const EVERY: Duration = Duration::from_secs(1);

/// When the last line passed.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// Whether a line may be written at `now` (the first at once, then at
    /// most one per [`EVERY`]); when it may, it counts as written.
    pub fn pass(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// The line `take` makes, when counts are `pending` and a line may pass
    /// at `now`; `None` otherwise (nothing taken).
    pub fn line<L>(&mut self, now: Instant, pending: bool, take: impl FnOnce() -> L) -> Option<L> {
        (pending && self.pass(now)).then(take)
    }

    /// When the next line may pass.
    pub fn next(&self) -> Instant {
        self.last.map_or_else(Instant::now, |t| t + EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_passes_then_one_per_second() {
        let t0 = Instant::now();
        let mut g = Throttle::default();
        assert!(g.pass(t0));
        assert!(!g.pass(t0 + Duration::from_millis(999)));
        assert_eq!(g.next(), t0 + EVERY);
        assert!(g.pass(t0 + EVERY));
        assert!(!g.pass(t0 + EVERY));
    }
}
