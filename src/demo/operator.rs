//! The demo's operator: watches the sidecar the way an operator would,
//! through `/status` on the admin listener, and says on the timeline when
//! a route's health, a target's active route or an incident changes. It
//! never reads the sidecar's state any other way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Clock;

/// What the watcher saw, with times.
#[derive(Default)]
pub(super) struct Watch {
    pub(super) healthy: BTreeMap<(String, String), bool>,
    pub(super) active: BTreeMap<String, String>,
    /// Targets reported down (every allowed route failing).
    pub(super) down: BTreeSet<String>,
    pub(super) incidents: BTreeMap<u64, bool>,
    /// (time, target, route, healthy)
    pub(super) health_changes: Vec<(Duration, String, String, bool)>,
    /// (time, target, from, to)
    pub(super) moves: Vec<(Duration, String, String, String)>,
}

impl Watch {
    /// Takes in one `/status` answer; says on the timeline what changed.
    pub(super) fn update(&mut self, status: &Value, clock: &Clock) {
        let now = clock.start.elapsed();
        for t in status["targets"].as_array().into_iter().flatten() {
            let name = t["target"].as_str().unwrap_or("").to_string();
            for r in t["routes"].as_array().into_iter().flatten() {
                let route = r["route"].as_str().unwrap_or("").to_string();
                let Some(h) = r["healthy"].as_bool() else {
                    continue;
                };
                let key = (name.clone(), route.clone());
                let before = self.healthy.insert(key, h);
                if before.is_some_and(|b| b != h) {
                    let what = if h {
                        "healthy again".to_string()
                    } else {
                        format!(
                            "UNHEALTHY: {} ({})",
                            r["last"]["reason"].as_str().unwrap_or("?"),
                            r["last"]["detail"].as_str().unwrap_or("")
                        )
                    };
                    clock.say(&format!("sidecar  {name} over {route}: {what}"));
                    self.health_changes.push((now, name.clone(), route, h));
                }
            }
            let active = t["active_route"].as_str().unwrap_or("").to_string();
            let down = t["down"].as_bool().unwrap_or(false);
            if let Some(before) = self.active.insert(name.clone(), active.clone()) {
                if before != active {
                    clock.say(&format!(
                        "sidecar  {name}: traffic moves {before} -> {active}"
                    ));
                    self.moves.push((now, name.clone(), before, active.clone()));
                }
            }
            if down
                && self.healthy.get(&(name.clone(), active.clone())) == Some(&false)
                && self.down.insert(name.clone())
            {
                clock.say(&format!(
                    "sidecar  {name}: DOWN: no allowed route works (direct is not allowed for it)"
                ));
            }
            if !down {
                self.down.remove(&name);
            }
        }
        for w in status["incidents"].as_array().into_iter().flatten() {
            let id = w["id"].as_u64().unwrap_or(0);
            let open = w["end"].is_null();
            let before = self.incidents.insert(id, open);
            if before != Some(open) && (before.is_some() || open) {
                let verb = if open {
                    "INCIDENT opened"
                } else {
                    "INCIDENT closed"
                };
                clock.say(&format!(
                    "sidecar  {verb}: {}",
                    w["text"].as_str().unwrap_or("")
                ));
            }
        }
    }
}

/// `GET /status` on the admin listener, as JSON; `None` when the sidecar
/// did not answer with JSON within 2 s (the watcher tries again).
pub(super) async fn fetch_status(admin: SocketAddr) -> Option<Value> {
    let head = format!("GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    json_exchange(admin, &head, Duration::from_secs(2)).await
}

/// `POST /verify` on the admin listener (every probe and every credential
/// check, now), as JSON; `None` when no JSON came within 10 s.
pub(super) async fn post_verify(admin: SocketAddr) -> Option<Value> {
    let head = format!(
        "POST /verify HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    json_exchange(admin, &head, Duration::from_secs(10)).await
}

/// Sends `head` to `admin` and reads a JSON body, within `within`.
async fn json_exchange(admin: SocketAddr, head: &str, within: Duration) -> Option<Value> {
    let work = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        s.write_all(head.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        (&mut s)
            .take(4 * 1024 * 1024)
            .read_to_end(&mut raw)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(within, work).await.ok().flatten()
}
