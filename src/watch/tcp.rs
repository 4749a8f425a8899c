//! TCP sockets of one process: `/proc/PID/net/tcp{,6}` (every socket of the
//! process's network namespace) joined with the socket inodes found in
//! `/proc/PID/fd`, counted by state, and the remote endpoints with the most
//! sockets — which peer a CLOSE_WAIT pile-up is stuck on.
//!
//! Parsing is pure ([`TcpTable::add_lines`], [`TcpTable::sockets_of`])
//! and bounded; reading is line by line, once per namespace per sample, and
//! only the sockets of the processes the sample reports are kept: TIME_WAIT
//! sockets, others no process holds (inode 0) and other processes' are
//! counted or skipped as they are read, so a namespace with tens of
//! thousands of them costs no memory (a soak found 1.5 MiB held per sample
//! when TIME_WAIT lines were kept, and an 808 KiB step when another process
//! held 16 000 sockets). The kernel's
//! cost of writing the tables grows with every socket of the namespace
//! (TIME_WAIT included), which is why scrapes count descriptors by kind
//! only and the TCP detail is sampled at upkeep.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Serialize;

/// The most lines read from one table.
const MAX_LINES: usize = 2_000_000;

/// How many remote endpoints a sample keeps.
pub const TOP_REMOTES: usize = 10;

/// A TCP state, as the kernel numbers them (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// `ESTABLISHED`.
    Established,
    /// `SYN_SENT`.
    SynSent,
    /// `SYN_RECV`.
    SynRecv,
    /// `FIN_WAIT1`.
    FinWait1,
    /// `FIN_WAIT2`.
    FinWait2,
    /// `TIME_WAIT` (owned by no process: counted for the namespace).
    TimeWait,
    /// `CLOSE`.
    Close,
    /// `CLOSE_WAIT`: the peer closed, this process has not.
    CloseWait,
    /// `LAST_ACK`.
    LastAck,
    /// `LISTEN`.
    Listen,
    /// `CLOSING`.
    Closing,
    /// `NEW_SYN_RECV`.
    NewSynRecv,
}

impl TcpState {
    /// Every state, in the kernel's order.
    pub const ALL: [TcpState; 12] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::NewSynRecv,
    ];

    /// The state for the kernel's number (the `st` column, hex).
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The metric label: `established`, `close_wait`, ...
    pub fn label(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::SynSent => "syn_sent",
            Self::SynRecv => "syn_recv",
            Self::FinWait1 => "fin_wait1",
            Self::FinWait2 => "fin_wait2",
            Self::TimeWait => "time_wait",
            Self::Close => "close",
            Self::CloseWait => "close_wait",
            Self::LastAck => "last_ack",
            Self::Listen => "listen",
            Self::Closing => "closing",
            Self::NewSynRecv => "new_syn_recv",
        }
    }

    /// The name `ss` and `netstat` print: `ESTABLISHED`, `CLOSE_WAIT`, ...
    pub fn name(self) -> String {
        self.label().to_ascii_uppercase()
    }
}

/// A remote endpoint and this process's sockets to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteEndpoint {
    /// `address:port`.
    pub endpoint: String,
    /// Sockets to it.
    pub sockets: u64,
    /// Those sockets by state.
    pub by_state: BTreeMap<TcpState, u64>,
}

/// The TCP sockets of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TcpSockets {
    /// The process's own sockets by state (every state but TIME_WAIT,
    /// zeros included).
    pub by_state: BTreeMap<TcpState, u64>,
    /// TIME_WAIT sockets in the process's network namespace: after close
    /// they belong to no process (in a pod: the pod's).
    pub time_wait_in_namespace: u64,
    /// The remote endpoints with the most of this process's sockets
    /// (listening sockets aside), most first.
    pub top_remotes: Vec<RemoteEndpoint>,
    /// Socket descriptors not in the TCP tables (Unix, UDP, netlink...).
    pub other_sockets: u64,
}

/// The TCP sockets of one network namespace: `/proc/PID/net/tcp` and
/// `tcp6`, parsed once and shared by every process of that namespace (in a
/// pod: the sidecar and the app).
#[derive(Debug, Clone, Default)]
pub struct TcpTable {
    /// Sockets some process owns (inode not 0), TIME_WAIT aside.
    entries: Vec<Entry>,
    /// TIME_WAIT sockets: counted, not kept.
    time_wait: u64,
}

impl TcpTable {
    /// Reads the tables as the process at `proc_dir` sees them, keeping
    /// the sockets whose inodes are in `wanted` (the processes a sample
    /// reports).
    pub fn read(proc_dir: &Path, wanted: &HashSet<u64>) -> Self {
        let mut table = Self::default();
        // One line buffer for both tables: a namespace's tables can hold
        // hundreds of thousands of lines, and a string per line (with a
        // vector per address) was an eighth of the sidecar's allocations
        // under the soak's load (issue 23).
        let mut line = String::new();
        for name in ["net/tcp", "net/tcp6"] {
            let Ok(f) = std::fs::File::open(proc_dir.join(name)) else {
                continue;
            };
            let mut reader = std::io::BufReader::new(f);
            for _ in 0..MAX_LINES {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 => table.add_line(&line, wanted),
                    _ => break,
                }
            }
        }
        table
    }

    /// Adds the lines of one table; the header line and lines that do not
    /// parse are skipped, TIME_WAIT lines counted, and only the sockets
    /// whose inodes are in `wanted` kept: sockets no process owns (inode 0:
    /// orphans closing down) and other processes' are dropped as read, so
    /// the table costs memory for the reported processes' sockets alone.
    pub fn add_lines<I, S>(&mut self, lines: I, wanted: &HashSet<u64>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for line in lines.into_iter().take(MAX_LINES) {
            self.add_line(line.as_ref(), wanted);
        }
    }

    /// [`Self::add_lines`] for one line.
    fn add_line(&mut self, line: &str, wanted: &HashSet<u64>) {
        match parse_line(line) {
            Some(e) if e.state == TcpState::TimeWait => self.time_wait += 1,
            Some(e) if e.inode != 0 && wanted.contains(&e.inode) => self.entries.push(e),
            _ => {}
        }
    }

    /// The sockets of the process whose socket inodes are `inodes`: by
    /// state, the top remote endpoints, and those not in the tables.
    pub fn sockets_of(&self, inodes: &HashSet<u64>) -> TcpSockets {
        let mut by_state: BTreeMap<TcpState, u64> = TcpState::ALL
            .iter()
            .filter(|s| **s != TcpState::TimeWait)
            .map(|s| (*s, 0))
            .collect();
        let mut matched = HashSet::new();
        let mut remotes: HashMap<SocketAddr, BTreeMap<TcpState, u64>> = HashMap::new();
        for e in &self.entries {
            // A socket shows in both tables only for v4-mapped v6; count it once.
            if !inodes.contains(&e.inode) || !matched.insert(e.inode) {
                continue;
            }
            *by_state.entry(e.state).or_insert(0) += 1;
            if e.state != TcpState::Listen {
                *remotes
                    .entry(e.remote)
                    .or_default()
                    .entry(e.state)
                    .or_insert(0) += 1;
            }
        }
        let mut top: Vec<RemoteEndpoint> = remotes
            .into_iter()
            .map(|(addr, by_state)| RemoteEndpoint {
                endpoint: addr.to_string(),
                sockets: by_state.values().sum(),
                by_state,
            })
            .collect();
        top.sort_by(|a, b| {
            b.sockets
                .cmp(&a.sockets)
                .then_with(|| a.endpoint.cmp(&b.endpoint))
        });
        top.truncate(TOP_REMOTES);
        TcpSockets {
            by_state,
            time_wait_in_namespace: self.time_wait,
            top_remotes: top,
            other_sockets: (inodes.len() - matched.len()) as u64,
        }
    }
}

/// One parsed table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    remote: SocketAddr,
    state: TcpState,
    inode: u64,
}

/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`
fn parse_line(line: &str) -> Option<Entry> {
    let mut cols = line.split_whitespace();
    let _sl = cols.next()?.strip_suffix(':')?;
    let _local = cols.next()?;
    let remote = parse_addr(cols.next()?)?;
    let state = TcpState::from_code(u8::from_str_radix(cols.next()?, 16).ok()?)?;
    let inode = cols.nth(5)?.parse().ok()?;
    Some(Entry {
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word printed in the host's byte order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // Every line goes through here: no allocation.
    fn words<const N: usize>(hex: &str) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        if hex.len() != N * 2 {
            return None;
        }
        for (chunk, to) in hex.as_bytes().chunks(8).zip(out.chunks_mut(4)) {
            let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
            to.copy_from_slice(&word.to_ne_bytes());
        }
        Some(out)
    }
    let ip = match ip_hex.len() {
        8 => {
            let b: [u8; 4] = words(ip_hex)?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        32 => {
            let b: [u8; 16] = words(ip_hex)?;
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 100 1 0 100 0 0 10 0
   1: 0100007F:A1B2 0100007F:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 101 1 0 20 4 30 10 -1
   2: 0100007F:A1B3 0100007F:01BB 08 00000000:00000000 00:00000000 00000000  1000        0 102 1 0 20 4 30 10 -1
   3: 0100007F:A1B4 0200007F:01BB 08 00000000:00000000 00:00000000 00000000  1000        0 103 1 0 20 4 30 10 -1
   4: 0100007F:A1B5 0100007F:01BB 06 00000000:00000000 03:00000F2E 00000000     0        0 0 3 0
   5: 0100007F:A1B6 0100007F:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 999 1 0 20 4 30 10 -1
garbage line";

    const V6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000  1000        0 104 1 0 20 4 30 10 -1";

    #[test]
    fn joins_the_tables_with_the_process_inodes() {
        let inodes: HashSet<u64> = [100, 101, 102, 103, 104, 555].into_iter().collect();
        let mut t = TcpTable::default();
        t.add_lines(V4.lines(), &inodes);
        t.add_lines(V6.lines(), &inodes);
        let s = t.sockets_of(&inodes);
        assert_eq!(s.by_state[&TcpState::Listen], 1);
        assert_eq!(s.by_state[&TcpState::Established], 2);
        assert_eq!(s.by_state[&TcpState::CloseWait], 2);
        assert_eq!(s.by_state[&TcpState::SynSent], 0);
        assert!(!s.by_state.contains_key(&TcpState::TimeWait));
        assert_eq!(s.time_wait_in_namespace, 1);
        assert_eq!(s.other_sockets, 1, "inode 555 is in no TCP table");
        let top: Vec<(&str, u64)> = s
            .top_remotes
            .iter()
            .map(|r| (r.endpoint.as_str(), r.sockets))
            .collect();
        assert_eq!(
            top,
            vec![
                ("127.0.0.1:443", 2),
                ("127.0.0.2:443", 1),
                ("[::1]:54321", 1)
            ]
        );
        assert_eq!(s.top_remotes[0].by_state[&TcpState::CloseWait], 1);
    }

    #[test]
    fn a_namespace_full_of_time_wait_and_other_processes_sockets_costs_no_memory() {
        let mut lines = vec![V4.lines().next().unwrap_or_default().to_string()];
        for i in 0..50_000u32 {
            lines.push(format!(
                "{i}: 0100007F:{:04X} 0100007F:01BB 06 00000000:00000000 03:00000F2E 00000000     0        0 0 3 0",
                i % 0xFFFF
            ));
        }
        // An orphan closing down (FIN_WAIT2, inode 0) and one owned socket.
        lines.push("7: 0100007F:A1B7 0100007F:01BB 05 00000000:00000000 00:00000000 00000000  1000        0 0 1 0 20 4 30 10 -1".into());
        lines.push("8: 0100007F:A1B8 0100007F:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 101 1 0 20 4 30 10 -1".into());
        // Another process's 20 000 sockets.
        for i in 0..20_000u32 {
            lines.push(format!(
                "{i}: 0100007F:{:04X} 0100007F:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 {} 1 0 20 4 30 10 -1",
                i % 0xFFFF,
                1_000_000 + i
            ));
        }
        let mine: HashSet<u64> = [101].into_iter().collect();
        let mut t = TcpTable::default();
        t.add_lines(&lines, &mine);
        assert_eq!(
            t.entries.len(),
            1,
            "only the reported process's socket is kept"
        );
        let s = t.sockets_of(&mine);
        assert_eq!(s.time_wait_in_namespace, 50_000);
        assert_eq!(s.by_state[&TcpState::Established], 1);
        assert_eq!(s.by_state[&TcpState::FinWait2], 0);
    }

    #[test]
    fn addresses_decode_in_host_order() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_addr("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().expect("addr"))
            );
            assert_eq!(
                parse_addr("0000000000000000FFFF00000100007F:01BB"),
                Some("127.0.0.1:443".parse().expect("addr")),
                "v4-mapped v6 shows as v4"
            );
        }
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(TcpState::from_code(0x08), Some(TcpState::CloseWait));
        assert_eq!(TcpState::from_code(0), None);
        assert_eq!(TcpState::from_code(0x0D), None);
        assert_eq!(TcpState::CloseWait.name(), "CLOSE_WAIT");
    }
}
