//! Watching for a new generation: the config file and every file it names
//! (credentials, CAs, client certificates), by content. A Kubernetes
//! ConfigMap or Secret volume swaps its `..data` symlink; distroless images
//! have no shell to send SIGHUP from; so content is polled, not signals
//! awaited. A change is applied once it has held still for a moment
//! (debounce), and the log names the file, never what is in it.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// The most bytes hashed per file (larger files hash their first bytes and
/// their size: enough to see a change of a certificate or a config).
const MAX_HASHED: u64 = 8 * 1024 * 1024;
/// How long a change must hold still before it is applied.
const SETTLE: Duration = Duration::from_millis(150);

/// The files of one generation and what they held when it was built.
#[derive(Debug)]
pub struct Watcher {
    files: Vec<(PathBuf, Option<u64>)>,
}

/// A hash of the file's content (symlinks followed), or `None` when it
/// cannot be read: a file that vanishes is a change too.
fn content_hash(path: &std::path::Path) -> Option<u64> {
    let bytes = crate::files::read_bytes(path, MAX_HASHED).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

impl Watcher {
    /// Watches `config`'s file and the files it names, as they are now.
    pub fn new(config: &Config) -> Self {
        let mut w = Self { files: Vec::new() };
        w.rewatch(config);
        w
    }

    /// Starts over from `config` (after a reload, applied or rejected): the
    /// content as it is now is the new reference.
    pub fn rewatch(&mut self, config: &Config) {
        let paths = std::iter::once(config.file.clone()).chain(config.files.iter().cloned());
        self.files = paths
            .map(|p| {
                let h = content_hash(&p);
                (p, h)
            })
            .collect();
    }

    fn changed(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(p, h)| content_hash(p) != *h)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The files that changed since the reference, once the change has held
    /// still for a moment; `None` when nothing changed (or it is still
    /// moving: the next poll sees it again).
    pub async fn poll(&mut self) -> Option<Vec<PathBuf>> {
        let first = self.changed();
        if first.is_empty() {
            return None;
        }
        let before: Vec<Option<u64>> = first.iter().map(|p| content_hash(p)).collect();
        tokio::time::sleep(SETTLE).await;
        let after: Vec<Option<u64>> = first.iter().map(|p| content_hash(p)).collect();
        (before == after).then_some(first)
    }
}
