//! The owner's inbox: a bounded queue of [`Message`]s. Probe outcomes and
//! commands wait for room, never dropped; an app connection's observation
//! that finds the queue full is merged into the last one queued when that
//! one says the same thing (target, route, destination, outcome), with a
//! count, so a burst of identical observations costs one slot and the
//! order of different ones is kept. Feeding a merged observation `count`
//! times is what feeding them one by one would have done.
//!
//! Memory is bounded by the capacity: a sender that can neither queue nor
//! merge waits for the owner to make room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::lock;
use crate::generation::Generation;
use crate::health::{Override, TrafficResult};
use crate::incidents::IncidentFileError;
use crate::probe::ProbeOutcome;

/// The most messages queued.
pub const CAPACITY: usize = 1024;

/// What the owner of route state is told.
#[derive(Debug)]
pub enum Message {
    /// A probe's outcome; `done` hears whether the pair is unsettled after it.
    Probe {
        /// The outcome.
        outcome: Box<ProbeOutcome>,
        /// Said when it was applied: true when the pair needs watching
        /// closely (the scheduler then probes at `unhealthy_interval`).
        done: Option<oneshot::Sender<bool>>,
    },
    /// An app connection's result, `count` times in a row.
    Traffic {
        /// The result.
        result: TrafficResult,
        /// How many identical results it stands for.
        count: u32,
    },
    /// An operator's override until `until`.
    Override {
        /// The target.
        target: String,
        /// The override.
        to: Override,
        /// When it ends by itself.
        until: Instant,
        /// Said when applied.
        done: oneshot::Sender<()>,
    },
    /// A new generation: the table is rebuilt for its targets.
    Install {
        /// The generation.
        generation: Arc<Generation>,
        /// Said when applied and published.
        done: oneshot::Sender<()>,
    },
    /// A credential check's result.
    Credential(Box<crate::credential::check::Checked>),
    /// A target's credential checks are skipped: it has no working route.
    CredentialSkipped {
        /// The target.
        target: String,
        /// Why, in words.
        why: String,
    },
    /// Holds and overrides expire with time: re-derive, publish the gauges.
    Tick,
    /// Write the incident file and stop; `done` hears the write's result.
    Stop {
        /// The result.
        done: oneshot::Sender<Result<(), IncidentFileError>>,
    },
}

/// The bounded, merging queue.
#[derive(Debug, Default)]
pub struct Inbox {
    queue: Mutex<VecDeque<Message>>,
    /// Wakes the owner: something arrived.
    arrived: Notify,
    /// Wakes waiting senders: room was made.
    room: Notify,
    /// Traffic observations merged into one queued before them.
    merged: AtomicU64,
}

impl Inbox {
    /// Queues `msg`, waiting for room when the queue is full and it cannot
    /// be merged.
    pub async fn send(&self, mut msg: Message) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(msg) {
                Ok(()) => return,
                Err(back) => msg = back,
            }
            room.await;
        }
    }

    /// Queues `msg` when there is room, or merges it into the last one
    /// queued; gives it back otherwise.
    pub fn try_send(&self, msg: Message) -> Result<(), Message> {
        let mut q = lock(&self.queue);
        if q.len() < CAPACITY {
            q.push_back(msg);
            drop(q);
            self.arrived.notify_one();
            return Ok(());
        }
        if let (
            Message::Traffic { result, count },
            Some(Message::Traffic {
                result: last,
                count: total,
            }),
        ) = (&msg, q.back_mut())
        {
            if last.says_the_same(result) {
                *total = total.saturating_add(*count);
                self.merged.fetch_add(u64::from(*count), Ordering::Relaxed);
                return Ok(());
            }
        }
        Err(msg)
    }

    /// Waits for messages and takes every one queued, oldest first.
    pub async fn recv(&self) -> Vec<Message> {
        loop {
            let batch: Vec<Message> = lock(&self.queue).drain(..).collect();
            if !batch.is_empty() {
                self.room.notify_waiters();
                return batch;
            }
            self.arrived.notified().await;
        }
    }

    /// Traffic observations merged so far.
    pub fn merged(&self) -> u64 {
        self.merged.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HostPort;

    fn traffic(host: &str) -> Message {
        Message::Traffic {
            result: TrafficResult {
                target: "apns".into(),
                route: "provider".into(),
                destination: HostPort::new(host, 443),
                failure: None,
            },
            count: 1,
        }
    }

    #[test]
    fn a_full_inbox_merges_identical_observations_and_never_grows() {
        let inbox = Inbox::default();
        for _ in 0..10_000 {
            assert!(inbox.try_send(traffic("a.test")).is_ok());
        }
        assert_eq!(lock(&inbox.queue).len(), CAPACITY);
        assert_eq!(inbox.merged(), (10_000 - CAPACITY) as u64);
        // Something else cannot be merged: it is handed back (its sender
        // waits for room), never queued past the capacity.
        assert!(inbox.try_send(traffic("b.test")).is_err());
        assert_eq!(lock(&inbox.queue).len(), CAPACITY);
        match lock(&inbox.queue).back() {
            Some(Message::Traffic { count, .. }) => {
                assert_eq!(*count as usize, 10_000 - CAPACITY + 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
