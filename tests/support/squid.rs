//! Real Squid from Debian's package, started on a free loopback port with
//! its own config: a hosts file mapping the test names to 127.0.0.1 and
//! `dns_nameservers 127.0.0.1`, so it never asks the machine's nameserver.
//!
//! When squid is missing the tests skip with a printed reason, unless
//! `EGRESS_REQUIRE_SQUID=1` (set by `.ci/run`), which makes them fail.

use std::net::{SocketAddr, TcpListener, TcpStream};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Squid {
    /// Starts squid allowing CONNECT to any port of the `hosts` (mapped to
    /// 127.0.0.1) and denying `denied` by `dstdomain`.
    pub fn start(binary: &Path, hosts: &[&str], denied: &[&str]) -> Squid {
        let dir = tempfile::tempdir().expect("squid dir");
        // Squid drops privileges to `proxy`: it must be able to write here.
        set_mode(dir.path(), 0o777);
        let d = dir.path();
        let hosts_file = d.join("hosts");
        let mut hosts_text = String::new();
        for h in hosts.iter().chain(denied) {
            hosts_text.push_str(&format!("127.0.0.1 {h}\n"));
        }
        std::fs::write(&hosts_file, hosts_text).expect("hosts file");
        let port = free_port();
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
        conf.push_str("http_access allow all\n");
        let conf_path = d.join("squid.conf");
        std::fs::write(&conf_path, conf).expect("squid.conf");
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
        squid.wait_ready();
        squid
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("squid exited with {status}; cache.log:\n{}", self.log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
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
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
