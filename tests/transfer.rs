//! Zone transfers and NOTIFY (CONTRACT §2, "Zone transfers and NOTIFY") against an
//! in-process server over real sockets, with a DNS client written on hickory: AXFR of D and of
//! a zone file's zone returns what queries answer (the healthy view, in several messages when
//! large, rotation untouched); IXFR answers the difference from the client's serial, which
//! applied to the old zone gives the new one, and falls back to the whole zone for a serial
//! it no longer holds; only `dns.transfer.allow` may transfer, and with `dns.transfer.tsig`
//! only signed requests, every reply message signed and verified here; NOTIFY reaches a
//! listening socket after a change, carries the new serial, and is retried while unanswered.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use serde_json::json;
use signpost::config::{Network, TsigConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The TSIG key of the tests, base64 of 32 bytes.
const SECRET: &str = "c2lnbnBvc3QtdHJhbnNmZXItdGVzdC1rZXktMzJieXQ=";

fn key() -> Vec<u8> {
    data_encoding::BASE64.decode(SECRET.as_bytes()).unwrap()
}

/// A server whose zones loopback clients may transfer (`tsig`: signed only).
async fn primary(tsig: bool, tweak: impl FnOnce(&mut signpost::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.dns.transfer.allow = vec![Network::parse("127.0.0.0/8").unwrap()];
        if tsig {
            c.dns.transfer.tsig = Some(TsigConfig {
                name: "transfer.".into(),
                algorithm: "hmac-sha256".into(),
                secret: signpost::config::Secret(SECRET.into()),
            });
        }
        tweak(c);
    })
    .await
}

/// One record as text: owner, TTL, type, data.
fn text(r: &Record) -> String {
    format!(
        "{} {} {} {}",
        r.name.to_ascii().to_ascii_lowercase(),
        r.ttl,
        r.record_type(),
        r.data
    )
    .to_ascii_lowercase()
}

/// What a transfer returned: its messages (verified when signed).
struct Reply {
    messages: Vec<Message>,
}

impl Reply {
    fn records(&self) -> Vec<Record> {
        self.messages
            .iter()
            .flat_map(|m| m.answers.iter().cloned())
            .collect()
    }

    fn rcode(&self) -> ResponseCode {
        self.messages[0].metadata.response_code
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asks `server` for a transfer of `zone` (`ixfr`: from that serial) over TCP, signed with
/// `signer` when given; reads messages until the closing SOA (or an error reply). With a
/// signer, every message is verified (RFC 8945 §5.3.1 chaining) before it is accepted.
async fn transfer(
    server: SocketAddr,
    zone: &str,
    ixfr: Option<u32>,
    signer: Option<&TSigner>,
) -> Reply {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    let name = Name::from_ascii(zone).unwrap();
    let qtype = if ixfr.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    m.add_query(Query::query(name.clone(), qtype));
    if let Some(serial) = ixfr {
        let soa = SOA::new(
            Name::from_ascii("ns.").unwrap(),
            Name::from_ascii("h.").unwrap(),
            serial,
            0,
            0,
            0,
            0,
        );
        m.add_authority(Record::from_rdata(name, 0, RData::SOA(soa)));
    }
    let mut verifier = None;
    if let Some(s) = signer {
        let (tsig, v) = s.sign_message(&m, now()).unwrap();
        m.set_signature(tsig);
        verifier = v;
    }
    let wire = m.to_vec().unwrap();
    let mut conn = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    conn.write_all(&framed).await.unwrap();
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut len))
            .await
            .expect("a reply within 5 s")
            .expect("the connection stays open until the last message");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).await.unwrap();
        let plain = Message::from_vec(&buf).unwrap();
        let msg = match &mut verifier {
            Some(v) if plain.metadata.response_code == ResponseCode::NoError => {
                let r = v.verify(&buf).expect("every message verifies");
                Message::from_vec(r.as_buffer()).unwrap()
            }
            _ => plain,
        };
        assert_eq!(msg.metadata.id, 0x4242);
        let error = msg.metadata.response_code != ResponseCode::NoError;
        // An IXFR reply of one SOA alone: up to date (RFC 1995 §4).
        let up_to_date = messages.is_empty()
            && msg.answers.len() == 1
            && msg.answers[0].record_type() == RecordType::SOA;
        messages.push(msg);
        let all: Vec<&Record> = messages.iter().flat_map(|m| m.answers.iter()).collect();
        let closed = all.len() > 1 && all.last().map(|r| &r.data) == all.first().map(|r| &r.data);
        if error || up_to_date || closed {
            break;
        }
    }
    Reply { messages }
}

/// The zone as a set of record texts, the SOA once.
fn zone_set(records: &[Record]) -> BTreeSet<String> {
    records.iter().map(text).collect()
}

/// The serial of the first SOA of `records`.
fn serial_of(records: &[Record]) -> u32 {
    match &records[0].data {
        RData::SOA(s) => s.serial,
        other => panic!("first record not an SOA: {other:?}"),
    }
}

/// Applies an IXFR reply (RFC 1995 §4: SOA new, then per version SOA old + deletions, SOA
/// new + additions, then SOA new) to `zone`, a whole zone's set.
fn apply_ixfr(zone: &BTreeSet<String>, reply: &[Record]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = zone
        .iter()
        .filter(|r| !r.contains(" soa "))
        .cloned()
        .collect();
    let newest = text(&reply[0]);
    let body = &reply[1..reply.len() - 1];
    let mut deleting = true;
    let mut first = true;
    for r in body {
        if r.record_type() == RecordType::SOA {
            if !first {
                deleting = !deleting;
            }
            first = false;
            continue;
        }
        let t = text(r);
        if deleting {
            assert!(out.remove(&t), "IXFR deletes a record the zone has: {t}");
        } else {
            out.insert(t);
        }
    }
    out.insert(newest);
    out
}

#[tokio::test]
async fn axfr_returns_the_healthy_view_without_touching_rotation() {
    let s = primary(false, |_| {}).await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register("web", "w2", json!({"address": "10.0.0.2", "port": 81}))
        .await;
    s.register(
        "web",
        "w3",
        json!({"address": "10.0.0.3", "port": 82, "check": {"ttl": "60s"}}),
    )
    .await; // critical until reported
    let reply = transfer(s.dns, "internal.", None, None).await;
    assert_eq!(reply.rcode(), ResponseCode::NoError);
    let records = reply.records();
    let first = text(&records[0]);
    assert!(first.contains(" soa "), "starts with the SOA: {first}");
    assert_eq!(
        text(records.last().unwrap()),
        first,
        "ends with the same SOA"
    );
    let set = zone_set(&records);
    for want in [
        "web.service.internal. 5 a 10.0.0.1",
        "web.service.internal. 5 a 10.0.0.2",
        "web.service.internal. 5 srv 0 1 80 w1.web.instance.internal.",
        "w3.web.instance.internal. 5 a 10.0.0.3",
        "internal. 5 ns ns.internal.",
    ] {
        assert!(set.contains(want), "{want} in {set:#?}");
    }
    assert!(
        !set.contains("web.service.internal. 5 a 10.0.0.3"),
        "a critical instance is not in the service answer: {set:#?}"
    );
    // What a transfer sends is what queries answer.
    let (m, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    let answered: BTreeSet<String> = m.answers.iter().map(text).collect();
    let transferred: BTreeSet<String> = set
        .iter()
        .filter(|r| r.starts_with("web.service.internal. 5 a "))
        .cloned()
        .collect();
    assert_eq!(answered, transferred);
    // Rotation: two in-service instances alternate; transfers in between move nothing.
    let first_of = |m: &Message| text(&m.answers[0]);
    let (before, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    for _ in 0..3 {
        transfer(s.dns, "internal.", None, None).await;
    }
    let (after, _) = s.udp("web.service.internal.", RecordType::A, None).await;
    assert_ne!(
        first_of(&before),
        first_of(&after),
        "the next query puts the other instance first: no transfer moved the rotation"
    );
}

#[tokio::test]
async fn a_large_zone_comes_in_several_messages() {
    let s = primary(false, |_| {}).await;
    for i in 0..300 {
        s.register(
            "big",
            &format!("node-{i:03}"),
            json!({"address": format!("10.1.{}.{}", i / 200, i % 200 + 1), "port": 80}),
        )
        .await;
    }
    let reply = transfer(s.dns, "internal.", None, None).await;
    assert!(
        reply.messages.len() > 1,
        "{} messages",
        reply.messages.len()
    );
    let set = zone_set(&reply.records());
    let a = set
        .iter()
        .filter(|r| r.starts_with("big.service.internal. 5 a "))
        .count();
    assert_eq!(a, 300, "every address, once");
    // The question in the first message only.
    assert_eq!(reply.messages[0].queries.len(), 1);
}

/// IXFR: the difference from the client's serial; applied to the zone at that serial it
/// gives what AXFR gives now. A serial the history does not hold gets the whole zone; the
/// current serial gets the SOA alone.
#[tokio::test]
async fn ixfr_applied_to_the_old_zone_equals_a_fresh_axfr() {
    let s = primary(false, |_| {}).await;
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    s.register(
        "web",
        "w2",
        json!({"address": "10.0.0.2", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let old = transfer(s.dns, "internal.", None, None).await.records();
    let old_serial = serial_of(&old);
    let old_set = zone_set(&old);
    // Changes of every kind: a registration, a health change, a deregistration, a new tag.
    s.register("api", "a1", json!({"address": "10.0.1.1", "port": 9000}))
        .await;
    s.report("web", "w2", "passing").await;
    assert_eq!(s.deregister("web", "w1").await, 204);
    s.register(
        "api",
        "a1",
        json!({"address": "10.0.1.1", "port": 9000, "tags": ["v2"]}),
    )
    .await;
    let fresh = transfer(s.dns, "internal.", None, None).await.records();
    let reply = transfer(s.dns, "internal.", Some(old_serial), None).await;
    let ixfr = reply.records();
    assert_eq!(
        text(&ixfr[0]),
        text(&fresh[0]),
        "starts with the current SOA"
    );
    // Incremental, not the whole zone again: the first difference starts with the SOA of
    // the client's serial.
    assert!(
        ixfr[1].record_type() == RecordType::SOA && serial_of(&ixfr[1..]) == old_serial,
        "the first difference starts at the client's serial: {}",
        text(&ixfr[1])
    );
    assert_eq!(apply_ixfr(&old_set, &ixfr), zone_set(&fresh));
    // Up to date: the SOA alone.
    let current = transfer(s.dns, "internal.", Some(serial_of(&fresh)), None)
        .await
        .records();
    assert_eq!(current.len(), 1);
    assert_eq!(text(&current[0]), text(&fresh[0]));
    // A serial the history does not hold: the whole zone, AXFR-style.
    let unknown = transfer(
        s.dns,
        "internal.",
        Some(old_serial.wrapping_sub(1000)),
        None,
    )
    .await
    .records();
    assert_eq!(zone_set(&unknown), zone_set(&fresh));
}

/// A zone file's zone transfers as the file says; other names are not ours to transfer.
#[tokio::test]
async fn zone_file_zones_transfer_and_other_names_do_not() {
    let s = primary(false, |c| {
        std::fs::write(
            c.dns.zones_dir.join("example.test.zone"),
            "$ORIGIN example.test.\n$TTL 600\n\
             @ IN SOA ns1.example.test. admin.example.test. 7 3600 600 86400 3\n\
             @ IN NS ns1\nns1 IN A 192.0.2.53\nwww IN A 192.0.2.80\n",
        )
        .unwrap();
    })
    .await;
    let reply = transfer(s.dns, "example.test.", None, None).await;
    let set = zone_set(&reply.records());
    let want: BTreeSet<String> = [
        "example.test. 600 soa ns1.example.test. admin.example.test. 7 3600 600 86400 3",
        "example.test. 600 ns ns1.example.test.",
        "ns1.example.test. 600 a 192.0.2.53",
        "www.example.test. 600 a 192.0.2.80",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(set, want);
    let r = transfer(s.dns, "www.example.test.", None, None).await;
    assert_eq!(r.rcode(), ResponseCode::NotAuth, "not a zone apex");
    let r = transfer(s.dns, "example.com.", None, None).await;
    assert_eq!(
        r.rcode(),
        ResponseCode::NotAuth,
        "not a zone signpost serves"
    );
}

#[tokio::test]
async fn only_allowed_clients_may_transfer() {
    // The default: nobody.
    let s = TestServer::start().await;
    let r = transfer(s.dns, "internal.", None, None).await;
    assert_eq!(r.rcode(), ResponseCode::Refused);
    // Allowed networks that do not hold the client.
    let s = primary(false, |c| {
        c.dns.transfer.allow = vec![Network::parse("192.0.2.0/24").unwrap()];
    })
    .await;
    let r = transfer(s.dns, "internal.", None, None).await;
    assert_eq!(r.rcode(), ResponseCode::Refused);
    assert!(r.records().is_empty());
}

/// With `dns.transfer.tsig`, a transfer must be signed with the key: then every message of
/// the answer is signed (verified here, chained per RFC 8945 §5.3.1); an unsigned request is
/// REFUSED, one signed with another secret or key name NOTAUTH (BADSIG, BADKEY).
#[tokio::test]
async fn tsig_signed_transfers_only() {
    let s = primary(true, |_| {}).await;
    for i in 0..300 {
        s.register(
            "big",
            &format!("n-{i:03}"),
            json!({"address": format!("10.2.{}.{}", i / 200, i % 200 + 1), "port": 80}),
        )
        .await;
    }
    let name = Name::from_ascii("transfer.").unwrap();
    let good = TSigner::new(key(), TsigAlgorithm::HmacSha256, name.clone(), 300).unwrap();
    let r = transfer(s.dns, "internal.", None, Some(&good)).await;
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.messages.len() > 1, "several signed messages");
    assert!(zone_set(&r.records()).len() > 600);
    let r = transfer(s.dns, "internal.", Some(1), Some(&good)).await;
    assert_eq!(r.rcode(), ResponseCode::NoError, "IXFR signed too");
    // Unsigned.
    let r = transfer(s.dns, "internal.", None, None).await;
    assert_eq!(r.rcode(), ResponseCode::Refused);
    assert!(r.records().is_empty());
    // Another secret under the same name, and the right secret under another name.
    let mut wrong = key();
    wrong[0] ^= 1;
    let bad_secret = TSigner::new(wrong, TsigAlgorithm::HmacSha256, name, 300).unwrap();
    let bad_name = TSigner::new(
        key(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii("other.").unwrap(),
        300,
    )
    .unwrap();
    for (what, signer) in [("secret", bad_secret), ("key name", bad_name)] {
        let r = transfer(s.dns, "internal.", None, Some(&signer)).await;
        assert_eq!(r.rcode(), ResponseCode::NotAuth, "wrong {what}");
        assert!(r.records().is_empty(), "wrong {what}: nothing transferred");
    }
}

/// A fake secondary: a UDP socket that reads NOTIFYs and answers them when `answer`.
async fn notified(
    sock: &tokio::net::UdpSocket,
    answer: bool,
    wait: Duration,
) -> Option<(Message, u32)> {
    let mut buf = [0u8; 1024];
    let (n, from) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(u8::from(m.metadata.op_code), 4, "opcode NOTIFY");
    assert!(m.metadata.authoritative, "AA");
    let serial = serial_of(&m.answers);
    if answer {
        let mut reply = buf[..n].to_vec();
        reply[2] |= 0x80;
        sock.send_to(&reply, from).await.unwrap();
    }
    Some((m, serial))
}

#[tokio::test]
async fn notify_after_a_change_with_the_new_serial_retried_while_unanswered() {
    let secondary = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = secondary.local_addr().unwrap();
    let s = primary(false, |c| {
        c.dns.notify = vec![at];
        c.dns.notify_interval = Duration::from_millis(300);
    })
    .await;
    // At start-up, every zone.
    let (m, _) = notified(&secondary, true, Duration::from_secs(5))
        .await
        .expect("a NOTIFY at start-up");
    assert_eq!(m.queries[0].name().to_ascii(), "internal.");
    // A change: a NOTIFY with the serial the SOA now has.
    s.register("web", "w1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let (m, serial) = notified(&secondary, true, Duration::from_secs(5))
        .await
        .expect("a NOTIFY after the change");
    assert_eq!(m.queries[0].query_type(), RecordType::SOA);
    let (soa, _) = s.udp("internal.", RecordType::SOA, None).await;
    assert_eq!(serial, serial_of(&soa.answers));
    // Unanswered: retried.
    s.register("web", "w2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    let (_, first) = notified(&secondary, false, Duration::from_secs(5))
        .await
        .expect("a NOTIFY");
    let (_, again) = notified(&secondary, true, Duration::from_secs(5))
        .await
        .expect("the NOTIFY again, as it was not answered");
    assert_eq!(again, first);
    // Answered: no more until the next change.
    assert!(
        notified(&secondary, true, Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing more once answered"
    );
}

/// At most one NOTIFY per `dns.notify_interval` to a secondary, however many changes.
#[tokio::test]
async fn notify_at_most_once_per_interval() {
    let secondary = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = secondary.local_addr().unwrap();
    let s = primary(false, |c| {
        c.dns.notify = vec![at];
        c.dns.notify_interval = Duration::from_secs(2);
    })
    .await;
    notified(&secondary, true, Duration::from_secs(5))
        .await
        .expect("a NOTIFY at start-up");
    let start = tokio::time::Instant::now();
    for i in 0..20 {
        s.register(
            "web",
            &format!("w{i}"),
            json!({"address": "10.0.0.1", "port": 80}),
        )
        .await;
    }
    let mut times = Vec::new();
    let mut last_serial = 0;
    while start.elapsed() < Duration::from_secs(5) {
        if let Some((_, serial)) = notified(&secondary, true, Duration::from_millis(500)).await {
            times.push(start.elapsed());
            last_serial = serial;
        }
    }
    assert!(!times.is_empty(), "the changes were notified");
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(1900), "{times:?}");
    }
    let (soa, _) = s.udp("internal.", RecordType::SOA, None).await;
    assert_eq!(
        last_serial,
        serial_of(&soa.answers),
        "the last NOTIFY has the newest serial"
    );
}

/// A query signed with TSIG (a secondary's SOA check) gets a signed answer, verified here;
/// one signed with the wrong secret gets NOTAUTH.
#[tokio::test]
async fn signed_queries_get_signed_answers() {
    let s = primary(true, |_| {}).await;
    let name = Name::from_ascii("transfer.").unwrap();
    let good = TSigner::new(key(), TsigAlgorithm::HmacSha256, name.clone(), 300).unwrap();
    let mut wrong_key = key();
    wrong_key[3] ^= 0x40;
    let wrong = TSigner::new(wrong_key, TsigAlgorithm::HmacSha256, name, 300).unwrap();
    for (signer, ok) in [(&good, true), (&wrong, false)] {
        let mut m = Message::query();
        m.metadata.id = 0x2a2a;
        m.add_query(Query::query(
            Name::from_ascii("internal.").unwrap(),
            RecordType::SOA,
        ));
        let (tsig, verifier) = signer.sign_message(&m, now()).unwrap();
        m.set_signature(tsig);
        let reply = s.udp_raw(&m.to_vec().unwrap()).await.expect("a reply");
        if ok {
            let r = verifier
                .unwrap()
                .verify(&reply)
                .expect("the answer is signed");
            let m = Message::from_vec(r.as_buffer()).unwrap();
            assert_eq!(m.answers.len(), 1);
            assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        } else {
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NotAuth);
            assert!(m.answers.is_empty());
        }
    }
}
