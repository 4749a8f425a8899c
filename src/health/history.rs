//! The last hour per target × route: [`CELLS`] cells of one
//! `[status] history_cell` each (a minute by default), every cell the
//! aggregate of the probes that counted for the pair in its time slot —
//! how many passed and failed, whether the route was degraded, the reasons
//! seen, and the probe time (p50 and max). The status page's strip and
//! `GET /history` read it from the [`Snapshot`](super::Snapshot).
//!
//! Pure: the time (Unix milliseconds, the wall clock, so cells line up
//! with the incident windows and with the minutes people read) is passed
//! in; no clock reads, no I/O, no locks. Bounded: at most [`CELLS`] cells
//! per pair, each with at most [`MAX_SAMPLES`] durations, one reason count
//! per [`FailureReason`] and a detail of at most [`MAX_DETAIL`] bytes. Each
//! pair sits behind its own `Arc`: a snapshot's copy costs one pointer per
//! pair, and recording clones only the pair it changes, and only while a
//! reader still holds the old one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::reason::FailureReason;

/// Cells kept per target × route.
pub const CELLS: usize = 60;
/// Probe durations kept per cell for its p50 (the max counts every probe).
pub const MAX_SAMPLES: usize = 32;
/// The longest failure detail a cell keeps, in bytes.
pub const MAX_DETAIL: usize = 160;

/// What a cell says of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// No probe counted in the slot.
    None,
    /// Every probe passed, and the route was never degraded.
    Pass,
    /// Every probe failed.
    Fail,
    /// Some probes failed and the route was degraded after one of them
    /// (too many of its latest observations failed).
    Degraded,
    /// Some probes passed and some failed, the route never degraded.
    Mixed,
}

impl CellState {
    /// The word the page, its CSS classes and `/history` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Degraded => "degraded",
            Self::Mixed => "mixed",
        }
    }
}

/// One probe, as the history records it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// Every stage passed and every expectation held.
    pub ok: bool,
    /// Why it failed (`ok` when it did not).
    pub reason: FailureReason,
    /// What happened, in words.
    pub detail: &'a str,
    /// The whole probe.
    pub duration: Duration,
    /// The route's state was degraded once the probe was counted.
    pub degraded: bool,
}

/// One time slot of one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The slot: it starts at `slot × cell` milliseconds after the epoch.
    pub slot: i64,
    /// Probes that passed.
    pub pass: u32,
    /// Probes that failed.
    pub fail: u32,
    /// The route was degraded after one of the slot's probes.
    pub degraded: bool,
    /// Failures by reason, in the order first seen (one entry per reason).
    reasons: Vec<(FailureReason, u32)>,
    /// The latest failure's detail, cut at [`MAX_DETAIL`] bytes.
    pub detail: String,
    /// The first [`MAX_SAMPLES`] probe durations, in microseconds: kept
    /// inline, so a cell owns no heap block unless it saw a failure.
    samples_us: [u32; MAX_SAMPLES],
    /// How many of `samples_us` are set.
    samples: u8,
    /// The longest probe, in microseconds.
    max_us: u32,
}

impl Cell {
    fn new(slot: i64) -> Self {
        Self {
            slot,
            pass: 0,
            fail: 0,
            degraded: false,
            reasons: Vec::new(),
            detail: String::new(),
            samples_us: [0; MAX_SAMPLES],
            samples: 0,
            max_us: 0,
        }
    }

    fn add(&mut self, s: &Sample<'_>) {
        if s.ok {
            self.pass = self.pass.saturating_add(1);
        } else {
            self.fail = self.fail.saturating_add(1);
            match self.reasons.iter_mut().find(|(r, _)| *r == s.reason) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => self.reasons.push((s.reason, 1)),
            }
            self.detail = cut(s.detail, MAX_DETAIL).to_string();
        }
        self.degraded |= s.degraded;
        let us = u32::try_from(s.duration.as_micros()).unwrap_or(u32::MAX);
        if let Some(slot) = self.samples_us.get_mut(usize::from(self.samples)) {
            *slot = us;
            self.samples += 1;
        }
        self.max_us = self.max_us.max(us);
    }

    /// What the cell says: see [`CellState`].
    pub fn state(&self) -> CellState {
        match (self.pass, self.fail) {
            (0, 0) => CellState::None,
            (_, 0) if !self.degraded => CellState::Pass,
            (0, _) => CellState::Fail,
            _ if self.degraded => CellState::Degraded,
            _ => CellState::Mixed,
        }
    }

    /// The most frequent failure reason (the first seen among equals).
    pub fn reason(&self) -> Option<FailureReason> {
        let mut best: Option<(FailureReason, u32)> = None;
        for &(r, n) in &self.reasons {
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((r, n));
            }
        }
        best.map(|(r, _)| r)
    }

    /// Failures by reason, in the order first seen.
    pub fn reasons(&self) -> &[(FailureReason, u32)] {
        &self.reasons
    }

    /// The median probe time (of the first [`MAX_SAMPLES`]).
    pub fn p50(&self) -> Option<Duration> {
        let mut v = self.samples_us;
        let v = &mut v[..usize::from(self.samples)];
        v.sort_unstable();
        let mid = v.get(v.len().checked_sub(1)? / 2)?;
        Some(Duration::from_micros(u64::from(*mid)))
    }

    /// The longest probe time.
    pub fn max(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::from_micros(u64::from(self.max_us)))
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One pair's cells, oldest first: at most [`CELLS`], only slots with a
/// probe. The ring is allocated for all [`CELLS`] from the start, and a
/// clone (each probe while a reader holds the published copy) is too: the
/// pair's memory is one block of the same size from its first probe on,
/// not a buffer that grows through the first hour and leaves blocks of
/// every size behind (issue 23).
#[derive(Debug, PartialEq, Eq)]
pub struct PairHistory {
    cells: VecDeque<Cell>,
}

impl Default for PairHistory {
    fn default() -> Self {
        Self {
            cells: VecDeque::with_capacity(CELLS),
        }
    }
}

impl Clone for PairHistory {
    fn clone(&self) -> Self {
        let mut copy = Self::default();
        copy.cells.extend(self.cells.iter().cloned());
        copy
    }
}

impl PairHistory {
    /// The cells stored (never more than [`CELLS`]).
    pub fn stored(&self) -> usize {
        self.cells.len()
    }

    /// Adds `s` to the cell of `slot`; drops what fell out of the window.
    fn add(&mut self, slot: i64, s: &Sample<'_>) {
        match self.cells.back() {
            Some(last) if last.slot > slot => {
                // The wall clock stepped back: a history out of order
                // would draw lies; start again.
                if let Some(c) = self.cells.iter_mut().rev().find(|c| c.slot == slot) {
                    c.add(s);
                    return;
                }
                self.cells.clear();
                self.cells.push_back(Cell::new(slot));
            }
            Some(last) if last.slot == slot => {}
            _ => self.cells.push_back(Cell::new(slot)),
        }
        if let Some(c) = self.cells.back_mut() {
            c.add(s);
        }
        self.prune(slot);
    }

    /// Drops cells before the window that ends with `slot`; true when any.
    fn prune(&mut self, slot: i64) -> bool {
        let before = self.cells.len();
        let first = slot - (CELLS as i64 - 1);
        while self
            .cells
            .front()
            .is_some_and(|c| c.slot < first || self.cells.len() > CELLS)
        {
            self.cells.pop_front();
        }
        self.cells.len() != before
    }

    fn get(&self, slot: i64) -> Option<&Cell> {
        self.cells.iter().rev().find(|c| c.slot == slot)
    }
}

/// One slot of a window: its start and its cell, if a probe counted.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The slot's start, in Unix milliseconds.
    pub start_ms: i64,
    /// Its cell (`None`: no probe counted in it).
    pub cell: Option<&'a Cell>,
}

impl Slot<'_> {
    /// What the slot says.
    pub fn state(&self) -> CellState {
        self.cell.map_or(CellState::None, Cell::state)
    }
}

/// Every pair's last [`CELLS`] cells.
#[derive(Debug, Clone)]
pub struct History {
    /// One cell's span, in milliseconds (at least 1).
    cell_ms: i64,
    /// Per (target, route).
    pairs: BTreeMap<(String, String), Arc<PairHistory>>,
}

impl History {
    /// An empty history of `cell`-long cells (at least a millisecond).
    pub fn new(cell: Duration) -> Self {
        Self {
            cell_ms: i64::try_from(cell.as_millis()).unwrap_or(i64::MAX).max(1),
            pairs: BTreeMap::new(),
        }
    }

    /// One cell's span.
    pub fn cell(&self) -> Duration {
        Duration::from_millis(self.cell_ms.unsigned_abs())
    }

    fn slot(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.cell_ms)
    }

    /// Records one probe of `target` over `route` at `now_ms`.
    pub fn record(&mut self, now_ms: i64, target: &str, route: &str, s: &Sample<'_>) {
        let slot = self.slot(now_ms);
        let key = (target.to_string(), route.to_string());
        Arc::make_mut(self.pairs.entry(key).or_default()).add(slot, s);
    }

    /// Drops every cell that fell out of the window ending at `now_ms`;
    /// true when one did (the published copy is then stale).
    pub fn prune(&mut self, now_ms: i64) -> bool {
        let slot = self.slot(now_ms);
        let mut dropped = false;
        for pair in self.pairs.values_mut() {
            let stale = pair
                .cells
                .front()
                .is_some_and(|c| c.slot < slot - (CELLS as i64 - 1));
            if stale {
                dropped |= Arc::make_mut(pair).prune(slot);
            }
        }
        dropped
    }

    /// Keeps only the pairs `keep` names (after a reload); true when one went.
    pub fn retain(&mut self, keep: &[(String, String)]) -> bool {
        let before = self.pairs.len();
        self.pairs.retain(|k, _| keep.contains(k));
        self.pairs.len() != before
    }

    /// The pair's history, if a probe of it was recorded.
    pub fn pair(&self, target: &str, route: &str) -> Option<&PairHistory> {
        let key = (target.to_string(), route.to_string());
        self.pairs.get(&key).map(Arc::as_ref)
    }

    /// The first and the last slot's start of the window ending at
    /// `now_ms`, in Unix milliseconds.
    pub fn range(&self, now_ms: i64) -> (i64, i64) {
        let last = self.slot(now_ms);
        let first = last - (CELLS as i64 - 1);
        (first * self.cell_ms, last * self.cell_ms)
    }

    /// The [`CELLS`] slots of the window ending at `now_ms`, oldest first.
    pub fn window(&self, now_ms: i64, target: &str, route: &str) -> Vec<Slot<'_>> {
        let pair = self.pair(target, route);
        let last = self.slot(now_ms);
        (last - (CELLS as i64 - 1)..=last)
            .map(|slot| Slot {
                start_ms: slot * self.cell_ms,
                cell: pair.and_then(|p| p.get(slot)),
            })
            .collect()
    }
}

/// `t` in Unix milliseconds (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    /// 11:47:00Z on some day, a whole minute.
    const T0: i64 = 1_795_000_020_000;

    fn probe(ok: bool, reason: FailureReason, ms: u64) -> Sample<'static> {
        Sample {
            ok,
            reason,
            detail: if ok {
                "200 OK"
            } else {
                "HTTP/1.1 502 Bad Gateway"
            },
            duration: Duration::from_millis(ms),
            degraded: false,
        }
    }

    fn pass(ms: u64) -> Sample<'static> {
        probe(true, FailureReason::Ok, ms)
    }

    fn fail(reason: FailureReason) -> Sample<'static> {
        probe(false, reason, 5)
    }

    fn states(h: &History, now: i64) -> Vec<CellState> {
        h.window(now, "apns", "provider")
            .iter()
            .map(Slot::state)
            .collect()
    }

    #[test]
    fn probes_in_one_minute_make_one_cell_and_the_next_minute_a_new_one() {
        let mut h = History::new(Duration::from_secs(60));
        h.record(T0 + 1_000, "apns", "provider", &pass(10));
        h.record(T0 + 59_999, "apns", "provider", &pass(20));
        h.record(T0 + MIN, "apns", "provider", &pass(30));
        let p = h.pair("apns", "provider").expect("recorded");
        assert_eq!(p.stored(), 2);
        let w = h.window(T0 + MIN + 5, "apns", "provider");
        assert_eq!(w.len(), CELLS);
        assert_eq!(w[CELLS - 1].start_ms, T0 + MIN);
        assert_eq!(w[CELLS - 2].start_ms, T0);
        assert_eq!(w[CELLS - 2].cell.map(|c| c.pass), Some(2));
        assert_eq!(w[CELLS - 3].state(), CellState::None);
        assert_eq!(h.range(T0 + MIN), (T0 + MIN - 59 * MIN, T0 + MIN));
    }

    #[test]
    fn a_cell_is_pass_fail_mixed_or_degraded_by_what_its_probes_said() {
        let mut h = History::new(Duration::from_secs(60));
        let at = |m: i64| T0 + m * MIN;
        h.record(at(0), "apns", "provider", &pass(10));
        h.record(
            at(1),
            "apns",
            "provider",
            &fail(FailureReason::ProxyUpstreamError),
        );
        h.record(at(2), "apns", "provider", &pass(10));
        h.record(
            at(2),
            "apns",
            "provider",
            &fail(FailureReason::ProxyConnect),
        );
        let degraded = Sample {
            degraded: true,
            ..fail(FailureReason::TlsHandshake)
        };
        h.record(at(3), "apns", "provider", &pass(10));
        h.record(at(3), "apns", "provider", &degraded);
        // Every probe passed, but the route stayed degraded: not a pass.
        h.record(
            at(4),
            "apns",
            "provider",
            &Sample {
                degraded: true,
                ..pass(10)
            },
        );
        let s = states(&h, at(4));
        assert_eq!(
            s[CELLS - 5..],
            [
                CellState::Pass,
                CellState::Fail,
                CellState::Mixed,
                CellState::Degraded,
                CellState::Degraded
            ]
        );
        assert!(s[..CELLS - 5].iter().all(|c| *c == CellState::None));
    }

    #[test]
    fn the_reason_shown_is_the_most_frequent_and_every_reason_is_counted() {
        let mut h = History::new(Duration::from_secs(60));
        h.record(T0, "sms", "provider", &fail(FailureReason::ProxyConnect));
        for _ in 0..3 {
            h.record(
                T0,
                "sms",
                "provider",
                &fail(FailureReason::ProxyUpstreamError),
            );
        }
        let w = h.window(T0, "sms", "provider");
        let c = w[CELLS - 1].cell.expect("a cell");
        assert_eq!(c.reason(), Some(FailureReason::ProxyUpstreamError));
        assert_eq!(
            c.reasons(),
            [
                (FailureReason::ProxyConnect, 1),
                (FailureReason::ProxyUpstreamError, 3)
            ]
        );
        assert_eq!((c.pass, c.fail), (0, 4));
        assert_eq!(c.detail, "HTTP/1.1 502 Bad Gateway");
    }

    #[test]
    fn a_pair_and_every_copy_of_it_hold_room_for_the_whole_window() {
        let mut h = History::new(Duration::from_secs(60));
        h.record(T0, "apns", "direct", &pass(10));
        let pair = h.pair("apns", "direct").expect("recorded");
        assert_eq!(pair.stored(), 1);
        assert!(pair.cells.capacity() >= CELLS, "{}", pair.cells.capacity());
        let copy = pair.clone();
        assert_eq!(&copy, pair);
        assert!(copy.cells.capacity() >= CELLS, "{}", copy.cells.capacity());
    }

    #[test]
    fn p50_and_max_come_from_the_probe_times() {
        let mut h = History::new(Duration::from_secs(60));
        for ms in [40, 10, 30, 20, 900] {
            h.record(T0, "apns", "direct", &pass(ms));
        }
        let w = h.window(T0, "apns", "direct");
        let c = w[CELLS - 1].cell.expect("a cell");
        assert_eq!(c.p50(), Some(Duration::from_millis(30)));
        assert_eq!(c.max(), Some(Duration::from_millis(900)));
        // Past MAX_SAMPLES the median stops moving; the max still does.
        for _ in 0..100 {
            h.record(T0, "apns", "direct", &pass(5_000));
        }
        h.record(T0, "apns", "direct", &pass(9_000));
        let w = h.window(T0, "apns", "direct");
        let c = w[CELLS - 1].cell.expect("a cell");
        assert_eq!(usize::from(c.samples), MAX_SAMPLES);
        assert_eq!(c.max(), Some(Duration::from_millis(9_000)));
        assert_eq!(c.pass, 106);
    }

    #[test]
    fn a_long_detail_is_cut_on_a_character_boundary() {
        let mut h = History::new(Duration::from_secs(1));
        let long = "é".repeat(200);
        let s = Sample {
            detail: &long,
            ..fail(FailureReason::HttpStatus)
        };
        h.record(T0, "apns", "provider", &s);
        let w = h.window(T0, "apns", "provider");
        let detail = &w[CELLS - 1].cell.expect("a cell").detail;
        assert!(detail.len() <= MAX_DETAIL && detail.chars().all(|c| c == 'é'));
    }

    #[test]
    fn two_hours_of_one_second_cells_keep_sixty_per_pair() {
        let mut h = History::new(Duration::from_secs(1));
        let pairs = [
            ("apns", "provider"),
            ("apns", "direct"),
            ("sms", "provider"),
        ];
        for i in 0..7_200_i64 {
            let now = T0 + i * 1_000 + 250;
            for (n, (t, r)) in pairs.iter().enumerate() {
                let s = if (i + n as i64) % 7 == 0 {
                    fail(FailureReason::ProxyUpstreamError)
                } else {
                    pass(3)
                };
                h.record(now, t, r, &s);
            }
            if i % 600 == 0 {
                h.prune(now);
            }
        }
        let now = T0 + 7_199 * 1_000 + 900;
        for (t, r) in pairs {
            assert_eq!(h.pair(t, r).map(PairHistory::stored), Some(CELLS));
            let w = h.window(now, t, r);
            assert_eq!(w.len(), CELLS);
            assert!(
                w.iter()
                    .all(|s| s.cell.is_some_and(|c| c.pass + c.fail == 1))
            );
            assert_eq!(w[0].start_ms, T0 + 7_140 * 1_000);
        }
    }

    #[test]
    fn cells_out_of_the_window_go_on_prune_and_a_clock_step_back_starts_again() {
        let mut h = History::new(Duration::from_secs(60));
        h.record(T0, "apns", "provider", &pass(1));
        h.record(T0 + MIN, "apns", "provider", &pass(1));
        assert!(!h.prune(T0 + 60 * MIN - 1));
        assert!(h.prune(T0 + 60 * MIN));
        assert_eq!(h.pair("apns", "provider").map(PairHistory::stored), Some(1));
        assert!(h.prune(T0 + 200 * MIN));
        assert_eq!(h.pair("apns", "provider").map(PairHistory::stored), Some(0));
        h.record(T0 + 5 * MIN, "apns", "provider", &pass(1));
        h.record(T0 + 6 * MIN, "apns", "provider", &pass(1));
        h.record(T0 + 5 * MIN, "apns", "provider", &pass(1));
        assert_eq!(h.pair("apns", "provider").map(PairHistory::stored), Some(2));
        h.record(T0, "apns", "provider", &pass(1));
        assert_eq!(h.pair("apns", "provider").map(PairHistory::stored), Some(1));
    }

    #[test]
    fn a_reload_keeps_only_the_pairs_still_configured() {
        let mut h = History::new(Duration::from_secs(60));
        h.record(T0, "apns", "provider", &pass(1));
        h.record(T0, "old", "provider", &pass(1));
        assert!(h.retain(&[("apns".into(), "provider".into())]));
        assert!(h.pair("old", "provider").is_none());
        assert!(h.pair("apns", "provider").is_some());
    }
}
