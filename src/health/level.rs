//! What an observation proves about a route: how far it got along the
//! path, as a [`Level`], and so which levels it is evidence for
//! ([`Evidence`]).
//!
//! - **route**: the proxy resolved, took the TCP connection and answered
//!   the CONNECT (for `direct`: the upstream's address resolved and took
//!   the connection);
//! - **tunnel**: the TLS handshake with the upstream completed through it;
//! - **answer**: the upstream's HTTP answer met the target's expectations.
//!
//! A probe sees all three. App traffic sees the route level only: the
//! sidecar relays the app's TLS and HTTP without reading them, so a tunnel
//! that stands is never evidence about the tunnel or the answer. Owns that
//! judgement; never keeps state.

use serde::Serialize;

use crate::reason::{FailureReason, Phase};

/// One level of evidence about a route, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The way out: the proxy (resolve, TCP, the CONNECT answer), or for
    /// `direct` the upstream's address and TCP connection.
    Route,
    /// TLS with the upstream through the route.
    Tunnel,
    /// The upstream's HTTP answer against the target's expectations.
    Answer,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Self::Route, Self::Tunnel, Self::Answer];

    /// The position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The word used in logs, `/status` and the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Tunnel => "tunnel",
            Self::Answer => "answer",
        }
    }

    /// The level a failure is evidence against: by its reason where the
    /// reason names a layer, else by the phase it happened in (a timeout
    /// or an I/O error can happen anywhere).
    pub fn of_failure(reason: FailureReason, phase: Option<Phase>) -> Level {
        use FailureReason as R;
        match reason {
            R::TlsUntrusted | R::TlsExpired | R::TlsHandshake | R::ClientCertRejected => {
                Self::Tunnel
            }
            R::HttpStatus | R::HttpBody => Self::Answer,
            R::Timeout | R::Io | R::Ok | R::LocalExhausted => match phase {
                Some(Phase::Tls) => Self::Tunnel,
                Some(Phase::FirstByte | Phase::Body) => Self::Answer,
                _ => Self::Route,
            },
            _ => Self::Route,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one observation proves, level by level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Every level up to and including this one passed; nothing is known
    /// of the levels above (app traffic reaches [`Level::Route`] only).
    Passed(Level),
    /// The levels below this one passed and this one failed; nothing is
    /// known of the levels above.
    FailedAt(Level),
    /// Nothing about the route: the failure was this process's own
    /// (`local_exhausted`).
    Nothing,
}

impl Evidence {
    /// What a probe's result proves: a success proves every level; a
    /// failure proves the levels below the one it failed at.
    pub fn of_probe(reason: FailureReason, phase: Option<Phase>) -> Self {
        match reason {
            FailureReason::Ok => Self::Passed(Level::Answer),
            FailureReason::LocalExhausted => Self::Nothing,
            r => Self::FailedAt(Level::of_failure(r, phase)),
        }
    }

    /// What an app connection proves, up to the CONNECT answer (or the
    /// direct TCP connect): the route level, at most.
    pub fn of_traffic(failure: Option<FailureReason>) -> Self {
        match failure {
            None => Self::Passed(Level::Route),
            Some(FailureReason::LocalExhausted) => Self::Nothing,
            Some(_) => Self::FailedAt(Level::Route),
        }
    }

    /// For `level`: `Some(true)` passed, `Some(false)` failed, `None` not
    /// observed.
    pub fn at(self, level: Level) -> Option<bool> {
        match self {
            Self::Passed(top) => (level <= top).then_some(true),
            Self::FailedAt(failed) if level < failed => Some(true),
            Self::FailedAt(failed) => (level == failed).then_some(false),
            Self::Nothing => None,
        }
    }

    /// The level that failed, if any.
    pub fn failed(self) -> Option<Level> {
        match self {
            Self::FailedAt(l) => Some(l),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_proves_the_levels_below_its_failure_and_traffic_only_the_route() {
        let tls = Evidence::of_probe(FailureReason::TlsUntrusted, Some(Phase::Tls));
        assert_eq!(
            Level::ALL.map(|l| tls.at(l)),
            [Some(true), Some(false), None]
        );
        let http = Evidence::of_probe(FailureReason::HttpStatus, Some(Phase::FirstByte));
        assert_eq!(
            Level::ALL.map(|l| http.at(l)),
            [Some(true), Some(true), Some(false)]
        );
        let ok = Evidence::of_probe(FailureReason::Ok, None);
        assert_eq!(Level::ALL.map(|l| ok.at(l)), [Some(true); 3]);
        let tunnel = Evidence::of_traffic(None);
        assert_eq!(Level::ALL.map(|l| tunnel.at(l)), [Some(true), None, None]);
        let refused = Evidence::of_traffic(Some(FailureReason::ProxyUpstreamError));
        assert_eq!(Level::ALL.map(|l| refused.at(l)), [Some(false), None, None]);
        for e in [
            Evidence::of_probe(FailureReason::LocalExhausted, Some(Phase::Connect)),
            Evidence::of_traffic(Some(FailureReason::LocalExhausted)),
        ] {
            assert_eq!(Level::ALL.map(|l| e.at(l)), [None; 3]);
        }
    }

    #[test]
    fn timeouts_and_io_errors_are_placed_by_their_phase() {
        use FailureReason as R;
        assert_eq!(
            Level::of_failure(R::Timeout, Some(Phase::Connect)),
            Level::Route
        );
        assert_eq!(
            Level::of_failure(R::Timeout, Some(Phase::Tls)),
            Level::Tunnel
        );
        assert_eq!(Level::of_failure(R::Io, Some(Phase::Body)), Level::Answer);
        assert_eq!(
            Level::of_failure(R::ClientCertRejected, Some(Phase::FirstByte)),
            Level::Tunnel,
            "a late TLS 1.3 alert is still about the tunnel"
        );
        assert_eq!(
            Level::of_failure(R::ProxyDenied, Some(Phase::Tunnel)),
            Level::Route
        );
    }
}
