//! The response writer: lays out one DNS response in a reused buffer, section by section,
//! never past the size limit, and sets TC when an answer or authority record did not fit.
//!
//! Why not hickory's `Message` encoder here: every record of a table is pre-encoded RDATA, so
//! a response is header + the question's own bytes + copied records. Writing that directly
//! keeps the question's case byte for byte (0x20), points every answer owner at the question
//! (offset 12) and every glue owner at its SRV target, stops exactly at the client's size,
//! and allocates nothing per query. Queries are read by `query`; hickory parses zone files and
//! encodes their RDATA once, at load.
//!
//! `truncate` cuts a finished response down to its slipped form (header with TC, question,
//! OPT), what response-rate limiting (`rrl`) sends in place of an answer.

use super::query::{ECS, Ecs, skip_name};
use super::table::Zone;
use super::wire::{CLASS_IN, HEADER_LEN, MAX_POINTER, OPT, POINTER, QR, SOA, TC};

/// The EDNS payload size a response advertises unless told otherwise (`Response::edns`):
/// `dns.max_udp_payload`'s default, the DNS Flag Day 2020 value.
pub(crate) const DEFAULT_UDP_PAYLOAD: u16 = 1232;
/// Bytes of the OPT record signpost adds to a response: root name, type, class, TTL, RDLEN.
const OPT_LEN: usize = 11;

/// The owner name of a record written outside the answer section.
pub(crate) enum Owner<'a> {
    /// A compression pointer to an earlier name in this message.
    Pointer(usize),
    /// A wire-format name written out in full.
    Name(&'a [u8]),
}

/// Builds one response. Counts and flags are patched into the header by `finish`.
pub(crate) struct Response<'b> {
    buf: &'b mut Vec<u8>,
    /// Bytes the sections may use: the size limit less the OPT record to come.
    room: usize,
    counts: [u16; 3],
    edns: bool,
    /// The UDP payload size the OPT record advertises (`edns`).
    payload: u16,
    /// The DO bit for the OPT record (`edns`).
    dnssec_ok: bool,
    truncated: bool,
    /// Once one additional record did not fit, the rest are left out too, so the additional
    /// section is a prefix of what it would have been.
    additional_full: bool,
    /// The query's Client Subnet, echoed in the OPT with `scope` (RFC 7871 §7.2.2).
    ecs: Option<Ecs>,
    scope: u8,
}

impl<'b> Response<'b> {
    /// Starts a response to the query with `id`: header, then `question` (the question's raw
    /// bytes, echoed as sent, or empty). `limit` is the largest message allowed.
    pub(crate) fn new(
        buf: &'b mut Vec<u8>,
        id: u16,
        flags: u16,
        question: &[u8],
        limit: usize,
        edns: bool,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&(flags | QR).to_be_bytes());
        let qd: u16 = if question.is_empty() { 0 } else { 1 };
        buf.extend_from_slice(&qd.to_be_bytes());
        buf.extend_from_slice(&[0; 6]);
        buf.extend_from_slice(question);
        let reserve = if edns { OPT_LEN } else { 0 };
        Self {
            buf,
            room: limit.saturating_sub(reserve),
            counts: [0; 3],
            edns,
            payload: DEFAULT_UDP_PAYLOAD,
            dnssec_ok: false,
            truncated: false,
            additional_full: false,
            ecs: None,
            scope: 0,
        }
    }

    /// Echoes the query's Client Subnet in the reply's OPT (only with EDNS), its room taken
    /// from the sections' before any is written.
    pub(crate) fn client_subnet(mut self, ecs: Option<Ecs>) -> Self {
        if self.edns
            && let Some(e) = ecs
        {
            self.room = self.room.saturating_sub(4 + 4 + e.addr_len());
            self.ecs = Some(e);
        }
        self
    }

    /// Sets the echoed Client Subnet's SCOPE PREFIX-LENGTH: how far around the client's
    /// address the answer holds. Left at 0 when it does not depend on the address.
    pub(crate) fn set_scope(&mut self, scope: u8) {
        self.scope = scope;
    }

    /// Sets what the reply's OPT says: the UDP payload size signpost accepts
    /// (`dns.max_udp_payload`), and the DO bit as the query had it (RFC 3225 §3).
    pub(crate) fn edns(mut self, payload: u16, dnssec_ok: bool) -> Self {
        self.payload = payload;
        self.dnssec_ok = dnssec_ok;
        self
    }

    fn fits(&self, owner_len: usize, rdata: &[u8]) -> bool {
        self.buf.len() + owner_len + 10 + rdata.len() <= self.room
    }

    fn put(&mut self, owner: &Owner<'_>, rtype: u16, ttl: u32, rdata: &[u8]) -> usize {
        match owner {
            Owner::Pointer(at) => self
                .buf
                .extend_from_slice(&(POINTER | *at as u16).to_be_bytes()),
            Owner::Name(n) => self.buf.extend_from_slice(n),
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(rdata);
        at
    }

    fn owner_len(owner: &Owner<'_>) -> usize {
        match owner {
            Owner::Pointer(_) => 2,
            Owner::Name(n) => n.len(),
        }
    }

    /// Adds an answer record owned by the question name. Returns the offset of its RDATA, or
    /// `None` (and marks the response truncated) when it does not fit.
    pub(crate) fn answer(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) -> Option<usize> {
        if self.truncated || !self.fits(2, rdata) {
            self.truncated = true;
            return None;
        }
        self.counts[0] += 1;
        Some(self.put(&Owner::Pointer(HEADER_LEN), rtype, ttl, rdata))
    }

    /// Adds an authority record; marks the response truncated when it does not fit.
    pub(crate) fn authority(
        &mut self,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> bool {
        if self.truncated || !self.fits(Self::owner_len(&owner), rdata) {
            self.truncated = true;
            return false;
        }
        self.counts[1] += 1;
        self.put(&owner, rtype, ttl, rdata);
        true
    }

    /// Adds `zone`'s SOA with its negative TTL to the authority section (a negative answer),
    /// owned by the apex at `apex_at` in this message, its MNAME and RNAME compressed against
    /// that apex when they end with it; its serial that of registry index `index`.
    pub(crate) fn negative_soa(&mut self, zone: &Zone, apex_at: usize, index: u64) -> bool {
        // Two names of at most 255 bytes and the 20 bytes of numbers.
        let mut rdata = [0u8; 2 * 255 + 20];
        let mut len = 0;
        let soa = &zone.soa;
        for n in &zone.soa_names {
            match n.before_apex {
                Some(before) if apex_at <= MAX_POINTER => {
                    rdata[len..len + before].copy_from_slice(&soa[n.start..n.start + before]);
                    len += before;
                    rdata[len..len + 2].copy_from_slice(&(POINTER | apex_at as u16).to_be_bytes());
                    len += 2;
                }
                _ => {
                    rdata[len..len + n.len].copy_from_slice(&soa[n.start..n.start + n.len]);
                    len += n.len;
                }
            }
        }
        let numbers = &soa[zone.soa_numbers()..];
        rdata[len..len + numbers.len()].copy_from_slice(numbers);
        rdata[len..len + 4].copy_from_slice(&zone.serial(index).to_be_bytes());
        len += numbers.len();
        self.authority(
            Self::owner_at(apex_at, &zone.apex),
            SOA,
            zone.negative_ttl,
            &rdata[..len],
        )
    }

    /// Adds an additional record if it fits; leaving it out does not set TC (RFC 2181 §9).
    pub(crate) fn additional(
        &mut self,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> bool {
        if self.truncated || self.additional_full || !self.fits(Self::owner_len(&owner), rdata) {
            self.additional_full = true;
            return false;
        }
        self.counts[2] += 1;
        self.put(&owner, rtype, ttl, rdata);
        true
    }

    /// A pointer to `offset` when one can reach it, else `name` in full.
    pub(crate) fn owner_at<'n>(offset: usize, name: &'n [u8]) -> Owner<'n> {
        if offset <= MAX_POINTER {
            Owner::Pointer(offset)
        } else {
            Owner::Name(name)
        }
    }

    /// Sets header flags (AA) on top of those given to `new`.
    pub(crate) fn set_flags(&mut self, flags: u16) {
        self.buf[2] |= (flags >> 8) as u8;
        self.buf[3] |= flags as u8;
    }

    pub(crate) fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Completes the response with `rcode` (extended codes above 15 need EDNS) and the OPT
    /// record when the query had EDNS.
    pub(crate) fn finish(self, rcode: u16) {
        let additional = self.counts[2] + u16::from(self.edns);
        if self.edns {
            self.buf.push(0); // root
            self.buf.extend_from_slice(&OPT.to_be_bytes());
            self.buf.extend_from_slice(&self.payload.to_be_bytes());
            // Extended RCODE (upper 8 bits), version 0, flags: DO as the query had it.
            self.buf.push((rcode >> 4) as u8);
            self.buf
                .extend_from_slice(&[0, if self.dnssec_ok { 0x80 } else { 0 }, 0]);
            match self.ecs {
                None => self.buf.extend_from_slice(&0u16.to_be_bytes()),
                Some(e) => {
                    // FAMILY, SOURCE PREFIX-LENGTH and ADDRESS as sent, the scope set.
                    let len = e.addr_len();
                    self.buf
                        .extend_from_slice(&(4 + 4 + len as u16).to_be_bytes());
                    self.buf.extend_from_slice(&ECS.to_be_bytes());
                    self.buf.extend_from_slice(&(4 + len as u16).to_be_bytes());
                    self.buf.extend_from_slice(&e.family.to_be_bytes());
                    self.buf.extend_from_slice(&[e.source, self.scope]);
                    self.buf.extend_from_slice(&e.addr[..len]);
                }
            }
        }
        let buf = &mut *self.buf;
        if self.truncated {
            buf[2] |= (TC >> 8) as u8;
        }
        buf[3] = (buf[3] & 0xf0) | (rcode & 0x0f) as u8;
        buf[6..8].copy_from_slice(&self.counts[0].to_be_bytes());
        buf[8..10].copy_from_slice(&self.counts[1].to_be_bytes());
        buf[10..12].copy_from_slice(&additional.to_be_bytes());
    }
}

/// Cuts a finished response down to its header, question and OPT record, with TC set and the
/// counts to match: the *slipped* form of an answer (Knot's term), which costs a forged
/// source's victim no more than the query did and tells a real client to retry over TCP.
/// Every RCODE keeps its header (an error is slipped with its RCODE, as Knot does), and the
/// OPT record stays so an EDNS query still gets one (CONTRACT §2). False, with `buf` unchanged,
/// when `buf` does not parse as a response.
pub(crate) fn truncate(buf: &mut Vec<u8>) -> bool {
    let Some((question_end, opt)) = layout(buf) else {
        return false;
    };
    let mut end = question_end;
    let has_opt = opt.is_some();
    if let Some(opt) = opt {
        // The OPT is the last record (`finish`) and moves towards the start.
        end += opt.len();
        buf.copy_within(opt, question_end);
    }
    buf.truncate(end);
    buf[2] |= (TC >> 8) as u8;
    buf[6..10].fill(0);
    buf[10..12].copy_from_slice(&u16::from(has_opt).to_be_bytes());
    true
}

/// Where a response's question ends and where its OPT record lies, by walking its records.
fn layout(buf: &[u8]) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    let u16_at = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *buf.get(at)?,
            *buf.get(at + 1)?,
        ])))
    };
    let mut at = HEADER_LEN;
    for _ in 0..u16_at(4)? {
        at = skip_name(buf, at)? + 4;
    }
    let question_end = at;
    if question_end > buf.len() {
        return None;
    }
    let mut opt = None;
    for _ in 0..u16_at(6)? + u16_at(8)? + u16_at(10)? {
        let start = at;
        at = skip_name(buf, at)?;
        let rtype = u16_at(at)?;
        at += 10 + u16_at(at + 8)?;
        if at > buf.len() {
            return None;
        }
        if rtype == usize::from(OPT) {
            opt = Some(start..at);
        }
    }
    Some((question_end, opt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{AA, BADVERS, NOERROR, NXDOMAIN, RD};

    #[test]
    fn stops_at_the_limit_and_sets_tc() {
        let mut buf = Vec::new();
        let q = b"\x03web\x00\x00\x01\x00\x01";
        let mut r = Response::new(&mut buf, 7, AA | RD, q, 12 + q.len() + 2 * 16, false);
        assert!(r.answer(1, 5, &[10, 0, 0, 1]).is_some());
        assert!(r.answer(1, 5, &[10, 0, 0, 2]).is_some());
        assert!(r.answer(1, 5, &[10, 0, 0, 3]).is_none());
        assert!(r.is_truncated());
        r.finish(NOERROR as u16);
        assert_eq!(buf.len(), 12 + q.len() + 32);
        assert_eq!(&buf[..4], &[0, 7, 0x87, 0x00]); // QR AA TC RD
        assert_eq!(&buf[4..12], &[0, 1, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn additional_trims_without_tc_and_opt_is_reserved() {
        let mut buf = Vec::new();
        let q = b"\x03web\x00\x00\x21\x00\x01";
        let limit = 12 + q.len() + 16 + 16 + OPT_LEN;
        let mut r = Response::new(&mut buf, 1, 0, q, limit, true);
        assert!(r.answer(1, 5, &[1, 2, 3, 4]).is_some());
        assert!(r.additional(Owner::Pointer(12), 1, 5, &[1, 2, 3, 4]));
        assert!(!r.additional(Owner::Pointer(12), 1, 5, &[1, 2, 3, 5]));
        assert!(!r.is_truncated());
        r.finish(BADVERS);
        assert_eq!(buf.len(), limit);
        assert_eq!(buf[3] & 0x0f, 0);
        assert_eq!(&buf[10..12], &[0, 2]); // one glue + OPT
        assert_eq!(buf[buf.len() - 6], 1); // extended RCODE 16 >> 4
    }

    #[test]
    fn truncate_keeps_header_question_and_opt() {
        let q = b"\x03web\x00\x00\x01\x00\x01";
        for edns in [false, true] {
            let mut buf = Vec::new();
            let mut r = Response::new(&mut buf, 9, AA | RD, q, 4096, edns);
            r.answer(1, 5, &[10, 0, 0, 1]).unwrap();
            assert!(r.additional(Owner::Name(b"\x01a\x00"), 28, 5, &[0; 16]));
            r.finish(u16::from(NXDOMAIN));
            let full = buf.clone();
            assert!(truncate(&mut buf));
            let opt_len = if edns { OPT_LEN } else { 0 };
            assert_eq!(buf.len(), 12 + q.len() + opt_len, "edns {edns}");
            assert_eq!(&buf[..2], &[0, 9]);
            assert_eq!(buf[2], full[2] | (TC >> 8) as u8, "QR AA RD kept, TC set");
            assert_eq!(buf[3], full[3], "RCODE kept");
            assert_eq!(&buf[4..12], &[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
            assert_eq!(&buf[12..12 + q.len()], q);
            assert_eq!(&buf[12 + q.len()..], &full[full.len() - opt_len..]);
        }
        // A response without a question (FORMERR) keeps its header, with TC.
        let mut buf = Vec::new();
        Response::new(&mut buf, 3, 0, &[], 512, false).finish(1);
        assert!(truncate(&mut buf));
        assert_eq!(buf.len(), 12);
        let mut junk = vec![0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(!truncate(&mut junk), "a question that does not parse");
        assert_eq!(junk.len(), 13);
    }
}
