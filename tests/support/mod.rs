//! Test fixtures shared by the integration tests: a CA and certificates
//! (`pki`), TLS upstreams (`upstream`), a scriptable CONNECT proxy
//! (`proxy`), real Squid (`squid`), a loopback address that never answers
//! (`blackhole`), the platform's address parsers (`platform`), promtool
//! and a real Prometheus server (`promtool`, `prometheus`), the shipped
//! alert rules and dashboard as data (`rules`), headless Chromium driven
//! over DevTools (`chromium`), a program in a tmux pane (`tmux`), raw
//! HTTP exchanges with any header (`raw`), Debian tools found or skipped
//! (`tools`), the sidecar's TOML built from typed calls (`config`), and a
//! free loopback port.
//! Everything listens on loopback only.

// Each test binary uses a different part of the fixtures.
#![allow(dead_code)]

pub mod app;
pub mod blackhole;
pub mod chromium;
pub mod config;
pub mod daemon;
pub mod echo;
pub mod mitm;
pub mod p12;
pub mod pki;
pub mod platform;
pub mod prometheus;
pub mod promtool;
pub mod proxy;
pub mod raw;
pub mod rules;
pub mod scenario;
pub mod sidecar;
pub mod spawned;
pub mod squid;
pub mod stub_dns;
pub mod tmux;
pub mod tools;
pub mod upstream;

use std::path::{Path, PathBuf};

use egress_sentinel::config::Config;
use egress_sentinel::probe::ProbeOutcome;
use egress_sentinel::verify;

/// A temporary folder holding a config and the files it names.
pub struct Workspace {
    /// The folder (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A new empty workspace, with the test CA written to `ca.pem`.
    pub fn new() -> Self {
        egress_sentinel::dial::tls::install_default_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = Self { dir };
        ws.write("ca.pem", &pki::ca().cert_pem);
        ws
    }

    /// The path of `name` inside the workspace.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` with `content`.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write fixture file");
        p
    }

    /// A self-signed RSA certificate and its key (an Entra ID certificate
    /// credential), made by openssl: `<stem>.crt`, `<stem>.key`, and the
    /// certificate's DER.
    pub fn rsa_cert(&self, stem: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let (cert, key) = (
            self.path(&format!("{stem}.crt")),
            self.path(&format!("{stem}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=egress-sentinel test app", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl req failed");
        let der = CertificateDer::from_pem_file(&cert).expect("cert").to_vec();
        (cert, key, der)
    }

    /// Writes `config.toml` and loads it; panics with the error if invalid.
    pub fn config(&self, toml: impl std::fmt::Display) -> Config {
        let toml = toml.to_string();
        let p = self.write("config.toml", &toml);
        Config::load(&p).unwrap_or_else(|e| panic!("fixture config invalid: {e}\n{toml}"))
    }
}

/// Probes every route of every target in `config` (the verify run).
pub async fn check_all(config: &Config) -> Vec<ProbeOutcome> {
    verify::run_checks(config, &verify::prober_for(config)).await
}

/// Probes the single check of `config` (one target, one route).
pub async fn check_one(config: &Config) -> ProbeOutcome {
    let mut all = check_all(config).await;
    assert_eq!(
        all.len(),
        1,
        "fixture config should have one target × route"
    );
    all.remove(0)
}

/// A loopback port with nothing listening on it (bound, read, released).
/// Another process may take it before the test does; prefer port 0 where
/// the code under test can report what it bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The built binary: the one cargo built for the tests, or the one
/// `EGRESS_BINARY` names (CI runs the exhaustion storm against the release
/// build so).
pub fn binary() -> &'static Path {
    static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        std::env::var_os("EGRESS_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_egress-sentinel")))
    })
}
