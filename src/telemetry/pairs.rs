//! Metric handles kept per target × route ([`Pairs`]), so the ~50 gauge
//! sets of one probe (its own series, and the route gauges set again
//! after it) are atomic stores instead of a `Key` built (label strings
//! allocated) and looked up in the registry for each.
//!
//! A kept handle must never outlive its series. The registry drops a
//! gauge or histogram not updated for `idle`, and a handle kept past that
//! would write to a series no longer exported. So a handle is registered
//! again, in the same call that sets it, once it was registered
//! `idle / 4` ago or more: a series set since then cannot have been
//! dropped, and one set less often is looked up again, as before.
//!
//! Owns no names: the callers in `recorder` pass the contract's constants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metrics::{Gauge, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::META;
use crate::reason::{FailureReason, Phase};

/// Every pair's handles: target → route → handles (looked up by `&str`,
/// without building a key).
#[derive(Default)]
pub(super) struct Pairs {
    /// The handles of each target's routes.
    by_target: HashMap<String, HashMap<String, Pair>>,
}

impl Pairs {
    /// The handles of `target` × `route`, created empty on first use (the
    /// names are copied only then). `None` only if the map lost an entry
    /// it was just given.
    pub(super) fn pair(&mut self, target: &str, route: &str) -> Option<&mut Pair> {
        if !self.by_target.contains_key(target) {
            self.by_target.insert(target.to_string(), HashMap::new());
        }
        let routes = self.by_target.get_mut(target)?;
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), Pair::default());
        }
        routes.get_mut(route)
    }

    /// Keeps only the pairs `keep` says are still configured.
    pub(super) fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        for (target, routes) in &mut self.by_target {
            routes.retain(|route, _| keep(target, route));
        }
        self.by_target.retain(|_, routes| !routes.is_empty());
    }
}

/// The kept handles of one target × route.
#[derive(Default)]
pub(super) struct Pair {
    /// `egress_probe_success`.
    pub(super) success: Slot<Gauge>,
    /// `egress_probe_duration_seconds`.
    pub(super) duration: Slot<Histogram>,
    /// `egress_probe_phase_seconds`, in [`Phase::ALL`]'s order.
    pub(super) phases: [Slot<Gauge>; 6],
    /// `egress_probe_last_timestamp_seconds`.
    pub(super) last: Slot<Gauge>,
    /// `egress_proxy_connect_status`.
    pub(super) connect_status: Slot<Gauge>,
    /// `egress_cert_not_after_timestamp_seconds{source="peer"}`.
    pub(super) peer_not_after: Slot<Gauge>,
    /// `egress_tls_intercepted`.
    pub(super) intercepted: Slot<Gauge>,
    /// `egress_route_healthy`.
    pub(super) healthy: Slot<Gauge>,
    /// `egress_route_active`.
    pub(super) active: Slot<Gauge>,
    /// `egress_route_degraded`.
    pub(super) degraded: Slot<Gauge>,
    /// `egress_route_override`.
    pub(super) overridden: Slot<Gauge>,
    /// `egress_route_reason`, in [`FailureReason::ALL`]'s order.
    pub(super) reasons: [Slot<Gauge>; 21],
}

impl Pair {
    /// The phase gauge of `phase`.
    pub(super) fn phase(&mut self, phase: Phase) -> Option<&mut Slot<Gauge>> {
        let i = Phase::ALL.iter().position(|p| *p == phase)?;
        self.phases.get_mut(i)
    }

    /// The reason gauge of `reason`.
    pub(super) fn reason(&mut self, reason: FailureReason) -> Option<&mut Slot<Gauge>> {
        let i = FailureReason::ALL.iter().position(|r| *r == reason)?;
        self.reasons.get_mut(i)
    }
}

/// What registering a handle needs: the registry, the pair's labels, and
/// when handles are due to be registered again.
pub(super) struct Reg<'a> {
    /// The registry.
    pub(super) recorder: &'a PrometheusRecorder,
    /// The pair's `target` label.
    pub(super) target: &'a str,
    /// The pair's `route` label.
    pub(super) route: &'a str,
    /// Now, read once per call.
    pub(super) now: Instant,
    /// How long a handle is kept before it is registered again.
    pub(super) refresh: Duration,
}

impl Reg<'_> {
    /// The key of `name` for this pair, with one more label if given
    /// (the labels in the order the uncached calls use).
    fn key(&self, name: &'static str, extra: Option<(&'static str, &'static str)>) -> Key {
        let mut labels = vec![
            Label::new("target", self.target.to_string()),
            Label::new("route", self.route.to_string()),
        ];
        if let Some((k, v)) = extra {
            labels.push(Label::new(k, v));
        }
        Key::from_parts(name, labels)
    }
}

/// A kind of handle the registry hands out.
pub(super) trait Handle: Sized {
    /// Registers (or finds) the series `key`.
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self;
}

impl Handle for Gauge {
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
        recorder.register_gauge(key, &META)
    }
}

impl Handle for Histogram {
    fn register(recorder: &PrometheusRecorder, key: &Key) -> Self {
        recorder.register_histogram(key, &META)
    }
}

/// One kept handle and when it was registered.
pub(super) struct Slot<H> {
    /// The handle, `None` until first used.
    kept: Option<(H, Instant)>,
}

impl<H> Default for Slot<H> {
    fn default() -> Self {
        Self { kept: None }
    }
}

impl<H: Handle> Slot<H> {
    /// The handle of `name` (with `extra`'s label) for the pair, registered
    /// again when it is due.
    pub(super) fn get(
        &mut self,
        r: &Reg<'_>,
        name: &'static str,
        extra: Option<(&'static str, &'static str)>,
    ) -> &H {
        if self
            .kept
            .as_ref()
            .is_some_and(|(_, at)| r.now.saturating_duration_since(*at) >= r.refresh)
        {
            self.kept = None;
        }
        let (handle, _) = self
            .kept
            .get_or_insert_with(|| (H::register(r.recorder, &r.key(name, extra)), r.now));
        handle
    }
}

impl Slot<Gauge> {
    /// Sets the gauge `name` of the pair to `value`.
    pub(super) fn set(
        &mut self,
        r: &Reg<'_>,
        name: &'static str,
        extra: Option<(&'static str, &'static str)>,
        value: f64,
    ) {
        self.get(r, name, extra).set(value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Metrics, ROUTE_DEGRADED};

    fn exported(m: &Metrics) -> bool {
        m.render()
            .lines()
            .any(|l| l.starts_with(ROUTE_DEGRADED) && l.contains("target=\"t1\""))
    }

    #[test]
    fn a_route_gauge_that_went_idle_is_exported_again_when_set_again() {
        let m = Metrics::new(Duration::from_millis(100));
        m.route_degraded("t1", "direct", true);
        assert!(exported(&m), "set: exported");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!exported(&m), "idle for longer than the timeout: dropped");
        // A handle kept from before would now write to the dropped series.
        m.route_degraded("t1", "direct", false);
        assert!(exported(&m), "set again: exported again");
    }

    #[test]
    fn a_route_gauge_set_within_the_refresh_stays_one_series() {
        let m = Metrics::new(Duration::from_secs(3600));
        for degraded in [true, false, true] {
            m.route_degraded("t1", "direct", degraded);
        }
        let text = m.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(ROUTE_DEGRADED) && l.contains("t1"))
            .collect();
        assert_eq!(
            lines,
            [r#"egress_route_degraded{target="t1",route="direct"} 1"#]
        );
    }
}
