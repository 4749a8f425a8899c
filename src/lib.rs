//! egress-sentinel: keeps an application's outbound HTTPS path honest.
//!
//! It probes every upstream the app depends on (push, SMS, identity) over
//! every allowed route — through the hosting provider's forward proxy and,
//! where policy allows, directly — and names precisely where a path breaks:
//! resolving the proxy, reaching it, the proxy refusing CONNECT, TLS to the
//! upstream, or the upstream's own answer.
//!
//! # Layout
//! - [`accept`]: the one accept loop the three listeners share: the
//!   connection cap, the EMFILE back-off, the stop order.
//! - [`config`]: the TOML schema, presets, validation with located errors.
//! - [`reason`]: the closed [`FailureReason`](reason::FailureReason) and
//!   [`Phase`](reason::Phase) sets, the only sources of those labels.
//! - [`destination`]: the one canonical destination parser (every IPv4
//!   spelling `inet_aton` accepts, IPv6 with zones, `localhost`, DNS names).
//! - [`policy`]: the address policy (pure functions): the ranges refused,
//!   judged on the address a destination means, embedded IPv4 included.
//! - [`generation`]: everything built from one config (dialer, prober),
//!   swapped whole on reload.
//! - [`dial`]: the one dialer (resolve → TCP → CONNECT → TLS), shared by
//!   probes and app traffic, with typed errors and their classification.
//! - [`probe`]: one request over one route, checked against expectations.
//! - [`forward`]: the app's forward proxy: route choice, failover before the
//!   tunnel stands, the open-proxy guard, the compliance trail.
//! - [`verify`]: the `verify` command's run, report, certificate findings
//!   and the drift report against a baseline.
//! - [`live`]: `verify --watch`, the live view for a change window.
//! - [`health`]: the route table (pure): fall/rise, hold-down, active
//!   routes, fed typed observations from probes and app traffic; the last
//!   hour's cells per target × route (`health::history`).
//! - [`incidents`]: incident windows, merged by cause, persisted in `state_dir`.
//! - [`compliance`]: the trail of direct connections (and the optional
//!   access log) in `state_dir`, and the operational log's summary of them.
//! - [`telemetry`]: every metric name, and the per-instance recorder.
//! - [`watch`]: file descriptors by kind, TCP sockets by state and the top
//!   remote endpoints, for this process and the watched ones.
//! - [`sidecar`]: `run` — the runtime that wires the parts: scheduler,
//!   listeners (the admin surface and its status page), reload, shutdown,
//!   and the process's signals.
//! - [`credential`]: credential checks: what each provider's check sends
//!   and how its answers read (pure).
//! - [`files`]: bounded reads (and content hashes) of the files the config names.
//! - [`secret`]: the redacting wrapper for credentials.
//! - [`demo`]: `egress-sentinel demo`, the incident replayed on loopback;
//!   its stand-ins are the tests' too.
//!
//! Data flows one way: config → generation → probes and app traffic →
//! observations → route table → events → metrics, status and incidents.
//! Dependencies point down: `sidecar` → `forward`/`probe`/`verify` → `dial`;
//! `config` compiles into `dial`'s types; nothing below `sidecar` imports it.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub(crate) mod accept;
pub(crate) mod compliance;
pub mod config;
pub mod credential;
pub mod demo;
pub mod destination;
pub mod dial;
pub(crate) mod files;
pub mod forward;
pub mod generation;
pub mod health;
pub mod incidents;
pub mod live;
pub mod policy;
pub mod probe;
pub mod reason;
pub(crate) mod secret;
pub mod sidecar;
pub mod telemetry;
pub(crate) mod throttle;
pub mod verify;
pub mod watch;
