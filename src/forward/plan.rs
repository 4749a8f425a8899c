//! Route choice for app traffic, and the open-proxy guard: which target a
//! destination belongs to, whether its port is allowed, and the routes to
//! try, active route first. [`plan`] is pure: the caller passes the route
//! table's view. [`plan_checked`] adds the one lookup the guard needs: a
//! name that matches no target is resolved here before a proxy resolves it.
//!
//! Every refusal is `policy_denied`, and its text says so.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, ForwardDefault, Route, Target};
use crate::destination::{Host, parse_host};
use crate::dial::Resolver;
use crate::policy::{Cidr, check_address};

/// The label used for destinations that match no target.
pub const UNMATCHED: &str = "_unmatched";

/// Where a destination's traffic may go, in the order to try.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The target the destination belongs to.
    pub target: Option<Arc<Target>>,
    /// The target's name, or [`UNMATCHED`] (a metric label).
    pub label: String,
    /// Routes to try, in order.
    pub routes: Vec<Arc<Route>>,
    /// Address ranges lifted from the policy.
    pub allow: Vec<Cidr>,
}

/// A refused destination: the target label (for metrics) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The target's name, or [`UNMATCHED`].
    pub label: String,
    /// Why, for the app and the log.
    pub why: String,
}

/// Plans `host:port`. `routes_to_try(target)` gives the route-state
/// snapshot's routes for a target, in order, the override applied (`None`:
/// the target is not in the snapshot yet; its routes in preference order).
pub fn plan(
    config: &Config,
    host: &str,
    port: u16,
    routes_to_try: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Plan, Refused> {
    let label =
        |t: Option<&Arc<Target>>| t.map_or_else(|| UNMATCHED.to_string(), |t| t.name.clone());
    let refuse = |t: Option<&Arc<Target>>, why: String| Refused {
        label: label(t),
        why: format!("policy_denied: {why}"),
    };
    let target = config
        .targets
        .iter()
        .find(|t| t.matches_destination(host, port));
    let plan = match target {
        Some(t) => {
            if port != t.endpoint.port && !config.forward.allow_ports.contains(&port) {
                return Err(refuse(
                    Some(t),
                    format!(
                        "port {port} is not allowed for {} (allowed: {} and [forward] allow_ports {:?})",
                        t.name, t.endpoint.port, config.forward.allow_ports
                    ),
                ));
            }
            let routes: Vec<Arc<Route>> = match routes_to_try(&t.name) {
                Some(names) => names
                    .iter()
                    .filter_map(|n| t.routes.iter().find(|r| &r.name == n).cloned())
                    .collect(),
                None => t.routes.clone(),
            };
            Plan {
                target: Some(t.clone()),
                label: t.name.clone(),
                routes,
                allow: t.allow_addresses.clone(),
            }
        }
        None => {
            if config.forward.default == ForwardDefault::Deny {
                return Err(refuse(
                    None,
                    format!("{host} matches no target and [forward] default = \"deny\""),
                ));
            }
            if !config.forward.allow_ports.contains(&port) {
                return Err(refuse(
                    None,
                    format!(
                        "port {port} is not in [forward] allow_ports {:?}",
                        config.forward.allow_ports
                    ),
                ));
            }
            Plan {
                target: None,
                label: UNMATCHED.to_string(),
                routes: config.forward.default_routes.clone(),
                allow: Vec::new(),
            }
        }
    };
    // An address literal (in any spelling) and localhost are checked on
    // every route, not only direct: the sidecar must not relay the app to
    // the metadata service through a proxy.
    let parsed = parse_host(host).map_err(|e| refuse(target, e.to_string()))?;
    for ip in parsed.literal_addresses().unwrap_or_default() {
        check_address(ip, &plan.allow).map_err(|e| refuse(target, format!("{host}: {e}")))?;
    }
    if plan.routes.is_empty() {
        return Err(refuse(
            target,
            format!("no route is allowed for {host}:{port}"),
        ));
    }
    Ok(plan)
}

/// The longest the guard waits for its own lookup of an unmatched name.
pub const GUARD_LOOKUP: Duration = Duration::from_secs(5);

/// Plans `host:port` like [`plan`]; then, for a DNS name that matches no
/// target (so it goes to a proxy, which would resolve it itself), resolves
/// the name with `resolver` and refuses it when any of its addresses is in
/// a denied range, or when it cannot be resolved here (it could not be
/// checked). The lookup is bounded by `timeout` and [`GUARD_LOOKUP`].
///
/// What remains: the proxy may resolve the name differently (DNS
/// rebinding, split horizon). `[forward] default = "deny"` with explicit
/// targets closes that.
pub async fn plan_checked(
    config: &Config,
    resolver: &Resolver,
    host: &str,
    port: u16,
    timeout: Duration,
    routes_to_try: impl Fn(&str) -> Option<Vec<String>>,
) -> Result<Plan, Refused> {
    let plan = plan(config, host, port, routes_to_try)?;
    if plan.target.is_none() {
        let deadline = Instant::now() + timeout.min(GUARD_LOOKUP);
        check_resolved(resolver, host, port, &plan.allow, deadline)
            .await
            .map_err(|why| Refused {
                label: plan.label.clone(),
                why: format!("policy_denied: {why}"),
            })?;
    }
    Ok(plan)
}

/// Why an unmatched name is refused by the guard.
#[derive(Debug, thiserror::Error)]
pub enum Unchecked {
    /// Not a host at all.
    #[error("{0}")]
    Host(#[from] crate::destination::HostError),
    /// It could not be resolved here, so it could not be checked.
    #[error(
        "{name} matches no target and could not be resolved here to check its addresses ({why}); \
         list it in a target's hosts, or map it in [resolve]"
    )]
    Unresolved {
        /// The name.
        name: String,
        /// Why the lookup failed.
        why: String,
    },
    /// One of its addresses is in a refused range.
    #[error(
        "{name} matches no target and resolves to a refused address: {denied}; \
         a proxy would reach it for the app"
    )]
    Refused {
        /// The name.
        name: String,
        /// The refusal.
        denied: crate::policy::AddressDenied,
    },
}

/// Resolves `host` (when it is a DNS name) and checks every address against
/// the address policy. The error says which address, which range, and what
/// to do.
pub async fn check_resolved(
    resolver: &Resolver,
    host: &str,
    port: u16,
    allow: &[Cidr],
    deadline: Instant,
) -> Result<(), Unchecked> {
    let name = match parse_host(host)? {
        Host::Name(n) => n,
        // Literals and localhost were judged without a lookup.
        _ => return Ok(()),
    };
    let unresolved = |why: String| Unchecked::Unresolved {
        name: name.to_string(),
        why,
    };
    let addrs = match tokio::time::timeout_at(deadline, resolver.resolve(&name, port)).await {
        Err(_) => return Err(unresolved("the lookup timed out".to_string())),
        Ok(Err(e)) => return Err(unresolved(e.to_string())),
        Ok(Ok(a)) => a,
    };
    for addr in addrs {
        check_address(addr.ip(), allow).map_err(|denied| Unchecked::Refused {
            name: name.to_string(),
            denied,
        })?;
    }
    Ok(())
}
