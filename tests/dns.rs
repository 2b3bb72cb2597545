//! The DNS interface against CONTRACT.md §2, over real UDP and TCP sockets to an in-process
//! server: every row of the names table (service A/AAAA/SRV with glue, tag filters, the
//! RFC 2782 `_tcp`/`_udp`/tag forms, instance A/AAAA/TXT whatever the health, PTR of v4 and v6
//! addresses, static zone files, the apex SOA/NS, REFUSED outside every zone) and the rules
//! every answer keeps: health filtering (warning only when configured), maintenance,
//! round-robin rotation of A and SRV, TTLs (default, per service, configured), NXDOMAIN vs
//! NODATA with one SOA carrying `dns.negative_ttl`, UDP size limits with TC and EDNS(0),
//! `dns.max_answers`, 0x20 case echo, the AA/RA flags, FORMERR/NOTIMP/BADVERS/REFUSED for
//! what is malformed or unsupported, and registry changes visible in the very next answer;
//! UDP response-rate limiting (`dns.rate_limit`: the burst, slips, other prefixes, exempt
//! networks, off) and the per-client cap on TCP connections.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use common::TestServer;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// helpers

/// A name as lowercase text with its trailing dot.
fn lower(n: &Name) -> String {
    let mut s = n.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The data of each record as text; a TXT record yields one entry per string.
fn values(records: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    for r in records {
        match &r.data {
            RData::A(a) => out.push(a.0.to_string()),
            RData::AAAA(a) => out.push(a.0.to_string()),
            RData::SRV(s) => out.push(format!(
                "{} {} {} {}",
                s.priority,
                s.weight,
                s.port,
                lower(&s.target)
            )),
            RData::PTR(p) => out.push(lower(&p.0)),
            RData::NS(n) => out.push(lower(&n.0)),
            RData::MX(m) => out.push(format!("{} {}", m.preference, lower(&m.exchange))),
            RData::TXT(t) => out.extend(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
            ),
            RData::SOA(s) => out.push(format!(
                "{} {} {} {} {} {} {}",
                lower(&s.mname),
                lower(&s.rname),
                s.serial,
                s.refresh,
                s.retry,
                s.expire,
                s.minimum
            )),
            other => out.push(format!("{other:?}")),
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    sorted(v.iter().map(|s| s.to_string()).collect())
}

/// The first answer's data, for rotation checks.
fn first(m: &Message) -> String {
    values(&m.answers[..1]).remove(0)
}

/// An authoritative, complete, positive answer: NOERROR, AA, no TC, no RA.
fn assert_positive(m: &Message, what: &str) {
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "{what}: {m}"
    );
    assert!(m.metadata.authoritative, "{what}: AA");
    assert!(!m.metadata.truncation, "{what}: TC");
    assert!(!m.metadata.recursion_available, "{what}: RA");
}

/// A negative answer in `internal.`: `rcode`, AA, no answers, exactly one SOA of `internal.`
/// in authority whose TTL and minimum are `negative_ttl`.
fn assert_negative(m: &Message, rcode: ResponseCode, negative_ttl: u32, what: &str) {
    assert_negative_in(m, rcode, "internal.", what);
    let soa = &m.authorities[0];
    assert_eq!(soa.ttl, negative_ttl, "{what}: SOA TTL");
    let RData::SOA(s) = &soa.data else {
        unreachable!()
    };
    assert_eq!(s.minimum, negative_ttl, "{what}: SOA minimum");
}

/// A negative answer: `rcode`, AA, no RA, no answers, exactly one SOA owned by `apex`.
fn assert_negative_in(m: &Message, rcode: ResponseCode, apex: &str, what: &str) {
    assert_eq!(m.metadata.response_code, rcode, "{what}: {m}");
    assert!(m.metadata.authoritative, "{what}: AA");
    assert!(!m.metadata.recursion_available, "{what}: RA");
    assert!(!m.metadata.truncation, "{what}: TC");
    assert!(m.answers.is_empty(), "{what}: answers {:?}", m.answers);
    assert_eq!(
        m.authorities.len(),
        1,
        "{what}: authority {:?}",
        m.authorities
    );
    let soa = &m.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA, "{what}");
    assert_eq!(lower(&soa.name), apex, "{what}: SOA owner");
}

/// REFUSED, no AA, no RA, nothing in any section.
fn assert_refused(m: &Message, what: &str) {
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::Refused,
        "{what}: {m}"
    );
    assert!(!m.metadata.authoritative, "{what}: AA");
    assert!(!m.metadata.recursion_available, "{what}: RA");
    assert!(
        m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty(),
        "{what}"
    );
}

/// Asks over UDP (EDNS 4096, so nothing is truncated) and over TCP; both must be a positive
/// answer whose records are all owned by `name`, of type `rtype`, with TTL `ttl`; returns the
/// sorted data (checked equal on both transports).
async fn ask(s: &TestServer, name: &str, rtype: RecordType, ttl: u32) -> Vec<String> {
    let (u, _) = s.udp(name, rtype, Some(4096)).await;
    let t = s.tcp(name, rtype).await;
    let mut got = Vec::new();
    for (m, via) in [(&u, "udp"), (&t, "tcp")] {
        let what = format!("{name} {rtype} over {via}");
        assert_positive(m, &what);
        for r in &m.answers {
            assert_eq!(lower(&r.name), name.to_ascii_lowercase(), "{what}: owner");
            assert_eq!(r.record_type(), rtype, "{what}: type");
            assert_eq!(r.ttl, ttl, "{what}: TTL of {r}");
        }
        got.push(sorted(values(&m.answers)));
    }
    assert_eq!(got[0], got[1], "{name} {rtype}: UDP and TCP differ");
    got.remove(0)
}

/// The addresses a service name answers with (A over UDP with EDNS), sorted; empty on
/// NXDOMAIN/NODATA (checked to be a proper negative answer).
async fn addresses(s: &TestServer, name: &str) -> Vec<String> {
    let (m, _) = s.udp(name, RecordType::A, Some(4096)).await;
    if m.answers.is_empty() {
        assert!(m.metadata.authoritative, "{name}: AA on {m}");
        assert_eq!(m.authorities.len(), 1, "{name}: SOA in {m}");
    } else {
        assert_positive(&m, name);
    }
    sorted(values(&m.answers))
}

/// The reverse name of an address.
fn reverse(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::new();
            for b in v.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

/// A query with an OPT record advertising `payload` and EDNS `version`, patched into the wire
/// bytes (hickory's encoder raises payloads below 512 to 512).
fn query_edns(name: &str, rtype: RecordType, payload: u16, version: u8) -> Vec<u8> {
    let mut wire = common::query(name, rtype, Some(512));
    let n = wire.len();
    // The OPT is last: root, type, CLASS = payload, TTL = ext-rcode, version, flags; RDLEN 0.
    assert_eq!(&wire[n - 11..n - 8], &[0, 0, 41], "OPT at the end");
    wire[n - 8..n - 6].copy_from_slice(&payload.to_be_bytes());
    wire[n - 5] = version;
    wire
}

/// Sends `wire` over UDP; the parsed reply and its size.
async fn udp_wire(s: &TestServer, wire: &[u8]) -> (Message, usize) {
    let reply = s.udp_raw(wire).await.expect("a UDP reply");
    (
        Message::from_vec(&reply).expect("reply parses"),
        reply.len(),
    )
}

/// RCODE (low 4 bits) of a raw reply.
fn rcode_of(reply: &[u8]) -> u8 {
    reply[3] & 0x0f
}

async fn set_maintenance(s: &TestServer, service: &str, id: &str, enabled: bool) {
    let r = s
        .client
        .put(s.url(&format!(
            "/v1/services/{service}/instances/{id}/maintenance"
        )))
        .json(&json!({"enabled": enabled, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "maintenance {service}/{id}");
}

/// The `web` service of the names-table tests: two IPv4 instances and one IPv6 one, with tags,
/// meta, weights and priorities; plus `db-1`, critical behind a TTL check.
async fn names_fixture(s: &TestServer) {
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 8080, "tags": ["v2", "canary"],
               "meta": {"version": "2.1.0", "zone": "a"}, "weight": 10, "priority": 1}),
    )
    .await;
    s.register(
        "web",
        "web-2",
        json!({"address": "10.0.0.2", "port": 8081, "tags": ["v1"], "weight": 20}),
    )
    .await;
    s.register(
        "web",
        "web-3",
        json!({"address": "fd00::3", "port": 8082, "tags": ["v2"]}),
    )
    .await;
    s.register(
        "db",
        "db-1",
        json!({"address": "10.0.9.1", "port": 5432, "meta": {"role": "primary"},
               "check": {"ttl": "60s"}}),
    )
    .await;
}

const SRV1: &str = "1 10 8080 web-1.web.instance.internal.";
const SRV2: &str = "0 20 8081 web-2.web.instance.internal.";
const SRV3: &str = "0 1 8082 web-3.web.instance.internal.";

// ---------------------------------------------------------------------------------------------
// the names table

#[tokio::test]
async fn names_table_rows() {
    use RecordType::{A, AAAA, PTR, SRV, TXT};
    let s = TestServer::start().await;
    names_fixture(&s).await;
    let ptr4 = reverse("10.0.0.1".parse().unwrap());
    let ptr6 = reverse("fd00::3".parse().unwrap());
    let ptr_db = reverse("10.0.9.1".parse().unwrap());
    let rows: Vec<(&str, RecordType, Vec<&str>)> = vec![
        // <service>.service.D: only v4 in A, only v6 in AAAA
        ("web.service.internal.", A, vec!["10.0.0.1", "10.0.0.2"]),
        ("web.service.internal.", AAAA, vec!["fd00::3"]),
        ("web.service.internal.", SRV, vec![SRV1, SRV2, SRV3]),
        // <tag>.<service>.service.D
        ("v2.web.service.internal.", A, vec!["10.0.0.1"]),
        ("v2.web.service.internal.", AAAA, vec!["fd00::3"]),
        ("v2.web.service.internal.", SRV, vec![SRV1, SRV3]),
        ("v1.web.service.internal.", A, vec!["10.0.0.2"]),
        ("v1.web.service.internal.", SRV, vec![SRV2]),
        ("canary.web.service.internal.", SRV, vec![SRV1]),
        // RFC 2782 forms
        ("_web._tcp.service.internal.", SRV, vec![SRV1, SRV2, SRV3]),
        ("_web._udp.service.internal.", SRV, vec![SRV1, SRV2, SRV3]),
        ("_web._v2.service.internal.", SRV, vec![SRV1, SRV3]),
        ("_web._v1.service.internal.", SRV, vec![SRV2]),
        ("_web._canary.service.internal.", SRV, vec![SRV1]),
        // <id>.<service>.instance.D, whatever the health (db-1 is critical)
        ("web-1.web.instance.internal.", A, vec!["10.0.0.1"]),
        (
            "web-1.web.instance.internal.",
            TXT,
            vec!["version=2.1.0", "zone=a"],
        ),
        ("web-3.web.instance.internal.", AAAA, vec!["fd00::3"]),
        ("db-1.db.instance.internal.", A, vec!["10.0.9.1"]),
        ("db-1.db.instance.internal.", TXT, vec!["role=primary"]),
        // reverse names of registered addresses
        (&ptr4, PTR, vec!["web-1.web.instance.internal."]),
        (&ptr6, PTR, vec!["web-3.web.instance.internal."]),
        (&ptr_db, PTR, vec!["db-1.db.instance.internal."]),
    ];
    for (name, rtype, want) in rows {
        let got = ask(&s, name, rtype, 5).await;
        assert_eq!(got, strs(&want), "{name} {rtype}");
    }
    // The critical instance is in no service answer.
    let (m, _) = s.udp("db.service.internal.", A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "db.service.internal. A");
}

#[tokio::test]
async fn srv_answers_carry_the_targets_addresses_as_glue() {
    let s = TestServer::start().await;
    names_fixture(&s).await;
    let addr: BTreeMap<&str, (&str, RecordType)> = [
        ("web-1.web.instance.internal.", ("10.0.0.1", RecordType::A)),
        ("web-2.web.instance.internal.", ("10.0.0.2", RecordType::A)),
        (
            "web-3.web.instance.internal.",
            ("fd00::3", RecordType::AAAA),
        ),
    ]
    .into_iter()
    .collect();
    for name in [
        "web.service.internal.",
        "v2.web.service.internal.",
        "_web._tcp.service.internal.",
        "_web._udp.service.internal.",
        "_web._v2.service.internal.",
        "_web._v1.service.internal.",
    ] {
        let (u, _) = s.udp(name, RecordType::SRV, Some(1232)).await;
        let t = s.tcp(name, RecordType::SRV).await;
        for (m, via) in [(&u, "udp"), (&t, "tcp")] {
            assert_positive(m, name);
            let targets: BTreeSet<String> = m
                .answers
                .iter()
                .map(|r| match &r.data {
                    RData::SRV(srv) => lower(&srv.target),
                    other => panic!("{name}: not SRV: {other:?}"),
                })
                .collect();
            assert_eq!(targets.len(), m.answers.len(), "{name}: targets distinct");
            let glue: BTreeMap<String, (String, RecordType, u32)> = m
                .additionals
                .iter()
                .map(|r| {
                    (
                        lower(&r.name),
                        (
                            values(std::slice::from_ref(r)).remove(0),
                            r.record_type(),
                            r.ttl,
                        ),
                    )
                })
                .collect();
            assert_eq!(
                glue.len(),
                m.additionals.len(),
                "{name} {via}: one glue per target"
            );
            assert_eq!(
                glue.keys().cloned().collect::<BTreeSet<_>>(),
                targets,
                "{name} {via}: glue owners are the SRV targets"
            );
            for (owner, (a, rtype, ttl)) in &glue {
                let (want, want_type) = addr[owner.as_str()];
                assert_eq!(
                    (a.as_str(), *rtype, *ttl),
                    (want, want_type, 5),
                    "{name} {via}: glue of {owner}"
                );
            }
        }
    }
}

#[tokio::test]
async fn instance_names_answer_whatever_the_health_and_nodata_for_missing_types() {
    let s = TestServer::start().await;
    names_fixture(&s).await;
    // db-1 is critical: its service name is NXDOMAIN, its instance name answers.
    assert_eq!(
        addresses(&s, "db.service.internal.").await,
        Vec::<String>::new()
    );
    assert_eq!(
        ask(&s, "db-1.db.instance.internal.", RecordType::A, 5).await,
        strs(&["10.0.9.1"])
    );
    s.report("db", "db-1", "critical").await;
    assert_eq!(
        ask(&s, "db-1.db.instance.internal.", RecordType::A, 5).await,
        strs(&["10.0.9.1"])
    );
    // In maintenance too.
    set_maintenance(&s, "db", "db-1", true).await;
    assert_eq!(
        ask(&s, "db-1.db.instance.internal.", RecordType::TXT, 5).await,
        strs(&["role=primary"])
    );
    // An IPv4 instance has no AAAA; an instance without meta has no TXT: NODATA.
    let (m, _) = s
        .udp("web-1.web.instance.internal.", RecordType::AAAA, None)
        .await;
    assert_negative(&m, ResponseCode::NoError, 5, "web-1 AAAA");
    let (m, _) = s
        .udp("web-2.web.instance.internal.", RecordType::TXT, None)
        .await;
    assert_negative(&m, ResponseCode::NoError, 5, "web-2 TXT");
    // An unknown instance is NXDOMAIN.
    let (m, _) = s
        .udp("web-9.web.instance.internal.", RecordType::A, None)
        .await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "web-9");
}

#[tokio::test]
async fn names_match_case_insensitively() {
    let s = TestServer::start().await;
    names_fixture(&s).await;
    let rows: Vec<(&str, RecordType, Vec<&str>)> = vec![
        (
            "WEB.SERVICE.INTERNAL.",
            RecordType::A,
            vec!["10.0.0.1", "10.0.0.2"],
        ),
        (
            "V2.Web.Service.Internal.",
            RecordType::AAAA,
            vec!["fd00::3"],
        ),
        (
            "_WEB._TCP.service.internal.",
            RecordType::SRV,
            vec![SRV1, SRV2, SRV3],
        ),
        ("_Web._V1.Service.Internal.", RecordType::SRV, vec![SRV2]),
        (
            "Web-1.Web.Instance.Internal.",
            RecordType::TXT,
            vec!["version=2.1.0", "zone=a"],
        ),
    ];
    for (name, rtype, want) in rows {
        assert_eq!(ask(&s, name, rtype, 5).await, strs(&want), "{name} {rtype}");
    }
}

#[tokio::test]
async fn static_zone_file_records() {
    let s = TestServer::start_with(|cfg| {
        std::fs::write(
            cfg.dns.zones_dir.join("example.test.zone"),
            "$ORIGIN example.test.\n\
             $TTL 3600\n\
             @     IN SOA ns1.example.test. admin.example.test. 2024010101 7200 900 1209600 300\n\
             @     IN NS  ns1.example.test.\n\
             @     IN MX  10 mail.example.test.\n\
             @     IN TXT \"hello world\" \"second\"\n\
             ns1   IN A   192.0.2.1\n\
             mail  IN A   192.0.2.25\n\
             www 120 IN A 192.0.2.10\n\
             www   IN A   192.0.2.11\n",
        )
        .unwrap();
    })
    .await;
    let soa = "ns1.example.test. admin.example.test. 2024010101 7200 900 1209600 300";
    let rows: Vec<(&str, RecordType, u32, Vec<&str>)> = vec![
        ("example.test.", RecordType::SOA, 3600, vec![soa]),
        (
            "example.test.",
            RecordType::NS,
            3600,
            vec!["ns1.example.test."],
        ),
        (
            "example.test.",
            RecordType::MX,
            3600,
            vec!["10 mail.example.test."],
        ),
        (
            "example.test.",
            RecordType::TXT,
            3600,
            vec!["hello world", "second"],
        ),
        ("ns1.example.test.", RecordType::A, 3600, vec!["192.0.2.1"]),
        (
            "mail.example.test.",
            RecordType::A,
            3600,
            vec!["192.0.2.25"],
        ),
        // A set's TTL is the least of its records' (RFC 2181 §5.2).
        (
            "www.example.test.",
            RecordType::A,
            120,
            vec!["192.0.2.10", "192.0.2.11"],
        ),
        (
            "WWW.Example.Test.",
            RecordType::A,
            120,
            vec!["192.0.2.10", "192.0.2.11"],
        ),
    ];
    for (name, rtype, ttl, want) in rows {
        assert_eq!(
            ask(&s, name, rtype, ttl).await,
            strs(&want),
            "{name} {rtype}"
        );
    }
    // Negative answers inside the static zone carry its own SOA.
    let (m, size) = s.udp("nope.example.test.", RecordType::A, None).await;
    assert_negative_in(
        &m,
        ResponseCode::NXDomain,
        "example.test.",
        "nope.example.test.",
    );
    assert_eq!(values(&m.authorities), vec![soa.to_string()]);
    // The SOA's names point at the apex in the question, as Knot and NSD write them:
    // header 12 + question 23 + owner pointer 2 + type/class/TTL/length 10
    // + `ns1` and a pointer 6 + `admin` and a pointer 8 + the numbers 20 = 81 bytes
    // (105 with both names written in full).
    assert_eq!(size, 81, "negative answer size");
    let (m, _) = s.udp("www.example.test.", RecordType::AAAA, None).await;
    assert_negative_in(&m, ResponseCode::NoError, "example.test.", "www AAAA");
    assert_eq!(values(&m.authorities), vec![soa.to_string()]);
    // The base domain is still served next to it.
    let (m, _) = s.udp("internal.", RecordType::SOA, None).await;
    assert_positive(&m, "internal. SOA");
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn apex_soa_and_ns_of_the_base_domain() {
    let s = TestServer::start().await;
    for apex in ["internal.", "INTERNAL."] {
        let (m, _) = s.udp(apex, RecordType::SOA, None).await;
        assert_positive(&m, "SOA");
        assert_eq!(m.answers.len(), 1, "{m}");
        let soa = &m.answers[0];
        assert_eq!(lower(&soa.name), "internal.");
        let RData::SOA(d) = &soa.data else {
            panic!("not SOA: {soa}")
        };
        assert_eq!(d.minimum, 5, "SOA minimum is dns.negative_ttl");
        let (m, _) = s.udp(apex, RecordType::NS, None).await;
        assert_positive(&m, "NS");
        assert!(!m.answers.is_empty(), "{m}");
        assert!(
            m.answers
                .iter()
                .all(|r| r.record_type() == RecordType::NS && lower(&r.name) == "internal.")
        );
        // No A at the apex: NODATA.
        let (m, _) = s.udp(apex, RecordType::A, None).await;
        assert_negative(&m, ResponseCode::NoError, 5, "internal. A");
    }
}

#[tokio::test]
async fn base_domain_zone_file_adds_static_records_and_keeps_negative_ttl() {
    let s = TestServer::start_with(|cfg| {
        std::fs::copy(
            common::project_zone(),
            cfg.dns.zones_dir.join("internal.zone"),
        )
        .unwrap();
        cfg.dns.negative_ttl = 42;
    })
    .await;
    s.register("web", "web-1", json!({"address": "10.0.0.7", "port": 80}))
        .await;
    assert_eq!(
        ask(&s, "gateway.internal.", RecordType::A, 300).await,
        strs(&["10.0.0.1"])
    );
    assert_eq!(
        ask(&s, "internal.", RecordType::NS, 300).await,
        strs(&["ns.internal."])
    );
    // The file's serial plus the registry index (one registration).
    let soa = ask(&s, "internal.", RecordType::SOA, 300).await;
    assert_eq!(
        soa,
        strs(&["ns.internal. hostmaster.internal. 2026112302 3600 600 86400 42"])
    );
    assert_eq!(
        ask(&s, "web.service.internal.", RecordType::A, 5).await,
        strs(&["10.0.0.7"])
    );
    let (m, _) = s.udp("nope.internal.", RecordType::A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 42, "nope.internal.");
    let (m, _) = s.udp("web.service.internal.", RecordType::AAAA, None).await;
    assert_negative(&m, ResponseCode::NoError, 42, "web AAAA");
}

#[tokio::test]
async fn names_outside_every_zone_are_refused_without_aa() {
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    for name in [
        "example.com.",
        "evilinternal.",
        "web.service.evilinternal.",
        "internal.example.com.",
        "arpa.",
        "9.9.9.9.in-addr.arpa.",
        ".",
    ] {
        for rtype in [RecordType::A, RecordType::PTR, RecordType::SOA] {
            let (m, _) = s.udp(name, rtype, None).await;
            assert_refused(&m, &format!("{name} {rtype} udp"));
            let m = s.tcp(name, rtype).await;
            assert_refused(&m, &format!("{name} {rtype} tcp"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// health and maintenance

#[tokio::test]
async fn only_passing_instances_are_in_service_answers() {
    let s = TestServer::start().await;
    s.register("web", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register(
        "web",
        "b",
        json!({"address": "10.0.0.2", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let name = "web.service.internal.";
    let one = strs(&["10.0.0.1"]);
    let both = strs(&["10.0.0.1", "10.0.0.2"]);
    // A new instance with a check is critical until it first passes.
    assert_eq!(addresses(&s, name).await, one);
    s.report("web", "b", "passing").await;
    assert_eq!(addresses(&s, name).await, both);
    let (m, _) = s.udp(name, RecordType::SRV, Some(1232)).await;
    assert_eq!(m.answers.len(), 2);
    s.report("web", "b", "critical").await;
    assert_eq!(addresses(&s, name).await, one);
    let (m, _) = s.udp(name, RecordType::SRV, Some(1232)).await;
    assert_eq!(
        values(&m.answers),
        vec!["0 1 80 a.web.instance.internal.".to_string()]
    );
    s.report("web", "b", "warning").await;
    assert_eq!(
        addresses(&s, name).await,
        one,
        "warning is left out by default"
    );
    s.report("web", "b", "passing").await;
    assert_eq!(addresses(&s, name).await, both);

    // A service whose only instance is critical has no records at all: NXDOMAIN.
    s.register(
        "solo",
        "x",
        json!({"address": "10.0.1.1", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let (m, _) = s.udp("solo.service.internal.", RecordType::A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "solo critical");
    s.report("solo", "x", "passing").await;
    assert_eq!(
        addresses(&s, "solo.service.internal.").await,
        strs(&["10.0.1.1"])
    );
    s.report("solo", "x", "critical").await;
    let (m, _) = s.udp("solo.service.internal.", RecordType::A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "solo critical again");
}

#[tokio::test]
async fn warning_instances_are_included_when_configured() {
    let s = TestServer::start_with(|cfg| cfg.dns.include_warning = true).await;
    s.register("web", "a", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register(
        "web",
        "b",
        json!({"address": "10.0.0.2", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let name = "web.service.internal.";
    assert_eq!(addresses(&s, name).await, strs(&["10.0.0.1"]));
    s.report("web", "b", "warning").await;
    assert_eq!(addresses(&s, name).await, strs(&["10.0.0.1", "10.0.0.2"]));
    s.report("web", "b", "critical").await;
    assert_eq!(addresses(&s, name).await, strs(&["10.0.0.1"]));
}

#[tokio::test]
async fn maintenance_drains_from_service_answers_at_once() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "a",
        json!({"address": "10.0.0.1", "port": 80, "tags": ["t"]}),
    )
    .await;
    s.register(
        "web",
        "b",
        json!({"address": "10.0.0.2", "port": 81, "tags": ["t"]}),
    )
    .await;
    set_maintenance(&s, "web", "b", true).await;
    assert_eq!(
        addresses(&s, "web.service.internal.").await,
        strs(&["10.0.0.1"])
    );
    assert_eq!(
        addresses(&s, "t.web.service.internal.").await,
        strs(&["10.0.0.1"])
    );
    for name in [
        "web.service.internal.",
        "_web._tcp.service.internal.",
        "_web._t.service.internal.",
    ] {
        let (m, _) = s.udp(name, RecordType::SRV, Some(1232)).await;
        assert_positive(&m, name);
        assert_eq!(
            values(&m.answers),
            vec!["0 1 80 a.web.instance.internal.".to_string()],
            "{name}"
        );
    }
    // The instance name still answers.
    assert_eq!(
        ask(&s, "b.web.instance.internal.", RecordType::A, 5).await,
        strs(&["10.0.0.2"])
    );
    set_maintenance(&s, "web", "b", false).await;
    assert_eq!(
        addresses(&s, "web.service.internal.").await,
        strs(&["10.0.0.1", "10.0.0.2"])
    );
    // Both in maintenance: no healthy instance, no service name.
    set_maintenance(&s, "web", "a", true).await;
    set_maintenance(&s, "web", "b", true).await;
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "all in maintenance");
}

// ---------------------------------------------------------------------------------------------
// rotation

#[tokio::test]
async fn rotation_is_round_robin_for_a_aaaa_and_srv() {
    const N: usize = 5;
    let s = TestServer::start().await;
    for i in 1..=N {
        s.register(
            "web",
            &format!("w{i}"),
            json!({"address": format!("10.0.0.{i}"), "port": 8000 + i}),
        )
        .await;
        s.register(
            "six",
            &format!("s{i}"),
            json!({"address": format!("fd00::{i}"), "port": 9000 + i}),
        )
        .await;
    }
    let cases = [
        ("web.service.internal.", RecordType::A, None),
        ("six.service.internal.", RecordType::AAAA, None),
        ("web.service.internal.", RecordType::SRV, Some(1232)),
        ("_web._tcp.service.internal.", RecordType::SRV, Some(1232)),
    ];
    for (name, rtype, edns) in cases {
        let mut all = BTreeSet::new();
        let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
        for q in 0..3 * N {
            let (m, _) = s.udp(name, rtype, edns).await;
            assert_positive(&m, name);
            assert_eq!(
                m.answers.len(),
                N,
                "{name} {rtype}: every instance in every answer"
            );
            all.extend(values(&m.answers));
            *firsts.entry(first(&m)).or_default() += 1;
            if q == N - 1 {
                assert_eq!(
                    firsts.len(),
                    N,
                    "{name} {rtype}: N queries, N different firsts: {firsts:?}"
                );
                assert!(
                    firsts.values().all(|&c| c == 1),
                    "{name} {rtype}: {firsts:?}"
                );
            }
        }
        assert_eq!(all.len(), N, "{name} {rtype}");
        assert_eq!(firsts.len(), N, "{name} {rtype}: {firsts:?}");
        assert!(
            firsts.values().all(|&c| c == 3),
            "{name} {rtype}: 3N queries: {firsts:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// TTLs and negative answers

/// Registers `web` (v4 + v6, meta, tag) with `ttl` per registration when given, and checks
/// every service and instance answer carries `want`.
async fn check_ttls(s: &TestServer, per_service: Option<u32>, want: u32) {
    let body = |addr: &str| {
        let mut b = json!({"address": addr, "port": 80, "tags": ["t"], "meta": {"k": "v"}});
        if let Some(t) = per_service {
            b["ttl"] = json!(t);
        }
        b
    };
    s.register("web", "a", body("10.0.0.1")).await;
    s.register("web", "b", body("fd00::2")).await;
    for (name, rtype) in [
        ("web.service.internal.", RecordType::A),
        ("web.service.internal.", RecordType::AAAA),
        ("web.service.internal.", RecordType::SRV),
        ("t.web.service.internal.", RecordType::A),
        ("_web._tcp.service.internal.", RecordType::SRV),
        ("_web._t.service.internal.", RecordType::SRV),
        ("a.web.instance.internal.", RecordType::A),
        ("a.web.instance.internal.", RecordType::TXT),
        ("b.web.instance.internal.", RecordType::AAAA),
    ] {
        // `ask` checks the TTL of every answer record on UDP and TCP.
        assert!(
            !ask(s, name, rtype, want).await.is_empty(),
            "{name} {rtype}"
        );
    }
    let (m, _) = s
        .udp("web.service.internal.", RecordType::SRV, Some(1232))
        .await;
    assert_eq!(m.additionals.len(), 2, "{m}");
    assert!(m.additionals.iter().all(|r| r.ttl == want), "glue TTL: {m}");
}

#[tokio::test]
async fn ttl_defaults_to_five() {
    let s = TestServer::start().await;
    check_ttls(&s, None, 5).await;
    let ptr = reverse("10.0.0.1".parse().unwrap());
    assert_eq!(
        ask(&s, &ptr, RecordType::PTR, 5).await,
        strs(&["a.web.instance.internal."])
    );
}

#[tokio::test]
async fn ttl_per_service_from_registrations() {
    let s = TestServer::start().await;
    check_ttls(&s, Some(17), 17).await;
    // Another service keeps the default.
    s.register("api", "x", json!({"address": "10.0.5.1", "port": 80}))
        .await;
    assert_eq!(
        ask(&s, "api.service.internal.", RecordType::A, 5).await,
        strs(&["10.0.5.1"])
    );
}

#[tokio::test]
async fn ttl_from_config_and_per_service_over_it() {
    let s = TestServer::start_with(|cfg| cfg.dns.ttl = 30).await;
    check_ttls(&s, None, 30).await;
    s.register(
        "api",
        "x",
        json!({"address": "10.0.5.1", "port": 80, "ttl": 17}),
    )
    .await;
    assert_eq!(
        ask(&s, "api.service.internal.", RecordType::A, 17).await,
        strs(&["10.0.5.1"])
    );
    assert_eq!(
        ask(&s, "x.api.instance.internal.", RecordType::A, 17).await,
        strs(&["10.0.5.1"])
    );
}

/// NXDOMAIN and NODATA cases, each with one SOA of `internal.` carrying `negative_ttl`.
async fn check_negative(s: &TestServer, negative_ttl: u32) {
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 80, "tags": ["t"]}),
    )
    .await;
    let nodata = [
        ("web.service.internal.", RecordType::AAAA), // IPv4-only service
        ("web.service.internal.", RecordType::TXT),
        ("t.web.service.internal.", RecordType::AAAA),
        ("service.internal.", RecordType::A), // empty non-terminals
        ("service.internal.", RecordType::SRV),
        ("instance.internal.", RecordType::A),
        ("web.instance.internal.", RecordType::A),
        ("_web._tcp.service.internal.", RecordType::A),
        ("SERVICE.Internal.", RecordType::A),
    ];
    for (name, rtype) in nodata {
        let (m, _) = s.udp(name, rtype, None).await;
        assert_negative(
            &m,
            ResponseCode::NoError,
            negative_ttl,
            &format!("{name} {rtype} udp"),
        );
        let m = s.tcp(name, rtype).await;
        assert_negative(
            &m,
            ResponseCode::NoError,
            negative_ttl,
            &format!("{name} {rtype} tcp"),
        );
    }
    let nxdomain = [
        ("nope.service.internal.", RecordType::A),
        ("nope.service.internal.", RecordType::SRV),
        ("x.web.service.internal.", RecordType::A), // unknown tag
        ("_web._x.service.internal.", RecordType::SRV),
        ("_nope._tcp.service.internal.", RecordType::SRV),
        ("web-2.web.instance.internal.", RecordType::A),
        ("nope.internal.", RecordType::A),
        ("a.b.c.nope.internal.", RecordType::AAAA),
    ];
    for (name, rtype) in nxdomain {
        let (m, _) = s.udp(name, rtype, Some(1232)).await;
        assert_negative(
            &m,
            ResponseCode::NXDomain,
            negative_ttl,
            &format!("{name} {rtype} udp"),
        );
        let m = s.tcp(name, rtype).await;
        assert_negative(
            &m,
            ResponseCode::NXDomain,
            negative_ttl,
            &format!("{name} {rtype} tcp"),
        );
    }
}

#[tokio::test]
async fn negative_answers_carry_one_soa_with_the_default_negative_ttl() {
    let s = TestServer::start().await;
    check_negative(&s, 5).await;
}

#[tokio::test]
async fn negative_ttl_override() {
    let s = TestServer::start_with(|cfg| {
        cfg.dns.negative_ttl = 42;
        cfg.dns.ttl = 7;
    })
    .await;
    check_negative(&s, 42).await;
}

// ---------------------------------------------------------------------------------------------
// size

const BIG: usize = 60;

async fn big_service(s: &TestServer) -> Vec<String> {
    let mut all = Vec::new();
    for i in 0..BIG {
        let a = format!("10.1.0.{}", i + 1);
        s.register(
            "big",
            &format!("n-{i:02}"),
            json!({"address": a, "port": 80}),
        )
        .await;
        all.push(a);
    }
    sorted(all)
}

/// Whether `part` appears in `full` as a run, wrapping around.
fn is_cyclic_run(part: &[String], full: &[String]) -> bool {
    let Some(p) = full.iter().position(|x| *x == part[0]) else {
        return false;
    };
    part.iter()
        .enumerate()
        .all(|(i, x)| *x == full[(p + i) % full.len()])
}

#[tokio::test]
async fn udp_without_edns_truncates_at_512_and_tcp_returns_everything() {
    let s = TestServer::start().await;
    let all = big_service(&s).await;
    let name = "big.service.internal.";
    let (u, size) = s.udp(name, RecordType::A, None).await;
    assert!(size <= 512, "{size} bytes");
    assert!(u.metadata.truncation, "TC");
    assert_eq!(u.metadata.response_code, ResponseCode::NoError);
    assert!(u.metadata.authoritative);
    assert!(
        !u.answers.is_empty() && u.answers.len() < BIG,
        "{}",
        u.answers.len()
    );
    // As many as fit: one more 16-byte A record would not have.
    assert!(
        size + 16 > 512,
        "{size} bytes with {} answers",
        u.answers.len()
    );
    let t = s.tcp(name, RecordType::A).await;
    assert_positive(&t, "tcp");
    assert_eq!(sorted(values(&t.answers)), all);
    // What UDP carried is a run of the rotated full set.
    let udp = values(&u.answers);
    let tcp = values(&t.answers);
    assert!(
        is_cyclic_run(&udp, &tcp),
        "udp {udp:?} is not a run of {tcp:?}"
    );
    assert_eq!(udp.iter().collect::<BTreeSet<_>>().len(), udp.len());
    // SRV too.
    let (u, size) = s.udp(name, RecordType::SRV, None).await;
    assert!(size <= 512 && u.metadata.truncation, "SRV: {size} bytes");
    let t = s.tcp(name, RecordType::SRV).await;
    assert_positive(&t, "tcp SRV");
    assert_eq!(t.answers.len(), BIG);
}

#[tokio::test]
async fn udp_with_edns_honours_the_clients_payload_size() {
    let s = TestServer::start_with(|c| c.dns.max_udp_payload = 4096).await;
    let all = big_service(&s).await;
    let name = "big.service.internal.";
    let (m, size) = s.udp(name, RecordType::A, Some(4096)).await;
    assert_positive(&m, "EDNS 4096");
    assert_eq!(sorted(values(&m.answers)), all);
    assert!(size <= 4096);
    assert!(m.edns.is_some(), "an EDNS query gets an OPT back");
    for payload in [512u16, 700, 1000] {
        let (m, size) = s.udp(name, RecordType::A, Some(payload)).await;
        assert!(
            size <= usize::from(payload),
            "payload {payload}: {size} bytes"
        );
        assert!(m.metadata.truncation, "payload {payload}: TC");
        assert!(
            size + 16 > usize::from(payload),
            "payload {payload}: {size} bytes, room left"
        );
    }
    // A payload below 512 is treated as 512.
    let (m512, size512) = udp_wire(&s, &query_edns(name, RecordType::A, 512, 0)).await;
    assert!(size512 <= 512 && m512.metadata.truncation);
    for payload in [0u16, 100, 511] {
        let (m, size) = udp_wire(&s, &query_edns(name, RecordType::A, payload, 0)).await;
        assert_eq!(size, size512, "payload {payload}");
        assert_eq!(m.answers.len(), m512.answers.len(), "payload {payload}");
        assert!(m.metadata.truncation, "payload {payload}");
    }
    // SRV with its glue fits in 4096.
    let (m, size) = s.udp(name, RecordType::SRV, Some(4096)).await;
    assert_positive(&m, "SRV 4096");
    assert_eq!(m.answers.len(), BIG);
    assert!(size <= 4096);
}

#[tokio::test]
async fn max_answers_caps_service_answers() {
    let s = TestServer::start_with(|cfg| cfg.dns.max_answers = 3).await;
    for i in 1..=6 {
        s.register(
            "web",
            &format!("w{i}"),
            json!({"address": format!("10.0.0.{i}"), "port": 80, "tags": ["t"]}),
        )
        .await;
    }
    for (name, rtype) in [
        ("web.service.internal.", RecordType::A),
        ("web.service.internal.", RecordType::SRV),
        ("t.web.service.internal.", RecordType::A),
        ("_web._tcp.service.internal.", RecordType::SRV),
    ] {
        let (u, _) = s.udp(name, rtype, Some(4096)).await;
        let t = s.tcp(name, rtype).await;
        for m in [&u, &t] {
            assert_positive(m, name);
            assert_eq!(m.answers.len(), 3, "{name} {rtype}: {m}");
            assert_eq!(values(&m.answers).iter().collect::<BTreeSet<_>>().len(), 3);
        }
        if rtype == RecordType::SRV {
            assert_eq!(u.additionals.len(), 3, "glue for the 3 targets only");
        }
    }
    // The cap still rotates through every instance.
    let mut firsts = BTreeSet::new();
    for _ in 0..6 {
        let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
        firsts.insert(first(&m));
    }
    assert_eq!(firsts.len(), 6, "{firsts:?}");
}

// ---------------------------------------------------------------------------------------------
// wire-level behaviour

#[tokio::test]
async fn question_case_is_echoed_byte_for_byte() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    for name in [
        "WeB.SeRvIcE.InTeRnAl.",
        "nOpE.SeRvIcE.InTeRnAl.",
        "W1.wEb.InStAnCe.InTeRnAl.",
    ] {
        let sent = common::query(name, RecordType::A, None);
        let qlen = sent.len() - 12;
        for (via, reply) in [
            ("udp", s.udp_raw(&sent).await.expect("udp reply")),
            ("tcp", s.tcp_raw(&sent).await.expect("tcp reply")),
        ] {
            assert_eq!(&reply[..2], &sent[..2], "{name} {via}: id");
            assert_eq!(
                &reply[12..12 + qlen],
                &sent[12..],
                "{name} {via}: question bytes"
            );
            let m = Message::from_vec(&reply).unwrap();
            assert!(m.metadata.authoritative, "{name} {via}");
            let q = Name::from_ascii(name).unwrap();
            assert!(m.queries[0].name().eq_case(&q), "{name} {via}");
            for r in &m.answers {
                assert!(r.name.eq_case(&q), "{name} {via}: owner {}", r.name);
            }
        }
    }
}

#[tokio::test]
async fn aa_on_authoritative_answers_and_ra_never() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let cases = [
        (
            "web.service.internal.",
            RecordType::A,
            ResponseCode::NoError,
            true,
        ),
        (
            "web.service.internal.",
            RecordType::AAAA,
            ResponseCode::NoError,
            true,
        ),
        (
            "nope.service.internal.",
            RecordType::A,
            ResponseCode::NXDomain,
            true,
        ),
        ("internal.", RecordType::SOA, ResponseCode::NoError, true),
        ("example.com.", RecordType::A, ResponseCode::Refused, false),
        ("evilinternal.", RecordType::A, ResponseCode::Refused, false),
    ];
    for (name, rtype, rcode, aa) in cases {
        // Ask with RD set too: recursion is still not available.
        for rd in [false, true] {
            let mut wire = common::query(name, rtype, None);
            if rd {
                wire[2] |= 0x01;
            }
            let reply = s.udp_raw(&wire).await.unwrap();
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.response_code, rcode, "{name} {rtype}");
            assert_eq!(m.metadata.authoritative, aa, "{name} {rtype}: AA");
            assert!(!m.metadata.recursion_available, "{name} {rtype}: RA");
            assert_eq!(
                m.metadata.recursion_desired, rd,
                "{name} {rtype}: RD echoed"
            );
            assert_eq!(m.metadata.id, u16::from_be_bytes([wire[0], wire[1]]));
        }
    }
}

#[tokio::test]
async fn malformed_queries_get_formerr_with_the_same_id() {
    let s = TestServer::start().await;
    let mut packets: Vec<Vec<u8>> = vec![
        // A header claiming one question, and nothing after it.
        vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
        // A header claiming one question, with a truncated name.
        vec![
            0xbe, 0xf0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x',
        ],
        // A whole name but no type and class.
        vec![
            0xbe, 0xf1, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0,
        ],
        // Two questions.
        {
            let mut p = common::query("web.service.internal.", RecordType::A, None);
            p[5] = 2;
            let q = p[12..].to_vec();
            p.extend_from_slice(&q);
            p
        },
        // No question.
        vec![0xbe, 0xf2, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        // An answer count with nothing behind it.
        {
            let mut p = common::query("web.service.internal.", RecordType::A, None);
            p[7] = 1;
            p
        },
    ];
    // 20 bytes of pseudo-random garbage with QR=0 and opcode 0 (QUERY).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..8 {
        let mut g = Vec::with_capacity(20);
        for _ in 0..20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g.push((x >> 24) as u8);
        }
        g[2] &= 0x07;
        packets.push(g);
    }
    for p in &packets {
        for (via, reply) in [("udp", s.udp_raw(p).await), ("tcp", s.tcp_raw(p).await)] {
            let reply = reply.unwrap_or_else(|| panic!("{via}: no reply to {p:02x?}"));
            assert!(reply.len() >= 12, "{via}: {reply:02x?}");
            assert_eq!(&reply[..2], &p[..2], "{via}: id echoed for {p:02x?}");
            assert_eq!(reply[2] & 0x80, 0x80, "{via}: QR");
            assert_eq!(
                rcode_of(&reply),
                1,
                "{via}: FORMERR for {p:02x?}, got {reply:02x?}"
            );
            assert_eq!(reply[3] & 0x80, 0, "{via}: RA");
        }
    }
    // Still serving.
    let (m, _) = s.udp("internal.", RecordType::SOA, None).await;
    assert_positive(&m, "after garbage");
}

#[tokio::test]
async fn unsupported_opcodes_get_notimp() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    for opcode in [1u8, 2, 4, 5, 15] {
        let mut p = common::query("web.service.internal.", RecordType::A, None);
        p[2] = (p[2] & 0x87) | (opcode << 3);
        for (via, reply) in [("udp", s.udp_raw(&p).await), ("tcp", s.tcp_raw(&p).await)] {
            let reply = reply.unwrap_or_else(|| panic!("{via}: no reply to opcode {opcode}"));
            assert_eq!(&reply[..2], &p[..2], "{via}: id");
            assert_eq!(reply[2] & 0x80, 0x80, "{via}: QR");
            assert_eq!((reply[2] >> 3) & 0x0f, opcode, "{via}: opcode echoed");
            assert_eq!(
                rcode_of(&reply),
                4,
                "opcode {opcode} {via}: NOTIMP, got {reply:02x?}"
            );
            assert_eq!(&reply[6..8], &[0, 0], "{via}: no answers");
        }
    }
}

#[tokio::test]
async fn packets_shorter_than_a_header_get_no_reply() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    // Waiting out the client's 2 s timeout is the point here.
    assert_eq!(s.udp_raw(&[0x12, 0x34, 0x01, 0x00, 0x00, 0x01]).await, None);
    assert_eq!(
        addresses(&s, "web.service.internal.").await,
        strs(&["10.0.0.1"])
    );
    // A response (QR=1) is not answered either: that could loop between servers.
    let mut p = common::query("web.service.internal.", RecordType::A, None);
    p[2] |= 0x80;
    assert_eq!(s.udp_raw(&p).await, None);
    assert_eq!(
        addresses(&s, "web.service.internal.").await,
        strs(&["10.0.0.1"])
    );
}

#[tokio::test]
async fn zone_transfers_are_refused() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    for rtype in [RecordType::AXFR, RecordType::IXFR] {
        for name in ["internal.", "service.internal."] {
            let (u, _) = s.udp(name, rtype, None).await;
            let t = s.tcp(name, rtype).await;
            for (m, via) in [(&u, "udp"), (&t, "tcp")] {
                assert_eq!(
                    m.metadata.response_code,
                    ResponseCode::Refused,
                    "{name} {rtype} {via}"
                );
                assert!(m.answers.is_empty(), "{name} {rtype} {via}");
                assert!(!m.metadata.recursion_available);
            }
        }
    }
}

/// The OPT record of a raw reply, when its last record is one: (payload, extended RCODE,
/// version, DO). Every reply signpost writes puts its OPT last.
fn opt_of(reply: &[u8]) -> Option<(u16, u8, u8, bool)> {
    let n = reply.len();
    let arcount = u16::from_be_bytes([reply[10], reply[11]]);
    if arcount == 0 || n < 23 || reply[n - 11..n - 8] != [0, 0, 41] {
        return None;
    }
    let payload = u16::from_be_bytes([reply[n - 8], reply[n - 7]]);
    Some((
        payload,
        reply[n - 6],
        reply[n - 5],
        reply[n - 4] & 0x80 != 0,
    ))
}

/// A query for `name` with an OPT (payload 1232, DO set) whose RDATA is `options`, the
/// OPT's owner `owner` (wire format), and `opts` such OPT records.
fn query_with_opt(name: &str, options: &[u8], owner: &[u8], opts: u16) -> Vec<u8> {
    let mut wire = common::query(name, RecordType::A, None);
    wire[10..12].copy_from_slice(&opts.to_be_bytes());
    for _ in 0..opts {
        wire.extend_from_slice(owner);
        wire.extend_from_slice(&[0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        wire.extend_from_slice(&(options.len() as u16).to_be_bytes());
        wire.extend_from_slice(options);
    }
    wire
}

#[tokio::test]
async fn every_reply_to_an_edns_query_carries_an_opt() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let web = "web.service.internal.";
    let notimp = {
        let mut p = query_with_opt(web, &[], &[0], 1);
        p[2] = (p[2] & 0x87) | (2 << 3); // opcode STATUS
        p
    };
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("NOERROR", query_with_opt(web, &[], &[0], 1), 0),
        // An unknown option (code 65001) is ignored.
        (
            "unknown option",
            query_with_opt(web, &[0xfd, 0xe9, 0, 2, 1, 2], &[0], 1),
            0,
        ),
        (
            "NXDOMAIN",
            query_with_opt("nope.internal.", &[], &[0], 1),
            3,
        ),
        ("REFUSED", query_with_opt("example.com.", &[], &[0], 1), 5),
        ("NOTIMP", notimp, 4),
        (
            "option length past the RDATA",
            query_with_opt(web, &[0, 10, 0, 9, 1, 2], &[0], 1),
            1,
        ),
        ("two OPTs", query_with_opt(web, &[], &[0], 2), 1),
        (
            "non-root owner",
            query_with_opt(web, &[], b"\x03web\x00", 1),
            1,
        ),
    ];
    for (what, wire, rcode) in &cases {
        for (via, reply) in [
            ("udp", s.udp_raw(wire).await),
            ("tcp", s.tcp_raw(wire).await),
        ] {
            let reply = reply.unwrap_or_else(|| panic!("{what} {via}: no reply"));
            assert_eq!(&reply[..2], &wire[..2], "{what} {via}: id");
            assert_eq!(rcode_of(&reply), *rcode, "{what} {via}: RCODE {reply:02x?}");
            let opt = opt_of(&reply).unwrap_or_else(|| panic!("{what} {via}: no OPT {reply:02x?}"));
            assert_eq!(
                opt,
                (1232, 0, 0, true),
                "{what} {via}: payload, ext RCODE, version, DO"
            );
            Message::from_vec(&reply).unwrap_or_else(|e| panic!("{what} {via}: {e}"));
        }
    }
    // The same errors without EDNS carry none.
    let mut plain = common::query(web, RecordType::A, None);
    plain[2] = (plain[2] & 0x87) | (2 << 3);
    let reply = s.udp_raw(&plain).await.expect("a reply");
    assert_eq!((rcode_of(&reply), &reply[10..12]), (4, &[0u8, 0][..]));
}

/// The largest UDP answer is `dns.max_udp_payload` (default 1232) even when the client offers
/// more, and the reply's OPT advertises it; TCP still returns everything.
#[tokio::test]
async fn the_largest_udp_answer_is_max_udp_payload() {
    for (configured, want) in [(None, 1232u16), (Some(600u16), 600), (Some(4096), 4096)] {
        let s = TestServer::start_with(|c| {
            if let Some(p) = configured {
                c.dns.max_udp_payload = p;
            }
        })
        .await;
        big_service(&s).await;
        let name = "big.service.internal.";
        for offered in [4096u16, 65535] {
            let wire = query_edns(name, RecordType::SRV, offered, 0);
            let reply = s.udp_raw(&wire).await.expect("a reply");
            assert!(
                reply.len() <= usize::from(want),
                "{configured:?} offered {offered}: {} bytes",
                reply.len()
            );
            let m = Message::from_vec(&reply).expect("parses");
            // 60 SRV records (without glue) take about 2,600 bytes.
            assert_eq!(m.metadata.truncation, want < 4096, "{configured:?}: TC");
            assert_eq!(
                opt_of(&reply).map(|o| o.0),
                Some(want),
                "{configured:?}: advertised"
            );
        }
        // A client offering less than the cap still gets at most what it offered.
        let (_, size) = udp_wire(&s, &query_edns(name, RecordType::SRV, 700, 0)).await;
        assert!(
            size <= 700.min(usize::from(want)),
            "{configured:?}: {size} bytes"
        );
        assert_eq!(s.tcp(name, RecordType::SRV).await.answers.len(), BIG);
        s.stop().await;
    }
}

#[tokio::test]
async fn edns_version_above_zero_gets_badvers() {
    let s = TestServer::start().await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let mut wire = query_edns("web.service.internal.", RecordType::A, 1232, 1);
    wire[..2].copy_from_slice(&[0x51, 0x50]);
    for (via, reply) in [
        ("udp", s.udp_raw(&wire).await),
        ("tcp", s.tcp_raw(&wire).await),
    ] {
        let reply = reply.expect("a reply");
        assert_eq!(&reply[..2], &[0x51, 0x50], "{via}: id");
        // The header carries the low 4 bits (0), the OPT the upper 8 (1): 16 = BADVERS.
        assert_eq!(rcode_of(&reply), 0, "{via}");
        let m = Message::from_vec(&reply).unwrap();
        let opt = m.edns.as_ref().expect("BADVERS comes with an OPT record");
        assert_eq!(opt.rcode_high(), 1, "{via}: extended RCODE");
        assert_eq!(opt.version(), 0, "{via}: the version the server speaks");
        // hickory merges the OPT's upper bits; 16 decodes as BADVERS/BADSIG alike.
        assert_eq!(u16::from(m.metadata.response_code), 16, "{via}");
        assert!(m.answers.is_empty(), "{via}");
    }
    // Version 0 answers normally.
    let (m, _) = s
        .udp("web.service.internal.", RecordType::A, Some(1232))
        .await;
    assert_positive(&m, "EDNS 0");
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
}

// ---------------------------------------------------------------------------------------------
// changes

#[tokio::test]
async fn registry_changes_show_in_the_very_next_answer() {
    let s = TestServer::start().await;
    let name = "web.service.internal.";
    let (m, _) = s.udp(name, RecordType::A, None).await;
    assert_negative(&m, ResponseCode::NXDomain, 5, "before");
    for round in 0..3 {
        s.register("web", "a", json!({"address": "10.0.0.1", "port": 80}))
            .await;
        assert_eq!(
            addresses(&s, name).await,
            strs(&["10.0.0.1"]),
            "round {round}"
        );
        s.register("web", "b", json!({"address": "10.0.0.2", "port": 80}))
            .await;
        assert_eq!(addresses(&s, name).await, strs(&["10.0.0.1", "10.0.0.2"]));
        // Re-registering with a new address replaces the old one everywhere.
        s.register(
            "web",
            "b",
            json!({"address": "10.0.0.3", "port": 80, "tags": ["n"]}),
        )
        .await;
        assert_eq!(addresses(&s, name).await, strs(&["10.0.0.1", "10.0.0.3"]));
        assert_eq!(
            addresses(&s, "n.web.service.internal.").await,
            strs(&["10.0.0.3"])
        );
        let ptr = reverse("10.0.0.3".parse().unwrap());
        assert_eq!(
            ask(&s, &ptr, RecordType::PTR, 5).await,
            strs(&["b.web.instance.internal."])
        );
        let old = reverse("10.0.0.2".parse().unwrap());
        let (m, _) = s.udp(&old, RecordType::PTR, None).await;
        assert_refused(&m, "the old address's reverse name is gone");
        assert_eq!(s.deregister("web", "a").await, 204);
        assert_eq!(addresses(&s, name).await, strs(&["10.0.0.3"]));
        let (m, _) = s.udp("a.web.instance.internal.", RecordType::A, None).await;
        assert_negative(&m, ResponseCode::NXDomain, 5, "deregistered instance");
        assert_eq!(s.deregister("web", "b").await, 204);
        let (m, _) = s.udp(name, RecordType::A, None).await;
        assert_negative(&m, ResponseCode::NXDomain, 5, "all gone");
        let (m, _) = s.udp(name, RecordType::SRV, None).await;
        assert_negative(&m, ResponseCode::NXDomain, 5, "all gone SRV");
    }
    // An IPv6 address shows as AAAA right away, and its reverse name too.
    s.register("web", "c", json!({"address": "fd00::c", "port": 80}))
        .await;
    assert_eq!(ask(&s, name, RecordType::AAAA, 5).await, strs(&["fd00::c"]));
    let v6: Ipv6Addr = "fd00::c".parse().unwrap();
    assert_eq!(
        ask(&s, &reverse(IpAddr::V6(v6)), RecordType::PTR, 5).await,
        strs(&["c.web.instance.internal."])
    );
}

/// Zone data is consistent (CONTRACT §2): a registered address's reverse name is the apex of
/// a zone signpost answers for. NODATA there carries that zone's SOA, owned by the name
/// itself; the same SOA and an NS answer when asked; NXDOMAIN below it; and the reverse trees
/// above it (`in-addr.arpa.`, `ip6.arpa.`) are claimed nowhere: REFUSED.
#[tokio::test]
async fn reverse_names_of_registered_addresses_are_zones_signpost_answers_for() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "web-1",
        serde_json::json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;
    s.register(
        "web",
        "web-2",
        serde_json::json!({"address": "fd00::3", "port": 80}),
    )
    .await;
    async fn ask(s: &TestServer, tcp: bool, n: String, t: RecordType) -> Message {
        if tcp {
            s.tcp(&n, t).await
        } else {
            s.udp(&n, t, None).await.0
        }
    }
    for (name, tree) in [
        ("1.0.0.10.in-addr.arpa.", "in-addr.arpa."),
        (
            "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            "ip6.arpa.",
        ),
    ] {
        for tcp in [false, true] {
            let m = ask(&s, tcp, name.into(), RecordType::A).await;
            assert_negative_in(&m, ResponseCode::NoError, name, &format!("{name} A"));
            let neg = m.authorities[0].clone();
            // The zone of that SOA answers SOA and NS at its apex.
            let m = ask(&s, tcp, name.into(), RecordType::SOA).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} SOA"
            );
            assert!(m.metadata.authoritative, "{name} SOA: AA");
            assert_eq!(m.answers.len(), 1, "{name} SOA");
            assert_eq!(lower(&m.answers[0].name), name);
            assert_eq!(m.answers[0].data, neg.data, "{name}: the same SOA");
            let m = ask(&s, tcp, name.into(), RecordType::NS).await;
            assert_eq!(m.answers.len(), 1, "{name} NS: {m}");
            assert_eq!(m.answers[0].record_type(), RecordType::NS);
            // Inside it: NXDOMAIN with its SOA.
            let m = ask(&s, tcp, format!("x.{name}"), RecordType::PTR).await;
            assert_negative_in(&m, ResponseCode::NXDomain, name, &format!("x.{name}"));
            // Above it: nothing claimed.
            let m = ask(&s, tcp, tree.into(), RecordType::SOA).await;
            assert_refused(&m, &format!("{tree} SOA"));
        }
        let (m, _) = s.udp(name, RecordType::PTR, None).await;
        assert_eq!(m.answers.len(), 1, "{name} PTR");
    }
}

/// NS answers at an apex carry the name servers' addresses when signpost knows them: here
/// the zone file of D gives `ns.D` an address.
#[tokio::test]
async fn ns_answers_carry_the_name_servers_addresses() {
    let s = TestServer::start_with(|c| {
        std::fs::write(
            c.dns.zones_dir.join("internal.zone"),
            "$ORIGIN internal.\n$TTL 300\n\
             @ IN SOA ns.internal. hostmaster.internal. 1 3600 600 86400 60\n\
             @ IN NS ns.internal.\nns IN A 192.0.2.53\nns IN AAAA 2001:db8::53\n",
        )
        .unwrap();
    })
    .await;
    for tcp in [false, true] {
        let m = if tcp {
            s.tcp("internal.", RecordType::NS).await
        } else {
            s.udp("internal.", RecordType::NS, None).await.0
        };
        assert_eq!(values(&m.answers), strs(&["ns.internal."]), "tcp {tcp}");
        let mut glue: Vec<String> = m
            .additionals
            .iter()
            .map(|r| format!("{} {}", lower(&r.name), r.data))
            .collect();
        glue.sort();
        assert_eq!(
            glue,
            strs(&["ns.internal. 192.0.2.53", "ns.internal. 2001:db8::53"]),
            "tcp {tcp}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// response-rate limiting (UDP)

/// `dns.rate_limit` of the RRL tests: responses per second per flow. A full bucket holds one
/// second's worth (the burst, `RATE` again), so no flow gets more than `RATE + BURST` full
/// answers in its first second.
const RATE: usize = 10;
const BURST: usize = RATE;
/// Queries in a flood.
const FLOOD: usize = 200;

/// How a flood's replies came back.
#[derive(Debug, Default)]
struct Flood {
    /// Complete answers: NOERROR, records, no TC.
    full: usize,
    /// Complete answers that arrived within a second of the first query.
    full_first_second: usize,
    /// Slipped: TC set, no records, the question echoed with the query's ID.
    slipped: usize,
    /// Anything else (there should be none).
    other: usize,
}

impl Flood {
    fn silent(&self) -> usize {
        FLOOD - self.full - self.slipped - self.other
    }
}

/// A client socket on the loopback address `from` (Linux routes all of 127/8 to `lo`, so
/// 127.0.0.2 is a second client in another /32).
async fn client_socket(from: &str) -> std::sync::Arc<tokio::net::UdpSocket> {
    let ip: IpAddr = from.parse().unwrap();
    std::sync::Arc::new(tokio::net::UdpSocket::bind((ip, 0)).await.unwrap())
}

/// Sends `FLOOD` identical queries for the `web` service's SRV records from one socket on
/// `from`, as fast as it can, while reading the replies, until none came for a second.
async fn flood(s: &TestServer, from: &str) -> Flood {
    let sock = client_socket(from).await;
    let wire = common::query_with("web.service.internal.", RecordType::SRV, None, 77, false);
    let start = std::time::Instant::now();
    let reader = {
        let sock = sock.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65535];
            let idle = std::time::Duration::from_secs(1);
            while let Ok(Ok(n)) = tokio::time::timeout(idle, sock.recv(&mut buf)).await {
                got.push((start.elapsed(), buf[..n].to_vec()));
            }
            got
        })
    };
    for _ in 0..FLOOD {
        sock.send_to(&wire, s.dns).await.unwrap();
    }
    let mut f = Flood::default();
    for (at, reply) in reader.await.unwrap() {
        let m = Message::from_vec(&reply).expect("reply parses");
        let echoed = m.metadata.id == 77
            && m.queries.len() == 1
            && lower(&m.queries[0].name) == "web.service.internal.";
        let noerror = m.metadata.response_code == ResponseCode::NoError;
        if echoed && noerror && !m.metadata.truncation && !m.answers.is_empty() {
            f.full += 1;
            if at < std::time::Duration::from_secs(1) {
                f.full_first_second += 1;
            }
        } else if echoed
            && noerror
            && m.metadata.truncation
            && m.answers.is_empty()
            && m.authorities.is_empty()
            && m.additionals.is_empty()
        {
            f.slipped += 1;
        } else {
            f.other += 1;
        }
    }
    f
}

/// Asks the `web` SRV once from a fresh socket on `from`; whether a complete answer came.
async fn answered_in_full(s: &TestServer, from: &str) -> bool {
    let sock = client_socket(from).await;
    let wire = common::query("web.service.internal.", RecordType::SRV, None);
    sock.send_to(&wire, s.dns).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let wait = std::time::Duration::from_secs(2);
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            let m = Message::from_vec(&buf[..n]).expect("reply parses");
            !m.metadata.truncation && m.answers.len() == 1
        }
        _ => false,
    }
}

/// A server with one `web` instance and `tweak` applied to its config.
async fn rrl_server(tweak: impl FnOnce(&mut signpost::config::Config)) -> TestServer {
    let s = TestServer::start_with(tweak).await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s
}

/// 200 identical queries at once from one client with `dns.rate_limit = 10` and slip 2: the
/// burst is answered, then about every second response is slipped (TC, no records) and the
/// rest dropped; a client in another prefix is answered in full meanwhile.
#[tokio::test]
async fn rate_limit_answers_a_flood_at_the_rate_and_slips_every_second_response() {
    let s = rrl_server(|c| {
        c.dns.rate_limit = RATE as u32;
        c.dns.rate_limit_slip = 2;
        // Each loopback address its own prefix, and loopback not exempt.
        c.dns.rate_limit_ipv4_prefix = 32;
        c.dns.rate_limit_exempt = Vec::new();
    })
    .await;
    let other_client = async {
        // While the flood is under way, from 127.0.0.2.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut full = 0;
        for _ in 0..5 {
            full += usize::from(answered_in_full(&s, "127.0.0.2").await);
        }
        full
    };
    let (f, other_full) = tokio::join!(flood(&s, "127.0.0.1"), other_client);
    assert!(
        f.full_first_second <= RATE + BURST,
        "at most rate + burst full answers in the first second: {f:?}"
    );
    assert!(f.full >= RATE, "the burst is answered: {f:?}");
    assert_eq!(f.other, 0, "{f:?}");
    let limited = FLOOD - f.full;
    assert!(
        f.slipped.abs_diff(limited / 2) <= 1,
        "every second limited response slipped: {f:?}"
    );
    assert!(
        f.silent().abs_diff(limited / 2) <= 1,
        "the others dropped: {f:?}"
    );
    assert_eq!(other_full, 5, "another prefix is answered in full");
}

/// Off (`dns.rate_limit = 0`, the default) every query is answered, loopback exempt or not;
/// with a rate, clients in `dns.rate_limit_exempt` (loopback by default) are answered in full.
#[tokio::test]
async fn rate_limit_off_and_exempt_networks_answer_every_query() {
    let off = rrl_server(|c| c.dns.rate_limit_exempt = Vec::new()).await;
    let f = flood(&off, "127.0.0.1").await;
    assert_eq!((f.full, f.slipped, f.other), (FLOOD, 0, 0), "off: {f:?}");
    drop(off);

    let default_exempt = rrl_server(|c| c.dns.rate_limit = RATE as u32).await;
    let f = flood(&default_exempt, "127.0.0.1").await;
    assert_eq!((f.full, f.slipped), (FLOOD, 0), "loopback exempt: {f:?}");
    drop(default_exempt);

    let one_exempt = rrl_server(|c| {
        c.dns.rate_limit = RATE as u32;
        c.dns.rate_limit_ipv4_prefix = 32;
        c.dns.rate_limit_exempt = vec![signpost::config::Network::parse("127.0.0.2/32").unwrap()];
    })
    .await;
    let f = flood(&one_exempt, "127.0.0.2").await;
    assert_eq!((f.full, f.slipped), (FLOOD, 0), "127.0.0.2 exempt: {f:?}");
    let f = flood(&one_exempt, "127.0.0.1").await;
    assert!(f.full <= RATE + BURST, "127.0.0.1 limited: {f:?}");
}

// ---------------------------------------------------------------------------------------------
// the per-client cap on DNS-over-TCP connections

/// A TCP connection to `s` from the loopback address `from`.
async fn tcp_from(s: &TestServer, from: &str) -> tokio::net::TcpStream {
    let ip: IpAddr = from.parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((ip, 0).into()).unwrap();
    sock.connect(s.dns).await.unwrap()
}

/// Asks the apex SOA on an open connection; whether an answer came within 2 s.
async fn tcp_answers(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let wire = common::query("internal.", RecordType::SOA, None);
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    let exchange = async {
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await {
        Ok(Ok(reply)) => {
            let m = Message::from_vec(&reply).expect("reply parses");
            m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1
        }
        _ => false,
    }
}

/// `dns.max_tcp_connections_per_client` idle connections from one address hold its share; one
/// more is closed at once, while the held ones and another address are still served, and a
/// closed connection frees its place.
#[tokio::test]
async fn tcp_connections_are_capped_per_client_address() {
    use tokio::io::AsyncReadExt;
    const CAP: usize = 4;
    let s = TestServer::start_with(|c| c.dns.max_tcp_connections_per_client = CAP).await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(tcp_from(&s, "127.0.0.1").await);
    }
    let mut extra = tcp_from(&s, "127.0.0.1").await;
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    // Closed by the server without a query: end of stream (or a reset), well before the
    // 10 s idle timeout that would close an admitted idle connection.
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("the connection over the cap is closed at once, not left idle");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));

    assert!(
        tcp_answers(&mut held[0]).await,
        "a held connection is served"
    );
    let mut other = tcp_from(&s, "127.0.0.2").await;
    assert!(
        tcp_answers(&mut other).await,
        "another client address is served"
    );

    drop(held.pop());
    let mut freed = false;
    for _ in 0..20 {
        let mut again = tcp_from(&s, "127.0.0.1").await;
        if tcp_answers(&mut again).await {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(freed, "a closed connection frees its place");
}

/// RFC 3225 §3: the DO bit of the query is copied into the reply's OPT (`dig +dnssec` shows
/// `flags: do`), and stays clear when the query did not set it.
#[tokio::test]
async fn the_do_bit_is_copied_into_the_reply() {
    use hickory_proto::op::{Edns, Query};
    let s = TestServer::start().await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    for (name, dnssec_ok) in [
        ("web.service.internal.", true),
        ("web.service.internal.", false),
        ("nosuch.service.internal.", true),
    ] {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
        let reply = s.udp_raw(&m.to_vec().unwrap()).await.expect("a reply");
        let r = Message::from_vec(&reply).unwrap();
        let edns = r.edns.expect("an OPT in the reply");
        assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "{name} DO={dnssec_ok}");
    }
}

// ---------------------------------------------------------------------------------------------
// SOA serial

/// The SOA serial of D, asked over UDP.
async fn serial(s: &TestServer) -> u32 {
    let (m, _) = s.udp("internal.", RecordType::SOA, None).await;
    match m.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        _ => panic!("no SOA: {m}"),
    }
}

/// The registry index (`X-Signpost-Index`) now.
async fn index(s: &TestServer) -> u64 {
    let r = s.client.get(s.url("/v1/services")).send().await.unwrap();
    r.headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// RFC 1982: whether serial `b` is greater than `a`.
fn serial_gt(b: u32, a: u32) -> bool {
    b != a && b.wrapping_sub(a) < 1 << 31
}

/// The SOA serial of D follows the registry (CONTRACT §2, zone transfers): it is the registry
/// index (plus the zone file's serial, 0 when the SOA is synthesised), grows with every
/// published change — registration, health, deregistration — and, the index being stored,
/// never goes backwards across a restart. It is the same in negative answers.
#[tokio::test]
async fn soa_serial_follows_the_registry_index() {
    let s = TestServer::start().await;
    let mut last = serial(&s).await;
    assert_eq!(u64::from(last), index(&s).await, "the index itself");
    s.register(
        "web",
        "w1",
        json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
    )
    .await;
    for step in ["register", "health", "deregister"] {
        match step {
            "health" => s.report("web", "w1", "passing").await,
            "deregister" => assert_eq!(s.deregister("web", "w1").await, 204),
            _ => {}
        }
        let now = serial(&s).await;
        assert!(serial_gt(now, last), "{step}: {now} after {last}");
        assert_eq!(u64::from(now), index(&s).await, "{step}");
        let (m, _) = s.udp("nope.internal.", RecordType::A, None).await;
        let Some(RData::SOA(neg)) = m.authorities.first().map(|r| &r.data) else {
            panic!("{step}: no SOA in {m}");
        };
        assert_eq!(neg.serial, now, "{step}: the negative answer's SOA");
        last = now;
    }
    s.register("api", "a1", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let before = serial(&s).await;
    let dir = s.stop().await;
    let cfg = common::test_config(dir.path());
    let s = TestServer::start_in(dir, cfg).await;
    let after = serial(&s).await;
    assert!(
        after == before || serial_gt(after, before),
        "restart: {after} after {before}"
    );
}

/// With a zone file for D, the serial is the file's plus the registry index.
#[tokio::test]
async fn soa_serial_adds_the_index_to_the_zone_files_serial() {
    let s = TestServer::start_with(|c| {
        std::fs::write(
            c.dns.zones_dir.join("internal.zone"),
            "$ORIGIN internal.\n$TTL 300\n\
             @ IN SOA ns.internal. hostmaster.internal. 4294967290 3600 600 86400 60\n\
             @ IN NS ns.internal.\n",
        )
        .unwrap();
    })
    .await;
    for i in 0..8 {
        s.register(
            "web",
            &format!("w{i}"),
            json!({"address": "10.0.0.1", "port": 80}),
        )
        .await;
        let want = 4_294_967_290u32.wrapping_add(index(&s).await as u32);
        assert_eq!(serial(&s).await, want, "wraps past 2^32 - 1 (RFC 1982)");
    }
}

/// A health change moves the index (and the serial) without a stored write; a graceful
/// restart still does not take the serial back.
#[tokio::test]
async fn soa_serial_never_goes_back_after_health_changes_and_a_restart() {
    let s = TestServer::start().await;
    s.register(
        "web",
        "w1",
        json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "30s"}}),
    )
    .await;
    for status in ["passing", "warning", "passing"] {
        s.report("web", "w1", status).await;
    }
    let before = serial(&s).await;
    let dir = s.stop().await;
    let cfg = common::test_config(dir.path());
    let s = TestServer::start_in(dir, cfg).await;
    let after = serial(&s).await;
    assert!(
        after == before || serial_gt(after, before),
        "restart: {after} after {before}"
    );
}
