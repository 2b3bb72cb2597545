//! Reading a query off the wire: its header, its one question, and its OPT record (EDNS).
//!
//! Why not hickory's `Message` here: decoding a whole `Message` (a `Vec` of queries, owned
//! names, an EDNS option map) was 41% of the instructions of answering a query (callgrind,
//! `examples/query_cost`), and an answer needs only the question's position and the EDNS
//! payload size and version. This reader checks the structure as strictly (every record's
//! bounds, names, at most one OPT, owned by the root) without building anything.

use super::names::{self, MAX_NAME};
use super::wire::{HEADER_LEN, MAX_POINTER, OPT};

/// EDNS(0) as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The client's UDP payload size.
    pub payload: u16,
    pub version: u8,
    /// The DO bit (RFC 3225): copied into the reply's OPT.
    pub dnssec_ok: bool,
}

/// What an answer needs of a well-formed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query {
    /// Length of the question's name in wire format (its lowercase form is in the key buffer).
    pub qname_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query {
    /// The question section's bytes: name, type, class.
    pub(crate) fn question<'p>(&self, packet: &'p [u8]) -> &'p [u8] {
        &packet[HEADER_LEN..HEADER_LEN + self.qname_len + 4]
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Skips a (possibly compressed) name at `at`; the offset after it. Also walks the records of
/// a response signpost wrote (`answer::truncate`).
pub(super) fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *p.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                total += 1 + usize::from(len);
                if total > MAX_NAME {
                    return None;
                }
                at += 1 + usize::from(len);
            }
            // A pointer ends the name; it must point before itself.
            0xc0 => {
                let target = usize::from(u16_at(p, at)?) & MAX_POINTER;
                return (target < at).then_some(at + 2);
            }
            _ => return None, // 0x40 and 0x80 label types are obsolete or undefined
        }
    }
}

/// Parses `packet` (at least a 12-byte header, QR clear, opcode QUERY, as the handler
/// checked) and folds the question name into `key`. `None`: malformed, answer FORMERR.
pub(crate) fn parse(packet: &[u8], key: &mut [u8; MAX_NAME]) -> Option<Query> {
    if u16_at(packet, 4)? != 1 {
        return None;
    }
    let qname_len = names::key_of_question(packet, key)?;
    let mut at = HEADER_LEN + qname_len;
    let qtype = u16_at(packet, at)?;
    let qclass = u16_at(packet, at + 2)?;
    at += 4;
    let records = usize::from(u16_at(packet, 6)?)
        + usize::from(u16_at(packet, 8)?)
        + usize::from(u16_at(packet, 10)?);
    let additional_from = records - usize::from(u16_at(packet, 10)?);
    let mut edns = None;
    for i in 0..records {
        let name_at = at;
        at = skip_name(packet, at)?;
        let rtype = u16_at(packet, at)?;
        let class = u16_at(packet, at + 2)?;
        // For an OPT, TTL is extended RCODE (unused in a query), version, flags.
        let version = *packet.get(at + 5)?;
        let dnssec_ok = packet.get(at + 6)? & 0x80 != 0;
        let rdlen = usize::from(u16_at(packet, at + 8)?);
        at += 10;
        if packet.len() < at + rdlen {
            return None;
        }
        if rtype == OPT {
            // RFC 6891: one OPT, in the additional section, owned by the root.
            if i < additional_from || edns.is_some() || packet[name_at] != 0 {
                return None;
            }
            edns = Some(Edns {
                payload: class,
                version,
                dnssec_ok,
            });
        }
        at += rdlen;
    }
    Some(Query {
        qname_len,
        qtype,
        qclass,
        edns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns as HEdns, Message, Query as HQuery};
    use hickory_proto::rr::{Name, RecordType};

    fn wire(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(HQuery::query(
            Name::from_ascii(name).unwrap(),
            RecordType::SRV,
        ));
        if let Some(p) = edns {
            let mut e = HEdns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_what_hickory_writes() {
        let mut key = [0u8; MAX_NAME];
        let q = parse(&wire("Web.service.internal.", Some(1232)), &mut key).unwrap();
        assert_eq!((q.qtype, q.qclass), (33, 1));
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 1232,
                version: 0,
                dnssec_ok: false,
            })
        );
        assert_eq!(
            &key[..q.qname_len],
            &*names::from_dotted("web.service.internal.").unwrap()
        );
        let q = parse(&wire("web.service.internal.", None), &mut key).unwrap();
        assert_eq!(q.edns, None);
    }

    #[test]
    fn malformed_queries_are_refused() {
        let mut key = [0u8; MAX_NAME];
        let good = wire("web.service.internal.", Some(1232));
        // Cut anywhere inside: malformed.
        for cut in 12..good.len() {
            assert!(parse(&good[..cut], &mut key).is_none(), "cut at {cut}");
        }
        // Two questions, or none.
        let mut two = good.clone();
        two[5] = 2;
        assert!(parse(&two, &mut key).is_none());
        let mut none = good.clone();
        none[5] = 0;
        assert!(parse(&none, &mut key).is_none());
        // A second OPT record.
        let mut double = good.clone();
        double[11] = 2;
        double.extend_from_slice(&good[good.len() - 11..]);
        assert!(parse(&double, &mut key).is_none());
        // An OPT not owned by the root.
        let mut owned = wire("web.service.internal.", None);
        owned[11] = 1;
        owned.extend_from_slice(&[0xc0, 12, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(parse(&owned, &mut key).is_none());
        // A forward compression pointer in a record name.
        let mut fwd = wire("web.service.internal.", None);
        fwd[7] = 1;
        fwd.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(parse(&fwd, &mut key).is_none());
    }

    #[test]
    fn records_before_the_opt_are_skipped() {
        let mut key = [0u8; MAX_NAME];
        let mut q = wire("web.service.internal.", None);
        // One answer record (compressed owner, A 10.0.0.1), then an OPT.
        q[7] = 1;
        q[11] = 1;
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 1, 0, 0, 0, 0]);
        let p = parse(&q, &mut key).unwrap();
        assert_eq!(
            p.edns,
            Some(Edns {
                payload: 4096,
                version: 1,
                dnssec_ok: false,
            })
        );
    }
}
