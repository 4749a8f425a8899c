//! The credential-check loop: one per target that carries a credential,
//! for one generation. A first check at start (once the active route has
//! been probed) and after a reload that changes the credential or its
//! files; then every `every`, jittered ±10 % but never under the 1-minute
//! floor, and never before a provider's back-off ends. A reload that
//! leaves the credential alone keeps its schedule (the board remembers the
//! last check). While the target has no working route, checks are skipped
//! and the board says so.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::runtime::Runtime;
use crate::config::{Credential, Target};
use crate::generation::Generation;
use crate::health::CheckRoute;
use crate::probe::Prober;

/// How often a waiting loop looks at the route state again (a skipped
/// check runs this soon after the route works again).
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// The shortest wait between two checks, whatever the jitter.
const FLOOR: Duration = Duration::from_secs(60);

/// One target's credential loop.
pub(super) struct CredentialLoop {
    pub(super) rt: Arc<Runtime>,
    pub(super) generation: Arc<Generation>,
    pub(super) target: Arc<Target>,
    pub(super) credential: Arc<Credential>,
}

impl CredentialLoop {
    /// Runs until `stop` turns true or the loop is aborted (a reload).
    /// Scheduled on tokio's clock; only its start reads the board's wall
    /// times (where the last generation's loop left the schedule).
    pub(super) async fn run(self, stop: &mut watch::Receiver<bool>, mut rng: u64) {
        let name = &self.target.name;
        let mut every = self.every(&mut rng);
        let due = self
            .rt
            .snapshot()
            .credentials
            .get(name)
            .map_or(Duration::ZERO, |s| s.due_in(every, SystemTime::now()));
        let mut next_at = Instant::now() + due;
        let mut skipping = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_at) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            next_at = match self.rt.snapshot().check_route(name) {
                CheckRoute::Over(route) => {
                    skipping = false;
                    let back_off = self.check(&route).await;
                    every = self.every(&mut rng);
                    Instant::now() + back_off.map_or(every, |b| b.max(every))
                }
                CheckRoute::NotYet => Instant::now() + LOOK_AGAIN,
                CheckRoute::Skip(why) => {
                    if !skipping {
                        self.rt.skip_credential(name, why).await;
                        skipping = true;
                    }
                    Instant::now() + LOOK_AGAIN
                }
            };
        }
    }

    /// One check over `route`, its result sent to the owner; the
    /// provider's back-off, if it asked for one.
    async fn check(&self, route: &str) -> Option<Duration> {
        let route = self.target.routes.iter().find(|r| r.name == route)?;
        // The generation's one dialer, as the probes and the app use.
        let g = &self.generation;
        let prober = Prober::new(g.dialer.clone(), g.config.probe.max_body);
        let checked =
            crate::credential::check::run(&prober, &self.target, &self.credential, route).await;
        let back_off = checked.back_off;
        self.rt.report_credential(checked).await;
        back_off
    }

    /// The credential's `every`, ±10 %, at least [`FLOOR`].
    fn every(&self, rng: &mut u64) -> Duration {
        super::scheduler::jitter(self.credential.every, rng).max(FLOOR)
    }
}
