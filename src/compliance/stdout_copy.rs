//! The trail's copy on stdout (`[compliance] sink = "both"`), for the
//! cluster's log collector: the record survives the pod.
//!
//! Owns a bounded queue and the one thread that drains it to stdout. A
//! connection only ever offers a line (`try_send`): a slow or blocked
//! stdout fills the queue, and the lines that do not fit are left out of
//! the copy, counted in `egress_compliance_stdout_dropped_total` and logged
//! at most once a second. It never blocks a tunnel, and it never drops a
//! line from the file: that is written before the copy is offered.
//!
//! There is one stdout per process, so there is one queue and one thread,
//! started by the first line offered.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::telemetry::compliance_stdout_dropped;

/// Lines waiting for stdout at most.
pub const QUEUE_LINES: usize = 1024;
/// The field (and value) that tells a trail line on stdout from the
/// operational log: `"log":"compliance"`.
pub const MARK: (&str, &str) = ("log", "compliance");
/// Drops are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// The queue's sending side and the drop log's state.
struct StdoutCopy {
    queue: SyncSender<String>,
    /// When drops were last logged, and the drops since.
    drops: Mutex<(Option<Instant>, u64)>,
}

static COPY: OnceLock<StdoutCopy> = OnceLock::new();

/// `line` (one JSON object) with the mark as its first field.
fn marked(line: &str) -> String {
    let rest = line.strip_prefix('{').unwrap_or(line);
    let sep = if rest.starts_with('}') { "" } else { "," };
    format!("{{\"{}\":\"{}\"{sep}{rest}\n", MARK.0, MARK.1)
}

/// Offers a trail line to the stdout copy; never waits.
pub(super) fn offer(line: &str) {
    let copy = COPY.get_or_init(start);
    match copy.queue.try_send(marked(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => copy.dropped(),
    }
}

fn start() -> StdoutCopy {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("trail-stdout".into())
        .spawn(move || drain(&lines));
    if let Err(e) = spawned {
        // Every line offered is then a drop, counted and logged.
        tracing::error!(error = %e, "cannot start the compliance trail's stdout writer; the trail file is still written");
    }
    StdoutCopy {
        queue,
        drops: Mutex::new((None, 0)),
    }
}

impl StdoutCopy {
    /// One line left out: counted now, logged at most once a second.
    fn dropped(&self) {
        let total = compliance_stdout_dropped(1);
        let mut d = self
            .drops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        d.1 += 1;
        let now = Instant::now();
        if d.0
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_EVERY)
        {
            tracing::warn!(
                dropped = d.1,
                dropped_total = total,
                queue = QUEUE_LINES,
                "stdout is not keeping up: compliance trail lines left out of the stdout copy (the trail file has them)"
            );
            *d = (Some(now), 0);
        }
    }
}

/// Writes queued lines to stdout, as many as are waiting in one write.
fn drain(lines: &Receiver<String>) {
    let mut failing = false;
    while let Ok(first) = lines.recv() {
        let mut batch = first;
        while batch.len() < 64 * 1024 {
            match lines.try_recv() {
                Ok(more) => batch.push_str(&more),
                Err(_) => break,
            }
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(batch.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("writing the compliance trail's stdout copy again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot write the compliance trail's stdout copy; the trail file is still written");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::marked;

    #[test]
    fn a_copied_line_is_marked_first_and_keeps_every_field() {
        let line = r#"{"time":"t","target":"apns","bytes_up":0}"#;
        let copy: serde_json::Value = serde_json::from_str(&marked(line)).expect("JSON");
        assert!(marked(line).starts_with(r#"{"log":"compliance","time""#));
        assert!(marked(line).ends_with("}\n"));
        assert_eq!(copy["target"], "apns");
        assert_eq!(copy["bytes_up"], 0);
        assert_eq!(marked("{}"), "{\"log\":\"compliance\"}\n");
    }
}
