//! DNS with hickory: the client built from `[dns]` (or resolv.conf), the
//! lookup bounded by a deadline, and hickory's errors read into the closed
//! [`DnsFailure`] set an operator acts on.
//!
//! The cache: hickory keeps answers for their TTL; here no answer, positive
//! or negative, is kept longer than [`CACHE_MAX_TTL`]. App traffic through
//! the forward proxy (one lookup of the proxy's name per connection) still
//! shares answers within a burst, while probes of a route, which come at
//! least `unhealthy_interval` apart (2 s by default), ask the nameserver
//! again: a deleted or changed record shows at the next probe. hickory's
//! own TTL bounds stay otherwise: nothing is kept longer than its TTL.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{Name, TokioResolver};
use tokio::time::Instant;

use super::system::SystemDns;
use crate::config::defaults;
use crate::dial::fmt_duration;

/// The longest any answer is cached.
pub const CACHE_MAX_TTL: Duration = Duration::from_secs(1);

/// `[dns]`: which nameservers are asked, and how patiently.
#[derive(Debug)]
pub struct DnsSettings {
    /// Where names are asked.
    pub nameservers: Nameservers,
    /// How long one try waits for an answer.
    pub timeout: Duration,
    /// Tries per query (the first one included).
    pub attempts: u32,
}

impl DnsSettings {
    /// The hosts file's addresses for `name`, in system mode.
    pub fn hosts_file(&self, name: &str) -> Option<&[IpAddr]> {
        match &self.nameservers {
            Nameservers::System(system) => system.host(name),
            Nameservers::Configured(_) => None,
        }
    }
}

impl Default for DnsSettings {
    /// No nameserver: every name not in `[resolve]` fails.
    fn default() -> Self {
        Self {
            nameservers: Nameservers::Configured(Vec::new()),
            timeout: defaults::DNS_TIMEOUT,
            attempts: defaults::DNS_ATTEMPTS,
        }
    }
}

/// Where names are asked.
#[derive(Debug)]
pub enum Nameservers {
    /// `[dns] nameservers`: names are asked as written (no search list)
    /// and the hosts file is not read.
    Configured(Vec<SocketAddr>),
    /// The system's resolv.conf (nameservers, search list, ndots) and
    /// hosts file.
    System(Box<SystemDns>),
}

/// What DNS said about a name, in the words an operator looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// NOERROR with no address: the name exists without an A or AAAA record.
    NoData,
    /// SERVFAIL: the nameserver could not resolve the name.
    ServFail,
    /// REFUSED: the nameserver refused to answer.
    Refused,
    /// Another error code (FORMERR, NOTIMP, ...).
    Rcode(String),
    /// No answer in time.
    Timeout(Duration),
    /// The nameserver could not be reached (e.g. nothing listens there).
    Unreachable(String),
    /// No nameserver to ask: resolv.conf unreadable or without one.
    NotConfigured(String),
    /// This process ran out of descriptors or memory opening a socket to
    /// the nameserver: nothing was asked.
    LocalExhausted(String),
    /// Anything else hickory reports.
    Other(String),
}

impl DnsFailure {
    /// A short lower-case label, one of a closed set: `nxdomain`, `nodata`,
    /// `servfail`, `refused`, `rcode`, `timeout`, `unreachable`,
    /// `not_configured`, `local_exhausted`, `error`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NxDomain => "nxdomain",
            Self::NoData => "nodata",
            Self::ServFail => "servfail",
            Self::Refused => "refused",
            Self::Rcode(_) => "rcode",
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::NotConfigured(_) => "not_configured",
            Self::LocalExhausted(_) => "local_exhausted",
            Self::Other(_) => "error",
        }
    }
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NxDomain => f.write_str("NXDOMAIN: the name does not exist"),
            Self::NoData => f.write_str("NODATA: the name has no A or AAAA record"),
            Self::ServFail => f.write_str("SERVFAIL: the nameserver could not resolve the name"),
            Self::Refused => f.write_str("REFUSED: the nameserver refused to answer"),
            Self::Rcode(code) => write!(f, "{code}: the nameserver answered with an error"),
            Self::Timeout(after) => write!(f, "timeout: no answer within {}", fmt_duration(*after)),
            Self::Unreachable(why) => write!(f, "unreachable: {why}"),
            Self::NotConfigured(why) => write!(f, "not configured: {why}"),
            Self::LocalExhausted(why) => write!(f, "not asked, out of local resources: {why}"),
            Self::Other(why) => write!(f, "error: {why}"),
        }
    }
}

/// A failed lookup: what DNS said, and whom we asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS {failure} (asked {asked})")]
pub struct DnsError {
    /// What failed.
    pub failure: DnsFailure,
    /// The nameservers asked, for the report (`127.0.0.1:5353`, or
    /// `10.96.0.10:53 from /etc/resolv.conf`).
    pub asked: Arc<str>,
}

/// The DNS client of one resolver.
#[derive(Clone)]
pub(super) struct Dns(Arc<Client>);

enum Client {
    Ready {
        resolver: Box<TokioResolver>,
        /// Whether names are asked as written (no search list).
        absolute: bool,
        asked: Arc<str>,
    },
    /// Every lookup fails with this.
    Unusable(DnsError),
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Client::Ready { asked, .. } => write!(f, "Dns(asking {asked})"),
            Client::Unusable(e) => write!(f, "Dns({e})"),
        }
    }
}

impl Default for Dns {
    fn default() -> Self {
        Self::new(&DnsSettings::default())
    }
}

impl Dns {
    /// The client for `settings` (no I/O: hickory connects at the first query).
    pub(super) fn new(settings: &DnsSettings) -> Self {
        Self(Arc::new(Client::new(settings)))
    }

    /// The addresses of `name` (a DNS name, lower case, no trailing dot),
    /// by `deadline` at the latest.
    pub(super) async fn lookup(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<IpAddr>, DnsError> {
        let (resolver, absolute, asked) = match &*self.0 {
            Client::Ready {
                resolver,
                absolute,
                asked,
            } => (resolver, *absolute, asked),
            Client::Unusable(e) => return Err(e.clone()),
        };
        let fail = |failure| DnsError {
            failure,
            asked: asked.clone(),
        };
        let mut query =
            Name::from_ascii(name).map_err(|e| fail(DnsFailure::Other(e.to_string())))?;
        query.set_fqdn(absolute);
        let start = Instant::now();
        let lookup = resolver.lookup_ip(query);
        let answer = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, lookup)
                .await
                .map_err(|_| fail(DnsFailure::Timeout(start.elapsed())))?,
            None => lookup.await,
        };
        let ips: Vec<IpAddr> = answer
            .map_err(|e| fail(failure_of(&e, start.elapsed())))?
            .iter()
            .collect();
        if ips.is_empty() {
            return Err(fail(DnsFailure::NoData));
        }
        Ok(ips)
    }
}

impl Client {
    fn new(settings: &DnsSettings) -> Self {
        let unusable = |why: String, asked: &str| {
            Self::Unusable(DnsError {
                failure: DnsFailure::NotConfigured(why),
                asked: asked.into(),
            })
        };
        let (config, mut opts, absolute, asked) = match &settings.nameservers {
            Nameservers::Configured(addrs) if addrs.is_empty() => {
                return unusable("no nameserver is configured".into(), "no nameserver");
            }
            Nameservers::Configured(addrs) => {
                let mut group = NameServerConfigGroup::with_capacity(addrs.len() * 2);
                for addr in addrs {
                    // TCP for answers too large for UDP (truncated).
                    group.push(NameServerConfig::new(*addr, Protocol::Udp));
                    group.push(NameServerConfig::new(*addr, Protocol::Tcp));
                }
                let config = ResolverConfig::from_parts(None, Vec::new(), group);
                (config, ResolverOpts::default(), true, list(addrs))
            }
            Nameservers::System(system) => {
                let asked = format!(
                    "{} from {}",
                    list(&system.nameservers()),
                    system.path.display()
                );
                match system.conf() {
                    Ok((config, opts)) => (config.clone(), opts.clone(), false, asked),
                    Err(why) => {
                        return unusable(
                            why.to_string(),
                            &format!("no nameserver from {}", system.path.display()),
                        );
                    }
                }
            }
        };
        opts.timeout = settings.timeout;
        // hickory counts retries after the first try.
        opts.attempts = settings.attempts.saturating_sub(1) as usize;
        // Both families at once: Happy Eyeballs needs both.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // `config` reads the hosts file (system mode only); the resolver
        // answers from it before DNS, as glibc does.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.positive_max_ttl = Some(CACHE_MAX_TTL);
        opts.negative_max_ttl = Some(CACHE_MAX_TTL);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Self::Ready {
            resolver: Box::new(resolver),
            absolute,
            asked: asked.into(),
        }
    }
}

/// `127.0.0.1:5353, 10.0.0.2:53`.
fn list(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "no nameserver".to_string();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What hickory's error means, `after` this long.
fn failure_of(e: &hickory_resolver::ResolveError, after: Duration) -> DnsFailure {
    match e.proto() {
        Some(p) => proto_failure(p, after),
        None => DnsFailure::Other(e.to_string()),
    }
}

fn proto_failure(p: &ProtoError, after: Duration) -> DnsFailure {
    match p.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => DnsFailure::NxDomain,
            ResponseCode::NoError => DnsFailure::NoData,
            ResponseCode::ServFail => DnsFailure::ServFail,
            ResponseCode::Refused => DnsFailure::Refused,
            other => DnsFailure::Rcode(other.to_str().to_string()),
        },
        ProtoErrorKind::RequestRefused => DnsFailure::Refused,
        ProtoErrorKind::Timeout => DnsFailure::Timeout(after),
        ProtoErrorKind::Io(io) if crate::dial::classify::is_local_exhaustion(io) => {
            DnsFailure::LocalExhausted(io.to_string())
        }
        ProtoErrorKind::Io(io) => DnsFailure::Unreachable(io.to_string()),
        ProtoErrorKind::NoConnections => {
            DnsFailure::Unreachable("no connection to any nameserver".to_string())
        }
        _ => DnsFailure::Other(p.to_string()),
    }
}
