//! Every default in one table: what a key means when the file leaves it out.
//! The README's configuration reference and DESIGN.md quote these values.

use std::time::Duration;

/// The longest interval, timeout, hold or grace any key takes.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `[listen] metrics`.
pub const LISTEN_METRICS: &str = "0.0.0.0:9464";
/// `[listen] admin`.
pub const LISTEN_ADMIN: &str = "127.0.0.1:9465";
/// `[listen] proxy`.
pub const LISTEN_PROXY: &str = "127.0.0.1:3128";

/// `[probe] interval`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// `[probe] unhealthy_interval`.
pub const PROBE_UNHEALTHY_INTERVAL: Duration = Duration::from_secs(2);
/// `[probe] timeout`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// `[probe] fall`.
pub const PROBE_FALL: u32 = 2;
/// `[probe] rise`.
pub const PROBE_RISE: u32 = 2;
/// `[probe] max_body` (bytes).
pub const PROBE_MAX_BODY: usize = 64 * 1024;
/// `[probe] hold_down`.
pub const PROBE_HOLD_DOWN: Duration = Duration::from_secs(30);
/// `[probe] hold_down_max`.
pub const PROBE_HOLD_DOWN_MAX: Duration = Duration::from_secs(600);

/// `[probe] degraded_window`: attempts the partial-failure judgement sees.
pub const PROBE_DEGRADED_WINDOW: u32 = 10;
/// `[probe] degraded_failures`: failures among them that make a route degraded.
pub const PROBE_DEGRADED_FAILURES: u32 = 3;

/// `[dns] timeout`: one try's wait for an answer, when resolv.conf does not
/// say (`options timeout:N`): glibc's.
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// `[dns] attempts`: tries per query, the first included, when resolv.conf
/// does not say (`options attempts:N`): glibc's.
pub const DNS_ATTEMPTS: u32 = 2;
/// `[dns] attempts` at most.
pub const DNS_MAX_ATTEMPTS: u32 = 5;
/// `[dns] timeout` at most (the probe's timeout still ends a lookup sooner).
pub const DNS_MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// `[admin] verify_cooldown`.
pub const ADMIN_VERIFY_COOLDOWN: Duration = Duration::from_secs(10);
/// An operator override's `ttl` when the request names none.
pub const ADMIN_OVERRIDE_TTL: Duration = Duration::from_secs(3600);
/// The longest `ttl` an override may ask for: a forgotten override must
/// not pin a target's route for good.
pub const ADMIN_OVERRIDE_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// `[forward] allow_ports`.
pub const FORWARD_ALLOW_PORTS: [u16; 1] = [443];
/// `[forward] idle_timeout`.
pub const FORWARD_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// `[forward] header_timeout`.
pub const FORWARD_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[forward] max_connections`.
pub const FORWARD_MAX_CONNECTIONS: u32 = 1024;
/// `[forward] failback_grace`.
pub const FORWARD_FAILBACK_GRACE: Duration = Duration::from_secs(30);
/// `[forward] trail`: the compliance trail of direct connections in `state_dir`.
pub const FORWARD_TRAIL: bool = true;
/// `[forward] access_log`: every app connection in `state_dir/access.jsonl`.
pub const FORWARD_ACCESS_LOG: bool = false;
/// `[forward] trail_max_bytes`: a trail file is rotated before this size.
pub const FORWARD_TRAIL_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// `[forward] trail_keep`: rotated trail files kept (`.1` … `.N`).
pub const FORWARD_TRAIL_KEEP: u32 = 3;

/// `[compliance] sink`: the trail in its file only (`both`: a copy on
/// stdout too).
pub const COMPLIANCE_SINK: crate::config::TrailSink = crate::config::TrailSink::File;

/// `[forward] relay`: how tunnels move bytes. `splice` (where the system has
/// it; copy elsewhere): it costs less CPU per GiB in every run, and with a
/// client that reads in small pieces it moves more (benches/README.md,
/// "The default relay").
pub const FORWARD_RELAY: crate::config::RelayMode = crate::config::RelayMode::Splice;
/// `[forward] buffer_pool` (bytes): the most the relay holds in large
/// buffers and pipes, 64 tunnel directions moving bulk at 1 MiB at once.
pub const FORWARD_BUFFER_POOL: u64 = 64 * 1024 * 1024;
/// `[forward] buffer_pool` may not be larger (bytes).
pub const FORWARD_BUFFER_POOL_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// `[runtime] worker_threads`: the async runtime's threads, and never more
/// than the CPUs the process may use.
pub const RUNTIME_WORKER_THREADS: usize = 2;
/// `[runtime] worker_threads` may not be larger.
pub const RUNTIME_WORKER_THREADS_MAX: usize = 64;

/// `[shutdown] drain`: `/readyz` says 503 while listeners keep serving.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// `[shutdown] deadline`: from SIGTERM to exit, whatever is still open.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

/// `[run] reload_poll`: how often the config and the files it names are checked.
pub const RUN_RELOAD_POLL: Duration = Duration::from_secs(5);

/// `[status] history_cell`: one minute, so the strip's 60 cells span an hour.
pub const STATUS_HISTORY_CELL: Duration = Duration::from_secs(60);
/// `[status] history_cell` at most: 60 cells span a day.
pub const MAX_HISTORY_CELL: Duration = Duration::from_secs(24 * 60);
