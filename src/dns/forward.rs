//! Forwarding of names outside every zone signpost serves, for allowed clients only.
//!
//! The query's own bytes go to an upstream under a fresh random ID; the upstream's reply is
//! checked (ID, QR, same question) and relayed as it came, with the client's ID put back and
//! RA set (signpost offers recursion to this client): the RCODE, the TTLs, the sections and
//! the TC bit are the upstream's. A UDP client is forwarded over UDP (so a
//! truncated reply reaches it truncated and it retries over TCP, as with any resolver), a TCP
//! client over TCP. Each try waits `timeout`, then the next upstream is tried; after
//! `attempts` tries the client gets SERVFAIL, never silence.
//!
//! Why not hickory-resolver: a resolver re-synthesises answers (its cache rewrites TTLs, an
//! NXDOMAIN becomes an error value, a truncated reply is retried internally), which is the
//! opposite of relaying faithfully. The relay is a few lines over tokio sockets (the query
//! reaching this point was read by `query`), and `resolv-conf` reads resolv.conf.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::names::{self, MAX_NAME};
use super::wire::{self, HEADER_LEN, QR, RA};
use crate::config::{Config, Upstream};

/// Most forwarded queries in flight at once; past it, clients get SERVFAIL at once rather
/// than queueing without bound.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    allow: Vec<IpNet>,
    timeout: Duration,
    attempts: usize,
    /// Round-robin start over upstreams, so load spreads and a dead first upstream is not
    /// always tried first.
    next: AtomicUsize,
    /// Query IDs: a keyed hash (random per process) of a counter, unpredictable to a spoofer.
    ids: RandomState,
    counter: AtomicU64,
    pub in_flight: Arc<Semaphore>,
}

/// Reads the nameservers of a resolv.conf file.
pub(crate) fn resolv_conf_nameservers(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let conf = resolv_conf::Config::parse(&text)
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    Ok(conf
        .nameservers
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::from(ip), 53))
        .collect())
}

/// Whether `upstream` is signpost itself (one of its DNS addresses): forwarding there loops.
fn is_self(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        l.port() == upstream.port()
            && (l.ip() == upstream.ip() || (l.ip().is_unspecified() && upstream.ip().is_loopback()))
    })
}

impl Forwarder {
    /// The forwarder `config` asks for, `None` when forwarding is off (no upstreams).
    /// `listen` are the DNS addresses actually bound, which are never used as upstreams.
    pub(crate) fn from_config(
        config: &Config,
        listen: &[SocketAddr],
    ) -> Result<Option<Self>, String> {
        let f = &config.dns.forward;
        let mut upstreams = Vec::new();
        for u in &f.upstreams {
            match u {
                Upstream::ResolvConf => {
                    upstreams.extend(resolv_conf_nameservers(&f.resolv_conf)?);
                }
                Upstream::Addr(a) => upstreams.push(*a),
            }
        }
        let before = upstreams.len();
        upstreams.retain(|u| !is_self(*u, listen));
        if upstreams.len() < before {
            tracing::warn!("dns.forward.upstreams: left out signpost's own address");
        }
        upstreams.dedup();
        if upstreams.is_empty() {
            if !f.upstreams.is_empty() {
                return Err("dns.forward.upstreams: no usable upstream (only signpost itself, or an empty resolv.conf)".into());
            }
            return Ok(None);
        }
        let allow = f.allow.iter().map(|n| n.0).collect();
        let timeout = f.timeout;
        Ok(Some(Self {
            upstreams,
            allow,
            timeout,
            attempts: f.attempts as usize,
            next: AtomicUsize::new(0),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }))
    }

    pub(crate) fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Whether `client` may use forwarding (and so sees RA).
    pub(crate) fn allows(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&client))
    }

    fn fresh_id(&self) -> u16 {
        let mut h = self.ids.build_hasher();
        h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        h.finish() as u16
    }

    /// Relays `query` to the upstreams in turn; the reply with the client's ID, or `None`
    /// when every try failed (the caller answers SERVFAIL).
    pub(crate) async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if query.len() < HEADER_LEN || self.upstreams.is_empty() {
            return None;
        }
        let client_id = [query[0], query[1]];
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut q = query.to_vec();
        for attempt in 0..self.attempts {
            let upstream = self.upstreams[(start + attempt) % self.upstreams.len()];
            let id = self.fresh_id().to_be_bytes();
            q[..2].copy_from_slice(&id);
            let exchange = async {
                if tcp {
                    exchange_tcp(upstream, &q).await
                } else {
                    exchange_udp(upstream, &q).await
                }
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(mut reply)) => {
                    reply[..2].copy_from_slice(&client_id);
                    // signpost offers recursion to this client, whatever the upstream said.
                    let flags = wire::flags(&reply) | RA;
                    reply[2..4].copy_from_slice(&flags.to_be_bytes());
                    return Some(reply);
                }
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "forward failed"),
                Err(_) => tracing::debug!(%upstream, "forward timed out"),
            }
        }
        None
    }
}

/// Whether `reply` answers `query`: same ID, QR set, same question (case aside).
fn matches(query: &[u8], reply: &[u8]) -> bool {
    if reply.len() < HEADER_LEN || reply[..2] != query[..2] || wire::flags(reply) & QR == 0 {
        return false;
    }
    let mut key = [0u8; MAX_NAME];
    let Some(qlen) = names::key_of_question(query, &mut key) else {
        return false;
    };
    let end = HEADER_LEN + qlen + 4;
    let (Some(a), Some(b)) = (query.get(HEADER_LEN..end), reply.get(HEADER_LEN..end)) else {
        return false;
    };
    reply[4..6] == [0, 1] && a.eq_ignore_ascii_case(b)
}

async fn exchange_udp(upstream: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(q).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything else on this socket (a late or forged reply) is dropped; the caller's
        // timeout bounds the wait.
        if matches(q, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, q: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(q.len() + 2);
    framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
    framed.extend_from_slice(q);
    s.write_all(&framed).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    if !matches(q, &buf) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "reply does not match the query",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_and_mapped_addresses() {
        let mut c = Config::default();
        c.dns.forward.upstreams = vec![Upstream::parse("127.0.0.9:5353").unwrap()];
        let f = Forwarder::from_config(&c, &[]).unwrap().unwrap();
        assert!(f.allows("127.0.0.1".parse().unwrap()));
        assert!(f.allows("::1".parse().unwrap()));
        assert!(f.allows("::ffff:127.0.0.5".parse().unwrap()));
        assert!(!f.allows("10.0.0.1".parse().unwrap()));
        assert!(!f.allows("::ffff:10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn never_forwards_to_itself() {
        let mut c = Config::default();
        c.dns.forward.upstreams = vec![Upstream::parse("127.0.0.1:53").unwrap()];
        let listen = ["127.0.0.1:53".parse().unwrap()];
        assert!(Forwarder::from_config(&c, &listen).is_err());
        let any = ["0.0.0.0:53".parse().unwrap()];
        assert!(Forwarder::from_config(&c, &any).is_err());
        c.dns.forward.upstreams = vec![
            Upstream::parse("127.0.0.1:53").unwrap(),
            Upstream::parse("127.0.0.2:5353").unwrap(),
        ];
        let f = Forwarder::from_config(&c, &listen).unwrap().unwrap();
        assert_eq!(f.upstreams(), ["127.0.0.2:5353".parse().unwrap()]);
        c.dns.forward.upstreams = vec![];
        assert!(Forwarder::from_config(&c, &listen).unwrap().is_none());
    }

    #[test]
    fn reads_resolv_conf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(
            &p,
            "search service.internal\nnameserver 192.0.2.1\nnameserver ::1\noptions ndots:1\n",
        )
        .unwrap();
        assert_eq!(
            resolv_conf_nameservers(&p).unwrap(),
            vec!["192.0.2.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert!(resolv_conf_nameservers(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn replies_must_match_the_question() {
        let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x00\x00\x01\x00\x01";
        let mut r = q.to_vec();
        r[2] |= 0x80;
        assert!(matches(q, &r));
        r[13] = b'W'; // case aside
        assert!(matches(q, &r));
        let mut other = r.clone();
        other[14] = b'x';
        assert!(!matches(q, &other));
        let mut wrong_id = r.clone();
        wrong_id[1] = 0;
        assert!(!matches(q, &wrong_id));
        assert!(!matches(q, q), "a query is not a reply");
    }
}
