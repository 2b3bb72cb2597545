//! Zone transfers (AXFR, RFC 5936; IXFR, RFC 1995) over TCP, who may ask for them
//! (`dns.transfer.allow`, and a TSIG key, RFC 8945, when `dns.transfer.tsig` is set), and the
//! bounded history of differences between published versions that IXFR answers from.
//!
//! A transfer answers what signpost would answer: the zone's names as the table a query
//! would read holds them (the healthy view for D), read without touching a rotation counter,
//! written as as many messages as they need. The records are gathered from one table (an
//! `Arc`, so queries and publishes go on meanwhile) and the messages are written one at a
//! time by the connection, which yields between them. Only D and the zone files of
//! `arpa.` reverse zones change with the registry (`Zone::follows_registry`): their SOA
//! serial is the registry index plus the file's serial, and IXFR answers from the history;
//! other zone files never change while signpost runs, so IXFR of them is an SOA (up to date)
//! or the whole zone.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, RData, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::BinEncodable;
use ipnet::IpNet;

use super::answer::Response;
use super::dynamic::Published;
use super::names::MAX_NAME;
use super::query;
use super::table::{Node, Table};
use super::wire::{self, AA, AXFR, CD, CLASS_IN, HEADER_LEN, IXFR, OPCODE, QR, QUERY, RD, SOA};
use crate::config::Config;

/// RCODE 9 (RFC 2845): the TSIG of the request does not verify.
const NOTAUTH: u16 = 9;
/// A transfer message is closed once it reaches this many bytes (a record never straddles
/// two messages); well below 65,535, so a TSIG record always fits after it.
const MESSAGE_TARGET: usize = 16 * 1024;
/// Room kept for the TSIG record: its name, fixed fields and a SHA-256 MAC.
const TSIG_ROOM: usize = MAX_NAME + 64;
/// Published versions kept for IXFR, and records across them; past either, the oldest go.
const HISTORY_VERSIONS: usize = 256;
const HISTORY_RECORDS: usize = 200_000;
/// The TSIG fudge signpost signs with (RFC 8945 §10 recommends 300 s).
const FUDGE: u16 = 300;

/// One record of a zone: owner (lowercase wire), type, TTL, RDATA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rr {
    pub owner: Arc<[u8]>,
    pub rtype: u16,
    pub rdata: Arc<[u8]>,
    pub ttl: u32,
}

/// Who may transfer.
pub(crate) struct Policy {
    allow: Vec<IpNet>,
    tsig: Option<TSigner>,
}

impl Policy {
    pub(crate) fn new(config: &Config) -> Result<Self, String> {
        let t = &config.dns.transfer;
        let tsig = match &t.tsig {
            Some(k) => {
                let name = Name::from_ascii(&k.name)
                    .map_err(|e| format!("dns.transfer.tsig.name: {e}"))?;
                Some(
                    TSigner::new(k.key(), TsigAlgorithm::HmacSha256, name, FUDGE)
                        .map_err(|e| format!("dns.transfer.tsig: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Self {
            allow: t.allow.iter().map(|n| n.0).collect(),
            tsig,
        })
    }

    fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow.iter().any(|n| n.contains(&client))
    }
}

/// The changes of one published version, per zone.
#[derive(Debug)]
struct Diff {
    from: u64,
    to: u64,
    /// (zone index, record) taken out and put in.
    removed: Vec<(usize, Rr)>,
    added: Vec<(usize, Rr)>,
}

/// The differences between consecutive published versions, newest last, bounded.
#[derive(Debug, Default)]
pub(crate) struct History {
    diffs: VecDeque<Diff>,
    records: usize,
}

/// The records of `node` at `owner` (the SOA left out: a transfer places it itself).
fn node_records(owner: &Arc<[u8]>, node: &Node, out: &mut Vec<Rr>) {
    for set in &node.rrsets {
        if set.rtype == SOA {
            continue;
        }
        for rec in &set.records {
            out.push(Rr {
                owner: owner.clone(),
                rtype: set.rtype,
                rdata: rec.rdata.clone(),
                ttl: set.ttl,
            });
        }
    }
}

impl History {
    /// Records what the publish from index `from` to `to` changed in the zones that follow
    /// the registry. A rebuild forgets everything: IXFR then answers with the whole zone.
    pub(crate) fn record(&mut self, table: &Table, from: u64, to: u64, published: Published) {
        let changed = match published {
            Published::Rebuilt => {
                self.diffs.clear();
                self.records = 0;
                return;
            }
            Published::Changed(c) => c,
        };
        if from == to {
            return;
        }
        let follows =
            |node: &Node| table.zones[node.zone].follows_registry && !table.zones[node.zone].host;
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for (name, before, after) in changed {
            let mut old = Vec::new();
            let mut new = Vec::new();
            let zone = before.as_ref().or(after.as_ref()).map_or(0, |n| n.zone);
            if let Some(n) = before.as_deref().filter(|n| follows(n)) {
                node_records(&name, n, &mut old);
            }
            if let Some(n) = after.as_deref().filter(|n| follows(n)) {
                node_records(&name, n, &mut new);
            }
            let old_set: BTreeSet<Rr> = old.into_iter().collect();
            let new_set: BTreeSet<Rr> = new.into_iter().collect();
            removed.extend(old_set.difference(&new_set).map(|r| (zone, r.clone())));
            added.extend(new_set.difference(&old_set).map(|r| (zone, r.clone())));
        }
        // A version whose chain is broken (a publish lost from the history) cannot follow.
        if self.diffs.back().is_some_and(|d| d.to != from) {
            self.diffs.clear();
            self.records = 0;
        }
        self.records += removed.len() + added.len();
        self.diffs.push_back(Diff {
            from,
            to,
            removed,
            added,
        });
        while self.diffs.len() > HISTORY_VERSIONS || self.records > HISTORY_RECORDS {
            match self.diffs.pop_front() {
                Some(d) => self.records -= d.removed.len() + d.added.len(),
                None => break,
            }
        }
    }

    /// The versions from the one whose serial in `zone` is `serial` up to `now`, each as
    /// (from index, to index, removed, added) for that zone; `None` when the history does
    /// not reach back to it.
    fn since(&self, zone: usize, base: u32, serial: u32, now: u64) -> Option<Vec<Step>> {
        let start = self
            .diffs
            .iter()
            .position(|d| base.wrapping_add(d.from as u32) == serial)?;
        let mut steps = Vec::new();
        for d in self.diffs.iter().skip(start) {
            if d.to > now {
                break;
            }
            let pick = |v: &[(usize, Rr)]| {
                v.iter()
                    .filter(|(z, _)| *z == zone)
                    .map(|(_, r)| r.clone())
                    .collect()
            };
            steps.push(Step {
                from: d.from,
                to: d.to,
                removed: pick(&d.removed),
                added: pick(&d.added),
            });
        }
        (steps.last().map(|s| s.to) == Some(now)).then_some(steps)
    }
}

/// One version's changes in one zone.
struct Step {
    from: u64,
    to: u64,
    removed: Vec<Rr>,
    added: Vec<Rr>,
}

/// Whether `packet` asks for a zone transfer (a well-formed QUERY for AXFR or IXFR): the
/// TCP transport hands those to `Transfer`, everything else to the handler.
pub(crate) fn is_transfer(packet: &[u8]) -> bool {
    if packet.len() < HEADER_LEN || wire::flags(packet) & (QR | OPCODE) != QUERY {
        return false;
    }
    let mut key = [0u8; MAX_NAME];
    query::parse(packet, &mut key).is_ok_and(|q| q.qtype == AXFR || q.qtype == IXFR)
}

/// One transfer's answer, produced a message at a time (`next`).
pub(crate) struct Transfer {
    id: u16,
    flags: u16,
    question: Vec<u8>,
    /// The records to send, in order (SOA first and last, and in between as AXFR or IXFR
    /// lays them out).
    records: std::vec::IntoIter<Rr>,
    /// The one reply when the transfer is refused or fails.
    error: Option<Vec<u8>>,
    first: bool,
    signing: Option<Signing>,
}

/// The TSIG state of a signed transfer: the key, and the MAC the next message chains from.
struct Signing {
    signer: TSigner,
    previous_mac: Vec<u8>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A reply with `rcode` and nothing else (the question echoed, an OPT when asked).
fn error_reply(packet: &[u8], rcode: u16, question: &[u8], edns: Option<query::Edns>) -> Vec<u8> {
    let mut out = Vec::new();
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = wire::flags(packet) & (RD | CD);
    Response::new(
        &mut out,
        id,
        flags,
        question,
        usize::from(u16::MAX),
        edns.is_some(),
    )
    .finish(rcode);
    out
}

/// Appends an unsigned TSIG record reporting `ctx`'s error to `reply` (RFC 8945 §5.3.2).
fn with_tsig_error(mut reply: Vec<u8>, ctx: TSigResponseContext) -> Vec<u8> {
    if let Ok(rec) = ctx.sign(&reply)
        && let Ok(bytes) = rec.to_bytes()
    {
        reply.extend_from_slice(&bytes);
        let ar = u16::from_be_bytes([reply[10], reply[11]]) + 1;
        reply[10..12].copy_from_slice(&ar.to_be_bytes());
    }
    reply
}

/// Checks the TSIG of a request (`message`, parsed from `packet`): `Ok(None)` unsigned,
/// `Ok(Some)` signed with signpost's key and in time, `Err` the NOTAUTH reply (with an
/// unsigned TSIG naming BADKEY, BADSIG or BADTIME, RFC 8945 §5.2) otherwise.
fn verify(
    policy: &Policy,
    message: &Message,
    packet: &[u8],
    question: &[u8],
) -> Result<Option<Signing>, Vec<u8>> {
    let Some(sig) = message.signature() else {
        return Ok(None);
    };
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let now = now_secs();
    let reply = || error_reply(packet, NOTAUTH, question, None);
    let Some(signer) = policy
        .tsig
        .as_ref()
        .filter(|s| sig.name == *s.signer_name() && sig.data.algorithm == *s.algorithm())
    else {
        return Err(with_tsig_error(
            reply(),
            TSigResponseContext::unknown_key(id, now, sig.name.clone()),
        ));
    };
    match signer.verify_message_byte(packet, None, true) {
        Ok((mac, _, range)) if range.contains(&now) => Ok(Some(Signing {
            signer: signer.clone(),
            previous_mac: mac,
        })),
        Ok((mac, _, _)) => Err(with_tsig_error(
            reply(),
            TSigResponseContext::new(id, now, signer.clone(), mac, Some(TsigError::BadTime)),
        )),
        Err(_) => Err(with_tsig_error(
            reply(),
            TSigResponseContext::bad_signature(id, now, signer.clone()),
        )),
    }
}

/// Signs `reply`, the handler's answer to the TSIG-signed query `packet` (a secondary's SOA
/// query before a transfer, say): a signed query gets a signed answer (RFC 8945 §5.3), or the
/// NOTAUTH of a signature that does not verify.
pub(crate) fn sign_answer(policy: &Policy, packet: &[u8], reply: &mut Vec<u8>) {
    let mut key = [0u8; MAX_NAME];
    let question = query::parse(packet, &mut key)
        .map(|q| q.question(packet).to_vec())
        .unwrap_or_default();
    let Ok(message) = Message::from_vec(packet) else {
        return;
    };
    match verify(policy, &message, packet, &question) {
        Ok(Some(mut s)) => {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            sign(&mut s, id, reply, true);
        }
        Ok(None) => {}
        Err(error) => *reply = error,
    }
}

impl Transfer {
    /// Checks who asks and how, and gathers the records of the answer.
    pub(crate) fn new(
        table: &Table,
        history: &std::sync::Mutex<History>,
        policy: &Policy,
        client: IpAddr,
        packet: &[u8],
    ) -> Self {
        let mut key = [0u8; MAX_NAME];
        let id = u16::from_be_bytes([*packet.first().unwrap_or(&0), *packet.get(1).unwrap_or(&0)]);
        let fail = |reply: Vec<u8>| Self {
            id,
            flags: 0,
            question: Vec::new(),
            records: Vec::new().into_iter(),
            error: Some(reply),
            first: true,
            signing: None,
        };
        // `is_transfer` parsed it already; a packet that does not parse is FORMERR all the same.
        let q = match query::parse(packet, &mut key) {
            Ok(q) if packet.len() >= HEADER_LEN => q,
            _ => {
                let mut out = Vec::new();
                Response::new(&mut out, id, 0, &[], 512, false).finish(u16::from(wire::FORMERR));
                return fail(out);
            }
        };
        let question = q.question(packet).to_vec();
        if !policy.allows(client) {
            return fail(error_reply(
                packet,
                u16::from(wire::REFUSED),
                &question,
                q.edns,
            ));
        }
        let Ok(message) = Message::from_vec(packet) else {
            return fail(error_reply(
                packet,
                u16::from(wire::FORMERR),
                &question,
                q.edns,
            ));
        };
        let signing = match (&policy.tsig, message.signature()) {
            (Some(_), None) => {
                return fail(error_reply(
                    packet,
                    u16::from(wire::REFUSED),
                    &question,
                    q.edns,
                ));
            }
            _ => match verify(policy, &message, packet, &question) {
                Ok(s) => s,
                Err(reply) => return fail(reply),
            },
        };
        let qname = &key[..q.qname_len];
        let Some(&(_, zi)) = table.apexes.iter().find(|(a, _)| **a == *qname) else {
            // Not a zone signpost serves (RFC 5936 §2.2.1).
            return fail(error_reply(packet, NOTAUTH, &question, q.edns));
        };
        let zone = &table.zones[zi];
        // The serial first, then the names: a table newer than its serial is re-fetched at
        // the next change, never the other way round.
        let index = table.index();
        let apex: Arc<[u8]> = zone.apex.clone().into();
        let soa = Rr {
            owner: apex.clone(),
            rtype: SOA,
            rdata: Arc::from(&zone.soa_rdata(index)[..]),
            ttl: table.soa_ttl(zi),
        };
        let mut records = vec![soa.clone()];
        let client_serial = (q.qtype == IXFR)
            .then(|| {
                message.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(s) => Some(s.serial),
                    _ => None,
                })
            })
            .flatten();
        let current = zone.serial(index);
        let steps = match client_serial {
            Some(c) if c == current || wire_serial_ahead(c, current) => Some(Vec::new()),
            Some(c) if zone.follows_registry => history
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .since(zi, zone.serial_base, c, index),
            _ => None,
        };
        match steps {
            // Up to date (or ahead): the current SOA alone (RFC 1995 §2).
            Some(steps) if steps.is_empty() => {}
            Some(steps) => {
                for s in steps {
                    let soa_at = |i: u64| Rr {
                        rdata: Arc::from(&zone.soa_rdata(i)[..]),
                        ..soa.clone()
                    };
                    records.push(soa_at(s.from));
                    records.extend(s.removed);
                    records.push(soa_at(s.to));
                    records.extend(s.added);
                }
                records.push(soa);
            }
            None => {
                table.zone_records(zi, &mut records);
                records.push(soa);
            }
        }
        Self {
            id,
            flags: wire::flags(packet) & (RD | CD),
            question,
            records: records.into_iter(),
            error: None,
            first: true,
            signing,
        }
    }

    /// The next message of the answer, `None` after the last.
    pub(crate) fn next(&mut self) -> Option<Vec<u8>> {
        if let Some(e) = self.error.take() {
            self.records = Vec::new().into_iter();
            self.first = false;
            return Some(e);
        }
        if !self.first && self.records.len() == 0 {
            return None;
        }
        let mut buf = Vec::with_capacity(MESSAGE_TARGET + TSIG_ROOM);
        // The question in the first message only (RFC 5936 §2.2.1).
        let question: &[u8] = if self.first { &self.question } else { &[] };
        Response::new(
            &mut buf,
            self.id,
            self.flags | AA,
            question,
            usize::from(u16::MAX),
            false,
        )
        .finish(u16::from(wire::NOERROR));
        let mut count: u16 = 0;
        while buf.len() < MESSAGE_TARGET {
            let Some(rec) = self.records.as_slice().first() else {
                break;
            };
            let len = rec.owner.len() + 10 + rec.rdata.len();
            if count > 0 && buf.len() + len > usize::from(u16::MAX) - TSIG_ROOM {
                break;
            }
            buf.extend_from_slice(&rec.owner);
            buf.extend_from_slice(&rec.rtype.to_be_bytes());
            buf.extend_from_slice(&CLASS_IN.to_be_bytes());
            buf.extend_from_slice(&rec.ttl.to_be_bytes());
            buf.extend_from_slice(&(rec.rdata.len() as u16).to_be_bytes());
            buf.extend_from_slice(&rec.rdata);
            count += 1;
            self.records.next();
        }
        buf[6..8].copy_from_slice(&count.to_be_bytes());
        if let Some(s) = &mut self.signing {
            sign(s, self.id, &mut buf, self.first);
        }
        self.first = false;
        Some(buf)
    }
}

/// Whether the client's serial `c` is ahead of ours (RFC 1982): then it has nothing to take.
fn wire_serial_ahead(c: u32, ours: u32) -> bool {
    c != ours && c.wrapping_sub(ours) < 1 << 31
}

/// Signs one message of a signed transfer (RFC 8945 §5.3.1): the first covers the request's
/// MAC, the message and the whole TSIG variables; each later one the previous MAC, the
/// message and the timers only.
fn sign(s: &mut Signing, id: u16, buf: &mut Vec<u8>, first: bool) {
    let now = now_secs();
    let stub = TSIG::new(
        s.signer.algorithm().clone(),
        now,
        s.signer.fudge(),
        Vec::new(),
        id,
        None,
        Vec::new(),
    );
    let tbs = if first {
        match s.signer.encode_response_tbs(&s.previous_mac, buf, &stub) {
            Ok(t) => t,
            Err(_) => return,
        }
    } else {
        let mut t = Vec::with_capacity(2 + s.previous_mac.len() + buf.len() + 8);
        t.extend_from_slice(&(s.previous_mac.len() as u16).to_be_bytes());
        t.extend_from_slice(&s.previous_mac);
        t.extend_from_slice(buf);
        t.extend_from_slice(&((now >> 32) as u16).to_be_bytes());
        t.extend_from_slice(&(now as u32).to_be_bytes());
        t.extend_from_slice(&s.signer.fudge().to_be_bytes());
        t
    };
    let Ok(mac) = s.signer.sign(&tbs) else {
        return;
    };
    let rec = make_tsig_record(s.signer.signer_name().clone(), stub.set_mac(mac.clone()));
    let Ok(bytes) = rec.to_bytes() else {
        return;
    };
    buf.extend_from_slice(&bytes);
    let ar = u16::from_be_bytes([buf[10], buf[11]]) + 1;
    buf[10..12].copy_from_slice(&ar.to_be_bytes());
    s.previous_mac = mac;
}
