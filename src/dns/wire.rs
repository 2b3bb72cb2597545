//! The DNS wire vocabulary: the numbers RFC 1035 and its successors give to record types,
//! classes, opcodes, response codes and header flags, and the few fixed facts of the message
//! layout (header size, compression pointers). Every part of `dns` that reads or writes a
//! message names these constants from here rather than spelling the numbers, so each number
//! is written once and a reader can grep one name for every place a type or flag is used.
//!
//! Limits that are signpost's policy rather than the protocol's (the largest UDP answer, say)
//! live with the code that applies them.

// Record types (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 6891, RFC 8945).

pub(crate) const A: u16 = 1;
pub(crate) const NS: u16 = 2;
pub(crate) const CNAME: u16 = 5;
pub(crate) const SOA: u16 = 6;
pub(crate) const PTR: u16 = 12;
pub(crate) const TXT: u16 = 16;
pub(crate) const AAAA: u16 = 28;
pub(crate) const SRV: u16 = 33;
/// The EDNS pseudo-record (RFC 6891): control data, never a question.
pub(crate) const OPT: u16 = 41;
/// A transaction signature (RFC 8945): a pseudo-record, never a question.
pub(crate) const TSIG: u16 = 250;

// Types signpost does not serve but counts by name in its metrics, as CoreDNS does (RFC 1035,
// RFC 4034, RFC 5155, RFC 9460).

pub(crate) const MX: u16 = 15;
pub(crate) const DS: u16 = 43;
pub(crate) const RRSIG: u16 = 46;
pub(crate) const NSEC: u16 = 47;
pub(crate) const DNSKEY: u16 = 48;
pub(crate) const NSEC3: u16 = 50;
pub(crate) const HTTPS: u16 = 65;

// Query-only types (RFC 1035 §3.2.3, RFC 1995).

pub(crate) const IXFR: u16 = 251;
pub(crate) const AXFR: u16 = 252;
pub(crate) const MAILB: u16 = 253;
pub(crate) const MAILA: u16 = 254;
/// `*`: every record set of the name.
pub(crate) const ANY: u16 = 255;

// Classes (RFC 1035 §3.2.4, §3.2.5).

pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_ANY: u16 = 255;

// Opcodes (RFC 1035 §4.1.1), as bits of the header's flags word.

/// The opcode field within the flags word.
pub(crate) const OPCODE: u16 = 0x7800;
/// The only opcode signpost answers; the others get NOTIMP.
pub(crate) const QUERY: u16 = 0;

// Response codes (RFC 1035 §4.1.1): the four bits of the header.

pub(crate) const NOERROR: u8 = 0;
pub(crate) const FORMERR: u8 = 1;
pub(crate) const SERVFAIL: u8 = 2;
pub(crate) const NXDOMAIN: u8 = 3;
pub(crate) const NOTIMP: u8 = 4;
pub(crate) const REFUSED: u8 = 5;
/// The four RCODE bits of the header's flags word.
pub(crate) const RCODE: u16 = 0x000f;
/// Extended RCODE 16 (RFC 6891): its upper 8 bits go in the OPT record.
pub(crate) const BADVERS: u16 = 16;

// Header flags (RFC 1035 §4.1.1, RFC 4035 §3.2), as bits of the flags word (bytes 2 and 3).

pub(crate) const QR: u16 = 0x8000;
pub(crate) const AA: u16 = 0x0400;
pub(crate) const TC: u16 = 0x0200;
pub(crate) const RD: u16 = 0x0100;
pub(crate) const RA: u16 = 0x0080;
pub(crate) const CD: u16 = 0x0010;

// Message layout (RFC 1035 §4.1, §4.1.4).

/// Bytes of the header; the question starts right after it.
pub(crate) const HEADER_LEN: usize = 12;
/// The two top bits that make a name's length byte a compression pointer.
pub(crate) const POINTER: u16 = 0xc000;
/// Largest offset a compression pointer can hold.
pub(crate) const MAX_POINTER: usize = 0x3fff;
/// Where the target name starts in SRV RDATA, after priority, weight and port (RFC 2782).
pub(crate) const SRV_TARGET: usize = 6;

/// Where the answer count sits in the header.
pub(crate) const ANCOUNT_AT: usize = 6;

/// The flags word of a message that has a header (at least `HEADER_LEN` bytes).
pub(crate) fn flags(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[2], packet[3]])
}
