//! [`Routing`] for the runtime: the narrow handle the forward proxy sees.
//! The generation to dial with, the latest route-state snapshot (routes to
//! try, each route's state), and where an app connection's result goes
//! (the owner's inbox, as an observation like a probe's).
//!
//! The forward proxy never sees more of the runtime than this.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Runtime;
use crate::compliance::Trail;
use crate::forward::Routing;
use crate::generation::Generation;
use crate::health::{Snapshot, TrafficResult};
use crate::telemetry::Metrics;

impl Routing for Runtime {
    fn generation(&self) -> Arc<Generation> {
        self.current()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Runtime::snapshot(self)
    }

    fn report(&self, result: TrafficResult) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.report_traffic(result))
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn trail(&self) -> &Trail {
        &self.trail
    }
}
