//! Accepting connections without spinning: after an accept error (EMFILE
//! when descriptors run out, ENFILE, ENOBUFS) wait, doubling from 10 ms to
//! 1 s, instead of retrying at once and burning a core.

use std::io;
use std::time::Duration;

/// The back-off state of one accept loop.
#[derive(Debug)]
pub struct Backoff {
    /// The next wait.
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delay: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept succeeded: the next failure waits the least again.
    pub fn succeeded(&mut self) {
        self.delay = Self::FIRST;
    }

    /// An accept on `listener` failed: log it and wait.
    pub async fn failed(&mut self, listener: &str, error: &io::Error) {
        tracing::warn!(listener, error = %error, backoff_ms = self.delay.as_millis() as u64, "accept failed; backing off");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }
}
