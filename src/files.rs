//! Reading the files the configuration names (the config itself,
//! credentials, CAs, keys, the incident log): bounded in size, with
//! messages that say what went wrong and never quote the content.

use std::io::Read;
use std::path::Path;

/// Reads at most `limit` bytes of `path`; a larger file is an error.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > limit {
        return Err(format!(
            "{} is larger than {limit} bytes; is it the right file?",
            path.display()
        ));
    }
    Ok(buf)
}

/// [`read_bytes`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_bytes(path, limit)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// The most bytes hashed per watched file.
const MAX_HASHED: u64 = 8 * 1024 * 1024;

/// A hash of `path`'s content (symlinks followed), or `None` when it cannot
/// be read: what the reload watcher compares.
pub fn content_hash(path: &Path) -> Option<u64> {
    content_hash_of(&read_bytes(path, MAX_HASHED).ok()?)
}

/// The same hash of bytes already read.
pub fn content_hash_of(bytes: &[u8]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}
