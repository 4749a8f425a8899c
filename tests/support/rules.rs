//! The shipped alert rules (`k8s/alerts/`) and Grafana dashboard
//! (`k8s/dashboards/`) as data: their files, the `PrometheusRule` generated
//! from the plain rules file, every PromQL expression they hold (alert
//! expressions, the queries in annotation templates, panel and variable
//! queries), and the metric names those expressions use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;

/// The plain Prometheus rules file: the source of truth.
pub const RULES: &str = "k8s/alerts/egress-sentinel.rules.yaml";
/// Its promtool unit tests.
pub const RULES_TEST: &str = "k8s/alerts/egress-sentinel.rules.test.yaml";
/// The same groups as a Prometheus Operator `PrometheusRule`, generated.
pub const PROMETHEUS_RULE: &str = "k8s/alerts/prometheusrule.yaml";
/// The runbook every alert's `runbook_url` points into.
pub const RUNBOOK: &str = "k8s/RUNBOOK.md";
/// The base of every shipped `runbook_url` (a placeholder the README's
/// `sed` replaces): the runbook's absolute URL, without the `#entry`.
pub const RUNBOOK_URL: &str =
    "https://github.com/YOUR-ORG/egress-sentinel/blob/main/k8s/RUNBOOK.md";
/// The Grafana dashboard.
pub const DASHBOARD: &str = "k8s/dashboards/egress-sentinel.json";

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A repository file's text.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `alert:`.
    pub name: String,
    /// `expr:`.
    pub expr: String,
    /// `for:` as written (`None` when absent).
    pub for_: Option<String>,
    /// `labels:`.
    pub labels: BTreeMap<String, String>,
    /// `annotations:` (templates, unexpanded).
    pub annotations: BTreeMap<String, String>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().expect("string key").to_string(),
                        v.as_str().expect("string value").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The alerting rules of a rules document (`groups:` at its top).
pub fn alerts_of(doc: &Value) -> Vec<Alert> {
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            out.push(Alert {
                name: name.to_string(),
                expr: rule["expr"].as_str().expect("expr").to_string(),
                for_: rule["for"].as_str().map(str::to_string),
                labels: string_map(&rule["labels"]),
                annotations: string_map(&rule["annotations"]),
            });
        }
    }
    out
}

/// The alerting rules of the shipped rules file.
pub fn alerts() -> Vec<Alert> {
    alerts_of(&yaml(&read(RULES)))
}

/// Parses YAML.
pub fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).expect("valid YAML")
}

/// The `PrometheusRule` for the rules file's text: a header, then the file
/// from its `groups:` line on, indented under `spec:`. Comments are kept,
/// so the generated file explains itself as the source does.
pub fn prometheus_rule_for(rules: &str) -> String {
    let start = rules
        .find("\ngroups:")
        .map(|i| i + 1)
        .expect("a top-level groups: line");
    let mut out = String::from(
        "# GENERATED from egress-sentinel.rules.yaml by tests/alerts.rs\n\
         # (EGRESS_BLESS=1 cargo test --test alerts): edit that file, not this one.\n\
         # The same groups for the Prometheus Operator; its labels must match\n\
         # your Prometheus' ruleSelector (kube-prometheus: role: alert-rules).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  \
           name: egress-sentinel\n  \
           labels:\n    \
             app.kubernetes.io/name: egress-sentinel\n    \
             role: alert-rules\n\
         spec:\n",
    );
    for line in rules[start..].lines() {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The rules file with every `for:` set to `to`: for a real Prometheus that
/// must show an alert firing within seconds (the unit tests cover the real
/// durations).
pub fn with_for(rules: &str, to: &str) -> String {
    let mut doc = yaml(rules);
    for group in doc["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            let Some(m) = rule.as_mapping_mut() else {
                continue;
            };
            if m.contains_key("for") {
                m.insert("for".into(), to.into());
            }
        }
    }
    serde_norway::to_string(&doc).expect("YAML")
}

/// The dashboard.
pub fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON")
}

/// The dashboard's panels, those inside rows included.
pub fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every query of the dashboard, as `(where, expr)`: panel targets,
/// annotation queries, and the selector inside each `label_values(...)`
/// variable query. Grafana's variables are still in.
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            let title = p["title"].as_str().unwrap_or_default();
            let id = t["refId"].as_str().unwrap_or_default();
            out.push((format!("panel {title:?} {id}"), expr.into()));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            let name = a["name"].as_str().unwrap_or_default();
            out.push((format!("annotation {name:?}"), expr.into()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel.trim())
            .unwrap_or_else(|| panic!("variable {:?}: not label_values(...): {q}", v["name"]));
        let name = v["name"].as_str().unwrap_or_default();
        out.push((format!("variable {name:?}"), inner.into()));
    }
    out
}

/// A dashboard query with Grafana's variables replaced by what they stand
/// for at run time ("All" selected, a 1m step, a 6h range).
pub fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "6h")
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$target", ".*")
}

/// The metric names in `text`: every word that starts with `egress_` or
/// `process_` (our prefixes and the standard process collector's).
pub fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("egress_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// Every PromQL text the rules and the dashboard hold: alert expressions,
/// annotation templates (their `query` calls), dashboard queries.
pub fn all_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in alerts() {
        out.push((format!("alert {}", a.name), a.expr.clone()));
        for (k, v) in &a.annotations {
            out.push((format!("alert {} annotation {k}", a.name), v.clone()));
        }
    }
    out.extend(dashboard_queries(&dashboard()));
    out
}

/// The metric names a Prometheus text exposition has samples for.
pub fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}
