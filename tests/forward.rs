//! Forwarding (CONTRACT §2, last row): names outside every zone go to `dns.forward.upstreams`
//! for clients in `dns.forward.allow`, relayed faithfully (RCODE, TTLs, TC over UDP); RA only
//! for allowed clients; REFUSED otherwise; SERVFAIL, not a hang, when upstreams fail; names
//! signpost is authoritative for are never forwarded. The upstream is a second real signpost
//! serving a zone file.

mod common;

use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use common::TestServer;
use signpost::config::{Network, Upstream};

const UPSTREAM_ZONE: &str = "$ORIGIN example.org.\n$TTL 300\n\
@    IN SOA ns.example.org. hostmaster.example.org. 7 3600 600 86400 120\n\
@    IN NS  ns.example.org.\n\
ns   IN A   192.0.2.53\n\
www  1234 IN A 192.0.2.80\n";

/// An upstream signpost serving example.org (with a 60-address name for truncation), on
/// `listen` (default 127.0.0.1:0).
async fn upstream(listen: Option<&str>) -> TestServer {
    let listen = listen.map(|l| l.parse().unwrap());
    TestServer::start_with(|c| {
        let mut zone = UPSTREAM_ZONE.to_string();
        for i in 0..60 {
            zone.push_str(&format!("big 60 IN A 198.51.100.{}\n", i + 1));
        }
        std::fs::write(c.dns.zones_dir.join("example.org.zone"), zone).unwrap();
        if let Some(l) = listen {
            c.dns.listen = vec![l];
        }
    })
    .await
}

async fn forwarding_to(
    upstreams: Vec<String>,
    tweak: impl FnOnce(&mut signpost::config::Config),
) -> TestServer {
    TestServer::start_with(|c| {
        c.dns.forward.upstreams = upstreams
            .iter()
            .map(|u| Upstream::parse(u).expect("an upstream"))
            .collect();
        c.dns.forward.timeout = Duration::from_millis(300);
        tweak(c);
    })
    .await
}

/// A query with RD set (a stub resolver's query), optionally with EDNS.
fn rd_query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    common::query_with(name, rtype, edns, 0x5151, true)
}

async fn ask(s: &TestServer, name: &str, rtype: RecordType, tcp: bool) -> Message {
    let q = rd_query(name, rtype, None);
    let bytes = if tcp {
        s.tcp_raw(&q).await
    } else {
        s.udp_raw(&q).await
    }
    .expect("a reply");
    let m = Message::from_vec(&bytes).expect("reply parses");
    assert_eq!(m.metadata.id, 0x5151, "the client's ID comes back");
    m
}

fn a_records(m: &Message) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0.to_string(), r.ttl)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_names_are_relayed_faithfully_with_ra() {
    let up = upstream(None).await;
    let s = forwarding_to(vec![up.dns.to_string()], |_| {}).await;
    for tcp in [false, true] {
        let m = ask(&s, "www.example.org.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.recursion_available, "RA for an allowed client");
        assert_eq!(
            a_records(&m),
            vec![("192.0.2.80".into(), 1234)],
            "the upstream's TTL"
        );
        let m = ask(&s, "nope.example.org.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "the upstream's SOA is relayed");
        assert_eq!(m.authorities[0].name.to_ascii(), "example.org.");
        // The question's case comes back as sent to us.
        let m = ask(&s, "WwW.ExAmPlE.oRg.", RecordType::A, tcp).await;
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.ExAmPlE.oRg.");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_names_are_never_forwarded_and_carry_ra() {
    let up = upstream(None).await;
    up.register("web", "w1", json!({"address": "10.9.9.9", "port": 80}))
        .await;
    let s = forwarding_to(vec![up.dns.to_string()], |_| {}).await;
    s.register("api", "a1", json!({"address": "10.1.1.1", "port": 80}))
        .await;
    let m = ask(&s, "web.service.internal.", RecordType::A, false).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "ours, not the upstream's"
    );
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    let m = ask(&s, "api.service.internal.", RecordType::A, false).await;
    assert_eq!(a_records(&m), vec![("10.1.1.1".into(), 5)]);
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_allow_are_refused_without_ra() {
    let up = upstream(None).await;
    let s = forwarding_to(vec![up.dns.to_string()], |c| {
        c.dns.forward.allow = vec![Network::parse("10.0.0.0/8").unwrap()];
    })
    .await;
    for tcp in [false, true] {
        let m = ask(&s, "www.example.org.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);
        assert!(m.answers.is_empty());
    }
    s.register("api", "a1", json!({"address": "10.1.1.1", "port": 80}))
        .await;
    let m = ask(&s, "api.service.internal.", RecordType::A, false).await;
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_recursion_desired_no_forwarding() {
    let up = upstream(None).await;
    let s = forwarding_to(vec![up.dns.to_string()], |_| {}).await;
    let (m, _) = s.udp("www.example.org.", RecordType::A, None).await; // RD clear
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.metadata.recursion_available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_is_relayed_over_udp_and_tcp_gets_everything() {
    let up = upstream(None).await;
    let s = forwarding_to(vec![up.dns.to_string()], |_| {}).await;
    let q = rd_query("big.example.org.", RecordType::A, None);
    let bytes = s.udp_raw(&q).await.unwrap();
    assert!(bytes.len() <= 512);
    let m = Message::from_vec(&bytes).unwrap();
    assert!(m.metadata.truncation, "TC relayed");
    assert!(m.answers.len() < 60);
    let m = ask(&s, "big.example.org.", RecordType::A, true).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    // With EDNS the client's payload size reaches the upstream, which fits all 60.
    let bytes = s
        .udp_raw(&rd_query("big.example.org.", RecordType::A, Some(4096)))
        .await
        .unwrap();
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!((m.metadata.truncation, m.answers.len()), (false, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_upstreams_give_servfail_not_silence() {
    // A UDP socket that never answers, and a TCP port nobody listens on.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let s = forwarding_to(vec![silent_addr.to_string()], |c| {
        c.dns.forward.timeout = Duration::from_millis(200);
        c.dns.forward.attempts = 2;
    })
    .await;
    for tcp in [false, true] {
        let t0 = Instant::now();
        let m = ask(&s, "www.example.org.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.queries.len(), 1, "the question is echoed");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
    }
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_skipped_for_the_next() {
    let up = upstream(None).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = forwarding_to(
        vec![silent.local_addr().unwrap().to_string(), up.dns.to_string()],
        |c| c.dns.forward.attempts = 2,
    )
    .await;
    // Round-robin start: whichever comes first, every query is answered within 2 tries.
    for _ in 0..4 {
        let m = ask(&s, "www.example.org.", RecordType::A, false).await;
        assert_eq!(a_records(&m), vec![("192.0.2.80".into(), 1234)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolv_conf_upstreams() {
    // resolv.conf has no ports: the upstream listens on port 53 of its own loopback address.
    let up = upstream(Some("127.0.0.77:53")).await;
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("resolv.conf");
    std::fs::write(
        &rc,
        "search service.internal\nnameserver 127.0.0.77\noptions ndots:1\n",
    )
    .unwrap();
    let s = forwarding_to(vec!["resolv.conf".into()], |c| {
        c.dns.forward.resolv_conf = rc
    })
    .await;
    let m = ask(&s, "www.example.org.", RecordType::A, false).await;
    assert_eq!(a_records(&m), vec![("192.0.2.80".into(), 1234)]);
    drop(up);
}

/// RFC 7766 pipelining (CONTRACT §2, TCP): on one connection, a query forwarded to an
/// upstream that takes its time does not hold back the local answers sent after it; each
/// reply comes as soon as it is ready, and the slow one still comes (SERVFAIL once the
/// upstream's time is up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_forwarded_query_never_holds_back_a_local_answer_on_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A TCP upstream that accepts and never answers; it lives as long as the test.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = slow.accept().await {
            open.push(c);
        }
    });
    let s = forwarding_to(vec![slow_addr.to_string()], |c| {
        c.dns.forward.timeout = Duration::from_millis(1500);
        c.dns.forward.attempts = 1;
    })
    .await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let mut conn = tokio::net::TcpStream::connect(s.dns).await.unwrap();
    let mut bytes = Vec::new();
    let queries = [
        common::query_with("www.example.org.", RecordType::A, None, 0x0001, true),
        common::query_with("web.service.internal.", RecordType::A, None, 0x0002, true),
        common::query_with("nope.internal.", RecordType::A, None, 0x0003, true),
    ];
    for q in &queries {
        bytes.extend_from_slice(&(q.len() as u16).to_be_bytes());
        bytes.extend_from_slice(q);
    }
    conn.write_all(&bytes).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..queries.len() {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len))
            .await
            .expect("a reply within the bound")
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).await.unwrap();
        replies.push(Message::from_vec(&buf).unwrap());
    }
    let order: Vec<(u16, ResponseCode)> = replies
        .iter()
        .map(|m| (m.metadata.id, m.metadata.response_code))
        .collect();
    assert_eq!(
        order,
        vec![
            (0x0002, ResponseCode::NoError),
            (0x0003, ResponseCode::NXDomain),
            (0x0001, ResponseCode::ServFail),
        ],
        "local answers first, in the order asked; the forwarded one last"
    );
    held.abort();
}

/// Many forwarded queries pipelined on one connection are all answered, more than the
/// per-connection bound on queries being forwarded at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_forwarded_queries_are_all_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream(None).await;
    let s = forwarding_to(vec![up.dns.to_string()], |_| {}).await;
    let mut conn = tokio::net::TcpStream::connect(s.dns).await.unwrap();
    let n: u16 = 100;
    let mut bytes = Vec::new();
    for id in 0..n {
        let q = common::query_with("www.example.org.", RecordType::A, None, id, true);
        bytes.extend_from_slice(&(q.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&q);
    }
    conn.write_all(&bytes).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut len))
            .await
            .expect("a reply within the bound")
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(a_records(&m), vec![("192.0.2.80".into(), 1234)]);
        ids.push(m.metadata.id);
    }
    ids.sort();
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "every query answered once");
}
