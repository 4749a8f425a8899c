//! The stages a connection goes through, timed: [`Phases`] holds the
//! duration of each stage that ran, [`timed`] runs one stage under the
//! attempt's deadline and records it, and [`fmt_duration`] writes a
//! duration for messages and tables.
//!
//! Owns how a stage's time is measured and shown. It never decides what a
//! stage does or what its failure means (that is the dialer's and
//! `classify`'s).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::reason::Phase;

/// Durations of the phases that ran (a failed phase counts up to its failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Name resolution.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub resolve: Option<Duration>,
    /// TCP connect (and TLS to an https proxy).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub connect: Option<Duration>,
    /// The CONNECT exchange.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub tunnel: Option<Duration>,
    /// TLS with the upstream.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub tls: Option<Duration>,
    /// Request sent to response head.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub first_byte: Option<Duration>,
    /// Body read.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "secs")]
    pub body: Option<Duration>,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Phases {
    /// The slot for `phase`.
    pub fn slot(&mut self, phase: Phase) -> &mut Option<Duration> {
        match phase {
            Phase::Resolve => &mut self.resolve,
            Phase::Connect => &mut self.connect,
            Phase::Tunnel => &mut self.tunnel,
            Phase::Tls => &mut self.tls,
            Phase::FirstByte => &mut self.first_byte,
            Phase::Body => &mut self.body,
        }
    }

    /// The duration of `phase`, if it ran.
    pub fn get(&self, phase: Phase) -> Option<Duration> {
        let mut copy = *self;
        *copy.slot(phase)
    }
}

/// Runs `fut` as `phase`, recording its duration, bounded by `deadline`.
pub(crate) async fn timed<T, E>(
    phases: &mut Phases,
    phase: Phase,
    deadline: Instant,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, Duration> {
    let start = Instant::now();
    let out = tokio::time::timeout_at(deadline, fut).await;
    let took = start.elapsed();
    *phases.slot(phase) = Some(took);
    out.map_err(|_| took)
}

/// `1.2s`, `350ms`, `12.3ms` for messages and tables.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}
