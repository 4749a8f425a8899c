//! The probe scheduler: one loop per target × route, so probes of a pair
//! never overlap. A first round at start, then every `interval` (with
//! ±10 % jitter so pods do not probe in lockstep), or every
//! `unhealthy_interval` while the pair is failing, recovering or held; a
//! pair can be woken early (a failure seen on real traffic). Beside them,
//! one credential-check loop per target that carries a credential
//! (`checks.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::checks::CredentialLoop;
use super::runtime::Runtime;
use crate::config::{Route, Target};
use crate::generation::Generation;

/// `base` ± 10 %, from a cheap per-loop generator (no need for a CSPRNG).
pub(super) fn jitter(base: Duration, state: &mut u64) -> Duration {
    // xorshift64
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
    base.mul_f64(1.0 + 0.1 * unit)
}

/// Starts one loop per target × route of the generation in force, each
/// probing with that generation's prober (and so its dialer). The loops end
/// when `stop` turns true (after their probe in flight) or when aborted: a
/// new generation starts loops of its own.
pub fn spawn(rt: &Arc<Runtime>, stop: &watch::Receiver<bool>) -> JoinSet<()> {
    let generation = rt.current();
    let config = generation.config.clone();
    let mut set = JoinSet::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    for target in &config.targets {
        for route in &target.routes {
            seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let pair = Pair {
                rt: rt.clone(),
                generation: generation.clone(),
                target: target.clone(),
                route: route.clone(),
            };
            let mut stop = stop.clone();
            let state = seed;
            set.spawn(async move { pair.run(&mut stop, state).await });
        }
        if let Some(credential) = &target.credential {
            seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let check = CredentialLoop {
                rt: rt.clone(),
                generation: generation.clone(),
                target: target.clone(),
                credential: credential.clone(),
            };
            let mut stop = stop.clone();
            let state = seed;
            set.spawn(async move { check.run(&mut stop, state).await });
        }
    }
    set
}

/// One target × route's probe loop, for one generation.
struct Pair {
    rt: Arc<Runtime>,
    generation: Arc<Generation>,
    target: Arc<Target>,
    route: Arc<Route>,
}

impl Pair {
    async fn run(self, stop: &mut watch::Receiver<bool>, mut rng: u64) {
        let (target, route) = (&self.target.name, &self.route.name);
        let wake = self.rt.snapshot().waker(target, route).unwrap_or_default();
        loop {
            if *stop.borrow() {
                return;
            }
            let generation = &self.generation;
            let outcome = generation.prober.probe(&self.target, &self.route).await;
            tracing::debug!(target = %outcome.target, route = %outcome.route, reason = %outcome.reason, seconds = outcome.duration.as_secs_f64(), detail = %outcome.detail, "probe");
            let unsettled = self.rt.record_probe(outcome, !self.route.is_direct()).await;
            let probe = &generation.config.probe;
            let base = if unsettled {
                probe.unhealthy_interval
            } else {
                probe.interval
            };
            let delay = jitter(base, &mut rng);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            tokio::select! {
                () = &mut sleep => {}
                () = wake.notified() => {
                    // Woken by app traffic: soon, but not in a burst.
                    let gap = self.rt.snapshot().wake_delay(target, route, tokio::time::Instant::now());
                    tokio::select! {
                        () = tokio::time::sleep(gap) => {}
                        () = &mut sleep => {}
                        _ = stop.changed() => return,
                    }
                }
                _ = stop.changed() => return,
            }
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
