//! What the operational log says about direct connections: the first
//! direct connection of a target at once, then one line per target per
//! window with the count and the latest reason.
//!
//! [`Summary`] is pure: time comes in, notices go out; only
//! `log_notice` writes, and only to the log. It never writes the trail.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// What the operational log says about direct connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The first direct connection of a target (after a quiet window).
    First {
        /// The target.
        target: String,
        /// Where the connection went.
        destination: String,
        /// Why it went direct.
        reason: String,
    },
    /// More direct connections of a target since the last line.
    Since {
        /// The target.
        target: String,
        /// How many since the last line.
        count: u64,
        /// The latest reason.
        reason: String,
        /// Over how long.
        window: Duration,
    },
}

#[derive(Debug, Clone)]
struct Episode {
    since: Instant,
    count: u64,
    reason: String,
}

/// Direct connections per target, summarised: pure, time comes in.
#[derive(Debug, Clone)]
pub struct Summary {
    window: Duration,
    episodes: BTreeMap<String, Episode>,
}

impl Summary {
    /// One line per target per `window` after the first.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            episodes: BTreeMap::new(),
        }
    }

    /// A direct connection of `target` at `now`: the first of an episode is
    /// a notice at once, the others wait for [`Summary::due`].
    pub fn record(
        &mut self,
        now: Instant,
        target: &str,
        destination: &str,
        reason: &str,
    ) -> Option<Notice> {
        match self.episodes.get_mut(target) {
            Some(e) => {
                e.count += 1;
                reason.clone_into(&mut e.reason);
                None
            }
            None => {
                self.episodes.insert(
                    target.to_string(),
                    Episode {
                        since: now,
                        count: 0,
                        reason: reason.to_string(),
                    },
                );
                Some(Notice::First {
                    target: target.to_string(),
                    destination: destination.to_string(),
                    reason: reason.to_string(),
                })
            }
        }
    }

    /// The summary lines due at `now`: one per target whose window is over
    /// and that saw more connections; a target quiet for a whole window
    /// ends its episode (its next direct connection is logged at once).
    pub fn due(&mut self, now: Instant) -> Vec<Notice> {
        let mut out = Vec::new();
        let window = self.window;
        self.episodes.retain(|target, e| {
            let elapsed = now.saturating_duration_since(e.since);
            if elapsed < window {
                return true;
            }
            if e.count == 0 {
                return false;
            }
            out.push(Notice::Since {
                target: target.clone(),
                count: e.count,
                reason: e.reason.clone(),
                window: elapsed,
            });
            e.since = now;
            e.count = 0;
            true
        });
        out
    }

    /// Every count not yet told (at shutdown); the episodes end.
    pub fn finish(&mut self, now: Instant) -> Vec<Notice> {
        let out = self
            .episodes
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(target, e)| Notice::Since {
                target: target.clone(),
                count: e.count,
                reason: e.reason.clone(),
                window: now.saturating_duration_since(e.since),
            })
            .collect();
        self.episodes.clear();
        out
    }
}

pub(super) fn log_notice(n: &Notice) {
    match n {
        Notice::First {
            target,
            destination,
            reason,
        } => tracing::warn!(
            target = %target,
            destination = %destination,
            reason = %reason,
            "app connection went DIRECT, bypassing the proxy (each one is in the compliance trail; further ones are summarised once a minute)"
        ),
        Notice::Since {
            target,
            count,
            reason,
            window,
        } => tracing::warn!(
            target = %target,
            count = *count,
            reason = %reason,
            seconds = window.as_secs(),
            "{count} more app connections went DIRECT, bypassing the proxy"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::SUMMARY_WINDOW;

    #[test]
    fn first_direct_connection_at_once_then_one_line_per_minute_with_the_count() {
        let t0 = Instant::now();
        let mut s = Summary::new(SUMMARY_WINDOW);
        let first = s.record(t0, "apns", "push.test:443", "provider: unhealthy");
        assert!(matches!(first, Some(Notice::First { .. })));
        for i in 1..1000u64 {
            let at = t0 + Duration::from_millis(i * 50);
            assert_eq!(
                s.record(at, "apns", "push.test:443", "provider: down"),
                None
            );
            // Nothing is due inside the minute.
            if i % 100 == 0 {
                assert_eq!(s.due(at), []);
            }
        }
        // Another target has its own first line.
        assert!(s.record(t0, "azure", "login.test:443", "x").is_some());
        let due = s.due(t0 + Duration::from_secs(60));
        assert_eq!(
            due,
            [Notice::Since {
                target: "apns".into(),
                count: 999,
                reason: "provider: down".into(),
                window: Duration::from_secs(60),
            }]
        );
        // A quiet minute ends the episode: azure (no more connections) and
        // then apns; the next one is logged at once again.
        assert_eq!(s.due(t0 + Duration::from_secs(121)), []);
        assert!(s.episodes.is_empty());
        assert!(
            s.record(t0 + Duration::from_secs(122), "apns", "push.test:443", "r")
                .is_some()
        );
        assert!(
            s.record(t0 + Duration::from_secs(123), "apns", "push.test:443", "r")
                .is_none()
        );
        assert_eq!(s.finish(t0 + Duration::from_secs(124)).len(), 1);
    }
}
