//! Reading a query off the wire: its header, its one question, and its OPT record (EDNS).
//!
//! Why not hickory's `Message` here: decoding a whole `Message` (a `Vec` of queries, owned
//! names, an EDNS option map) was 41% of the instructions of answering a query (callgrind,
//! `examples/query_cost`), and an answer needs only the question's position and the EDNS
//! payload size and version. This reader checks the structure as strictly (every record's
//! bounds, names, at most one OPT, owned by the root) without building anything.

use super::names::{self, MAX_NAME};
use super::wire::{HEADER_LEN, MAX_POINTER, OPT, TSIG};

/// EDNS(0) as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    /// The client's UDP payload size.
    pub payload: u16,
    pub version: u8,
    /// The DO bit (RFC 3225): copied into the reply's OPT.
    pub dnssec_ok: bool,
    /// Where the data of the query's EDNS Client Subnet option (RFC 7871) starts in the
    /// packet, already checked well formed; 0 when it has none. An offset rather than the
    /// option read out, so a query without one (nearly all) copies two bytes, not twenty.
    pub ecs: u16,
}

impl Edns {
    /// The query's Client Subnet, when it has one (`packet` is the query `parse` read). Out
    /// of line: nearly no query has one.
    #[inline(never)]
    pub(crate) fn client_subnet(&self, packet: &[u8]) -> Option<Ecs> {
        if self.ecs == 0 {
            return None;
        }
        let at = usize::from(self.ecs);
        let len = usize::from(u16_at(packet, at - 2)?);
        Ecs::parse(packet.get(at..at + len)?)
    }
}

/// The EDNS option code of Client Subnet (RFC 7871 §6).
pub(crate) const ECS: u16 = 8;

/// An EDNS Client Subnet option as sent (RFC 7871 §6): echoed in the reply with its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ecs {
    /// 1: IPv4, 2: IPv6.
    pub family: u16,
    pub source: u8,
    /// The address's first `ceil(source / 8)` bytes (the rest zero).
    pub addr: [u8; 16],
}

impl Ecs {
    /// Bytes of ADDRESS on the wire.
    pub(crate) fn addr_len(&self) -> usize {
        usize::from(self.source).div_ceil(8)
    }

    /// The client's address as the resolver gave it, the bits past SOURCE PREFIX-LENGTH
    /// zero; `None` for a source prefix of 0, by which a resolver asks that the answer not
    /// depend on where its client is (RFC 7871 §7.1.2).
    pub(crate) fn client(&self) -> Option<std::net::IpAddr> {
        if self.source == 0 {
            return None;
        }
        Some(if self.family == 1 {
            let a: [u8; 4] = self.addr[..4].try_into().expect("4 bytes");
            std::net::IpAddr::from(a)
        } else {
            std::net::IpAddr::from(self.addr)
        })
    }

    /// Reads an ECS option's data: FAMILY 1 or 2, SOURCE PREFIX-LENGTH within it, ADDRESS of
    /// exactly the bytes the prefix needs with no bit set past it (RFC 7871 §6: otherwise
    /// FORMERR). A query's SCOPE PREFIX-LENGTH is not looked at.
    #[cold]
    fn parse(data: &[u8]) -> Option<Self> {
        let family = u16_at(data, 0)?;
        let source = *data.get(2)?;
        let _scope = *data.get(3)?;
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return None,
        };
        if source > max {
            return None;
        }
        let addr = &data[4..];
        let mut ecs = Ecs {
            family,
            source,
            addr: [0; 16],
        };
        if addr.len() != ecs.addr_len() {
            return None;
        }
        ecs.addr[..addr.len()].copy_from_slice(addr);
        let spare = (8 - source % 8) % 8;
        if let Some(&last) = addr.last()
            && last & ((1u16 << spare) - 1) as u8 != 0
        {
            return None;
        }
        Some(ecs)
    }
}

/// What an answer needs of a well-formed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query {
    /// Length of the question's name in wire format (its lowercase form is in the key buffer).
    pub qname_len: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// The last record is a TSIG (RFC 8945): the reply must be signed.
    pub tsig: bool,
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

/// A query that is not well formed (answer FORMERR), with the EDNS of its first OPT record
/// when one was read before the fault, so the FORMERR carries an OPT too (RFC 6891 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub edns: Option<Edns>,
}

/// Parses `packet` (at least a 12-byte header, QR clear, as the handler checked) and folds
/// the question name into `key`. `Err`: malformed, answer FORMERR (with an OPT when the
/// query had one). A message of another opcode is read the same way, for its OPT.
pub(crate) fn parse(packet: &[u8], key: &mut [u8; MAX_NAME]) -> Result<Query, Malformed> {
    let bad = Malformed { edns: None };
    let qdcount = u16_at(packet, 4).ok_or(bad)?;
    // The one question's name, folded; `None` when there is not exactly one.
    let qname_len = if qdcount == 1 {
        names::key_of_question(packet, key)
    } else {
        None
    };
    // Past every question, so the records (and an OPT among them) can be read even when
    // the question is at fault.
    let mut at = HEADER_LEN;
    for _ in 0..qdcount {
        at = skip_name(packet, at).ok_or(bad)? + 4;
    }
    let (edns, tsig) = records(packet, at)?;
    let Some(qname_len) = qname_len else {
        return Err(Malformed { edns });
    };
    let at = HEADER_LEN + qname_len;
    let (Some(qtype), Some(qclass)) = (u16_at(packet, at), u16_at(packet, at + 2)) else {
        return Err(Malformed { edns });
    };
    Ok(Query {
        qname_len,
        qtype,
        qclass,
        edns,
        tsig,
    })
}

/// Walks the answer, authority and additional records from `at`: every record's bounds and
/// name, at most one OPT, in the additional section, owned by the root, its options filling
/// its RDATA exactly. `Ok`: the OPT's EDNS, if any, and whether the last record is a TSIG;
/// `Err` carries the first OPT read.
fn records(packet: &[u8], mut at: usize) -> Result<(Option<Edns>, bool), Malformed> {
    let mut edns = None;
    let mut tsig = false;
    let mut bad = false;
    let count = |i| u16_at(packet, i).map(usize::from);
    let (Some(an), Some(ns), Some(ar)) = (count(6), count(8), count(10)) else {
        return Err(Malformed { edns });
    };
    let additional_from = an + ns;
    for i in 0..an + ns + ar {
        let name_at = at;
        let Some(end) = skip_name(packet, at) else {
            return Err(Malformed { edns });
        };
        at = end;
        let (Some(rtype), Some(class), Some(rdlen)) = (
            u16_at(packet, at),
            u16_at(packet, at + 2),
            u16_at(packet, at + 8),
        ) else {
            return Err(Malformed { edns });
        };
        let rdlen = usize::from(rdlen);
        at += 10;
        if packet.len() < at + rdlen {
            return Err(Malformed { edns });
        }
        if rtype == OPT {
            // For an OPT, TTL is extended RCODE (unused in a query), version, flags.
            let mut opt = Edns {
                payload: class,
                version: packet[at - 5],
                dnssec_ok: packet[at - 4] & 0x80 != 0,
                ecs: 0,
            };
            // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
            bad |= i < additional_from || edns.is_some() || packet[name_at] != 0;
            match options(&packet[at..at + rdlen]) {
                // A message is at most 65,535 bytes, so the offset fits.
                Ok(ecs) => opt.ecs = ecs.map_or(0, |o| (at + o) as u16),
                Err(()) => bad = true,
            }
            edns = edns.or(Some(opt));
        }
        tsig = rtype == TSIG && i + 1 == an + ns + ar && i >= additional_from;
        at += rdlen;
    }
    if bad {
        Err(Malformed { edns })
    } else {
        Ok((edns, tsig))
    }
}

/// Reads an OPT's options: a whole number of them (code, length, that many bytes; an option
/// running past the RDATA, or a stray byte after the last, is malformed), at most one Client
/// Subnet and that one well formed (RFC 7871 §6, §7.1.1). Other codes are ignored (RFC 6891
/// §6.1.2). `Ok`: where the Client Subnet's data starts in `rdata`, if there is one.
fn options(rdata: &[u8]) -> Result<Option<usize>, ()> {
    let mut at = 0;
    let mut ecs = None;
    while at < rdata.len() {
        let (Some(code), Some(len)) = (u16_at(rdata, at), u16_at(rdata, at + 2)) else {
            return Err(());
        };
        let end = at + 4 + usize::from(len);
        if code == ECS {
            let data = rdata.get(at + 4..end).ok_or(())?;
            if ecs.is_some() {
                return Err(());
            }
            Ecs::parse(data).ok_or(())?;
            ecs = Some(at + 4);
        }
        at = end;
    }
    if at == rdata.len() { Ok(ecs) } else { Err(()) }
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
                ecs: 0,
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
            assert!(parse(&good[..cut], &mut key).is_err(), "cut at {cut}");
        }
        // Two questions, or none.
        let mut two = good.clone();
        two[5] = 2;
        assert!(parse(&two, &mut key).is_err());
        let mut none = good.clone();
        none[5] = 0;
        assert!(parse(&none, &mut key).is_err());
        // A second OPT record.
        let mut double = good.clone();
        double[11] = 2;
        double.extend_from_slice(&good[good.len() - 11..]);
        assert!(parse(&double, &mut key).is_err());
        // An OPT not owned by the root.
        let mut owned = wire("web.service.internal.", None);
        owned[11] = 1;
        owned.extend_from_slice(&[0xc0, 12, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(parse(&owned, &mut key).is_err());
        // A forward compression pointer in a record name.
        let mut fwd = wire("web.service.internal.", None);
        fwd[7] = 1;
        fwd.extend_from_slice(&[0xc0, 0xff, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(parse(&fwd, &mut key).is_err());
    }

    /// The wire of a query with an OPT whose RDATA is `rdata` (RDLENGTH its length).
    fn with_options(rdata: &[u8]) -> Vec<u8> {
        let mut q = wire("web.service.internal.", None);
        q[11] = 1;
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        q.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        q.extend_from_slice(rdata);
        q
    }

    #[test]
    fn options_must_fill_the_opt_rdata_and_unknown_ones_are_ignored() {
        let mut key = [0u8; MAX_NAME];
        let edns = Some(Edns {
            payload: 1232,
            version: 0,
            dnssec_ok: true,
            ecs: 0,
        });
        // Two options, one of an unassigned code: fine.
        let good = with_options(&[0xfd, 0xe9, 0, 2, 1, 2, 0, 10, 0, 0]);
        assert_eq!(parse(&good, &mut key).unwrap().edns, edns);
        for bad in [
            &[0, 10, 0, 9, 1, 2][..], // an option's length past the RDATA
            &[0, 10, 0, 0, 7][..],    // a stray byte after the last option
            &[0, 10, 0][..],          // a cut option header
        ] {
            // Malformed, and the OPT read is handed back for the FORMERR's own OPT.
            assert_eq!(
                parse(&with_options(bad), &mut key),
                Err(Malformed { edns }),
                "{bad:?}"
            );
        }
        // Two OPTs, or one not owned by the root: malformed, the first OPT handed back.
        let mut double = with_options(&[]);
        double[11] = 2;
        double.extend_from_slice(&with_options(&[])[double.len() - 11..]);
        assert_eq!(parse(&double, &mut key), Err(Malformed { edns }));
    }

    #[test]
    fn client_subnet_is_read_and_malformed_ones_refused() {
        let mut key = [0u8; MAX_NAME];
        let ecs = |data: &[u8]| {
            let mut o = vec![0, 8];
            o.extend_from_slice(&(data.len() as u16).to_be_bytes());
            o.extend_from_slice(data);
            o
        };
        let got = |data: &[u8]| {
            let mut key = [0u8; MAX_NAME];
            let packet = with_options(&ecs(data));
            parse(&packet, &mut key).map(|q| q.edns.and_then(|e| e.client_subnet(&packet)))
        };
        // 10.1.2.0/24: three address bytes.
        let e = got(&[0, 1, 24, 0, 10, 1, 2]).unwrap().unwrap();
        assert_eq!((e.family, e.source), (1, 24));
        assert_eq!(e.client(), Some("10.1.2.0".parse().unwrap()));
        // 2001:db8::/32, and /0 (no location wanted).
        let e = got(&[0, 2, 32, 0, 0x20, 0x01, 0x0d, 0xb8])
            .unwrap()
            .unwrap();
        assert_eq!(e.client(), Some("2001:db8::".parse().unwrap()));
        assert_eq!(got(&[0, 1, 0, 0]).unwrap().unwrap().client(), None);
        // An unknown option beside it is ignored.
        let mut both = ecs(&[0, 1, 8, 0, 10]);
        both.extend_from_slice(&[0xfd, 0xe9, 0, 0]);
        assert!(parse(&with_options(&both), &mut key).is_ok());
        for bad in [
            &[0, 3, 8, 0, 10][..],          // unknown family
            &[0, 1, 33, 0, 10, 0, 0, 0, 0], // prefix longer than IPv4
            &[0, 1, 24, 0, 10, 1],          // too few address bytes
            &[0, 1, 16, 0, 10, 1, 2],       // too many
            &[0, 1, 23, 0, 10, 1, 3],       // a bit set past the prefix
            &[0, 1, 24],                    // cut short
        ] {
            assert!(got(bad).is_err(), "{bad:?}");
        }
        // Two Client Subnet options.
        let mut two = ecs(&[0, 1, 8, 0, 10]);
        two.extend_from_slice(&ecs(&[0, 1, 8, 0, 10]));
        assert!(parse(&with_options(&two), &mut key).is_err());
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
                ecs: 0,
            })
        );
    }
}
