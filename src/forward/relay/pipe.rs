//! One pipe of the splice relay: bytes go socket → pipe → socket inside the
//! kernel, never through user space, through rustix's safe `splice(2)`
//! (the crate keeps `#![forbid(unsafe_code)]`). The pool owns the pipes;
//! a tunnel borrows one per direction while that direction carries bulk.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{
    PipeFlags, SpliceFlags, fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, splice,
};

/// A non-blocking pipe and how many bytes sit in it.
#[derive(Debug)]
pub struct Pipe {
    /// The end bytes leave by.
    read: OwnedFd,
    /// The end bytes enter by.
    write: OwnedFd,
    /// Its capacity, bytes.
    size: usize,
    /// Bytes in it now.
    held: usize,
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

impl Pipe {
    /// A pipe asked to hold `want` bytes; a limit (`fs.pipe-max-size`, the
    /// per-user pipe pages) leaves it at the size it could get.
    pub fn new(want: usize) -> io::Result<Self> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let size = match fcntl_setpipe_size(&write, want) {
            Ok(size) => size,
            Err(_) => fcntl_getpipe_size(&write)?,
        };
        Ok(Self {
            read,
            write,
            size,
            held: 0,
        })
    }

    /// Its capacity, bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes waiting in it.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves what `src` has ready, up to the pipe's room, into the pipe:
    /// 0 at the end of the stream, `WouldBlock` when `src` has nothing.
    /// Called on an empty pipe only: then `EAGAIN` can only be the socket's
    /// (a full pipe says `EAGAIN` too, and readiness would be lost).
    pub fn fill_from(&mut self, src: impl AsFd) -> io::Result<usize> {
        let room = self.size.saturating_sub(self.held);
        let n = splice(src, None, &self.write, None, room, FLAGS)?;
        self.held += n;
        Ok(n)
    }

    /// Moves bytes from the pipe to `dst`, as many as it takes now:
    /// `WouldBlock` when `dst` has no room.
    pub fn drain_to(&mut self, dst: impl AsFd) -> io::Result<usize> {
        let n = splice(&self.read, None, dst, None, self.held, FLAGS)?;
        self.held = self.held.saturating_sub(n);
        Ok(n)
    }

    /// Empties the pipe of what a cut tunnel left in it; false when that
    /// fails (the pipe is then closed, never lent with stale bytes).
    pub fn discard(&mut self) -> bool {
        let mut scratch = [0u8; 16 * 1024];
        while self.held > 0 {
            match rustix::io::read(&self.read, &mut scratch[..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.held = self.held.saturating_sub(n),
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn bytes_go_through_and_a_dirty_pipe_is_emptied() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let (c, mut d) = std::os::unix::net::UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut pipe = Pipe::new(1 << 20).expect("pipe");
        assert!(pipe.size() >= 64 * 1024);
        let err = pipe.fill_from(&b).expect_err("nothing to read yet");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hello").expect("write");
        assert_eq!(pipe.fill_from(&b).expect("splice in"), 5);
        assert_eq!(pipe.drain_to(&c).expect("splice out"), 5);
        let mut got = [0u8; 5];
        d.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hello");
        a.write_all(b"left behind").expect("write");
        pipe.fill_from(&b).expect("splice in");
        assert_eq!(pipe.held(), 11);
        assert!(pipe.discard());
        assert_eq!(pipe.held(), 0);
        let err = pipe.drain_to(&c).map(|n| n == 0);
        assert!(matches!(err, Ok(true)), "{err:?}");
    }
}
