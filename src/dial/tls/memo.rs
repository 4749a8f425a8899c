//! What one [`TlsClient`](super::TlsClient) already learned about the
//! chains its peers show ([`ChainMemo`]): the leaf as a report shows it
//! ([`CertInfo`], parsed once per leaf instead of once per handshake), and
//! the anchor a verified chain ends in (its path built once per chain and
//! validity window instead of a second time per handshake).
//!
//! A memo never decides a handshake: rustls' verifier still verifies every
//! chain, and a verdict is looked up only after it passed. A remembered
//! anchor is the one the same path building would find again: the same
//! leaf, the same intermediates in the same order, the same roots and
//! expectation (the memo belongs to one client, which a reload replaces),
//! and a time inside the same window — between the nearest `notBefore` or
//! `notAfter` of those certificates on either side, where no certificate's
//! validity changes and so no path can start or stop being valid.
//!
//! Bounded: a few dozen entries per client, the least recently used go.

use std::collections::VecDeque;
use std::sync::Mutex;

use rustls::pki_types::{CertificateDer, UnixTime};

use super::anchors::TrustVerdict;
use super::cert::CertInfo;

/// Entries kept per kind; a target shows one leaf per route (two when
/// something re-signs), so this covers rotations and a few interceptors.
const KEEP: usize = 32;

/// A SHA-256 digest.
type Digest = [u8; 32];

/// The leaves and verdicts one client has seen.
#[derive(Debug, Default)]
pub(crate) struct ChainMemo {
    /// Parsed leaves by the SHA-256 of their DER, most recent first.
    leaves: Mutex<VecDeque<(Digest, CertInfo)>>,
    /// Verdicts by the SHA-256 of the chain, most recent first.
    verdicts: Mutex<VecDeque<Verdict>>,
}

/// One remembered verdict and the window it holds in.
#[derive(Debug)]
struct Verdict {
    /// SHA-256 over the leaf and the intermediates, each length-prefixed.
    chain: Digest,
    /// Unix seconds: valid from (inclusive) ...
    from: i64,
    /// ... to (exclusive).
    until: i64,
    /// The anchor, judged; `None`: no path was found.
    verdict: Option<TrustVerdict>,
}

impl ChainMemo {
    /// What a report shows of `leaf`; `None` when it is not parseable X.509.
    pub(crate) fn cert_info(&self, leaf: &CertificateDer<'_>) -> Option<CertInfo> {
        let key = sha256(&[leaf.as_ref()]);
        let mut leaves = self
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = leaves.iter().position(|(k, _)| *k == key) {
            let hit = leaves.remove(i)?;
            let info = hit.1.clone();
            leaves.push_front(hit);
            return Some(info);
        }
        let info = CertInfo::from_der(leaf)?;
        leaves.push_front((key, info.clone()));
        leaves.truncate(KEEP);
        Some(info)
    }

    /// The verdict on `leaf` + `intermediates` at `now`: remembered, or
    /// found by `find` and remembered for the window around `now`.
    pub(crate) fn verdict(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        find: impl FnOnce() -> Option<TrustVerdict>,
    ) -> Option<TrustVerdict> {
        let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let mut parts = Vec::with_capacity(intermediates.len() + 1);
        parts.push(leaf.as_ref());
        parts.extend(intermediates.iter().map(|c| c.as_ref()));
        let key = sha256(&parts);
        {
            let mut verdicts = self
                .verdicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fits = |v: &Verdict| v.chain == key && v.from <= now_s && now_s < v.until;
            if let Some(i) = verdicts.iter().position(fits) {
                let hit = verdicts.remove(i)?;
                let verdict = hit.verdict.clone();
                verdicts.push_front(hit);
                return verdict;
            }
        }
        // Found outside the lock: a path build takes a while.
        let verdict = find();
        if let Some((from, until)) = window(&parts, now_s) {
            let mut verdicts = self
                .verdicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            verdicts.retain(|v| v.chain != key);
            verdicts.push_front(Verdict {
                chain: key,
                from,
                until,
                verdict: verdict.clone(),
            });
            verdicts.truncate(KEEP);
        }
        verdict
    }
}

/// The window around `now` in which no certificate of `chain` starts or
/// stops being valid; `None` (not remembered) when one does not parse.
fn window(chain: &[&[u8]], now: i64) -> Option<(i64, i64)> {
    let (mut from, mut until) = (i64::MIN, i64::MAX);
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let v = cert.validity();
        // The first second it is valid, and the first it is no longer.
        let last = v.not_after.timestamp().saturating_add(1);
        for edge in [v.not_before.timestamp(), last] {
            if edge <= now {
                from = from.max(edge);
            } else {
                until = until.min(edge);
            }
        }
    }
    Some((from, until))
}

/// SHA-256 over `parts`, each prefixed with its length (so no two
/// different chains hash the same bytes).
fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    /// A self-signed certificate valid from 2020-01-01 to 2030-01-01.
    fn cert(name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn at(unix: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(unix))
    }

    #[test]
    fn a_chain_is_path_built_once_while_no_certificate_changes_validity() {
        let (leaf, other) = (cert("a.test"), cert("b.test"));
        let memo = ChainMemo::default();
        let builds = Cell::new(0);
        let find = || {
            builds.set(builds.get() + 1);
            None
        };
        memo.verdict(&leaf, &[], at(1_800_000_000), find);
        memo.verdict(&leaf, &[], at(1_800_000_100), find);
        assert_eq!(builds.get(), 1, "same chain, same window: remembered");
        memo.verdict(&leaf, std::slice::from_ref(&other), at(1_800_000_100), find);
        assert_eq!(builds.get(), 2, "another intermediate: another chain");
        // 2030-01-01T00:00:00Z is the last valid second; one after, expired.
        memo.verdict(&leaf, &[], at(1_893_456_000), find);
        assert_eq!(builds.get(), 2, "the last valid second: same window");
        memo.verdict(&leaf, &[], at(1_893_456_001), find);
        assert_eq!(builds.get(), 3, "expired since: built again");
    }

    #[test]
    fn a_leaf_is_parsed_once_and_the_memo_stays_bounded() {
        let memo = ChainMemo::default();
        let leaf = cert("a.test");
        let first = memo.cert_info(&leaf).expect("parses");
        assert_eq!(memo.cert_info(&leaf), Some(first.clone()));
        assert_eq!(CertInfo::from_der(&leaf), Some(first));
        for i in 0..KEEP + 3 {
            memo.cert_info(&cert(&format!("n{i}.test")));
        }
        let kept = memo.leaves.lock().map(|l| l.len()).unwrap_or(0);
        assert_eq!(kept, KEEP);
    }
}
