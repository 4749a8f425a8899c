//! What a reload applies, key by key: the README's table names every key of
//! the config's schema and says "reload" or "restart"; the restart keys are
//! exactly `RestartKey::ALL`; a reload changing one keeps its running value
//! and raises `egress_config_restart_required` (in `/status` and on the
//! page too) until a reload changes it back; and the keys that once were
//! fixed at start (`[forward] max_connections`, `[run] reload_poll`) take
//! effect on reload, and so does `[status] history_cell` (the history
//! starts again in the new cells).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use egress_sentinel::config::{Config, RestartKey};
use support::Workspace;
use support::config::{Target, Toml};
use support::sidecar::{Running, eventually, request, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The schema's keys of one table, as the parser lists them when it meets
/// an unknown one (`[[target]]` is written with its required keys).
fn schema_keys(table: &str) -> Vec<String> {
    let text = match table {
        "" => "bogus_key = 1\n".to_string(),
        "route" => "[[route]]\nname = \"p\"\nbogus_key = 1\n".to_string(),
        "target" => "[[target]]\nname = \"t\"\nbogus_key = 1\n".to_string(),
        t => format!("[{t}]\nbogus_key = 1\n"),
    };
    let Err(e) = Config::parse(Path::new("c.toml"), &text) else {
        panic!("{table}: an unknown key was accepted");
    };
    let e = e.to_string();
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
    let list = e
        .split("unknown field `bogus_key`, expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{table}: no key list in {e}"));
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// The README's reload table: `(key, applies)` per row, the key written
/// as in the file (`[forward] relay`, `state_dir`).
fn readme_table() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### What a reload applies")
        .expect("README section \"What a reload applies\"");
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| key"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

#[test]
fn the_readme_says_for_every_key_whether_a_reload_applies_it() {
    let rows = readme_table();
    let in_readme: BTreeSet<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    let mut missing = Vec::new();
    let top = schema_keys("");
    for key in &top {
        let tables = [
            "listen",
            "probe",
            "run",
            "shutdown",
            "admin",
            "watch",
            "tls",
            "forward",
            "runtime",
            "dns",
            "compliance",
            "status",
        ];
        // `[resolve]`'s keys are names, one row for the table.
        if key == "resolve" {
            if !in_readme.contains("[resolve]") {
                missing.push("[resolve]".into());
            }
        } else if tables.contains(&key.as_str()) {
            for sub in schema_keys(key) {
                let name = format!("[{key}] {sub}");
                if !in_readme.contains(name.as_str()) {
                    missing.push(name);
                }
            }
        } else if key == "route" || key == "target" {
            for sub in schema_keys(key) {
                let name = format!("[[{key}]] {sub}");
                if !in_readme.contains(name.as_str()) {
                    missing.push(name);
                }
            }
        } else if !in_readme.contains(key.as_str()) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "keys without a row: {missing:?}");
    for (key, applies) in &rows {
        match applies.as_str() {
            "reload" | "restart" => {}
            // A key the schema keeps only to refuse it with a clear error.
            "refused" => {
                let (table, sub) = key
                    .trim_start_matches('[')
                    .split_once("] ")
                    .expect("a refused key is in a table");
                let text = format!(
                    "[{table}]\n{sub} = \"1s\"\n\n[[target]]\nname = \"t\"\nurl = \"https://t.test/\"\nroutes = [\"direct\"]\n"
                );
                let e = Config::parse(Path::new("c.toml"), &text)
                    .expect_err(key)
                    .to_string();
                assert!(e.contains(&format!("{table}.{sub}")), "{key}: {e}");
            }
            other => panic!("{key}: \"{other}\" is neither reload, restart nor refused"),
        }
    }
    let restart: BTreeSet<&str> = rows
        .iter()
        .filter(|(_, a)| a == "restart")
        .map(|(k, _)| k.as_str())
        .collect();
    let named: BTreeSet<&str> = RestartKey::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        restart, named,
        "the README's restart rows are RestartKey::ALL"
    );
}

fn base() -> Toml {
    Toml::new()
        .resolve("t.test", "127.0.0.1")
        .target(Target::new("t", "https://t.test:1/").routes(&["direct"]))
}

/// Reloads through the hook and waits for the generation after `before`.
async fn reload(sidecar: &Running, before: u64) -> serde_json::Value {
    sidecar.reload.notify_one();
    eventually(Duration::from_secs(5), "the reload applied", || async {
        let s = sidecar.status().await;
        (s["config_reload"]["generation"].as_u64() > Some(before)).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_key_changed_by_a_reload_is_named_until_changed_back() {
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(base().state_dir("state-a"))).await;
    let gauge = || async {
        sample(
            &sidecar.metrics_text().await,
            "egress_config_restart_required",
            &[],
        )
    };
    assert_eq!(gauge().await, Some(0.0));
    let s = sidecar.status().await;
    assert_eq!(
        s["config_reload"]["restart_required"],
        serde_json::json!([])
    );

    // Every restart key at once, with a key a reload applies beside them.
    ws.config(
        base()
            .state_dir("state-b")
            .listen("proxy", "127.0.0.1:1")
            .listen("metrics", "off")
            .forward(|f| f.relay("copy").max_connections(7))
            .raw("\n[runtime]\nworker_threads = 1\n"),
    );
    let s = reload(&sidecar, 1).await;
    assert_eq!(s["config_reload"]["ok"], true, "{s:#}");
    assert_eq!(
        s["config_reload"]["restart_required"],
        serde_json::json!([
            "listen.metrics",
            "listen.proxy",
            "state_dir",
            "runtime.worker_threads",
            "forward.relay"
        ]),
        "{s:#}"
    );
    assert_eq!(gauge().await, Some(1.0));
    let (code, page) = request(sidecar.admin, "GET", "/").await;
    assert_eq!(code, 200);
    assert!(page.contains("restart required"), "{page}");
    assert!(page.contains("<code>[forward] relay</code>"), "{page}");
    // The metrics listener the file turned off still serves: kept at its
    // running value, as the state directory is.
    assert!(!ws.path("state-b").exists(), "state_dir moved by a reload");

    // Back to the running values: nothing waits for a restart.
    ws.config(base().state_dir("state-a"));
    let s = reload(&sidecar, 2).await;
    assert_eq!(
        s["config_reload"]["restart_required"],
        serde_json::json!([])
    );
    assert_eq!(gauge().await, Some(0.0));
    let (_, page) = request(sidecar.admin, "GET", "/").await;
    assert!(!page.contains("restart required"));
    sidecar.stop().await;
}

/// Opens a connection to the forward proxy and sends half a request head,
/// so it holds a slot until dropped.
async fn hold(proxy: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(b"CONNECT t.test:1 HTTP/1.1\r\n")
        .await
        .expect("write");
    tcp
}

/// What the proxy answers a connection at once (within 2 s): its status
/// line, or "" when it waits for the rest of the head.
async fn answer_at_once(proxy: std::net::SocketAddr) -> String {
    let mut tcp = hold(proxy).await;
    let mut got = vec![0u8; 256];
    match tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut got)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&got[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_takes_effect_on_reload() {
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(base().forward(|f| f.max_connections(2)))).await;
    let _first = hold(sidecar.proxy).await;
    // Under the cap of 2: the second waits for its head, unanswered.
    assert_eq!(answer_at_once(sidecar.proxy).await, "");

    ws.config(base().forward(|f| f.max_connections(1)));
    let s = reload(&sidecar, 1).await;
    assert_eq!(
        s["config_reload"]["restart_required"],
        serde_json::json!([])
    );
    assert_eq!(
        answer_at_once(sidecar.proxy).await,
        "HTTP/1.1 503 Service Unavailable",
        "over the reloaded cap of 1"
    );

    ws.config(base().forward(|f| f.max_connections(3)));
    reload(&sidecar, 2).await;
    assert_eq!(answer_at_once(sidecar.proxy).await, "", "room again");
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_poll_takes_effect_on_reload() {
    let ws = Workspace::new();
    let sidecar = Running::start(ws.config(base().reload_poll("off"))).await;
    // Polling off: a changed file waits for the hook.
    ws.config(base().reload_poll("100ms"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sidecar.status().await["config_reload"]["generation"], 1);
    reload(&sidecar, 1).await;
    // Now polled every 100 ms: a change is taken without the hook.
    ws.config(
        base()
            .reload_poll("100ms")
            .forward(|f| f.max_connections(5)),
    );
    eventually(Duration::from_secs(3), "the change polled", || async {
        (sidecar.status().await["config_reload"]["generation"] == 3).then_some(())
    })
    .await;
    sidecar.stop().await;
}

/// `GET /history` as JSON.
async fn history(sidecar: &Running) -> serde_json::Value {
    let (code, body) = request(sidecar.admin, "GET", "/history").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/history JSON")
}

/// The cells of `/history`'s first pair that hold a probe.
fn probed_cells(h: &serde_json::Value) -> usize {
    h["pairs"][0]["cells"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["state"] != "none").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_cell_takes_effect_on_reload_and_starts_the_history_again() {
    let ws = Workspace::new();
    let one_second = |cell: &str| {
        base()
            .probe(|p| p.timings("200ms", "200ms", "1s"))
            .raw(&format!("\n[status]\nhistory_cell = \"{cell}\"\n"))
    };
    let sidecar = Running::start(ws.config(one_second("1s"))).await;
    let h = eventually(Duration::from_secs(10), "3 cells probed", || async {
        let h = history(&sidecar).await;
        (probed_cells(&h) >= 3).then_some(h)
    })
    .await;
    assert_eq!(h["cell_seconds"], 1.0);
    assert_eq!(h["pairs"][0]["cells"].as_array().map(Vec::len), Some(60));

    ws.config(one_second("2s"));
    reload(&sidecar, 1).await;
    let h = history(&sidecar).await;
    assert_eq!(h["cell_seconds"], 2.0);
    assert_eq!(h["pairs"][0]["cells"].as_array().map(Vec::len), Some(60));
    assert!(probed_cells(&h) <= 2, "the history started again: {h}");
    sidecar.stop().await;
}
