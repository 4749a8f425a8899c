//! Route choice for app traffic, and the open-proxy guard: which target a
//! destination belongs to, whether its port is allowed, and the routes to
//! try, active route first. Pure: the caller passes the route table's view.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Config, ForwardDefault, Route, Target};
use crate::health::Force;
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

/// Plans `host:port`. `choice(target)` gives the route table's active route
/// and the operator's override for a target.
pub fn plan(
    config: &Config,
    host: &str,
    port: u16,
    choice: impl Fn(&str) -> Option<(String, Force)>,
) -> Result<Plan, Refused> {
    let label =
        |t: Option<&Arc<Target>>| t.map_or_else(|| UNMATCHED.to_string(), |t| t.name.clone());
    let refuse = |t: Option<&Arc<Target>>, why: String| Refused {
        label: label(t),
        why,
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
            let (active, force) = choice(&t.name).unwrap_or_else(|| (String::new(), Force::Auto));
            let allowed: Vec<Arc<Route>> = t
                .routes
                .iter()
                .filter(|r| match force {
                    Force::Auto => true,
                    Force::Proxy => !r.is_direct(),
                    Force::Direct => r.is_direct(),
                })
                .cloned()
                .collect();
            let mut routes: Vec<Arc<Route>> = allowed
                .iter()
                .filter(|r| r.name == active)
                .cloned()
                .collect();
            routes.extend(allowed.iter().filter(|r| r.name != active).cloned());
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
    // An address literal is checked on every route, not only direct: the
    // sidecar must not relay the app to the metadata service through a proxy.
    if let Ok(ip) = host.parse::<IpAddr>() {
        check_address(ip, &plan.allow).map_err(|e| refuse(target, e.to_string()))?;
    }
    if plan.routes.is_empty() {
        return Err(refuse(
            target,
            format!("no route is allowed for {host}:{port}"),
        ));
    }
    Ok(plan)
}
