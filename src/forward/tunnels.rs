//! Book-keeping of open tunnels: how many each route carries (the
//! `egress_forward_active_connections` gauge), and which went direct per
//! target, so that after fail-back to the proxy they can be closed
//! (`[forward] failback_grace`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::telemetry::Metrics;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Open tunnels per route.
#[derive(Debug, Default)]
pub struct Active {
    counts: Mutex<HashMap<String, u64>>,
}

/// Counts one tunnel on a route while it lives.
pub struct ActiveGuard<'a> {
    active: &'a Active,
    metrics: &'a Metrics,
    route: String,
}

impl Active {
    /// Counts a tunnel on `route` until the guard drops.
    pub fn enter<'a>(&'a self, metrics: &'a Metrics, route: &str) -> ActiveGuard<'a> {
        {
            // The gauge is set under the lock: set after it, a tunnel
            // opening or closing at the same time could be overwritten by
            // this older count (a test of 5 000 tunnels saw 4 998).
            let mut c = lock(&self.counts);
            let n = c.entry(route.to_string()).or_insert(0);
            *n += 1;
            metrics.forward_active(route, *n);
        }
        ActiveGuard {
            active: self,
            metrics,
            route: route.to_string(),
        }
    }

    /// Sets the gauge of every route again: a tunnel that lives longer than
    /// the registry's idle timeout (APNs keeps HTTP/2 connections for hours)
    /// would otherwise vanish from `egress_forward_active_connections`.
    pub fn publish(&self, metrics: &Metrics) {
        let counts = lock(&self.counts);
        for (route, n) in counts.iter() {
            metrics.forward_active(route, *n);
        }
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        let mut c = lock(&self.active.counts);
        let n = c.entry(self.route.clone()).or_insert(1);
        *n = n.saturating_sub(1);
        self.metrics.forward_active(&self.route, *n);
    }
}

/// The direct tunnels of each target, closable together.
#[derive(Debug, Default)]
pub struct DirectTunnels {
    /// Per target: a counter bumped to close the tunnels open at that time.
    closers: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// A direct tunnel's ticket: resolves when its target's direct tunnels are
/// closed.
#[derive(Debug)]
pub struct Ticket {
    rx: watch::Receiver<u64>,
    opened_at: u64,
}

impl Ticket {
    /// Completes when the tunnel must close.
    pub async fn closed(&mut self) {
        let at = self.opened_at;
        if self.rx.wait_for(|n| *n > at).await.is_err() {
            // The registry is gone (shutdown): never close on that account.
            std::future::pending::<()>().await;
        }
    }
}

impl DirectTunnels {
    /// Registers a direct tunnel of `target`.
    pub fn enter(&self, target: &str) -> Ticket {
        let mut closers = lock(&self.closers);
        let tx = closers
            .entry(target.to_string())
            .or_insert_with(|| watch::channel(0).0);
        let rx = tx.subscribe();
        let opened_at = *rx.borrow();
        Ticket { rx, opened_at }
    }

    /// Closes every direct tunnel of `target` open now; returns how many.
    pub fn close(&self, target: &str) -> usize {
        let closers = lock(&self.closers);
        let Some(tx) = closers.get(target) else {
            return 0;
        };
        let open = tx.receiver_count();
        tx.send_modify(|n| *n += 1);
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_on(text: &str, route: &str) -> Option<String> {
        let series = format!("egress_forward_active_connections{{route=\"{route}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_string))
    }

    #[test]
    fn a_long_lived_tunnel_stays_in_the_gauge_past_the_idle_timeout() {
        let metrics = Metrics::new(std::time::Duration::from_millis(150));
        let active = Active::default();
        let _apns = active.enter(&metrics, "provider");
        assert_eq!(open_on(&metrics.render(), "provider").as_deref(), Some("1"));
        std::thread::sleep(std::time::Duration::from_millis(400));
        // The registry forgets a gauge nobody set for its idle timeout...
        assert_eq!(open_on(&metrics.render(), "provider"), None);
        // ...and the periodic re-publish brings the open tunnel back.
        active.publish(&metrics);
        assert_eq!(open_on(&metrics.render(), "provider").as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn closing_a_target_ends_its_tickets_only() {
        let d = DirectTunnels::default();
        let mut a = d.enter("apns");
        let mut b = d.enter("azure");
        assert_eq!(d.close("apns"), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.closed())
            .await
            .expect("the apns tunnel is told to close");
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), b.closed()).await;
        assert!(still.is_err(), "the azure tunnel stays");
        // A tunnel opened after the close is not closed by it.
        let mut c = d.enter("apns");
        let later = tokio::time::timeout(std::time::Duration::from_millis(50), c.closed()).await;
        assert!(later.is_err());
        assert_eq!(d.close("nobody"), 0);
    }
}
