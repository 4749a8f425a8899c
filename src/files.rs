//! Reading the files the configuration names (the config itself,
//! credentials, CAs, keys, the incident log): bounded in size, with
//! messages that say what went wrong and never quote the content.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file the configuration names could not be read. The messages name
/// the file and never quote its content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file opened but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is larger than the caller's limit.
    #[error("{} is larger than {limit} bytes; is it the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes the caller reads.
        limit: u64,
    },
    /// The file is not UTF-8 where text was expected.
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// Reads at most `limit` bytes of `path`; a larger file is an error.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

/// [`read_bytes`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, limit)?).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// The most bytes hashed per watched file.
const MAX_HASHED: u64 = 8 * 1024 * 1024;

/// A hash of `path`'s content (symlinks followed), or `None` when it cannot
/// be read or is not a regular file (opening a FIFO would block the config
/// compiler and the reload watcher): what the reload watcher compares.
pub fn content_hash(path: &Path) -> Option<u64> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    content_hash_of(&read_bytes(path, MAX_HASHED).ok()?)
}

/// The same hash of bytes already read.
pub fn content_hash_of(bytes: &[u8]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_not_hashed_and_does_not_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("secret");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(content_hash(&fifo));
        });
        let hash = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(hash.expect("content_hash blocked on a FIFO"), None);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        assert_eq!(content_hash(&file), content_hash_of(b"x"));
    }
}
