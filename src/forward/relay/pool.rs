//! The bounded pool a tunnel borrows its large relay buffers from: 1 MiB
//! user-space buffers (the copy relay) and preallocated pipes (the splice
//! relay), out of one budget, `[forward] buffer_pool`.
//!
//! Why a pool and not `Vec::shrink_to_fit`: glibc does not give a freed
//! 1 MiB block back to the system (its mmap threshold rises after the first
//! free), so 200 tunnels that once grew kept hundreds of MB until they
//! closed. Here the most memory the relay ever holds in large buffers is the
//! budget: buffers are allocated lazily, kept for the next lease, and never
//! more than the budget allows; pipes are all created at start, so a tunnel
//! never opens a descriptor mid-transfer (no EMFILE there). When the pool
//! is spent a tunnel keeps working at its small buffer.
//!
//! What is kept, and for how long: once quiet, the pool frees the buffers a
//! burst needed beyond [`KEPT_FOR_GOOD`], and keeps those for good. Freeing
//! every buffer once quiet made the everyday shape of traffic (a download
//! now and then) allocate and free 1 MiB each time: after the first free
//! glibc serves such a block from an arena's heap, where small allocations
//! settle between the freed blocks, so each new block grew the heap again:
//! the 1 MiB steps of issue 23's soak (benches/README.md, "Soak").
//!
//! Never blocks: a lease is granted at once or refused.

use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(target_os = "linux")]
use super::pipe::Pipe;

/// The size of one large buffer, and the pipe capacity asked for.
pub const LARGE: usize = 1 << 20;

/// Buffers the pool keeps once allocated, however quiet (within the
/// budget): what everyday bulk traffic borrows (a download or two at a
/// time, each way) is allocated once, not once per burst.
pub const KEPT_FOR_GOOD: usize = 4;

/// Large buffers and pipes, at most `slots` out or kept at once.
#[derive(Debug)]
pub struct Pool {
    /// How many large leases the budget allows (buffers and pipes together).
    slots: usize,
    /// Capacity of the pipes (what `F_SETPIPE_SZ` granted; 0 without pipes).
    pipe_size: usize,
    /// What is out and what is kept.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Buffers allocated and not leased, for the next lease.
    spare: Vec<Box<[u8]>>,
    /// Pipes not leased (empty).
    #[cfg(target_os = "linux")]
    pipes: Vec<Pipe>,
    /// Buffers leased now.
    buffers_out: usize,
    /// Pipes leased now.
    pipes_out: usize,
    /// Pipes that exist (free and leased).
    pipes_total: usize,
    /// The most leases out at once so far.
    peak: usize,
    /// Buffer leases granted so far (to tell a quiet pool from a busy one).
    granted: u64,
    /// `granted` when [`Pool::release_if_quiet`] last looked.
    granted_seen: u64,
}

impl State {
    /// Large buffers in memory plus pipes in use: what the budget bounds.
    fn held(&self) -> usize {
        self.buffers_out + self.spare.len() + self.pipes_out
    }
}

/// A snapshot of the pool, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Leases the budget allows at once.
    pub slots: usize,
    /// Buffers leased now.
    pub buffers_out: usize,
    /// Buffers kept for the next lease.
    pub buffers_kept: usize,
    /// Pipes leased now.
    pub pipes_out: usize,
    /// Pipes that exist.
    pub pipes: usize,
    /// Capacity of each pipe, bytes.
    pub pipe_size: usize,
    /// The most leases out at once so far.
    pub peak: usize,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of `budget` bytes of large buffers, without pipes.
    pub fn new(budget: u64) -> Self {
        let slots = usize::try_from(budget / LARGE as u64).unwrap_or(usize::MAX);
        Self {
            slots,
            pipe_size: 0,
            state: Mutex::new(State::default()),
        }
    }

    /// A pool of `budget` bytes that also creates up to `pipes` pipes now
    /// (no more than the budget's slots), each asked to hold [`LARGE`]
    /// bytes. Creating stops at the first failure (descriptors, the
    /// per-user pipe limit): the pool then has fewer pipes, and tunnels
    /// that find none use buffers. Returns why it stopped, if it did.
    #[cfg(target_os = "linux")]
    pub fn with_pipes(budget: u64, pipes: usize) -> (Self, Option<String>) {
        let mut pool = Self::new(budget);
        let want = pipes.min(pool.slots);
        let mut made = Vec::with_capacity(want);
        let mut size = usize::MAX;
        let mut why = None;
        for _ in 0..want {
            match Pipe::new(LARGE) {
                Ok(p) => {
                    size = size.min(p.size());
                    made.push(p);
                }
                Err(e) => {
                    why = Some(format!("created {} of {want} relay pipes: {e}", made.len()));
                    break;
                }
            }
        }
        pool.pipe_size = if made.is_empty() { 0 } else { size };
        {
            let mut s = lock(&pool.state);
            s.pipes_total = made.len();
            s.pipes = made;
        }
        (pool, why)
    }

    /// Descriptors the pool holds (two per pipe).
    pub fn fds(&self) -> usize {
        lock(&self.state).pipes_total * 2
    }

    /// True when the pool has pipes: the splice relay can run.
    pub fn has_pipes(&self) -> bool {
        lock(&self.state).pipes_total > 0
    }

    /// The numbers now.
    pub fn stats(&self) -> PoolStats {
        let s = lock(&self.state);
        PoolStats {
            slots: self.slots,
            buffers_out: s.buffers_out,
            buffers_kept: s.spare.len(),
            pipes_out: s.pipes_out,
            pipes: s.pipes_total,
            pipe_size: self.pipe_size,
            peak: s.peak,
        }
    }

    /// A large buffer, if the budget allows one now.
    pub fn buffer(&self) -> Option<BufferLease<'_>> {
        let reused = {
            let mut s = lock(&self.state);
            let reused = match s.spare.pop() {
                Some(b) => Some(b),
                None if s.held() < self.slots => None,
                None => return None,
            };
            s.buffers_out += 1;
            s.granted += 1;
            s.peak = s.peak.max(s.buffers_out + s.pipes_out);
            reused
        };
        // Allocated outside the lock; the slot is already taken.
        let buf = reused.unwrap_or_else(|| vec![0u8; LARGE].into_boxed_slice());
        Some(BufferLease {
            buf: Some(buf),
            pool: self,
        })
    }

    /// Frees the kept buffers beyond [`KEPT_FOR_GOOD`] when no buffer was
    /// lent since the last call: after a burst of bulk traffic the pool
    /// does not hold its budget for good, and the everyday bulk traffic
    /// keeps reusing the same few blocks. Called every few seconds; returns
    /// how many it freed.
    pub fn release_if_quiet(&self) -> usize {
        let freed = {
            let mut s = lock(&self.state);
            if s.granted != s.granted_seen {
                s.granted_seen = s.granted;
                return 0;
            }
            let keep = s.spare.len().min(KEPT_FOR_GOOD);
            s.spare.split_off(keep)
        };
        // Freed together, outside the lock: the allocator can give the
        // top of its heap back at once.
        let n = freed.len();
        drop(freed);
        n
    }

    /// An empty pipe, if one is free and the budget allows it now (a kept
    /// buffer is let go to make room).
    #[cfg(target_os = "linux")]
    pub fn pipe(&self) -> Option<PipeLease<'_>> {
        let mut s = lock(&self.state);
        if s.pipes.is_empty() || (s.held() >= self.slots && s.spare.pop().is_none()) {
            return None;
        }
        let pipe = s.pipes.pop()?;
        s.pipes_out += 1;
        s.peak = s.peak.max(s.buffers_out + s.pipes_out);
        Some(PipeLease {
            pipe: Some(pipe),
            pool: self,
        })
    }
}

// === impl BufferLease ===

/// A large buffer on loan; back to the pool on drop.
#[derive(Debug)]
pub struct BufferLease<'p> {
    /// The buffer (taken out on drop).
    buf: Option<Box<[u8]>>,
    /// Where it goes back.
    pool: &'p Pool,
}

impl std::ops::Deref for BufferLease<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl std::ops::DerefMut for BufferLease<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for BufferLease<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.pool.state);
        s.buffers_out = s.buffers_out.saturating_sub(1);
        if let Some(b) = self.buf.take() {
            // Kept only while the budget has room (a pipe lease may have
            // taken the slot a kept buffer gave up).
            if s.held() < self.pool.slots {
                s.spare.push(b);
            }
        }
    }
}

// === impl PipeLease ===

/// A pipe on loan; back to the pool on drop, emptied first.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct PipeLease<'p> {
    /// The pipe (taken out on drop).
    pipe: Option<Pipe>,
    /// Where it goes back.
    pool: &'p Pool,
}

#[cfg(target_os = "linux")]
impl PipeLease<'_> {
    /// The pipe.
    pub fn pipe(&mut self) -> Option<&mut Pipe> {
        self.pipe.as_mut()
    }
}

#[cfg(target_os = "linux")]
impl Drop for PipeLease<'_> {
    fn drop(&mut self) {
        // A tunnel cut mid-transfer leaves bytes in the pipe: they are
        // read out and dropped, or the pipe is closed (never lent dirty).
        let clean = self.pipe.take().and_then(|mut p| p.discard().then_some(p));
        let mut s = lock(&self.pool.state);
        s.pipes_out = s.pipes_out.saturating_sub(1);
        match clean {
            Some(p) => s.pipes.push(p),
            None => s.pipes_total = s.pipes_total.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_buffers_than_the_budget_and_kept_ones_are_reused() {
        let pool = Pool::new(3 * LARGE as u64 + 1000);
        let a = pool.buffer().expect("first");
        let b = pool.buffer().expect("second");
        let c = pool.buffer().expect("third");
        assert!(pool.buffer().is_none(), "a fourth is over the budget");
        assert_eq!(a.len(), LARGE);
        drop(b);
        let s = pool.stats();
        assert_eq!((s.buffers_out, s.buffers_kept, s.peak), (2, 1, 3));
        let d = pool.buffer().expect("the kept one again");
        assert_eq!(pool.stats().buffers_kept, 0);
        drop((a, c, d));
        let s = pool.stats();
        assert_eq!((s.buffers_out, s.buffers_kept), (0, 3));
        assert_eq!(pool.release_if_quiet(), 0, "leases since the last look");
        assert_eq!(
            pool.release_if_quiet(),
            0,
            "quiet, but within what is kept for good"
        );
        assert_eq!(pool.stats().buffers_kept, 3);
        let again = pool.buffer().expect("a kept one");
        assert_eq!(again.len(), LARGE);
    }

    #[test]
    fn a_quiet_pool_frees_what_a_burst_needed_beyond_what_it_keeps_for_good() {
        let pool = Pool::new(16 * LARGE as u64);
        let burst: Vec<_> = (0..10).map(|_| pool.buffer().expect("lease")).collect();
        drop(burst);
        assert_eq!(pool.stats().buffers_kept, 10);
        assert_eq!(pool.release_if_quiet(), 0, "leases since the last look");
        assert_eq!(pool.release_if_quiet(), 10 - KEPT_FOR_GOOD);
        assert_eq!(pool.stats().buffers_kept, KEPT_FOR_GOOD);
        assert_eq!(pool.release_if_quiet(), 0, "what is kept stays");
        // The everyday download reuses a kept block: nothing is allocated.
        for _ in 0..100 {
            let b = pool.buffer().expect("lease");
            drop(b);
            pool.release_if_quiet();
            pool.release_if_quiet();
            assert_eq!(pool.stats().buffers_kept, KEPT_FOR_GOOD);
        }
    }

    #[test]
    fn an_empty_budget_lends_nothing() {
        let pool = Pool::new(LARGE as u64 - 1);
        assert!(pool.buffer().is_none());
        assert_eq!(pool.stats().slots, 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pipes_and_buffers_share_the_budget() {
        let (pool, why) = Pool::with_pipes(2 * LARGE as u64, 5);
        assert_eq!(why, None);
        assert_eq!(pool.stats().pipes, 2, "no more pipes than slots");
        assert_eq!(pool.fds(), 4);
        let kept = pool.buffer().expect("buffer");
        drop(kept);
        let p1 = pool.pipe().expect("pipe");
        let p2 = pool.pipe().expect("a kept buffer makes room");
        assert_eq!(pool.stats().buffers_kept, 0);
        assert!(pool.buffer().is_none());
        assert!(pool.pipe().is_none());
        drop(p1);
        let b = pool.buffer().expect("a returned pipe frees its slot");
        drop((b, p2));
        let s = pool.stats();
        assert_eq!((s.pipes_out, s.pipes, s.buffers_out), (0, 2, 0));
    }
}
