//! The one owner of route state: a task that holds the route table, the
//! incident log, the probe schedule and the summary of this process's own
//! exhaustion; takes [`Message`]s from the [`Inbox`] in batches; turns each
//! observation into table events and each event into logs, metrics,
//! incident windows, woken probes and fail-back closes (`events.rs`);
//! records each counted probe in the last hour's cells; and
//! after each batch publishes one [`Snapshot`] for every reader.
//!
//! Nothing else changes route state, and nothing here waits on a reader: a
//! message is applied in microseconds and acknowledged once the snapshot
//! that shows it is published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::exhaustion::{self, Summary};
use super::inbox::Message;
use super::{Runtime, settings, specs};
use crate::config::Config;
use crate::generation::Generation;
use crate::health::history::{History, Sample, unix_ms};
use crate::health::{Observation, PairSchedule, RouteState, RouteTable, Snapshot};
use crate::incidents::{IncidentLog, IncidentWindow};
use crate::reason::FailureReason;

/// The owner's state.
pub(super) struct Owner {
    /// The handle: metrics, the compliance trail, the direct tunnels, the
    /// inbox.
    pub(super) rt: Arc<Runtime>,
    /// The route table.
    pub(super) table: RouteTable,
    /// The incident windows.
    pub(super) incidents: IncidentLog,
    /// The windows as last published (kept while unchanged).
    published_incidents: Arc<Vec<IncidentWindow>>,
    /// Per (target, route): the probe loop's schedule.
    schedule: BTreeMap<(String, String), PairSchedule>,
    /// `local_exhausted` failures not yet written to the log.
    exhaustion: Summary,
    /// The generation the table was built for, and its config.
    generation: u64,
    pub(super) config: Arc<Config>,
    /// Each target's credential (shared with the snapshots until it changes).
    pub(super) credentials: Arc<crate::credential::state::Board>,
    /// Where snapshots go.
    publish: watch::Sender<Arc<Snapshot>>,
    /// The last hour per pair, and its copy as last published (kept while
    /// no cell changed).
    history: History,
    published_history: Arc<History>,
}

/// Acknowledgements to send once the batch's snapshot is published.
#[derive(Default)]
struct Acks {
    probes: Vec<(oneshot::Sender<bool>, String, String)>,
    done: Vec<oneshot::Sender<()>>,
}

impl Owner {
    /// The owner of `first`'s table, publishing on `publish`.
    /// The owner of the `first` snapshot's state (its table and its
    /// schedule, whose wakers the probe loops already hold), publishing on
    /// `publish`.
    pub(super) fn new(
        rt: Arc<Runtime>,
        first: &Snapshot,
        config: Arc<Config>,
        incidents: IncidentLog,
        publish: watch::Sender<Arc<Snapshot>>,
    ) -> Self {
        let mut owner = Self {
            rt,
            table: first.table.clone(),
            incidents,
            published_incidents: first.incidents.clone(),
            schedule: first.schedule.clone(),
            exhaustion: Summary::default(),
            generation: first.generation,
            config,
            credentials: first.credentials.clone(),
            publish,
            history: (*first.history).clone(),
            published_history: first.history.clone(),
        };
        owner.incidents_changed();
        owner.sync_credentials();
        owner
    }

    /// The first snapshot, published before the task runs: the table not
    /// yet observed, and the schedule (with the wakers) of every pair.
    pub(super) fn initial(first: &Generation, incidents: &IncidentLog) -> Snapshot {
        let config = &first.config;
        let now = Instant::now();
        Snapshot {
            generation: first.id,
            taken: now,
            table: RouteTable::new(settings(config), &specs(config)),
            incidents: Arc::new(incidents.windows().cloned().collect()),
            schedule: schedule_for(config, BTreeMap::new(), now),
            credentials: Arc::new(crate::credential::state::sync(&Default::default(), config)),
            history: Arc::new(History::new(config.status.history_cell)),
        }
    }

    /// Applies messages until told to stop.
    pub(super) async fn run(mut self) {
        self.publish_all();
        self.publish_snapshot();
        loop {
            let batch = self.rt.inbox.recv().await;
            let mut acks = Acks::default();
            let mut stop = None;
            for m in batch {
                match m {
                    Message::Stop { done } => stop = Some(done),
                    m => self.handle(m, &mut acks),
                }
            }
            self.publish_snapshot();
            for (done, target, route) in acks.probes {
                let unsettled = self.table.unsettled(&target, &route, Instant::now());
                let _ = done.send(unsettled);
            }
            for done in acks.done {
                let _ = done.send(());
            }
            if let Some(done) = stop {
                let _ = done.send(self.incidents.flush());
                return;
            }
        }
    }

    fn handle(&mut self, m: Message, acks: &mut Acks) {
        let now = Instant::now();
        match m {
            Message::Probe { outcome, done } => {
                let key = (outcome.target.clone(), outcome.route.clone());
                if let Some(p) = self.schedule.get_mut(&key) {
                    p.last_done = now;
                }
                if outcome.reason == FailureReason::LocalExhausted {
                    self.exhausted(exhaustion::Who::Probe, &outcome.detail, 1);
                }
                let target = outcome.target.clone();
                let counted = (outcome.reason != FailureReason::LocalExhausted)
                    .then(|| (outcome.ok, outcome.reason, outcome.detail.clone()));
                let duration = outcome.duration;
                let events = self.table.observe(now, Observation::Probe(outcome));
                if let Some((ok, reason, detail)) = counted {
                    self.history_probe(&key, ok, reason, &detail, duration, now);
                }
                self.apply(&events);
                self.publish_target(&target);
                if let Some(done) = done {
                    acks.probes.push((done, key.0, key.1));
                }
            }
            Message::Traffic { result, count } => {
                if let Some((FailureReason::LocalExhausted, detail)) = &result.failure {
                    self.exhausted(exhaustion::Who::AppConnection, detail, count);
                    return;
                }
                let target = result.target.clone();
                for _ in 0..count {
                    let events = self
                        .table
                        .observe(now, Observation::Traffic(result.clone()));
                    self.apply(&events);
                }
                self.publish_target(&target);
            }
            Message::Override {
                target,
                to,
                until,
                done,
            } => {
                let events = self.table.override_until(&target, to, now, until);
                self.apply(&events);
                self.publish_target(&target);
                acks.done.push(done);
            }
            Message::Install { generation, done } => {
                self.install(&generation, now);
                acks.done.push(done);
            }
            Message::Credential(c) => self.credential_checked(&c),
            Message::CredentialSkipped { target, why } => self.credential_skipped(&target, &why),
            Message::Tick => self.tick(now),
            Message::Stop { .. } => {}
        }
    }

    /// Rebuilds the table for a new generation, keeping every (target,
    /// route) pair's state by name.
    fn install(&mut self, next: &Generation, now: Instant) {
        let config = &next.config;
        self.table = self.table.rebuild(settings(config), &specs(config));
        self.generation = next.id;
        self.config = config.clone();
        self.reschedule(now);
        self.sync_credentials();
        self.history_install();
        self.tick(now);
    }

    /// The schedule for the config's pairs: kept pairs keep theirs, new
    /// ones start now, gone ones go.
    fn reschedule(&mut self, now: Instant) {
        let old = std::mem::take(&mut self.schedule);
        self.schedule = schedule_for(&self.config, old, now);
    }

    /// Holds and overrides expire with time alone; the gauges no probe
    /// drives are set again; the summaries that are due are written.
    fn tick(&mut self, now: Instant) {
        let events = self.table.tick(now);
        self.apply(&events);
        self.rt.trail.tick();
        if let Some(line) = self.exhaustion.flush(now) {
            line.log();
        }
        self.publish_all();
        self.publish_credentials();
        if self.history.prune(unix_ms(SystemTime::now())) {
            self.published_history = Arc::new(self.history.clone());
        }
    }

    /// Counts `count` `local_exhausted` failures; writes the summary line
    /// when one is due. Never reaches the route table or the incidents.
    fn exhausted(&mut self, who: exhaustion::Who, detail: &str, count: u32) {
        for _ in 0..count {
            if let Some(line) = self.exhaustion.record(Instant::now(), who, detail) {
                line.log();
            }
        }
    }

    /// Wakes the pair's probe loop.
    pub(super) fn wake(&self, target: &str, route: &str) {
        if let Some(p) = self.schedule.get(&(target.to_string(), route.to_string())) {
            p.wake.notify_one();
        }
    }

    /// The incident windows changed: the next snapshot carries them.
    pub(super) fn incidents_changed(&mut self) {
        self.published_incidents = Arc::new(self.incidents.windows().cloned().collect());
    }

    fn publish_snapshot(&self) {
        let snapshot = Snapshot {
            generation: self.generation,
            taken: Instant::now(),
            table: self.table.clone(),
            incidents: self.published_incidents.clone(),
            schedule: self.schedule.clone(),
            credentials: self.credentials.clone(),
            history: self.published_history.clone(),
        };
        self.publish.send_replace(Arc::new(snapshot));
    }

    /// Records a counted probe in the pair's cell of the last hour, with
    /// whether the route stood degraded once the probe was counted.
    fn history_probe(
        &mut self,
        key: &(String, String),
        ok: bool,
        reason: FailureReason,
        detail: &str,
        duration: std::time::Duration,
        now: Instant,
    ) {
        let degraded = self
            .table
            .targets
            .get(&key.0)
            .and_then(|t| t.route(&key.1))
            .is_some_and(|r| r.state(now) == RouteState::Degraded);
        let sample = Sample {
            ok,
            reason,
            detail,
            duration,
            degraded,
        };
        let wall = unix_ms(SystemTime::now());
        self.history.record(wall, &key.0, &key.1, &sample);
        self.published_history = Arc::new(self.history.clone());
    }

    /// A new generation: a new cell size starts the history again; pairs
    /// no longer configured go.
    fn history_install(&mut self) {
        let cell = self.config.status.history_cell;
        if self.history.cell() != cell {
            self.history = History::new(cell);
        }
        let pairs: Vec<(String, String)> = self.schedule.keys().cloned().collect();
        self.history.retain(&pairs);
        self.published_history = Arc::new(self.history.clone());
    }

    /// A receiver of the snapshots (for work that reads them later).
    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publish.subscribe()
    }
}

/// The schedule for `config`'s pairs: the ones in `old` keep theirs (and
/// their wakers), new ones start at `now`, gone ones go.
fn schedule_for(
    config: &Config,
    mut old: BTreeMap<(String, String), PairSchedule>,
    now: Instant,
) -> BTreeMap<(String, String), PairSchedule> {
    let mut next = BTreeMap::new();
    for t in &config.targets {
        for r in &t.routes {
            let key = (t.name.clone(), r.name.clone());
            let pair = old.remove(&key).unwrap_or_else(|| PairSchedule {
                last_done: now,
                wake: Arc::new(Notify::new()),
            });
            next.insert(key, pair);
        }
    }
    next
}
