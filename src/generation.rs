//! A generation: everything built from one parsed config — routes, targets,
//! policy, the dialer (resolver overrides, TLS roots, credentials) and the
//! prober built on that same dialer. A reload builds a new one whole (or
//! keeps the old one when the config is bad) and swaps it in with one store.
//!
//! Readers take a snapshot once per unit of work (a probe, a verify run, an
//! app connection) and keep it: an open tunnel stays on the generation it
//! started with. Nothing here does I/O.

use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::dial::{Dialer, Resolver};
use crate::probe::{ProbeRunner, Prober};

/// Everything built from one config.
pub struct Generation {
    /// Counts from 1 at start; each applied reload adds one.
    pub id: u64,
    /// The config it was built from.
    pub config: Arc<Config>,
    /// The one dialer: app traffic and probes both open streams with it.
    pub dialer: Dialer,
    /// Probes, dialing with `dialer`.
    pub prober: Arc<dyn ProbeRunner>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("file", &self.config.file)
            .finish_non_exhaustive()
    }
}

/// Builds the prober of a generation from its config and dialer; tests
/// replace the real one with a script.
pub type ProberFactory = Arc<dyn Fn(&Config, &Dialer) -> Arc<dyn ProbeRunner> + Send + Sync>;

/// The real prober.
pub fn real_prober() -> ProberFactory {
    Arc::new(|config: &Config, dialer: &Dialer| {
        Arc::new(Prober::new(dialer.clone(), config.probe.max_body)) as Arc<dyn ProbeRunner>
    })
}

impl Generation {
    /// Builds generation `id` from `config`.
    pub fn build(id: u64, config: Config, prober: &ProberFactory) -> Self {
        let dialer = Dialer::new(Resolver::new(config.resolve.clone()));
        let prober = prober(&config, &dialer);
        Self {
            id,
            config: Arc::new(config),
            dialer,
            prober,
        }
    }
}

/// The generation in force, swapped whole.
#[derive(Debug)]
pub struct Current(RwLock<Arc<Generation>>);

impl Current {
    /// Starts with `first`.
    pub fn new(first: Generation) -> Self {
        Self(RwLock::new(Arc::new(first)))
    }

    /// A snapshot: keep it for the whole unit of work.
    pub fn get(&self) -> Arc<Generation> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Swaps `next` in; returns the one it replaced.
    pub fn store(&self, next: Generation) -> Arc<Generation> {
        self.store_arc(Arc::new(next))
    }

    /// [`store`](Self::store) for a generation already shared.
    pub fn store_arc(&self, next: Arc<Generation>) -> Arc<Generation> {
        let mut slot = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *slot, next)
    }
}
