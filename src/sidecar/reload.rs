//! Watching for a new generation: the config file and every file it names
//! (credentials, CAs, client certificates), by content. A Kubernetes
//! ConfigMap or Secret volume swaps its `..data` symlink; distroless images
//! have no shell to send SIGHUP from; so content is polled, not signals
//! awaited. A change is applied once it has held still for a moment
//! (debounce), and the log names the file, never what is in it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// How long a change must hold still before it is applied.
const SETTLE: Duration = Duration::from_millis(150);

/// The files of one generation and what they held when it was built.
#[derive(Debug)]
pub struct Watcher {
    files: Vec<(PathBuf, Option<u64>)>,
}

fn content_hash(path: &std::path::Path) -> Option<u64> {
    crate::files::content_hash(path)
}

impl Watcher {
    /// Watches `config`'s file and the files it names, as they were when
    /// it was compiled: a change in between is seen at the first poll.
    pub fn new(config: &Config) -> Self {
        let files = std::iter::once((config.file.clone(), config.config_hash))
            .chain(config.files.iter().cloned())
            .collect();
        Self { files }
    }

    /// After a rejected reload: the content that was refused becomes the
    /// reference (the next change is what counts), without reading again.
    pub fn accept(&mut self, seen: &[(PathBuf, Option<u64>)]) {
        for (path, hash) in seen {
            if let Some(slot) = self.files.iter_mut().find(|(p, _)| p == path) {
                slot.1 = *hash;
            }
        }
    }

    fn changed(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|(p, h)| content_hash(p) != *h)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The files that changed since the reference, with their new hashes,
    /// once the change has held still for a moment; `None` when nothing
    /// changed (or it is still moving: the next poll sees it again).
    pub async fn poll(&mut self) -> Option<Vec<(PathBuf, Option<u64>)>> {
        let first = self.changed();
        if first.is_empty() {
            return None;
        }
        let before: Vec<Option<u64>> = first.iter().map(|p| content_hash(p)).collect();
        tokio::time::sleep(SETTLE).await;
        let after: Vec<Option<u64>> = first.iter().map(|p| content_hash(p)).collect();
        (before == after).then(|| first.into_iter().zip(after).collect())
    }
}

/// The timer of the polls every `poll` (its first tick one period from now).
pub fn poll_timer(poll: Option<Duration>) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
    timer.reset();
    timer
}

/// After an applied reload: `[run] reload_poll` as the new config says,
/// from now on (logged when it changed).
pub fn repoll(config: &Config, poll: &mut Option<Duration>, timer: &mut tokio::time::Interval) {
    let next = config.run.reload_poll;
    if next == *poll {
        return;
    }
    match next {
        Some(every) => tracing::info!(
            every_ms = every.as_millis() as u64,
            "[run] reload_poll changed: the config's files are checked at the new interval"
        ),
        None => tracing::info!("[run] reload_poll is off: only SIGHUP reloads now"),
    }
    *poll = next;
    *timer = poll_timer(next);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_changed_between_loading_and_watching_is_seen_at_the_first_poll() {
        let dir = tempfile::tempdir().expect("dir");
        let creds = dir.path().join("credentials");
        std::fs::write(&creds, "egress:first\n").expect("write");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[[route]]\nname = \"p\"\nproxy = \"http://proxy.test:3128\"\ncredentials_file = \"credentials\"\n\n[[target]]\nname = \"t\"\nurl = \"https://t.test/\"\nroutes = [\"p\"]\n",
        )
        .expect("write");
        let config = Config::load(&file).expect("valid");
        // Rotated after the config was read, before anything watched it.
        std::fs::write(&creds, "egress:second\n").expect("write");
        let mut watcher = Watcher::new(&config);
        let changed = watcher.poll().await.expect("the change is seen");
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, creds);
        // Refused or applied, the same content is no change the next time.
        watcher.accept(&changed);
        assert!(watcher.poll().await.is_none());
    }
}
