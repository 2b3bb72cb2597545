//! CONTRACT §2 "Routing" over real UDP and TCP sockets to an in-process server: weights decide
//! how often each instance comes first (exact counts over every window of W queries, for
//! 1:99, 3:1:2 and equal weights, through a tag filter, after a health change); locality by
//! the client's source address (clients bound to 127.0.0.2 and 127.0.0.3) and by EDNS Client
//! Subnet (`dig +subnet`, and hand-built options) with the reply's scope prefix; fail-open on
//! and off, with its metric; named ports as SRV with glue, and in the instance JSON.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::TestServer;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;
use signpost::config::{LocalityConfig, Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A record's data as text (A/AAAA address; SRV `priority weight port target`).
fn data(r: &hickory_proto::rr::Record) -> String {
    match &r.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::SRV(s) => format!(
            "{} {} {} {}",
            s.priority,
            s.weight,
            s.port,
            s.target.to_ascii().to_ascii_lowercase()
        ),
        other => format!("{other:?}"),
    }
}

/// A query for `name`/`rtype` with EDNS (payload 1232) and, when given, a Client Subnet.
fn query(name: &str, rtype: RecordType, subnet: Option<(&str, u8)>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x7171;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some((addr, source)) = subnet {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().unwrap(),
            source,
            0,
        )));
    }
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// One exchange from a socket bound to `from`, over UDP or TCP; the parsed reply.
async fn ask_from(s: &TestServer, from: &str, wire: &[u8], tcp: bool) -> Message {
    let ip: IpAddr = from.parse().unwrap();
    let bytes = if tcp {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((ip, 0).into()).unwrap();
        let mut c = sock.connect(s.dns).await.unwrap();
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        c.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut len))
            .await
            .expect("a TCP reply within 2 s")
            .unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut buf).await.unwrap();
        buf
    } else {
        let sock = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        sock.send_to(wire, s.dns).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
            .await
            .expect("a UDP reply within 2 s")
            .unwrap();
        buf.truncate(n);
        buf
    };
    Message::from_vec(&bytes).expect("the reply parses")
}

/// The first answers of `n` identical queries from `from`.
async fn firsts(
    s: &TestServer,
    from: &str,
    name: &str,
    rtype: RecordType,
    n: usize,
    tcp: bool,
) -> Vec<String> {
    let wire = query(name, rtype, None);
    let mut out = Vec::new();
    for _ in 0..n {
        let m = ask_from(s, from, &wire, tcp).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name}: {m}"
        );
        assert!(!m.metadata.truncation, "{name}: TC");
        out.push(data(&m.answers[0]));
    }
    out
}

/// Every window of W consecutive firsts (W the sum of `want`'s counts) holds each exactly
/// its count: smooth weighted round-robin, not only over aligned rounds.
fn assert_windows(firsts: &[String], want: &[(&str, usize)], what: &str) {
    let w: usize = want.iter().map(|(_, n)| n).sum();
    let want: BTreeMap<&str, usize> = want.iter().copied().collect();
    assert!(
        firsts.len() >= w,
        "{what}: {} queries for W = {w}",
        firsts.len()
    );
    for start in 0..=firsts.len() - w {
        let mut got: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &firsts[start..start + w] {
            *got.entry(f.as_str()).or_default() += 1;
        }
        assert_eq!(got, want, "{what}: the window from query {start}");
    }
}

// ---------------------------------------------------------------------------------------------
// weights

#[tokio::test]
async fn weights_decide_how_often_each_instance_comes_first() {
    let s = TestServer::start().await;
    s.register(
        "shop",
        "stable",
        json!({"address": "10.0.0.1", "port": 80, "weight": 99}),
    )
    .await;
    s.register(
        "shop",
        "canary",
        json!({"address": "10.0.0.2", "port": 80, "weight": 1, "tags": ["canary"]}),
    )
    .await;
    for (id, w, tags) in [
        ("m1", 3, json!(["blue"])),
        ("m2", 1, json!(["blue"])),
        ("m3", 2, json!(["blue"])),
        ("m4", 4, json!([])),
    ] {
        s.register(
            "mix",
            id,
            json!({"address": format!("10.0.1.{}", &id[1..]), "port": 8000, "weight": w,
                   "tags": tags, "check": {"ttl": "60s"}}),
        )
        .await;
        s.report("mix", id, "passing").await;
    }
    for i in 1..=3 {
        s.register(
            "even",
            &format!("e{i}"),
            json!({"address": format!("10.0.2.{i}"), "port": 80, "weight": 7}),
        )
        .await;
    }
    let srv = |id: &str, w: u16, svc: &str, port: u16| {
        format!("0 {w} {port} {id}.{svc}.instance.internal.")
    };
    for tcp in [false, true] {
        let via = if tcp { "TCP" } else { "UDP" };
        let f = firsts(
            &s,
            "127.0.0.1",
            "shop.service.internal.",
            RecordType::A,
            150,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[("10.0.0.1", 99), ("10.0.0.2", 1)],
            &format!("1:99 A {via}"),
        );
        let f = firsts(
            &s,
            "127.0.0.1",
            "shop.service.internal.",
            RecordType::SRV,
            100,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[
                (&srv("stable", 99, "shop", 80), 99),
                (&srv("canary", 1, "shop", 80), 1),
            ],
            &format!("1:99 SRV {via}"),
        );
        let f = firsts(
            &s,
            "127.0.0.1",
            "blue.mix.service.internal.",
            RecordType::A,
            12,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[("10.0.1.1", 3), ("10.0.1.2", 1), ("10.0.1.3", 2)],
            &format!("3:1:2 through a tag filter, A {via}"),
        );
        let f = firsts(
            &s,
            "127.0.0.1",
            "_mix._blue.service.internal.",
            RecordType::SRV,
            12,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[
                (&srv("m1", 3, "mix", 8000), 3),
                (&srv("m2", 1, "mix", 8000), 1),
                (&srv("m3", 2, "mix", 8000), 2),
            ],
            &format!("3:1:2 through a tag filter, SRV {via}"),
        );
        let f = firsts(
            &s,
            "127.0.0.1",
            "even.service.internal.",
            RecordType::A,
            6,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[("10.0.2.1", 1), ("10.0.2.2", 1), ("10.0.2.3", 1)],
            &format!("equal weights {via}"),
        );
    }
    // A health change: m1 turns critical; W is now 1 + 2 (blue) and 1 + 2 + 4.
    s.report("mix", "m1", "critical").await;
    for tcp in [false, true] {
        let f = firsts(
            &s,
            "127.0.0.1",
            "blue.mix.service.internal.",
            RecordType::A,
            6,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[("10.0.1.2", 1), ("10.0.1.3", 2)],
            "after m1 failed, blue",
        );
        let f = firsts(
            &s,
            "127.0.0.1",
            "mix.service.internal.",
            RecordType::A,
            14,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[("10.0.1.2", 1), ("10.0.1.3", 2), ("10.0.1.4", 4)],
            "after m1 failed, all",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// locality

fn zone(networks: &[&str], name: &str) -> LocalityConfig {
    LocalityConfig {
        networks: networks.iter().filter_map(|n| Network::parse(n)).collect(),
        zone: name.into(),
    }
}

/// A server with zones a (127.0.0.2), b (127.0.0.3) and c (10.9.0.0/16), and `geo` with two
/// instances in a, one in b, one in none.
async fn geo_server() -> TestServer {
    let s = TestServer::start_with(|c| {
        c.dns.locality = vec![
            zone(&["127.0.0.2/32"], "a"),
            zone(&["127.0.0.3/32"], "b"),
            zone(&["10.9.0.0/16"], "c"),
        ];
    })
    .await;
    for (id, addr, z) in [
        ("g1", "10.0.3.1", Some("a")),
        ("g2", "10.0.3.2", Some("a")),
        ("g3", "10.0.3.3", Some("b")),
        ("g4", "10.0.3.4", None),
        ("g5", "10.0.3.5", Some("c")),
    ] {
        let meta = match z {
            Some(z) => json!({"zone": z}),
            None => json!({}),
        };
        s.register(
            "geo",
            id,
            json!({"address": addr, "port": 80, "meta": meta}),
        )
        .await;
    }
    s
}

#[tokio::test]
async fn locality_by_the_clients_source_address() {
    let s = geo_server().await;
    for tcp in [false, true] {
        // From 127.0.0.2 (zone a): g1 and g2 first, rotating between them, then the others.
        let wire = query("geo.service.internal.", RecordType::A, None);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let m = ask_from(&s, "127.0.0.2", &wire, tcp).await;
            let order: Vec<String> = m.answers.iter().map(data).collect();
            assert_eq!(order.len(), 5, "{order:?}");
            let mut head = order[..2].to_vec();
            head.sort();
            assert_eq!(head, ["10.0.3.1", "10.0.3.2"], "zone a first: {order:?}");
            seen.push(order[0].clone());
        }
        assert_windows(&seen, &[("10.0.3.1", 1), ("10.0.3.2", 1)], "zone a rotates");
        // From 127.0.0.3 (zone b): g3 first, every time; SRV alike.
        let f = firsts(
            &s,
            "127.0.0.3",
            "geo.service.internal.",
            RecordType::A,
            3,
            tcp,
        )
        .await;
        assert_eq!(f, ["10.0.3.3"; 3]);
        let f = firsts(
            &s,
            "127.0.0.3",
            "geo.service.internal.",
            RecordType::SRV,
            2,
            tcp,
        )
        .await;
        assert_eq!(f, ["0 1 80 g3.geo.instance.internal."; 2]);
        // From 127.0.0.1 (no zone): the ordinary rotation over all five.
        let f = firsts(
            &s,
            "127.0.0.1",
            "geo.service.internal.",
            RecordType::A,
            10,
            tcp,
        )
        .await;
        assert_windows(
            &f,
            &[
                ("10.0.3.1", 1),
                ("10.0.3.2", 1),
                ("10.0.3.3", 1),
                ("10.0.3.4", 1),
                ("10.0.3.5", 1),
            ],
            "no zone: plain rotation",
        );
    }
}

/// The reply's Client Subnet: (address, source, scope).
fn subnet_of(m: &Message) -> Option<(IpAddr, u8, u8)> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

#[tokio::test]
async fn locality_by_client_subnet_with_its_scope() {
    let s = geo_server().await;
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    for tcp in [false, true] {
        // A resolver at 127.0.0.3 (zone b) asks for a client in 10.9.4.0/24 (zone c): the
        // subnet decides, and the answer holds for the zone's whole /16.
        let m = ask_from(
            &s,
            "127.0.0.3",
            &query(
                "geo.service.internal.",
                RecordType::A,
                Some(("10.9.4.0", 24)),
            ),
            tcp,
        )
        .await;
        assert_eq!(data(&m.answers[0]), "10.0.3.5");
        assert_eq!(subnet_of(&m), Some((ip("10.9.4.0"), 24, 16)));
        // Outside every zone: the ordinary answer, for as far as no zone's network reaches
        // (192.0.2.0 shares no leading bit with 10.9.0.0 or 127.0.0.x).
        let m = ask_from(
            &s,
            "127.0.0.2",
            &query(
                "geo.service.internal.",
                RecordType::A,
                Some(("192.0.2.0", 24)),
            ),
            tcp,
        )
        .await;
        assert_eq!(m.answers.len(), 5);
        assert_eq!(subnet_of(&m), Some((ip("192.0.2.0"), 24, 1)));
        // An instance name does not depend on the address: scope 0.
        let m = ask_from(
            &s,
            "127.0.0.1",
            &query(
                "g1.geo.instance.internal.",
                RecordType::A,
                Some(("10.9.4.0", 24)),
            ),
            tcp,
        )
        .await;
        assert_eq!(subnet_of(&m), Some((ip("10.9.4.0"), 24, 0)));
    }
    // A malformed subnet (a bit set past its prefix) is FORMERR, with an OPT.
    let mut bad = query(
        "geo.service.internal.",
        RecordType::A,
        Some(("10.9.4.0", 23)),
    );
    let n = bad.len();
    bad[n - 1] |= 1;
    let reply = s.udp_raw(&bad).await.expect("a reply");
    assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
    assert_eq!(&reply[10..12], &[0, 1], "with an OPT");

    // dig's own option, as a user would check it.
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &s.dns.port().to_string(),
            "+subnet=10.9.7.0/24",
            "+tries=1",
            "+time=2",
            "geo.service.internal.",
            "A",
        ])
        .output()
        .expect("dig runs (scripts/test installs dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CLIENT-SUBNET: 10.9.7.0/24/16"),
        "dig shows the scope: {text}"
    );
    let first_answer = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_answer.ends_with("10.0.3.5"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// fail-open

/// `down`: two instances whose TTL checks have not passed (critical) and one in maintenance.
async fn register_down(s: &TestServer, fail_open: bool) {
    for (id, addr) in [("d1", "10.0.4.1"), ("d2", "10.0.4.2"), ("d3", "10.0.4.3")] {
        s.register(
            "down",
            id,
            json!({"address": addr, "port": 80, "check": {"ttl": "60s"},
                   "fail_open": fail_open && id == "d1"}),
        )
        .await;
    }
    let r = s
        .client
        .put(s.url("/v1/services/down/instances/d3/maintenance"))
        .json(&json!({"enabled": true, "reason": "drained"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn addresses(s: &TestServer, name: &str) -> (ResponseCode, Vec<String>) {
    let (m, _) = s.udp(name, RecordType::A, Some(1232)).await;
    let mut v: Vec<String> = m.answers.iter().map(data).collect();
    v.sort();
    (m.metadata.response_code, v)
}

async fn metric(s: &TestServer, name: &str) -> String {
    let body = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .to_string()
}

#[tokio::test]
async fn fail_open_off_by_default_then_by_registration_and_by_config() {
    // Off: NXDOMAIN once nothing is in service.
    let s = TestServer::start().await;
    register_down(&s, false).await;
    assert_eq!(
        addresses(&s, "down.service.internal.").await.0,
        ResponseCode::NXDomain
    );
    assert_eq!(metric(&s, "signpost_dns_fail_open_total").await, "0");
    // A registration's fail_open: every instance not in maintenance, in the very next answer.
    register_down(&s, true).await;
    let want = (
        ResponseCode::NoError,
        vec!["10.0.4.1".to_string(), "10.0.4.2".to_string()],
    );
    assert_eq!(addresses(&s, "down.service.internal.").await, want);
    let (m, _) = s
        .udp("_down._tcp.service.internal.", RecordType::SRV, Some(1232))
        .await;
    let glue = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .count();
    assert_eq!((m.answers.len(), glue), (2, 2), "SRV with glue");
    assert_eq!(metric(&s, "signpost_dns_fail_open_total").await, "1");
    assert_eq!(metric(&s, "signpost_dns_fail_open_services").await, "1");
    // One instance passes: it alone, and the episode ends.
    s.report("down", "d2", "passing").await;
    assert_eq!(
        addresses(&s, "down.service.internal.").await,
        (ResponseCode::NoError, vec!["10.0.4.2".to_string()])
    );
    assert_eq!(metric(&s, "signpost_dns_fail_open_services").await, "0");
    // The stored instance shows it.
    let v: serde_json::Value = s
        .client
        .get(s.url("/v1/services/down/instances/d1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["fail_open"], true);
    drop(s);

    // dns.fail_open for every service.
    let s = TestServer::start_with(|c| c.dns.fail_open = true).await;
    register_down(&s, false).await;
    assert_eq!(addresses(&s, "down.service.internal.").await, want);
}

// ---------------------------------------------------------------------------------------------
// named ports

#[tokio::test]
async fn named_ports_are_served_as_srv_with_glue() {
    let s = TestServer::start().await;
    s.register(
        "api",
        "a1",
        json!({"address": "10.0.5.1", "port": 8080, "ports": {"grpc": 9090, "Admin": 8081}}),
    )
    .await;
    s.register(
        "api",
        "a2",
        json!({"address": "fd00::5:2", "port": 8080, "ports": {"grpc": 9091}}),
    )
    .await;
    s.register(
        "api",
        "a3",
        json!({"address": "10.0.5.3", "port": 8080, "ports": {"grpc": 9092},
               "check": {"ttl": "60s"}}),
    )
    .await;
    let (m, _) = s
        .udp(
            "_grpc._tcp.api.service.internal.",
            RecordType::SRV,
            Some(1232),
        )
        .await;
    let t = s
        .tcp("_grpc._tcp.api.service.internal.", RecordType::SRV)
        .await;
    for m in [&m, &t] {
        assert!(m.metadata.authoritative);
        let mut got: Vec<String> = m.answers.iter().map(data).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "0 1 9090 a1.api.instance.internal.",
                "0 1 9091 a2.api.instance.internal.",
            ],
            "a3 is not in service"
        );
        let mut glue: Vec<String> = m
            .additionals
            .iter()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .map(|r| format!("{} {}", r.name.to_ascii(), data(r)))
            .collect();
        glue.sort();
        assert_eq!(
            glue,
            [
                "a1.api.instance.internal. 10.0.5.1",
                "a2.api.instance.internal. fd00::5:2",
            ]
        );
    }
    // Rotating: each first once in two.
    let f = firsts(
        &s,
        "127.0.0.1",
        "_grpc._tcp.api.service.internal.",
        RecordType::SRV,
        4,
        false,
    )
    .await;
    assert_windows(
        &f,
        &[
            ("0 1 9090 a1.api.instance.internal.", 1),
            ("0 1 9091 a2.api.instance.internal.", 1),
        ],
        "named port rotation",
    );
    let (m, _) = s
        .udp("_admin._tcp.api.service.internal.", RecordType::SRV, None)
        .await;
    assert_eq!(
        m.answers.iter().map(data).collect::<Vec<_>>(),
        ["0 1 8081 a1.api.instance.internal."]
    );
    // In the instance JSON, names lowercased.
    let v: serde_json::Value = s
        .client
        .get(s.url("/v1/services/api/instances/a1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ports"], json!({"admin": 8081, "grpc": 9090}));
    // A bad port name or number: 400 naming it, nothing stored.
    for (body, field) in [
        (
            json!({"address": "10.0.5.9", "port": 80, "ports": {"g_rpc": 1}}),
            "ports.g_rpc",
        ),
        (
            json!({"address": "10.0.5.9", "port": 80, "ports": {"grpc": 0}}),
            "ports.grpc",
        ),
        (
            json!({"address": "10.0.5.9", "port": 80, "ports": {"grpc": 70000}}),
            "ports",
        ),
    ] {
        let r = s
            .client
            .put(s.url("/v1/services/api/instances/a9"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"].as_str().unwrap().contains(field), "{e}");
    }
    assert_eq!(s.deregister("api", "a9").await, 404);
}
