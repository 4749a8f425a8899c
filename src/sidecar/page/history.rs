//! The last hour, per target × route: a strip of
//! [`CELLS`](crate::health::history::CELLS) cells (pass, fail, degraded,
//! mixed, or no probe), the probe time as two lines (p50 and max per cell)
//! and the incident windows on the same time axis, drawn as one inline
//! SVG per pair, with a sentence above it that says the same in words for
//! a terminal browser or a screen reader (`last hour: 52 pass, 6 fail
//! (proxy_upstream_error 11:47–11:53)`).
//!
//! Each cell with a probe is focusable (`tabindex="0"`) and says what it
//! holds in its `aria-label` and its `<title>` (the tooltip on hover): the
//! slot, the state, the counts, the most frequent reason with the latest
//! detail, p50 and max. No script, no external reference: the drawing is
//! server-rendered and styled by the page's one style sheet.
//!
//! Reads the snapshot's history and incident windows; never the clock
//! (the caller passes the wall time it took once for the whole page).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::text::{esc, span};
use crate::config::Config;
use crate::dial::fmt_duration;
use crate::dial::tls::rfc3339;
use crate::health::history::{CELLS, CellState, History, Slot, unix_ms};
use crate::incidents::IncidentWindow;

/// The drawing's width: 10 units a cell.
const WIDTH: f64 = 600.0;
const CELL_W: f64 = WIDTH / CELLS as f64;
/// The incident band, the cells and the probe-time chart, top to bottom.
const BAND: (f64, f64) = (0.0, 5.0);
const STRIP: (f64, f64) = (7.0, 18.0);
const CHART: (f64, f64) = (33.0, 30.0);
const HEIGHT: f64 = 64.0;

/// One pair's strip, as drawn and as said.
struct Pair<'a> {
    target: &'a str,
    route: &'a str,
    slots: Vec<Slot<'a>>,
    /// One cell's span.
    cell: Duration,
}

/// The section: one strip per target × route, in the config's order.
pub(super) fn section(
    h: &mut String,
    config: &Config,
    history: &History,
    windows: &[IncidentWindow],
    wall: SystemTime,
) {
    let now = unix_ms(wall);
    let cell = history.cell();
    let _ = writeln!(
        h,
        "<section id=\"history\" aria-labelledby=\"history-h\"><h2 id=\"history-h\">The last hour</h2>\
<p class=\"meta\">Per target and route, {CELLS} cells of {} each, oldest on the left: \
<span class=\"key h-pass\">pass</span>, <span class=\"key h-fail\">fail</span>, \
<span class=\"key h-mixed\">mixed</span>, <span class=\"key h-degraded\">degraded</span>, \
<span class=\"key h-none\">no probe</span>; incident windows above the cells; \
below, the probe time (p50 solid, max dotted). Focus or hover a cell for its reason.</p>",
        esc(&span(cell)),
    );
    for t in &config.targets {
        for r in &t.routes {
            let pair = Pair {
                target: &t.name,
                route: &r.name,
                slots: history.window(now, &t.name, &r.name),
                cell,
            };
            let incidents: Vec<&IncidentWindow> = windows
                .iter()
                .filter(|w| w.impact.iter().any(|i| *i == t.name))
                .collect();
            strip(h, &pair, &incidents, now);
        }
    }
    h.push_str("</section>\n");
}

/// One pair: its sentence and its drawing.
fn strip(h: &mut String, p: &Pair<'_>, incidents: &[&IncidentWindow], now_ms: i64) {
    let _ = write!(
        h,
        "<div class=\"history\" data-target=\"{t}\" data-route=\"{r}\">\
<h3>{t} <span class=\"meta\">over</span> {r}</h3><p class=\"summary\">{}</p>\
<svg class=\"strip\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"group\" aria-label=\"the last hour of {t} over {r}\">",
        esc(&summary(p)),
        t = esc(p.target),
        r = esc(p.route),
    );
    bands(h, p, incidents, now_ms);
    for (i, s) in p.slots.iter().enumerate() {
        cell(h, p, i, s);
    }
    chart(h, p);
    h.push_str("</svg></div>\n");
}

/// The incident windows that overlap the strip, as bands on its axis.
fn bands(h: &mut String, p: &Pair<'_>, incidents: &[&IncidentWindow], now_ms: i64) {
    let (Some(first), Some(last)) = (p.slots.first(), p.slots.last()) else {
        return;
    };
    let cell_ms = i64::try_from(p.cell.as_millis()).unwrap_or(i64::MAX);
    let (from, to) = (first.start_ms, last.start_ms.saturating_add(cell_ms));
    let x = |ms: i64| (ms.clamp(from, to) - from) as f64 / (to - from).max(1) as f64 * WIDTH;
    for w in incidents {
        let start = w.start.saturating_mul(1000);
        let end = w.end.map_or(now_ms, |e| e.saturating_mul(1000));
        if end < from || start > to {
            continue;
        }
        let (x0, x1) = (x(start), x(end));
        let _ = write!(
            h,
            "<rect class=\"h-incident\" data-incident=\"{}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\"><title>{}</title></rect>",
            w.id,
            BAND.0,
            (x1 - x0).max(1.0),
            BAND.1,
            esc(&w.render()),
        );
    }
}

/// One cell: its rectangle, what it says on hover and on focus.
fn cell(h: &mut String, p: &Pair<'_>, i: usize, s: &Slot<'_>) {
    let state = s.state();
    let label = describe(s, p.cell);
    let focus = if s.cell.is_some() {
        format!(" tabindex=\"0\" aria-label=\"{}\"", esc(&label))
    } else {
        String::new()
    };
    let _ = write!(
        h,
        "<g class=\"cell h-{st}\" data-state=\"{st}\" data-start=\"{}\"{focus}><title>{}</title>\
<rect x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\"/></g>",
        s.start_ms.div_euclid(1000),
        esc(&label),
        i as f64 * CELL_W,
        STRIP.0,
        CELL_W - 1.0,
        STRIP.1,
        st = state.as_str(),
    );
}

/// A cell in words: `11:47:03–11:47:04: fail, 1 of 1 probes failed,
/// proxy_upstream_error (HTTP/1.1 502 Bad Gateway), p50 2.1ms, max 2.1ms`.
fn describe(s: &Slot<'_>, cell: Duration) -> String {
    let end = s
        .start_ms
        .saturating_add(i64::try_from(cell.as_millis()).unwrap_or(0));
    let when = format!("{}–{}", clock(s.start_ms, cell), clock(end, cell));
    let Some(c) = s.cell else {
        return format!("{when}: no probe");
    };
    let mut out = format!(
        "{when}: {}, {} of {} probes failed",
        s.state().as_str(),
        c.fail,
        c.pass.saturating_add(c.fail)
    );
    if let Some(r) = c.reason() {
        let _ = write!(out, ", {r} ({})", c.detail);
    }
    if let (Some(p50), Some(max)) = (c.p50(), c.max()) {
        let _ = write!(
            out,
            ", p50 {}, max {}",
            fmt_duration(p50),
            fmt_duration(max)
        );
    }
    out
}

/// `11:47` for cells of a minute or more, else `11:47:03` (UTC).
fn clock(ms: i64, cell: Duration) -> String {
    let t = rfc3339(ms.div_euclid(1000));
    let end = if cell >= Duration::from_secs(60) {
        16
    } else {
        19
    };
    t.get(11..end).unwrap_or("").to_string()
}

/// The pair's hour in one sentence: the count of each state and, after the
/// failures, each reason with the span of the cells it was seen in.
fn summary(p: &Pair<'_>) -> String {
    let count = |st: CellState| p.slots.iter().filter(|s| s.state() == st).count();
    if count(CellState::None) == p.slots.len() {
        return "last hour: no probe yet".into();
    }
    let mut reasons: Vec<(String, i64, i64)> = Vec::new();
    for s in &p.slots {
        let Some(r) = s.cell.and_then(|c| c.reason()) else {
            continue;
        };
        let name = r.as_str().to_string();
        match reasons.iter_mut().find(|(n, _, _)| *n == name) {
            Some(seen) => seen.2 = s.start_ms,
            None => reasons.push((name, s.start_ms, s.start_ms)),
        }
    }
    let cell_ms = i64::try_from(p.cell.as_millis()).unwrap_or(0);
    let spans: Vec<String> = reasons
        .iter()
        .map(|(n, a, b)| format!("{n} {}–{}", clock(*a, p.cell), clock(b + cell_ms, p.cell)))
        .collect();
    let mut parts = Vec::new();
    for st in [
        CellState::Pass,
        CellState::Fail,
        CellState::Mixed,
        CellState::Degraded,
    ] {
        let n = count(st);
        if n == 0 {
            continue;
        }
        let mut part = format!("{n} {}", st.as_str());
        if st == CellState::Fail && !spans.is_empty() {
            let _ = write!(part, " ({})", spans.join(", "));
        }
        parts.push(part);
    }
    if count(CellState::Fail) == 0 && !spans.is_empty() {
        parts.push(format!("failures: {}", spans.join(", ")));
    }
    parts.push(format!("{} no probe", count(CellState::None)));
    format!("last hour: {}", parts.join(", "))
}

/// The probe time: p50 (solid) and max (dotted) per cell with a probe,
/// scaled to the hour's longest, with a point per cell on the p50 line.
fn chart(h: &mut String, p: &Pair<'_>) {
    let points: Vec<(f64, Duration, Duration)> = p
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let c = s.cell?;
            Some(((i as f64 + 0.5) * CELL_W, c.p50()?, c.max()?))
        })
        .collect();
    let scale = points
        .iter()
        .map(|(_, _, max)| *max)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-6);
    let y = |d: Duration| CHART.0 + CHART.1 * (1.0 - d.as_secs_f64() / scale);
    let line = |pick: fn(&(f64, Duration, Duration)) -> Duration| -> String {
        let xy: Vec<String> = points
            .iter()
            .map(|pt| format!("{:.1},{:.1}", pt.0, y(pick(pt))))
            .collect();
        xy.join(" ")
    };
    let _ = write!(
        h,
        "<line class=\"h-axis\" x1=\"0\" y1=\"{b:.1}\" x2=\"{WIDTH}\" y2=\"{b:.1}\"/>\
<polyline class=\"h-max\" data-series=\"max\" points=\"{}\"/><polyline class=\"h-p50\" data-series=\"p50\" points=\"{}\"/>",
        line(|pt| pt.2),
        line(|pt| pt.1),
        b = CHART.0 + CHART.1,
    );
    for (x, p50, _) in &points {
        let _ = write!(
            h,
            "<circle class=\"h-pt\" cx=\"{x:.1}\" cy=\"{:.1}\" r=\"1.6\"/>",
            y(*p50)
        );
    }
    if !points.is_empty() {
        let _ = write!(
            h,
            "<text class=\"h-scale\" x=\"{WIDTH}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART.0 - 1.5,
            esc(&fmt_duration(Duration::from_secs_f64(scale)))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::history::Sample;
    use crate::reason::FailureReason;

    const T0: i64 = 1_795_000_020_000;

    fn history() -> History {
        let mut h = History::new(Duration::from_secs(1));
        for i in 0..10 {
            let ok = !(3..6).contains(&i);
            let s = Sample {
                ok,
                reason: if ok {
                    FailureReason::Ok
                } else {
                    FailureReason::ProxyUpstreamError
                },
                detail: "HTTP/1.1 502 <Bad> Gateway",
                duration: Duration::from_millis(2 + i as u64),
                degraded: false,
            };
            h.record(T0 + i * 1000, "apns", "provider", &s);
        }
        h
    }

    fn pair(h: &History) -> Pair<'_> {
        Pair {
            target: "apns",
            route: "provider",
            slots: h.window(T0 + 9_500, "apns", "provider"),
            cell: h.cell(),
        }
    }

    #[test]
    fn the_sentence_counts_the_states_and_spans_the_failures() {
        let h = history();
        let s = summary(&pair(&h));
        assert!(
            s.starts_with("last hour: 7 pass, 3 fail (proxy_upstream_error ")
                && s.ends_with(", 50 no probe"),
            "{s}"
        );
    }

    #[test]
    fn every_probed_cell_is_focusable_labelled_and_escaped_with_a_point() {
        let h = history();
        let mut out = String::new();
        strip(&mut out, &pair(&h), &[], T0 + 9_500);
        assert_eq!(out.matches("tabindex=\"0\"").count(), 10);
        assert_eq!(out.matches("data-state=\"fail\"").count(), 3);
        assert_eq!(out.matches("<circle").count(), 10);
        assert_eq!(out.matches("<g class=\"cell").count(), CELLS);
        assert!(out.contains("proxy_upstream_error (HTTP/1.1 502 &lt;Bad&gt; Gateway)"));
        assert!(!out.contains("<Bad>"));
        let p50 = out
            .split("data-series=\"p50\" points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        assert_eq!(p50.split(' ').count(), 10);
    }
}
