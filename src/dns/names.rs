//! The owner names signpost answers for, as lowercase DNS wire-format keys (pure, no I/O).
//!
//! One function per row of the contract's names table builds that row's name; the name table
//! (`table`) is keyed by exactly these bytes, and a query's name is folded to the same form
//! (`key_of_question`), so answering is one hash lookup.

use std::net::IpAddr;

/// The largest wire-format name (RFC 1035 §2.3.4).
pub(crate) const MAX_NAME: usize = 255;

/// Wire format of `labels` followed by the wire-format `suffix` (which ends in the root).
pub(crate) fn wire(labels: &[&str], suffix: &[u8]) -> Box<[u8]> {
    let mut out =
        Vec::with_capacity(suffix.len() + labels.iter().map(|l| l.len() + 1).sum::<usize>());
    for l in labels {
        debug_assert!(!l.is_empty() && l.len() <= 63);
        out.push(l.len() as u8);
        out.extend(l.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.extend_from_slice(suffix);
    out.into_boxed_slice()
}

/// Wire format of a dotted name such as `internal.` (lowercased). `None` when it is not a
/// valid name.
pub(crate) fn from_dotted(name: &str) -> Option<Box<[u8]>> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Some(Box::new([0]));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let w = wire(&labels, &[0]);
    (w.len() <= MAX_NAME).then_some(w)
}

/// Dotted text of a wire-format name, for logs and errors.
pub(crate) fn to_dotted(mut w: &[u8]) -> String {
    let mut s = String::new();
    while let Some((&len, rest)) = w.split_first() {
        if len == 0 {
            break;
        }
        let (label, tail) = rest.split_at((len as usize).min(rest.len()));
        s.push_str(&String::from_utf8_lossy(label));
        s.push('.');
        w = tail;
    }
    if s.is_empty() { ".".into() } else { s }
}

/// Yields each proper and improper suffix of a wire-format name, longest first, ending with
/// the root: `a.b.` → `a.b.`, `b.`, `.`.
pub(crate) fn suffixes(w: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = Some(0usize);
    std::iter::from_fn(move || {
        let i = at?;
        let s = &w[i..];
        at = match s.first() {
            Some(&0) | None => None,
            Some(&len) => Some(i + 1 + len as usize),
        };
        Some(s)
    })
}

/// Whether `name` equals `zone` or lies below it (both wire format, lowercase).
pub(crate) fn is_within(name: &[u8], zone: &[u8]) -> bool {
    suffixes(name).any(|s| s == zone)
}

/// `<service>.service.D`
pub(crate) fn service(svc: &str, domain: &[u8]) -> Box<[u8]> {
    wire(&[svc, "service"], domain)
}

/// `<tag>.<service>.service.D`
pub(crate) fn tagged_service(tag: &str, svc: &str, domain: &[u8]) -> Box<[u8]> {
    wire(&[tag, svc, "service"], domain)
}

/// `_<service>._<second>.service.D`: `second` is `tcp`, `udp` or a tag.
pub(crate) fn rfc2782(svc: &str, second: &str, domain: &[u8]) -> Box<[u8]> {
    wire(
        &[&format!("_{svc}"), &format!("_{second}"), "service"],
        domain,
    )
}

/// `_<port>._tcp.<service>.service.D`: a named port's SRV name.
pub(crate) fn named_port(port: &str, svc: &str, domain: &[u8]) -> Box<[u8]> {
    wire(&[&format!("_{port}"), "_tcp", svc, "service"], domain)
}

/// `<id>.<service>.instance.D`
pub(crate) fn instance(id: &str, svc: &str, domain: &[u8]) -> Box<[u8]> {
    wire(&[id, svc, "instance"], domain)
}

/// The longest reverse name: `ip6.arpa.` under 32 one-nibble labels.
pub(crate) const MAX_REVERSE: usize = 32 * 2 + 10;

/// Writes the reverse name of `addr` (under `in-addr.arpa.` or `ip6.arpa.`) into `buf` and
/// returns its length. Written byte by byte:
/// every registered address has one, so at start-up this runs 100,000 times and formatting
/// labels into strings was ~7 % of the start-up's CPU.
pub(crate) fn reverse_into(addr: IpAddr, buf: &mut [u8; MAX_REVERSE]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    let mut push = |bytes: &[u8]| {
        buf[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    match addr {
        IpAddr::V4(v4) => {
            for o in v4.octets().iter().rev() {
                let (h, t, u) = (o / 100, o / 10 % 10, o % 10);
                match (h, t) {
                    (0, 0) => push(&[1, b'0' + u]),
                    (0, _) => push(&[2, b'0' + t, b'0' + u]),
                    _ => push(&[3, b'0' + h, b'0' + t, b'0' + u]),
                }
            }
            push(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(v6) => {
            for b in v6.octets().iter().rev() {
                push(&[1, HEX[usize::from(b & 0xf)], 1, HEX[usize::from(b >> 4)]]);
            }
            push(b"\x03ip6\x04arpa\x00");
        }
    }
    n
}

/// Reads the question name at the start of `packet[12..]`: returns its length in bytes (with
/// the root label) and writes its lowercase form into `key`. `None` when the name is malformed
/// or uses a compression pointer (which cannot be valid in the first question).
pub(crate) fn key_of_question(packet: &[u8], key: &mut [u8; MAX_NAME]) -> Option<usize> {
    let name = packet.get(12..)?;
    let mut i = 0;
    loop {
        let len = *name.get(i)? as usize;
        if len > 63 {
            return None;
        }
        if i + 1 + len > MAX_NAME {
            return None;
        }
        let label = name.get(i..i + 1 + len)?;
        for (k, b) in key[i..i + 1 + len].iter_mut().zip(label) {
            *k = b.to_ascii_lowercase();
        }
        i += 1 + len;
        if len == 0 {
            return Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Box<[u8]> {
        from_dotted("internal.").unwrap()
    }

    fn reverse(addr: IpAddr) -> Vec<u8> {
        let mut buf = [0; MAX_REVERSE];
        let n = reverse_into(addr, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn rows_of_the_names_table() {
        assert_eq!(to_dotted(&service("web", &d())), "web.service.internal.");
        assert_eq!(
            to_dotted(&tagged_service("v2", "web", &d())),
            "v2.web.service.internal."
        );
        assert_eq!(
            to_dotted(&rfc2782("web", "tcp", &d())),
            "_web._tcp.service.internal."
        );
        assert_eq!(
            to_dotted(&instance("w1", "web", &d())),
            "w1.web.instance.internal."
        );
        assert_eq!(
            to_dotted(&reverse("10.77.0.5".parse().unwrap())),
            "5.0.77.10.in-addr.arpa."
        );
        let v6 = to_dotted(&reverse("fd00:77::5".parse().unwrap()));
        assert!(v6.starts_with("5.0.0.0.0.0.0.0.") && v6.ends_with("7.7.0.0.0.0.d.f.ip6.arpa."));
    }

    /// The reverse name as the dotted text RFC 1035 §3.5 and RFC 3596 §2.5 spell it, built
    /// the slow way, for comparison.
    fn reverse_text(addr: IpAddr) -> String {
        match addr {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(v6) => {
                let mut s = String::new();
                for b in v6.octets().iter().rev() {
                    s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
                }
                s + "ip6.arpa."
            }
        }
    }

    #[test]
    fn reverse_names_of_every_octet_width_and_of_ipv6() {
        for o in [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255] {
            let addr = IpAddr::from([o, 255 - o, o / 2, 7]);
            assert_eq!(to_dotted(&reverse(addr)), reverse_text(addr), "{addr}");
        }
        for a in [
            "::",
            "::1",
            "fd00:77::5",
            "2001:db8:ffff:abcd:1234:5678:9abc:def0",
        ] {
            let addr: IpAddr = a.parse().unwrap();
            let r = reverse(addr);
            assert_eq!(to_dotted(&r), reverse_text(addr), "{addr}");
            assert_eq!(r.len(), MAX_REVERSE);
        }
    }

    #[test]
    fn question_key_folds_case_and_rejects_garbage() {
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(b"\x03WeB\x07SeRvIcE\x08InTeRnAl\x00\x00\x01\x00\x01");
        let mut key = [0u8; MAX_NAME];
        let n = key_of_question(&pkt, &mut key).unwrap();
        assert_eq!(&key[..n], &*service("web", &d()));
        let mut bad = vec![0u8; 12];
        bad.extend_from_slice(b"\xc0\x0c");
        assert_eq!(key_of_question(&bad, &mut key), None);
        let mut short = vec![0u8; 12];
        short.extend_from_slice(b"\x05ab");
        assert_eq!(key_of_question(&short, &mut key), None);
    }

    #[test]
    fn suffix_walk() {
        let n = service("web", &d());
        let all: Vec<String> = suffixes(&n).map(to_dotted).collect();
        assert_eq!(
            all,
            [
                "web.service.internal.",
                "service.internal.",
                "internal.",
                "."
            ]
        );
        assert!(is_within(&n, &d()));
        assert!(!is_within(&d(), &n));
        assert!(!is_within(&from_dotted("evilinternal.").unwrap(), &d()));
    }
}
