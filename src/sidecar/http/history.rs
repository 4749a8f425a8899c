//! `GET /history`: what the status page's strip draws, as JSON. Per target
//! × route (in the config's order) the
//! [`CELLS`](crate::health::history::CELLS) slots of the window ending now,
//! oldest first, each with its start, state, reasons, counts and probe time;
//! and the incident windows that overlap the window.
//!
//! Reads one snapshot; bounded by the history itself (60 cells × targets ×
//! routes), whatever the uptime.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::health::history::{History, Slot, unix_ms};
use crate::incidents::IncidentWindow;

/// The JSON body of `GET /history` at `wall`.
pub(super) fn render(
    config: &Config,
    history: &History,
    windows: &[IncidentWindow],
    wall: SystemTime,
) -> String {
    let now = unix_ms(wall);
    let (from, last) = history.range(now);
    let cell = history.cell();
    let to = last.saturating_add(i64::try_from(cell.as_millis()).unwrap_or(0));
    let pairs: Vec<Value> = config
        .targets
        .iter()
        .flat_map(|t| t.routes.iter().map(move |r| (t, r)))
        .map(|(t, r)| {
            let cells: Vec<Value> = history
                .window(now, &t.name, &r.name)
                .iter()
                .map(cell_json)
                .collect();
            json!({ "target": t.name, "route": r.name, "cells": cells })
        })
        .collect();
    let incidents: Vec<&IncidentWindow> = windows
        .iter()
        .filter(|w| w.start.saturating_mul(1000) < to && w.end.is_none_or(|e| e * 1000 >= from))
        .collect();
    let body = json!({
        "cell_seconds": cell.as_secs_f64(),
        "cells_per_pair": crate::health::history::CELLS,
        "from": from.div_euclid(1000),
        "to": to.div_euclid(1000),
        "pairs": pairs,
        "incidents": incidents,
    });
    serde_json::to_string_pretty(&body).unwrap_or_default()
}

/// One slot: `start` (Unix seconds) and `state` always; the rest when a
/// probe counted in it.
fn cell_json(s: &Slot<'_>) -> Value {
    let mut m = Map::new();
    m.insert("start".into(), json!(s.start_ms.div_euclid(1000)));
    m.insert("state".into(), json!(s.state().as_str()));
    let Some(c) = s.cell else {
        return Value::Object(m);
    };
    let reasons: Map<String, Value> = c
        .reasons()
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), json!(n)))
        .collect();
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    m.insert("pass".into(), json!(c.pass));
    m.insert("fail".into(), json!(c.fail));
    m.insert("reason".into(), json!(c.reason().map(|r| r.as_str())));
    m.insert("reasons".into(), Value::Object(reasons));
    if c.fail > 0 {
        m.insert("detail".into(), json!(c.detail));
    }
    m.insert("degraded".into(), json!(c.degraded));
    m.insert("p50_ms".into(), json!(ms(c.p50())));
    m.insert("max_ms".into(), json!(ms(c.max())));
    Value::Object(m)
}
