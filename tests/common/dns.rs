//! An in-process authoritative DNS server on 127.0.0.1 (UDP and TCP, same ephemeral port)
//! serving the test world, changeable while it runs.
//!
//! - Every record has TTL 0 (unless `set_ttl` says otherwise); negative answers carry an SOA whose TTL and minimum are 0, so a
//!   change is seen by the next query.
//! - Names are compared label by label on raw octets (ASCII case-insensitive), so names with
//!   `(`, `'` or `"` in a label are served like any other.
//! - TXT values are split into strings of at most 255 octets (RSA-2048 keys need it).
//! - `servfail(name)` answers SERVFAIL for the name and every name below it; `drop(name)`
//!   never answers them (the resolver times out). `timeout(name)` never answers a query for
//!   exactly that name and a type it has no record of (the SPF suite's `TIMEOUT` marker).
//! - A `CNAME` record answers a query of any other type for its name with the CNAME and the
//!   target's records of that type when the target is served too (as an authoritative server
//!   of both zones would), up to 8 links.
//! - A UDP answer larger than the client's payload size is sent truncated (TC), so the client
//!   retries over TCP, as with a real server. `set_udp_limit(n)` truncates every UDP answer
//!   over `n` octets whatever the client offers (a server or middlebox without EDNS: 512).
//! - `set_forgery(f)` makes every UDP query first get a forged answer ([`Forgery`]: a wrong
//!   ID, another source address, malformed bytes, an answer for another name); each forged
//!   answer says NXDOMAIN, so a resolver that took it would fail the check. The genuine answer
//!   follows after `set_delay` (unless `Forgery::only` is set: then it never comes, over
//!   UDP or TCP).
//!
//! Built on hickory-proto's message codec (through `mail_auth::hickory_resolver::proto`), with
//! plain tokio sockets, so the handler can read the live record set on every query.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_auth::hickory_resolver::proto::op::{Edns, Message, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// One record: owner name (no trailing dot), type (`A`, `AAAA`, `MX`, `TXT`, `PTR`, `CNAME`), value
/// in zone-file presentation (without quotes for TXT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub name: String,
    pub rtype: String,
    pub value: String,
}

impl Rec {
    pub fn new(name: &str, rtype: &str, value: &str) -> Rec {
        Rec {
            name: name.trim_end_matches('.').to_string(),
            rtype: rtype.to_ascii_uppercase(),
            value: value.to_string(),
        }
    }
}

#[derive(Default)]
struct State {
    records: Vec<Rec>,
    servfail: Vec<String>,
    drop: Vec<String>,
    timeout: Vec<String>,
    queries: u64,
    tcp_queries: u64,
    /// TTL of every answer record (0 unless [`TestDns::set_ttl`] changed it).
    ttl: u32,
    /// How long every answer waits before it is sent ([`TestDns::set_delay`]).
    delay: Duration,
    /// UDP answers over this many octets are truncated ([`TestDns::set_udp_limit`]).
    udp_limit: Option<usize>,
    /// Sent before (or instead of) each genuine UDP answer ([`TestDns::set_forgery`]).
    forgery: Option<Forgery>,
    /// Forged answers sent so far.
    forged: u64,
}

/// A forged UDP answer sent ahead of the genuine one: what a blind spoofer or a broken
/// middlebox sends. Each says NXDOMAIN for the name, so taking it would change the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forgery {
    pub kind: ForgeryKind,
    /// Never send the genuine answer (over UDP or TCP): only the forgery arrives.
    pub only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgeryKind {
    /// The query's ID plus one (a spoofer guessing IDs), from the server's address.
    WrongId,
    /// The right ID and question, from another port of 127.0.0.1 (RFC 5452 §9.1: the
    /// source address and port must match those the query went to).
    OtherSource,
    /// The right ID, then bytes that are no DNS message (a header that promises a question
    /// and answers that are not there).
    Malformed,
    /// The right ID, an answer whose question is another name (`forged.` prepended).
    OtherName,
}

/// The running server. Dropping it stops it.
pub struct TestDns {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lower(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` equals `zone` or lies below it on a label boundary; the root (`""`) holds all.
fn within(name: &str, zone: &str) -> bool {
    zone.is_empty() || name == zone || name.ends_with(&format!(".{zone}"))
}

impl TestDns {
    /// Start serving `records` on 127.0.0.1, UDP and TCP on one ephemeral port.
    pub async fn start(records: Vec<Rec>) -> TestDns {
        let (udp, tcp) = bind_pair().await;
        Self::serve(udp, tcp, records)
    }

    /// Start serving `records` on `addr`, UDP and TCP (a fixed address another program,
    /// configured beforehand, can be pointed at).
    pub async fn start_on(addr: SocketAddr, records: Vec<Rec>) -> std::io::Result<TestDns> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self::serve(udp, tcp, records))
    }

    fn serve(udp: UdpSocket, tcp: TcpListener, records: Vec<Rec>) -> TestDns {
        let addr = udp.local_addr().expect("udp addr");
        let state = Arc::new(Mutex::new(State {
            records,
            ..State::default()
        }));
        let udp = Arc::new(udp);
        let s1 = state.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            // The forger's own socket: same host, another port.
            let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok();
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let forgery = s1.lock().unwrap_or_else(|p| p.into_inner()).forgery;
                if let Some(f) = forgery
                    && let Some(forged) = forge(&query, f.kind)
                {
                    s1.lock().unwrap_or_else(|p| p.into_inner()).forged += 1;
                    let _ = match (f.kind, &other) {
                        (ForgeryKind::OtherSource, Some(other)) => {
                            other.send_to(&forged, peer).await
                        }
                        _ => udp.send_to(&forged, peer).await,
                    };
                    if f.only {
                        let _ = answer(&s1, &query, false);
                        continue;
                    }
                }
                if let Some(answer) = answer(&s1, &query, false) {
                    let delay = s1.lock().unwrap_or_else(|p| p.into_inner()).delay;
                    // Each answer on its own task: a delayed answer must not hold up the
                    // queries behind it (a slow resolver still answers in parallel).
                    let udp = udp.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = udp.send_to(&answer, peer).await;
                    });
                }
            }
        });
        let s2 = state.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let s = s2.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), serve_tcp(stream, s)).await;
                });
            }
        });
        TestDns {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Replace the whole record set and clear every fault.
    pub fn reset(&self, records: Vec<Rec>) {
        self.with(|s| {
            s.records = records;
            s.servfail.clear();
            s.drop.clear();
            s.timeout.clear();
            s.udp_limit = None;
            s.forgery = None;
        });
    }

    /// Replace every record of this name and type by one with `value`.
    pub fn replace(&self, name: &str, rtype: &str, value: &str) {
        self.remove(name, rtype);
        self.add(name, rtype, value);
    }

    pub fn add(&self, name: &str, rtype: &str, value: &str) {
        self.with(|s| s.records.push(Rec::new(name, rtype, value)));
    }

    /// Remove every record of this name and type.
    pub fn remove(&self, name: &str, rtype: &str) {
        let (n, t) = (lower(name), rtype.to_ascii_uppercase());
        self.with(|s| s.records.retain(|r| !(lower(&r.name) == n && r.rtype == t)));
    }

    /// SERVFAIL for `name` and below (`""`: every name).
    pub fn servfail(&self, name: &str) {
        self.with(|s| s.servfail.push(lower(name)));
    }

    /// Never answer `name` and below (`""`: every name).
    pub fn drop_name(&self, name: &str) {
        self.with(|s| s.drop.push(lower(name)));
    }

    /// Give answer records this TTL from now on, so a resolver may cache them (benchmarks
    /// measure with caching, as against a real zone; tests keep 0 to see every change).
    pub fn set_ttl(&self, ttl: u32) {
        self.with(|s| s.ttl = ttl);
    }

    /// Never answer a query for exactly `name` and a type it has no record of.
    pub fn timeout(&self, name: &str) {
        self.with(|s| s.timeout.push(lower(name)));
    }

    /// Delay every answer by `delay` from now on (a slow but answering resolver).
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.delay = delay);
    }

    /// Truncate every UDP answer longer than `limit` octets (`None`: only what exceeds the
    /// client's own payload size), whatever EDNS payload the client offers.
    pub fn set_udp_limit(&self, limit: Option<usize>) {
        self.with(|s| s.udp_limit = limit);
    }

    /// Send a forged answer ahead of (or instead of) every UDP answer from now on.
    pub fn set_forgery(&self, forgery: Option<Forgery>) {
        self.with(|s| s.forgery = forgery);
    }

    /// Forged answers sent so far.
    pub fn forged(&self) -> u64 {
        self.with(|s| s.forged)
    }

    /// Queries received so far (both transports).
    pub fn queries(&self) -> u64 {
        self.with(|s| s.queries)
    }

    /// Queries received over TCP so far.
    pub fn tcp_queries(&self) -> u64 {
        self.with(|s| s.tcp_queries)
    }
}

/// Bind UDP on an ephemeral port and TCP on the same port (retrying if TCP's is taken).
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair on 127.0.0.1");
}

async fn serve_tcp(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let only = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forgery
            .is_some_and(|f| f.only);
        let answer = answer(&state, &buf, true).filter(|_| !only);
        let Some(answer) = answer else {
            // Dropped: keep the connection open and silent until the client gives up.
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        };
        let delay = state.lock().unwrap_or_else(|p| p.into_inner()).delay;
        tokio::time::sleep(delay).await;
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&answer);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The wire form of a name: labels joined by `.`, lower-case, raw octets kept.
fn key_of(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    labels.join(".")
}

fn rdata(rec: &Rec) -> Option<RData> {
    Some(match rec.rtype.as_str() {
        "A" => RData::A(A(rec.value.parse::<Ipv4Addr>().ok()?)),
        "AAAA" => RData::AAAA(AAAA(rec.value.parse::<Ipv6Addr>().ok()?)),
        "MX" => {
            let (pref, host) = rec.value.split_once(' ')?;
            RData::MX(MX::new(
                pref.trim().parse().ok()?,
                // `0 .` is the null MX (RFC 7505): the root name.
                Name::from_ascii(format!("{}.", host.trim().trim_end_matches('.'))).ok()?,
            ))
        }
        "CNAME" => RData::CNAME(CNAME(
            Name::from_ascii(format!("{}.", rec.value.trim_end_matches('.'))).ok()?,
        )),
        "PTR" => RData::PTR(PTR(Name::from_ascii(format!(
            "{}.",
            rec.value.trim_end_matches('.')
        ))
        .ok()?)),
        "TXT" => {
            let bytes = rec.value.as_bytes();
            let chunks: Vec<&[u8]> = if bytes.is_empty() {
                vec![b""]
            } else {
                bytes.chunks(255).collect()
            };
            RData::TXT(TXT::from_bytes(chunks))
        }
        _ => return None,
    })
}

/// Build the answer to one query; `None` = stay silent.
fn answer(state: &Mutex<State>, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let key = key_of(q.name());
    let qtype = q.query_type();
    let s = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(q.clone());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        resp.set_edns(edns);
    }
    let mut st = s;
    st.queries += 1;
    if tcp {
        st.tcp_queries += 1;
    }
    if st.drop.iter().any(|z| within(&key, z)) {
        return None;
    }
    if st.servfail.iter().any(|z| within(&key, z)) {
        resp.metadata.response_code = ResponseCode::ServFail;
    } else {
        let type_name = qtype.to_string();
        let mut owner = q.name().clone();
        let mut owner_key = key.clone();
        for _ in 0..8 {
            let matching: Vec<&Rec> = st
                .records
                .iter()
                .filter(|r| lower(&r.name) == owner_key && r.rtype == type_name)
                .collect();
            for rec in &matching {
                if let Some(data) = rdata(rec) {
                    resp.add_answer(Record::from_rdata(owner.clone(), st.ttl, data));
                }
            }
            if !matching.is_empty() || type_name == "CNAME" {
                break;
            }
            let Some(cname) = st
                .records
                .iter()
                .find(|r| lower(&r.name) == owner_key && r.rtype == "CNAME")
            else {
                break;
            };
            let Some(data) = rdata(cname) else { break };
            resp.add_answer(Record::from_rdata(owner.clone(), st.ttl, data));
            owner_key = lower(&cname.value);
            owner = Name::from_ascii(format!("{owner_key}.")).ok()?;
        }
        if resp.answers.is_empty() && st.timeout.contains(&key) {
            return None;
        }
        if resp.answers.is_empty() {
            let exists = st.records.iter().any(|r| within(&lower(&r.name), &key));
            if !exists {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = SOA::new(
                Name::from_ascii("ns.test.").ok()?,
                Name::from_ascii("hostmaster.test.").ok()?,
                1,
                60,
                60,
                60,
                0,
            );
            resp.add_authority(Record::from_rdata(Name::root(), 0, RData::SOA(soa)));
        }
    }
    let udp_limit = st.udp_limit;
    drop(st);
    let bytes = resp.to_vec().ok()?;
    let mut max = usize::from(req.max_payload().max(512));
    if let Some(limit) = udp_limit {
        max = max.min(limit);
    }
    if !tcp && bytes.len() > max {
        let mut t = Message::response(req.metadata.id, req.metadata.op_code);
        t.metadata.truncation = true;
        t.metadata.authoritative = true;
        t.add_query(q);
        return t.to_vec().ok();
    }
    Some(bytes)
}

/// The forged answer of `kind` to `query` (`None` if the query does not parse).
fn forge(query: &[u8], kind: ForgeryKind) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    let q = req.queries.first()?.clone();
    let id = match kind {
        ForgeryKind::WrongId => req.metadata.id.wrapping_add(1),
        _ => req.metadata.id,
    };
    if kind == ForgeryKind::Malformed {
        // A header (this ID, QR set, NOERROR, one question, one answer) and then three bytes
        // where the question should be.
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0x07, b'f', b'o']);
        return Some(out);
    }
    let mut resp = Message::response(id, req.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = ResponseCode::NXDomain;
    let mut question = q.clone();
    if kind == ForgeryKind::OtherName {
        let other = Name::from_ascii(format!("forged.{}", q.name())).ok()?;
        question.set_name(other);
    }
    resp.add_query(question);
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        resp.set_edns(edns);
    }
    resp.to_vec().ok()
}
