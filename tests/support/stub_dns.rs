//! A stub nameserver on a UDP socket on 127.0.0.1: each name gets the
//! answer a test scripts (addresses, NXDOMAIN, SERVFAIL, REFUSED, or no
//! answer at all), and every question is recorded. A few lines of DNS wire
//! format (RFC 1035): one question in, the question echoed with the answer
//! records (or the SOA of a negative answer, so resolvers may cache it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// TTL of every record the stub sends (long, so a resolver's own cap shows).
pub const TTL: u32 = 300;

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;

/// What the stub answers for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these addresses (A for IPv4, AAAA for IPv6; a type
    /// with none gets NODATA: NOERROR, no answer, the zone's SOA).
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN, with the zone's SOA.
    NxDomain,
    /// SERVFAIL.
    ServFail,
    /// REFUSED.
    Refused,
    /// Nothing at all: the query is read and dropped.
    Never,
}

impl Answer {
    /// `Addresses` of one IPv4 address.
    pub fn a(ip: &str) -> Self {
        Self::Addresses(vec![ip.parse().expect("an IP address")])
    }
}

/// One question the stub was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, lower case, without the trailing dot.
    pub name: String,
    /// 1 for A, 28 for AAAA, ...
    pub qtype: u16,
}

/// The running stub; stops when dropped.
pub struct StubDns {
    addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    asked: Arc<Mutex<Vec<Question>>>,
    task: JoinHandle<()>,
}

impl StubDns {
    /// Starts a stub on 127.0.0.1 (a free port); names it has no answer
    /// for get NXDOMAIN.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind UDP on 127.0.0.1")
    }

    /// Starts a stub on `addr` (a loopback address: port 53 needs root).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        assert!(addr.ip().is_loopback(), "the stub listens on loopback only");
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr().expect("local addr");
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let asked: Arc<Mutex<Vec<Question>>> = Arc::default();
        let task = tokio::spawn(serve(socket, answers.clone(), asked.clone()));
        Ok(Self {
            addr,
            answers,
            asked,
            task,
        })
    }

    /// `127.0.0.1:port`, for `[dns] nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `answer` for `name` from now on.
    pub fn set(&self, name: &str, answer: Answer) -> &Self {
        self.answers
            .lock()
            .expect("answers")
            .insert(name.to_ascii_lowercase(), answer);
        self
    }

    /// Every question asked so far.
    pub fn asked(&self) -> Vec<Question> {
        self.asked.lock().expect("asked").clone()
    }

    /// How many times `name` was asked for `qtype`.
    pub fn count(&self, name: &str, qtype: u16) -> usize {
        self.asked()
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype)
            .count()
    }

    /// How many A questions were asked for `name`.
    pub fn count_a(&self, name: &str) -> usize {
        self.count(name, TYPE_A)
    }
}

impl Drop for StubDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: UdpSocket,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    asked: Arc<Mutex<Vec<Question>>>,
) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((q, question_end)) = parse_query(&buf[..n]) else {
            continue;
        };
        asked.lock().expect("asked").push(q.clone());
        let answer = answers
            .lock()
            .expect("answers")
            .get(&q.name)
            .cloned()
            .unwrap_or(Answer::NxDomain);
        if let Some(reply) = reply(&buf[..question_end], &q, &answer) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The question of a query, and where the question section ends.
fn parse_query(msg: &[u8]) -> Option<(Question, usize)> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let end = i + 4;
    (msg.len() >= end).then(|| {
        (
            Question {
                name: labels.join("."),
                qtype,
            },
            end,
        )
    })
}

/// The reply to `query` (header and question, as received), or `None` to
/// stay silent.
fn reply(query: &[u8], q: &Question, answer: &Answer) -> Option<Vec<u8>> {
    let rcode = match answer {
        Answer::Never => return None,
        Answer::Addresses(_) => 0,
        Answer::ServFail => 2,
        Answer::NxDomain => 3,
        Answer::Refused => 5,
    };
    let records: Vec<Vec<u8>> = match answer {
        Answer::Addresses(ips) => ips
            .iter()
            .filter_map(|ip| match (ip, q.qtype) {
                (IpAddr::V4(v4), TYPE_A) => Some(record(TYPE_A, &v4.octets())),
                (IpAddr::V6(v6), TYPE_AAAA) => Some(record(TYPE_AAAA, &v6.octets())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // NXDOMAIN and NODATA carry the zone's SOA: its minimum is the
    // negative TTL a caching resolver may keep the answer for.
    let negative = rcode == 3 || (rcode == 0 && records.is_empty());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // id
    let opcode_rd = query[2] & 0x79;
    out.push(0x80 | opcode_rd); // QR, opcode, RD
    out.push(0x80 | rcode); // RA, rcode
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&u16::from(negative).to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ARCOUNT
    out.extend_from_slice(&query[12..]);
    for r in &records {
        out.extend_from_slice(r);
    }
    if negative {
        out.extend_from_slice(&soa(&q.name));
    }
    Some(out)
}

/// An answer record for the question's name (a pointer to offset 12).
fn record(rtype: u16, rdata: &[u8]) -> Vec<u8> {
    let mut r = vec![0xc0, 0x0c];
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes()); // IN
    r.extend_from_slice(&TTL.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// The SOA of the name's last label (the stub's "zone", e.g. `test.`).
fn soa(name: &str) -> Vec<u8> {
    let zone = name.rsplit('.').next().unwrap_or_default();
    let mut rdata = encode_name(&format!("ns.{zone}"));
    rdata.extend(encode_name(&format!("hostmaster.{zone}")));
    for v in [1u32, 3600, 600, 86400, TTL] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    let mut r = encode_name(zone);
    r.extend_from_slice(&TYPE_SOA.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&TTL.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend(rdata);
    r
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}
