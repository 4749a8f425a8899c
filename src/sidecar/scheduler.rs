//! The probe scheduler: one loop per target × route, so probes of a pair
//! never overlap. A first round at start, then every `interval` (with
//! ±10 % jitter so pods do not probe in lockstep), or every
//! `unhealthy_interval` while the pair is failing, recovering or held; a
//! pair can be woken early (a failure seen on real traffic).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::state::Shared;
use crate::config::{Route, Target};
use crate::probe::{ProbeOutcome, Prober};

/// Something that probes a target over a route: the real [`Prober`], or a
/// script in tests of timing.
pub trait ProbeRunner: Send + Sync + 'static {
    /// Probes once.
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>>;
}

impl ProbeRunner for Prober {
    fn probe<'a>(
        &'a self,
        target: &'a Target,
        route: &'a Route,
    ) -> Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>> {
        Box::pin(Prober::probe(self, target, route))
    }
}

/// `base` ± 10 %, from a cheap per-loop generator (no need for a CSPRNG).
fn jitter(base: Duration, state: &mut u64) -> Duration {
    // xorshift64
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
    base.mul_f64(1.0 + 0.1 * unit)
}

/// Starts one loop per target × route of the config in force. The loops end
/// when `stop` turns true (after their probe in flight) or when aborted.
pub fn spawn(shared: &Arc<Shared>, stop: &watch::Receiver<bool>) -> JoinSet<()> {
    let config = shared.config();
    let mut set = JoinSet::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    for target in &config.targets {
        for route in &target.routes {
            seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let (shared, target, route) = (shared.clone(), target.clone(), route.clone());
            let mut stop = stop.clone();
            let state = seed;
            set.spawn(async move { pair_loop(shared, target, route, &mut stop, state).await });
        }
    }
    set
}

async fn pair_loop(
    shared: Arc<Shared>,
    target: Arc<Target>,
    route: Arc<Route>,
    stop: &mut watch::Receiver<bool>,
    mut rng: u64,
) {
    let wake = shared.waker(&target.name, &route.name);
    let probe = shared.config().probe.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        let outcome = shared.prober().probe(&target, &route).await;
        tracing::debug!(target_name = %outcome.target, route = %outcome.route, reason = %outcome.reason, seconds = outcome.duration.as_secs_f64(), detail = %outcome.detail, "probe");
        shared.record(&outcome, !route.is_direct());
        let base = if shared.unsettled(&target.name, &route.name) {
            probe.unhealthy_interval
        } else {
            probe.interval
        };
        let delay = jitter(base, &mut rng);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let mut s = 12345u64;
        let base = Duration::from_secs(10);
        let values: Vec<_> = (0..1000).map(|_| jitter(base, &mut s)).collect();
        assert!(
            values
                .iter()
                .all(|d| *d >= Duration::from_secs(9) && *d <= Duration::from_secs(11))
        );
        assert!(values.iter().any(|d| *d < Duration::from_millis(9500)));
        assert!(values.iter().any(|d| *d > Duration::from_millis(10500)));
    }
}
