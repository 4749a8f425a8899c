//! The incident log's file in `state_dir`: reading it back at start
//! (torn last line skipped, unreadable lines counted), and moving a file
//! that is too large or corrupt aside instead of refusing to start.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use super::{IncidentWindow, MAX_FILE, MAX_TAIL, unix};

/// What was read of the file at start.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) windows: Vec<IncidentWindow>,
    /// Why the file must be moved aside: (a word for its new name, the reason).
    pub(super) problem: Option<(&'static str, String)>,
}

/// Reads the incident file: whole when it fits in [`MAX_FILE`], else its
/// last [`MAX_TAIL`] bytes. A torn last line (a crash mid-write) is
/// skipped quietly; any other unreadable line makes the file corrupt.
pub(super) fn load(file: &Path, len: u64) -> std::io::Result<Loaded> {
    let mut f = std::fs::File::open(file)?;
    let mut out = Loaded::default();
    let mut bytes = Vec::new();
    let oversized = len > MAX_FILE;
    if oversized {
        f.seek(SeekFrom::Start(len - MAX_TAIL))?;
        f.take(MAX_TAIL).read_to_end(&mut bytes)?;
        // The first line is probably cut: start after it.
        let first_end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_end);
        out.problem = Some((
            "oversized",
            format!(
                "larger than {MAX_FILE} bytes ({len}); the windows in its last {MAX_TAIL} bytes are kept"
            ),
        ));
    } else {
        f.take(MAX_FILE).read_to_end(&mut bytes)?;
    }
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines
        .iter()
        .rposition(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut bad = 0usize;
    for (n, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<IncidentWindow>(line) {
            Ok(w) => out.windows.push(w),
            Err(e) if Some(n) == last && !oversized => {
                tracing::warn!(file = %file.display(), line = n + 1, error = %e, "skipping a torn last incident record");
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 && out.problem.is_none() {
        out.problem = Some((
            "corrupt",
            format!(
                "{bad} unreadable lines; the {} readable windows are kept",
                out.windows.len()
            ),
        ));
    }
    Ok(out)
}

/// Renames `file` to `file.<word>-<unix>`; returns the new path.
pub(super) fn move_aside(file: &Path, word: &str) -> std::io::Result<PathBuf> {
    let now = unix(SystemTime::now());
    let mut name = file.as_os_str().to_os_string();
    name.push(format!(".{word}-{now}"));
    let to = PathBuf::from(name);
    std::fs::rename(file, &to)?;
    Ok(to)
}
