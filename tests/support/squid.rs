//! Real Squid from Debian's package, started on a free loopback port with
//! its own config: a hosts file mapping the test names to 127.0.0.1 and
//! `dns_nameservers 127.0.0.1`, so it never asks the machine's nameserver.
//!
//! When squid is missing the tests skip with a printed reason, unless
//! `EGRESS_REQUIRE_SQUID=1` (set by `.ci/run`), which makes them fail.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs squid.
const SQUID: &str = "/usr/sbin/squid";

/// A running squid; killed when dropped.
pub struct Squid {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Squid {
    fn drop(&mut self) {
        // A stopped squid (SIGSTOP) dies of SIGKILL all the same.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the squid binary, or `None` (with a printed reason) when tests
/// should skip. Panics when squid is required but missing.
pub fn available() -> Option<&'static Path> {
    let path = Path::new(SQUID);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("EGRESS_REQUIRE_SQUID").as_deref() == Ok("1") {
        panic!("EGRESS_REQUIRE_SQUID=1 but {SQUID} is missing: apt-get install squid");
    }
    eprintln!(
        "SKIPPED: {SQUID} not installed (apt-get install squid); set EGRESS_REQUIRE_SQUID=1 to fail instead"
    );
    None
}

/// How to start squid beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// Basic credentials squid demands (`user`, `password`), checked by
    /// Debian's `basic_ncsa_auth` against an htpasswd file.
    pub auth: Option<(String, String)>,
    /// Listen on this port (to restart on the same one); free one if `None`.
    pub port: Option<u16>,
    /// Squid's stock rule: `http_access deny CONNECT !SSL_ports` (443 only).
    pub connect_443_only: bool,
    /// Forward everything through a parent proxy on this loopback port
    /// (`cache_peer ... parent`, `never_direct allow all`).
    pub parent: Option<u16>,
}

/// What [`Squid::start_guarded`] adds to a plain start.
#[derive(Debug, Clone, Copy, Default)]
struct Guard<'a> {
    /// More hosts-file lines: `(address, name)`.
    mapped: &'a [(&'a str, &'a str)],
    /// Refuse every destination outside loopback before dialing.
    loopback_only: bool,
}

/// Where Debian installs squid's NCSA helper.
const NCSA_AUTH: &str = "/usr/lib/squid/basic_ncsa_auth";

impl Squid {
    /// Starts squid allowing CONNECT to any port of the `hosts` (mapped to
    /// 127.0.0.1) and denying `denied` by `dstdomain`.
    pub fn start(binary: &Path, hosts: &[&str], denied: &[&str]) -> Squid {
        Self::start_with(binary, hosts, denied, &Opts::default())
    }

    /// [`start`](Self::start) with `opts`.
    pub fn start_with(binary: &Path, hosts: &[&str], denied: &[&str], opts: &Opts) -> Squid {
        Self::start_inner(binary, hosts, denied, opts, Guard::default(), 1)
    }

    /// Starts squid knowing `hosts` (127.0.0.1) and the `mapped`
    /// `(address, name)` pairs, refusing (403, before dialing) every
    /// destination outside 127.0.0.0/8 and ::1: a spelling that means an
    /// address off this machine (NAT64, 6to4) is never dialed, even if the
    /// sidecar let it through.
    pub fn start_guarded(binary: &Path, hosts: &[&str], mapped: &[(&str, &str)]) -> Squid {
        let guard = Guard {
            mapped,
            loopback_only: true,
        };
        Self::start_inner(binary, hosts, &[], &Opts::default(), guard, 1)
    }

    fn start_inner(
        binary: &Path,
        hosts: &[&str],
        denied: &[&str],
        opts: &Opts,
        guard: Guard<'_>,
        tries: u32,
    ) -> Squid {
        let dir = tempfile::tempdir().expect("squid dir");
        // Squid drops privileges to `proxy`: it must be able to write here.
        set_mode(dir.path(), 0o777);
        let d = dir.path();
        let port = opts.port.unwrap_or_else(super::free_port);
        let conf_path = write_conf(d, port, hosts, denied, opts, guard);
        let child = Command::new(binary)
            .arg("-N")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn squid");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut squid = Squid { addr, child, dir };
        if let Err(exited) = squid.wait_ready() {
            // A free port can be taken (by another test's outgoing
            // connection) before squid binds it; squid then exits at once.
            // A port the test chose is the test's business.
            if opts.port.is_some() || tries >= 3 {
                panic!("{exited}");
            }
            eprintln!("{exited}\nretrying squid on another port");
            drop(squid);
            return Self::start_inner(binary, hosts, denied, opts, guard, tries + 1);
        }
        squid
    }

    /// Waits until squid listens; `Err` with its log when it exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "squid exited with {status}; cache.log:\n{}",
                    self.log()
                ));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "squid did not listen on {} within 20 s; cache.log:\n{}",
            self.addr,
            self.log()
        );
    }

    /// squid's cache.log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The folder holding its config and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The access log so far (one line per request, e.g. `... TCP_TUNNEL/200 ... CONNECT host:port ...`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Changes the password squid accepts for `user` (the helper re-reads
    /// the file when it changes).
    pub fn set_password(&self, user: &str, password: &str) {
        let path = self.dir.path().join("htpasswd");
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        write_htpasswd(&path, user, password);
        // basic_ncsa_auth reloads the file when its mtime changes, in whole
        // seconds: make sure it does even within the second it was written.
        if let Some(before) = before {
            let later = std::cmp::max(
                std::time::SystemTime::now(),
                before + Duration::from_secs(1),
            );
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("htpasswd");
            file.set_modified(later).expect("set mtime");
        }
    }

    /// Changes squid's rules while it runs, as an operator would: rewrites
    /// `squid.conf` with `hosts`, `denied` and `opts` (same port) and sends
    /// SIGHUP (reconfigure). Returns once squid listens again.
    pub fn reconfigure(&mut self, hosts: &[&str], denied: &[&str], opts: &Opts) {
        write_conf(
            self.dir.path(),
            self.addr.port(),
            hosts,
            denied,
            opts,
            Guard::default(),
        );
        self.signal("HUP");
        // Squid closes and reopens its listening socket on reconfigure.
        std::thread::sleep(Duration::from_millis(500));
        if let Err(exited) = self.wait_ready() {
            panic!("{exited}");
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `HUP`...) to squid.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} squid");
    }

    /// Kills squid at once (SIGKILL): connections are refused from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `squid.conf` (and its hosts and password files) into `d`.
fn write_conf(
    d: &Path,
    port: u16,
    hosts: &[&str],
    denied: &[&str],
    opts: &Opts,
    guard: Guard<'_>,
) -> PathBuf {
    let hosts_file = d.join("hosts");
    let mut hosts_text = String::new();
    for h in hosts.iter().chain(denied) {
        hosts_text.push_str(&format!("127.0.0.1 {h}\n"));
    }
    for (addr, name) in guard.mapped {
        hosts_text.push_str(&format!("{addr} {name}\n"));
    }
    std::fs::write(&hosts_file, hosts_text).expect("hosts file");
    let mut conf = format!(
        "http_port 127.0.0.1:{port}\n\
             visible_hostname egress-test-squid\n\
             hosts_file {hosts}\n\
             dns_nameservers 127.0.0.1\n\
             pid_filename none\n\
             cache deny all\n\
             cache_mem 8 MB\n\
             access_log stdio:{access}\n\
             cache_log {cache_log}\n\
             coredump_dir {d}\n\
             shutdown_lifetime 0 seconds\n\
             connect_timeout 5 seconds\n\
             forward_max_tries 1\n",
        hosts = hosts_file.display(),
        access = d.join("access.log").display(),
        cache_log = d.join("cache.log").display(),
        d = d.display(),
    );
    if !denied.is_empty() {
        conf.push_str(&format!(
            "acl blocked dstdomain {}\nhttp_access deny blocked\n",
            denied.join(" ")
        ));
    }
    if let Some((user, password)) = &opts.auth {
        write_htpasswd(&d.join("htpasswd"), user, password);
        // A short credentialsttl: squid re-checks a cached password
        // within a second, so a rotation shows in the tests.
        conf.push_str(&format!(
            "auth_param basic program {NCSA_AUTH} {pw}\n\
                 auth_param basic children 2\n\
                 auth_param basic credentialsttl 1 second\n\
                 auth_param basic casesensitive on\n\
                 acl authed proxy_auth REQUIRED\n\
                 http_access deny !authed\n",
            pw = d.join("htpasswd").display()
        ));
    }
    if opts.connect_443_only {
        conf.push_str(
                "acl SSL_ports port 443\nacl CONNECT method CONNECT\nhttp_access deny CONNECT !SSL_ports\n",
            );
    }
    if let Some(parent) = opts.parent {
        // Every request goes through a parent proxy; when it is down,
        // squid answers CONNECT with a 5xx of its own.
        conf.push_str(&format!(
            "cache_peer 127.0.0.1 parent {parent} 0 no-query no-digest default name=parent\n\
                 never_direct allow all\n"
        ));
    }
    if guard.loopback_only {
        conf.push_str("acl on_loopback dst 127.0.0.0/8 ::1\nhttp_access deny !on_loopback\n");
    }
    conf.push_str("http_access allow all\n");
    let conf_path = d.join("squid.conf");
    std::fs::write(&conf_path, conf).expect("squid.conf");
    conf_path
}

/// One `user:$apr1$...` line, hashed by `openssl passwd -apr1`.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    let out = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd failed");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(path, format!("{user}:{hash}\n")).expect("htpasswd");
    set_mode(path, 0o644);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
