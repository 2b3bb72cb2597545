//! Protocol policy in one place: from a query's bytes to a response's bytes.
//!
//! FORMERR for what does not parse, NOTIMP for other opcodes, REFUSED outside every zone and
//! for zone transfers, NXDOMAIN vs NODATA with the zone's SOA, AA on authoritative answers,
//! the size limit of the transport and the client's EDNS payload, rotation and
//! `dns.max_answers`. Transports only move bytes.

use smallvec::SmallVec;

use std::net::IpAddr;

use super::answer::Response;
use super::names::{self, MAX_NAME};
use super::query;
use super::routing::Client;
use super::table::{Lookup, RRSet, Rec, Table, Zone};
use super::wire::{
    self, A, AA, AAAA, ANY, AXFR, BADVERS, CD, CLASS_ANY, CLASS_IN, CNAME, FORMERR, HEADER_LEN,
    IXFR, MAILA, MAILB, NOERROR, NOTIMP, NS, NXDOMAIN, OPCODE, OPT, QR, QUERY, RA, RD, REFUSED,
    SERVFAIL, SOA, SRV, SRV_TARGET, TSIG,
};

/// How the query arrived, which sets the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: the response fits the client's EDNS payload size (512 without EDNS), or
    /// is truncated with TC set.
    Udp,
    /// A TCP stream: up to 65,535 bytes.
    Tcp,
}

/// The result of handling one query, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing sent: too short to answer, or a response rather than a query.
    Dropped,
    /// A response was written, with this RCODE, to a question of this type (0 when the query
    /// had no readable question).
    Answered {
        /// The response's RCODE (extended RCODEs included).
        rcode: u16,
        /// The question's type.
        qtype: u16,
    },
    /// As `Answered`, to a query signed with TSIG: the transport signs the response
    /// (`transfer::sign_answer`) before sending it.
    Signed {
        /// The response's RCODE (extended RCODEs included).
        rcode: u16,
        /// The question's type.
        qtype: u16,
    },
    /// A name outside every zone, from a client allowed to recurse: the transport relays the
    /// query to an upstream (`out` holds nothing to send).
    Forward {
        /// The question's type.
        qtype: u16,
    },
}

/// Writes the response to `packet`, from a client at `peer`, into `out`; `Dropped` when
/// none should be sent. `recursion`: forwarding is on and this client may use it, so
/// responses carry RA and names outside every zone are forwarded (when the query asks for
/// recursion) instead of REFUSED. `peer` (or the query's EDNS Client Subnet) places the
/// client in a `dns.locality` zone.
pub fn handle(
    table: &Table,
    packet: &[u8],
    transport: Transport,
    recursion: bool,
    peer: IpAddr,
    out: &mut Vec<u8>,
) -> Outcome {
    if packet.len() < HEADER_LEN || wire::flags(packet) & QR != 0 {
        // No header to answer with, or a response: answering could loop between servers.
        return Outcome::Dropped;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = wire::flags(packet);
    let opcode_bits = flags & OPCODE;
    let wants_recursion = flags & RD != 0;
    let ra = if recursion { RA } else { 0 };
    let echo = opcode_bits | ra | (flags & (RD | CD));
    let advertised = table.settings.max_udp_payload;
    // An error without a question; with an OPT when the query had one (RFC 6891 §7).
    let bare = |out: &mut Vec<u8>, rcode: u8, edns: Option<query::Edns>| {
        Response::new(out, id, echo, &[], 512, edns.is_some())
            .edns(advertised, edns.is_some_and(|e| e.dnssec_ok))
            .finish(u16::from(rcode));
        Outcome::Answered {
            rcode: u16::from(rcode),
            qtype: 0,
        }
    };
    let mut key = [0u8; MAX_NAME];
    let parsed = query::parse(packet, &mut key);
    if opcode_bits != QUERY {
        let edns = match parsed {
            Ok(q) => q.edns,
            Err(m) => m.edns,
        };
        return bare(out, NOTIMP, edns);
    }
    let q = match parsed {
        Ok(q) => q,
        Err(m) => return bare(out, FORMERR, m.edns),
    };
    let (qlen, qtype, qclass, edns) = (q.qname_len, q.qtype, q.qclass, q.edns);
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        // RFC 6891 §6.2.5: a payload below 512 is treated as 512; never more than
        // `dns.max_udp_payload`, whatever the client offers.
        Transport::Udp => {
            usize::from(edns.map_or(512, |e| e.payload.clamp(512, advertised.max(512))))
        }
    };
    let ecs = match edns {
        Some(e) if e.ecs != 0 => e.client_subnet(packet),
        _ => None,
    };
    let mut r = Response::new(out, id, echo, q.question(packet), limit, edns.is_some())
        .edns(advertised, edns.is_some_and(|e| e.dnssec_ok))
        .client_subnet(ecs);
    if edns.is_some_and(|e| e.version != 0) {
        r.finish(BADVERS);
        return Outcome::Answered {
            rcode: BADVERS,
            qtype,
        };
    }
    let rcode = if qtype == OPT || qtype == TSIG {
        FORMERR // OPT and TSIG are not questions
    } else if (qclass != CLASS_IN && qclass != CLASS_ANY) || qtype == AXFR || qtype == IXFR {
        REFUSED // other classes are not served; zone transfers are not offered
    } else if qtype == MAILA || qtype == MAILB {
        NOTIMP
    } else {
        // A resolver's Client Subnet stands for its client's address (RFC 7871).
        let mut client = Client::new(match ecs {
            Some(e) => e.client(),
            // An IPv4 client on an IPv6 socket is an IPv4 client.
            None => Some(peer.to_canonical()),
        });
        let rcode = answer(table, &key[..qlen], qtype, &mut r, &mut client);
        if ecs.is_some() {
            r.set_scope(client.scope());
        }
        match rcode {
            Some(rcode) => rcode,
            None if recursion && wants_recursion => return Outcome::Forward { qtype },
            // Outside every zone: no recursion for this client or query.
            None => REFUSED,
        }
    };
    r.finish(u16::from(rcode));
    let rcode = u16::from(rcode);
    if q.tsig {
        Outcome::Signed { rcode, qtype }
    } else {
        Outcome::Answered { rcode, qtype }
    }
}

/// SERVFAIL to `packet` (a query that passed `handle`), with its question and RA: what a
/// client gets when no upstream answered a forwarded query.
pub(crate) fn servfail(packet: &[u8], out: &mut Vec<u8>) {
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let echo = RA | (wire::flags(packet) & (RD | CD));
    let mut key = [0u8; MAX_NAME];
    let question = names::key_of_question(packet, &mut key)
        .and_then(|qlen| packet.get(HEADER_LEN..HEADER_LEN + qlen + 4))
        .unwrap_or(&[]);
    Response::new(out, id, echo, question, 512, false).finish(u16::from(SERVFAIL));
}

/// Answers a well-formed IN query; returns the RCODE, or `None` for a name outside every
/// zone. Sets AA inside our zones.
fn answer(
    table: &Table,
    key: &[u8],
    qtype: u16,
    r: &mut Response<'_>,
    client: &mut Client,
) -> Option<u8> {
    Some(match table.lookup(key) {
        Lookup::Outside => return None,
        Lookup::NxDomain(zone, apex) => {
            r.set_flags(AA);
            negative(table, r, key, zone, apex);
            NXDOMAIN
        }
        Lookup::Found(node, zone, apex) => {
            r.set_flags(AA);
            // A host zone's apex holds the base domain's SOA and NS besides its PTR.
            let host_apex = |rtype: u16| zone.host && (qtype == rtype || qtype == ANY);
            let mut wrote = false;
            if host_apex(SOA) {
                let soa = zone.soa_rdata(table.index());
                wrote |= r.answer(SOA, table.settings.ttl, &soa).is_some() || r.is_truncated();
            }
            if host_apex(NS)
                && let Some(ns) = table.domain_ns()
            {
                wrote |= write_set(table, &table.zones[0], ns, r, qtype == NS, client);
            }
            if qtype == ANY {
                // Additional records follow the answers, so only the last set's glue goes.
                let last = node.rrsets.len().saturating_sub(1);
                for (i, set) in node.rrsets.iter().enumerate() {
                    wrote |= write_set(table, zone, set, r, i == last, client);
                }
            } else if let Some(set) = node.get(qtype) {
                wrote |= write_set(table, zone, set, r, true, client);
            } else if let Some(cname) = node.get(CNAME) {
                wrote |= write_set(table, zone, cname, r, true, client);
            }
            if !wrote && !r.is_truncated() {
                negative(table, r, key, zone, apex);
            }
            NOERROR
        }
    })
}

/// Writes the zone's SOA into the authority section, owned by the apex: a pointer into the
/// question, whose name ends with the apex (`apex` bytes long). Its TTL is the negative TTL
/// (RFC 2308).
fn negative(table: &Table, r: &mut Response<'_>, key: &[u8], zone: &Zone, apex: usize) {
    debug_assert!(
        zone.host || names::is_within(key, &zone.apex),
        "a name's zone ends it"
    );
    r.negative_soa(zone, HEADER_LEN + key.len() - apex, table.index());
}

/// The addresses of the name servers of an NS answer that signpost knows (zone data or
/// registry names), as additional records owned by a pointer to each NS target (RFC 1034
/// §4.3.2 step 3; left out without TC when they do not fit).
fn ns_glue(table: &Table, set: &RRSet, targets: &[(usize, usize)], r: &mut Response<'_>) {
    for &(i, at) in targets {
        let target = &set.records[i].rdata;
        let mut key = [0u8; MAX_NAME];
        let Some(key) = key.get_mut(..target.len()) else {
            continue;
        };
        key.copy_from_slice(target);
        key.make_ascii_lowercase();
        let Some(node) = table.node(key) else {
            continue;
        };
        for rtype in [A, AAAA] {
            for rec in node.get(rtype).map_or(&[][..], |s| &s.records[..]) {
                let ttl = node.get(rtype).map_or(0, |s| s.ttl);
                if !r.additional(Response::owner_at(at, target), rtype, ttl, &rec.rdata) {
                    return;
                }
            }
        }
    }
}

/// SRV targets whose glue owners are kept without a heap allocation.
const GLUE_INLINE: usize = 16;

/// Writes one record set in its order (round-robin by weight, the client's zone first when
/// it routes; capped by `dns.max_answers` for service sets), then, with `glue`, the SRV or
/// NS targets' addresses as additional records (which must follow every answer: an ANY
/// answer asks for the last set's only). True if a record was written or had to be left
/// out for size.
fn write_set(
    table: &Table,
    zone: &Zone,
    set: &RRSet,
    r: &mut Response<'_>,
    glue: bool,
    client: &mut Client,
) -> bool {
    let n = set.records.len();
    if n == 0 {
        return false;
    }
    let max = table.settings.max_answers;
    let take = if set.rotating && max > 0 {
        n.min(max)
    } else {
        n
    };
    if set.rtype == SOA && zone.follows_registry {
        // One SOA, its serial the registry's now.
        let soa = zone.soa_rdata(table.index());
        r.answer(SOA, set.ttl, &soa);
        return true;
    }
    let order = set.order(client, &table.settings.locality);
    // (record index, offset of its SRV target) of each SRV record written, for glue owners;
    // at most `take` of them, inline for the common small answer so it allocates nothing.
    let mut targets: SmallVec<[(usize, usize); GLUE_INLINE]> = SmallVec::new();
    for k in 0..take {
        let i = order.at(k);
        let rec = &set.records[i];
        match r.answer(set.rtype, set.ttl, &rec.rdata) {
            Some(at) => {
                if set.rtype == SRV {
                    targets.push((i, at + SRV_TARGET));
                } else if set.rtype == NS {
                    targets.push((i, at));
                }
            }
            None => return true,
        }
    }
    if !glue {
        return true;
    }
    if set.rtype == NS {
        ns_glue(table, set, &targets, r);
        return true;
    }
    for (i, at) in targets {
        let rec = &set.records[i];
        if let Some(addr) = &rec.glue
            && !r.additional(
                Response::owner_at(at, &rec.rdata[SRV_TARGET..]),
                Rec::glue_type(addr),
                set.ttl,
                addr,
            )
        {
            break;
        }
    }
    true
}
