//! A socket-free, table-driven battery over `handler::handle`, in the style of CoreDNS's test
//! cases: one table of (question → RCODE, answer, authority, additional), the records written
//! as zone-file text, every expectation taken from CONTRACT.md §2 (where it is silent, from
//! the README's choices).
//!
//! The name table is built the way `DnsView` builds it (`Statics` from zone files, then
//! `Builder::set_all` and `publish` over a registry `Snapshot`), queries are encoded and
//! replies parsed with hickory, and each case is asked over UDP (no EDNS) and over TCP with
//! the same expectations. Answers rotate, so each section is compared as a sorted set;
//! `rotation_puts_each_instance_first_once` checks the order separately.

use std::sync::Arc;
use std::time::SystemTime;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::dynamic::Builder;
use super::handler::{Outcome, Transport, handle};
use super::names;
use super::table::{Settings, Statics, Table};
use super::wire::{self, AA, HEADER_LEN, QR, RA, RD, TC};
use super::zonefile;
use crate::model::{Health, Status, testing};
use crate::registry::{Entry, Snapshot};

// ---------------------------------------------------------------------------------------------
// the fixture

/// The base domain's zone file. Its SOA minimum (60) is not `dns.negative_ttl` (3), so the
/// cases show the contract's rule that negative answers carry `dns.negative_ttl`.
const INTERNAL_ZONE: &str = "$ORIGIN internal.\n$TTL 300\n\
    @        IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 60\n\
    @        IN NS  ns.internal.\n\
    ns       IN A   127.0.0.1\n\
    gateway  IN A   10.0.0.1\n\
    gateway  IN TXT \"static record\"\n\
    www.lab  IN CNAME gateway.internal.\n";

/// Another zone, served from its own file with its own SOA.
const EXAMPLE_ZONE: &str = "$ORIGIN example.test.\n$TTL 600\n\
    @     IN SOA ns1.example.test. admin.example.test. 7 3600 600 86400 3\n\
    @     IN NS  ns1\n\
    ns1   IN A   192.0.2.53\n\
    www   IN A   192.0.2.80\n\
    www   IN AAAA 2001:db8::80\n\
    info 120 IN TXT \"hello\" \"world\"\n\
    alias IN CNAME www\n\
    a.b   IN A   192.0.2.9\n";

/// The client address of the cases: no `dns.locality` zone holds it.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// `dns.ttl` and `dns.negative_ttl` of the fixture: different, so a TTL says which rule set it.
const TTL: u32 = 5;
const NEGATIVE_TTL: u32 = 3;

fn settings(include_warning: bool) -> Settings {
    Settings {
        domain: names::from_dotted("internal.").expect("a valid name"),
        ttl: TTL,
        negative_ttl: NEGATIVE_TTL,
        include_warning,
        max_answers: 0,
        max_udp_payload: 1232,
        locality: Default::default(),
        fail_open: false,
    }
}

/// A registration with the contract's defaults (weight 1, priority 0, no tags, no metadata,
/// the service's TTL from `dns.ttl`), passing, not in maintenance; the methods change one
/// field each.
struct Inst {
    instance: testing::Draft,
    status: Status,
}

impl Inst {
    fn new(service: &str, id: &str, address: &str, port: u16) -> Self {
        Self {
            instance: testing::instance(service, id).address(address).port(port),
            status: Status::Passing,
        }
    }

    fn tags(mut self, tags: &[&str]) -> Self {
        self.instance = self.instance.tags(tags);
        self
    }

    fn meta(mut self, meta: &[(&str, &str)]) -> Self {
        for (k, v) in meta {
            self.instance = self.instance.meta(k, v);
        }
        self
    }

    fn weight(mut self, weight: u16) -> Self {
        self.instance = self.instance.weight(weight);
        self
    }

    fn priority(mut self, priority: u16) -> Self {
        self.instance = self.instance.priority(priority);
        self
    }

    fn ttl(mut self, ttl: u32) -> Self {
        self.instance = self.instance.ttl(ttl);
        self
    }

    fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    fn maintenance(mut self) -> Self {
        self.instance = self.instance.maintenance("drained", SystemTime::UNIX_EPOCH);
        self
    }

    fn entry(self) -> Arc<Entry> {
        Arc::new(Entry {
            instance: self.instance.build(),
            health: Health::new(self.status, "", SystemTime::UNIX_EPOCH),
        })
    }
}

/// The registry of the battery: every health, maintenance, IPv4 and IPv6, tags, metadata, a
/// per-service TTL, a service with no instance in service.
fn registry() -> Snapshot {
    let instances = [
        Inst::new("web", "web-1", "10.0.0.11", 8080)
            .tags(&["v2", "canary"])
            .meta(&[("version", "2.1.0"), ("zone", "a")])
            .weight(10)
            .priority(1),
        Inst::new("web", "web-2", "10.0.0.12", 8081)
            .tags(&["v1"])
            .weight(20),
        Inst::new("web", "web-3", "fd00::13", 8082).tags(&["v2"]),
        Inst::new("web", "web-4", "10.0.0.14", 8083)
            .tags(&["v2"])
            .status(Status::Critical),
        Inst::new("web", "web-5", "10.0.0.15", 8084)
            .tags(&["v1"])
            .status(Status::Warning),
        Inst::new("web", "web-6", "10.0.0.16", 8085)
            .tags(&["v2"])
            .maintenance(),
        Inst::new("api", "api-1", "10.0.1.1", 9000).ttl(30),
        Inst::new("db", "db-1", "10.0.9.1", 5432)
            .meta(&[("role", "primary")])
            .status(Status::Critical),
        Inst::new("jobs", "jobs-1", "10.0.3.1", 80).maintenance(),
        Inst::new("pool", "pool-1", "10.0.2.1", 80),
        Inst::new("pool", "pool-2", "10.0.2.2", 80),
        Inst::new("pool", "pool-3", "10.0.2.3", 80),
    ];
    let mut snap = Snapshot::default();
    for i in instances {
        let e = i.entry();
        let service = e.instance.key().service.clone();
        let mut set = snap
            .services
            .get(&service)
            .map(|s| (**s).clone())
            .unwrap_or_default();
        set.insert(e);
        snap.services.insert(service, Arc::new(set));
    }
    snap
}

/// The table for `registry()`, serving the zone files `zones` (file name, text), built as
/// `DnsView` builds it. A synthesised SOA gets serial 1.
fn table(include_warning: bool, zones: &[(&str, &str)]) -> Arc<Table> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (file, text) in zones {
        std::fs::write(dir.path().join(file), text).expect("a zone file written");
    }
    let files = zonefile::load_dir(dir.path()).expect("the zone files load");
    let statics = Statics::new(settings(include_warning), &files, 0);
    let mut builder = Builder::default();
    builder.set_all(&statics, &registry());
    let mut published = Arc::new(Builder::empty_table(&statics));
    builder.publish(&statics, |t| std::mem::replace(&mut published, t));
    published
}

fn both_zones() -> [(&'static str, &'static str); 2] {
    [
        ("internal.zone", INTERNAL_ZONE),
        ("example.test.zone", EXAMPLE_ZONE),
    ]
}

// ---------------------------------------------------------------------------------------------
// the cases

/// One question and the reply it must get. Sections are zone-file text, owners lowercase,
/// compared as sets.
struct Case {
    qname: &'static str,
    qtype: RecordType,
    /// Changes the query's bytes before it is sent: a malformed packet, another opcode.
    tweak: Option<fn(&mut Vec<u8>)>,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    ns: &'static [&'static str],
    extra: &'static [&'static str],
}

/// A case's defaults: NOERROR, every section empty.
const NOERROR: Case = Case {
    qname: "",
    qtype: RecordType::A,
    tweak: None,
    rcode: ResponseCode::NoError,
    answer: &[],
    ns: &[],
    extra: &[],
};

/// The SOA of `internal.` in a negative answer: the zone file's, its minimum replaced by
/// `dns.negative_ttl`, which is also its TTL.
const SOA_NEG: &str =
    "internal. 3 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3";
/// The SOA of `example.test.` in a negative answer (its own minimum, equal to
/// `dns.negative_ttl` here).
const EXAMPLE_SOA_NEG: &str =
    "example.test. 3 IN SOA ns1.example.test. admin.example.test. 7 3600 600 86400 3";

/// The SOA of the host zone of `11.0.0.10.in-addr.arpa.` in a negative answer: D's.
const HOST_SOA_NEG: &str = "11.0.0.10.in-addr.arpa. 3 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3";

/// NXDOMAIN in `internal.`.
const NXDOMAIN: Case = Case {
    rcode: ResponseCode::NXDomain,
    ns: &[SOA_NEG],
    ..NOERROR
};
/// NODATA in `internal.`: the name exists, none of its records is of the asked type.
const NODATA: Case = Case {
    ns: &[SOA_NEG],
    ..NOERROR
};
const REFUSED: Case = Case {
    rcode: ResponseCode::Refused,
    ..NOERROR
};

/// The glue of the `web` SRV answers: each target's address, with the service's TTL.
const GLUE1: &str = "web-1.web.instance.internal. 5 IN A 10.0.0.11";
const GLUE2: &str = "web-2.web.instance.internal. 5 IN A 10.0.0.12";
const GLUE3: &str = "web-3.web.instance.internal. 5 IN AAAA fd00::13";

fn cases() -> Vec<Case> {
    use RecordType::{A, AAAA, AXFR, CNAME, IXFR, NS, PTR, SOA, SRV, TXT};
    vec![
        // <service>.service.D: the in-service instances only (web-4 critical, web-5
        // warning, web-6 in maintenance are left out); A and AAAA split by family.
        Case {
            qname: "web.service.internal.",
            qtype: A,
            answer: &[
                "web.service.internal. 5 IN A 10.0.0.11",
                "web.service.internal. 5 IN A 10.0.0.12",
            ],
            ..NOERROR
        },
        Case {
            qname: "web.service.internal.",
            qtype: AAAA,
            answer: &["web.service.internal. 5 IN AAAA fd00::13"],
            ..NOERROR
        },
        Case {
            qname: "web.service.internal.",
            qtype: SRV,
            answer: &[
                "web.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
                "web.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal.",
                "web.service.internal. 5 IN SRV 0 1 8082 web-3.web.instance.internal.",
            ],
            extra: &[GLUE1, GLUE2, GLUE3],
            ..NOERROR
        },
        Case {
            qname: "web.service.internal.",
            qtype: TXT,
            ..NODATA
        },
        // Names match case-insensitively.
        Case {
            qname: "WeB.SeRvIcE.InTeRnAl.",
            qtype: A,
            answer: &[
                "web.service.internal. 5 IN A 10.0.0.11",
                "web.service.internal. 5 IN A 10.0.0.12",
            ],
            ..NOERROR
        },
        // <tag>.<service>.service.D: only instances carrying the tag, still only those in
        // service.
        Case {
            qname: "v2.web.service.internal.",
            qtype: A,
            answer: &["v2.web.service.internal. 5 IN A 10.0.0.11"],
            ..NOERROR
        },
        Case {
            qname: "v2.web.service.internal.",
            qtype: AAAA,
            answer: &["v2.web.service.internal. 5 IN AAAA fd00::13"],
            ..NOERROR
        },
        Case {
            qname: "v2.web.service.internal.",
            qtype: SRV,
            answer: &[
                "v2.web.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
                "v2.web.service.internal. 5 IN SRV 0 1 8082 web-3.web.instance.internal.",
            ],
            extra: &[GLUE1, GLUE3],
            ..NOERROR
        },
        Case {
            qname: "v1.web.service.internal.",
            qtype: A,
            answer: &["v1.web.service.internal. 5 IN A 10.0.0.12"],
            ..NOERROR
        },
        Case {
            qname: "v1.web.service.internal.",
            qtype: AAAA,
            ..NODATA
        },
        Case {
            qname: "v1.web.service.internal.",
            qtype: SRV,
            answer: &["v1.web.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal."],
            extra: &[GLUE2],
            ..NOERROR
        },
        Case {
            qname: "canary.web.service.internal.",
            qtype: SRV,
            answer: &[
                "canary.web.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
            ],
            extra: &[GLUE1],
            ..NOERROR
        },
        Case {
            qname: "nope.web.service.internal.",
            qtype: A,
            ..NXDOMAIN
        },
        // _<service>._tcp / _udp.service.D: the SRV answer in RFC 2782 form.
        Case {
            qname: "_web._tcp.service.internal.",
            qtype: SRV,
            answer: &[
                "_web._tcp.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
                "_web._tcp.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal.",
                "_web._tcp.service.internal. 5 IN SRV 0 1 8082 web-3.web.instance.internal.",
            ],
            extra: &[GLUE1, GLUE2, GLUE3],
            ..NOERROR
        },
        Case {
            qname: "_web._udp.service.internal.",
            qtype: SRV,
            answer: &[
                "_web._udp.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
                "_web._udp.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal.",
                "_web._udp.service.internal. 5 IN SRV 0 1 8082 web-3.web.instance.internal.",
            ],
            extra: &[GLUE1, GLUE2, GLUE3],
            ..NOERROR
        },
        // The RFC 2782 forms are SRV names: other types are NODATA there.
        Case {
            qname: "_web._tcp.service.internal.",
            qtype: A,
            ..NODATA
        },
        // _<service>._<tag>.service.D: any second label but _tcp/_udp is a tag.
        Case {
            qname: "_web._v2.service.internal.",
            qtype: SRV,
            answer: &[
                "_web._v2.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
                "_web._v2.service.internal. 5 IN SRV 0 1 8082 web-3.web.instance.internal.",
            ],
            extra: &[GLUE1, GLUE3],
            ..NOERROR
        },
        Case {
            qname: "_web._v1.service.internal.",
            qtype: SRV,
            answer: &["_web._v1.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal."],
            extra: &[GLUE2],
            ..NOERROR
        },
        Case {
            qname: "_web._canary.service.internal.",
            qtype: SRV,
            answer: &[
                "_web._canary.service.internal. 5 IN SRV 1 10 8080 web-1.web.instance.internal.",
            ],
            extra: &[GLUE1],
            ..NOERROR
        },
        Case {
            qname: "_web._nope.service.internal.",
            qtype: SRV,
            ..NXDOMAIN
        },
        // A per-service TTL: every answer of the service and its instance names carry it;
        // its negative answers still carry dns.negative_ttl.
        Case {
            qname: "api.service.internal.",
            qtype: A,
            answer: &["api.service.internal. 30 IN A 10.0.1.1"],
            ..NOERROR
        },
        Case {
            qname: "api.service.internal.",
            qtype: SRV,
            answer: &["api.service.internal. 30 IN SRV 0 1 9000 api-1.api.instance.internal."],
            extra: &["api-1.api.instance.internal. 30 IN A 10.0.1.1"],
            ..NOERROR
        },
        Case {
            qname: "api.service.internal.",
            qtype: AAAA,
            ..NODATA
        },
        Case {
            qname: "api-1.api.instance.internal.",
            qtype: A,
            answer: &["api-1.api.instance.internal. 30 IN A 10.0.1.1"],
            ..NOERROR
        },
        // Health: a service with no instance in service has no records (critical only, in
        // maintenance only).
        Case {
            qname: "db.service.internal.",
            qtype: A,
            ..NXDOMAIN
        },
        Case {
            qname: "db.service.internal.",
            qtype: SRV,
            ..NXDOMAIN
        },
        Case {
            qname: "jobs.service.internal.",
            qtype: A,
            ..NXDOMAIN
        },
        Case {
            qname: "_jobs._tcp.service.internal.",
            qtype: SRV,
            ..NXDOMAIN
        },
        // <id>.<service>.instance.D: one instance whatever its health; TXT is its metadata.
        Case {
            qname: "web-1.web.instance.internal.",
            qtype: A,
            answer: &["web-1.web.instance.internal. 5 IN A 10.0.0.11"],
            ..NOERROR
        },
        Case {
            qname: "web-1.web.instance.internal.",
            qtype: TXT,
            answer: &[
                "web-1.web.instance.internal. 5 IN TXT \"version=2.1.0\"",
                "web-1.web.instance.internal. 5 IN TXT \"zone=a\"",
            ],
            ..NOERROR
        },
        Case {
            qname: "web-1.web.instance.internal.",
            qtype: AAAA,
            ..NODATA
        },
        Case {
            qname: "web-2.web.instance.internal.",
            qtype: TXT,
            ..NODATA
        },
        Case {
            qname: "web-3.web.instance.internal.",
            qtype: AAAA,
            answer: &["web-3.web.instance.internal. 5 IN AAAA fd00::13"],
            ..NOERROR
        },
        Case {
            qname: "web-3.web.instance.internal.",
            qtype: A,
            ..NODATA
        },
        Case {
            qname: "web-4.web.instance.internal.",
            qtype: A,
            answer: &["web-4.web.instance.internal. 5 IN A 10.0.0.14"],
            ..NOERROR
        },
        Case {
            qname: "web-5.web.instance.internal.",
            qtype: A,
            answer: &["web-5.web.instance.internal. 5 IN A 10.0.0.15"],
            ..NOERROR
        },
        Case {
            qname: "web-6.web.instance.internal.",
            qtype: A,
            answer: &["web-6.web.instance.internal. 5 IN A 10.0.0.16"],
            ..NOERROR
        },
        Case {
            qname: "db-1.db.instance.internal.",
            qtype: A,
            answer: &["db-1.db.instance.internal. 5 IN A 10.0.9.1"],
            ..NOERROR
        },
        Case {
            qname: "db-1.db.instance.internal.",
            qtype: TXT,
            answer: &["db-1.db.instance.internal. 5 IN TXT \"role=primary\""],
            ..NOERROR
        },
        Case {
            qname: "web-9.web.instance.internal.",
            qtype: A,
            ..NXDOMAIN
        },
        // Reverse names of registered addresses, whatever the instance's health.
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: PTR,
            answer: &["11.0.0.10.in-addr.arpa. 5 IN PTR web-1.web.instance.internal."],
            ..NOERROR
        },
        Case {
            qname: "1.9.0.10.in-addr.arpa.",
            qtype: PTR,
            answer: &["1.9.0.10.in-addr.arpa. 5 IN PTR db-1.db.instance.internal."],
            ..NOERROR
        },
        Case {
            qname: "3.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            qtype: PTR,
            answer: &[
                "3.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web-3.web.instance.internal.",
            ],
            ..NOERROR
        },
        // A registered reverse name outside every zone file is the apex of its own host zone:
        // D's SOA and NS there, NODATA with that SOA for other types, NXDOMAIN below it.
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: TXT,
            ns: &[HOST_SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: SOA,
            answer: &[
                "11.0.0.10.in-addr.arpa. 5 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3",
            ],
            ..NOERROR
        },
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: NS,
            answer: &["11.0.0.10.in-addr.arpa. 300 IN NS ns.internal."],
            extra: &["ns.internal. 300 IN A 127.0.0.1"],
            ..NOERROR
        },
        Case {
            qname: "x.11.0.0.10.in-addr.arpa.",
            qtype: PTR,
            rcode: ResponseCode::NXDomain,
            ns: &[HOST_SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "3.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            qtype: AAAA,
            ns: &[
                "3.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 3 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3",
            ],
            ..NOERROR
        },
        // No other reverse name, and not the reverse trees themselves: those are outside every
        // zone, so signpost claims no zone it refuses elsewhere.
        Case {
            qname: "99.0.0.10.in-addr.arpa.",
            qtype: PTR,
            ..REFUSED
        },
        Case {
            qname: "0.0.10.in-addr.arpa.",
            qtype: SOA,
            ..REFUSED
        },
        Case {
            qname: "in-addr.arpa.",
            qtype: SOA,
            ..REFUSED
        },
        Case {
            qname: "ip6.arpa.",
            qtype: NS,
            ..REFUSED
        },
        // Names of the zone files, as the files say.
        Case {
            qname: "gateway.internal.",
            qtype: A,
            answer: &["gateway.internal. 300 IN A 10.0.0.1"],
            ..NOERROR
        },
        Case {
            qname: "gateway.internal.",
            qtype: TXT,
            answer: &["gateway.internal. 300 IN TXT \"static record\""],
            ..NOERROR
        },
        Case {
            qname: "www.lab.internal.",
            qtype: CNAME,
            answer: &["www.lab.internal. 300 IN CNAME gateway.internal."],
            ..NOERROR
        },
        Case {
            qname: "ns.internal.",
            qtype: A,
            answer: &["ns.internal. 300 IN A 127.0.0.1"],
            ..NOERROR
        },
        Case {
            qname: "www.example.test.",
            qtype: A,
            answer: &["www.example.test. 600 IN A 192.0.2.80"],
            ..NOERROR
        },
        Case {
            qname: "www.example.test.",
            qtype: AAAA,
            answer: &["www.example.test. 600 IN AAAA 2001:db8::80"],
            ..NOERROR
        },
        Case {
            qname: "info.example.test.",
            qtype: TXT,
            answer: &["info.example.test. 120 IN TXT \"hello\" \"world\""],
            ..NOERROR
        },
        Case {
            qname: "alias.example.test.",
            qtype: CNAME,
            answer: &["alias.example.test. 600 IN CNAME www.example.test."],
            ..NOERROR
        },
        Case {
            qname: "example.test.",
            qtype: SOA,
            answer: &[
                "example.test. 600 IN SOA ns1.example.test. admin.example.test. 7 3600 600 86400 3",
            ],
            ..NOERROR
        },
        // A zone file's negative answers carry that zone's SOA.
        Case {
            qname: "www.example.test.",
            qtype: TXT,
            ns: &[EXAMPLE_SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "nope.example.test.",
            qtype: A,
            rcode: ResponseCode::NXDomain,
            ns: &[EXAMPLE_SOA_NEG],
            ..NOERROR
        },
        // A name with names below it but no records of its own exists (NODATA): answering
        // NXDOMAIN would deny the names below it too (RFC 8020).
        Case {
            qname: "b.example.test.",
            qtype: A,
            ns: &[EXAMPLE_SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "lab.internal.",
            qtype: A,
            ..NODATA
        },
        Case {
            qname: "service.internal.",
            qtype: A,
            ..NODATA
        },
        Case {
            qname: "instance.internal.",
            qtype: SRV,
            ..NODATA
        },
        Case {
            qname: "web.instance.internal.",
            qtype: A,
            ..NODATA
        },
        // The apex of D: SOA from its zone file, minimum replaced by dns.negative_ttl; NS with
        // the name server's address, which the zone file gives, in the additional section.
        Case {
            qname: "internal.",
            qtype: NS,
            answer: &["internal. 300 IN NS ns.internal."],
            extra: &["ns.internal. 300 IN A 127.0.0.1"],
            ..NOERROR
        },
        // ANY at the apex: every set; additional records only after every answer.
        Case {
            qname: "internal.",
            qtype: RecordType::ANY,
            answer: &[
                "internal. 300 IN NS ns.internal.",
                "internal. 300 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3",
            ],
            ..NOERROR
        },
        Case {
            qname: "example.test.",
            qtype: NS,
            answer: &["example.test. 600 IN NS ns1.example.test."],
            extra: &["ns1.example.test. 600 IN A 192.0.2.53"],
            ..NOERROR
        },
        Case {
            qname: "internal.",
            qtype: SOA,
            answer: &[
                "internal. 300 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3",
            ],
            ..NOERROR
        },
        Case {
            qname: "internal.",
            qtype: A,
            ..NODATA
        },
        Case {
            qname: "nope.internal.",
            qtype: A,
            ..NXDOMAIN
        },
        Case {
            qname: "nope.service.internal.",
            qtype: SRV,
            ..NXDOMAIN
        },
        // Anything else: REFUSED (forwarding is not allowed for this client).
        Case {
            qname: "example.com.",
            qtype: A,
            ..REFUSED
        },
        Case {
            qname: "evilinternal.",
            qtype: A,
            ..REFUSED
        },
        Case {
            qname: "test.",
            qtype: NS,
            ..REFUSED
        },
        // Zone transfers: REFUSED to anyone not in dns.transfer.allow (none by default).
        Case {
            qname: "internal.",
            qtype: AXFR,
            ..REFUSED
        },
        Case {
            qname: "internal.",
            qtype: IXFR,
            ..REFUSED
        },
        // Malformed queries: FORMERR.
        Case {
            qname: "web.service.internal.",
            qtype: A,
            tweak: Some(|p| p.truncate(p.len() - 3)),
            rcode: ResponseCode::FormErr,
            ..NOERROR
        },
        Case {
            qname: "web.service.internal.",
            qtype: A,
            tweak: Some(|p| p[5] = 2), // QDCOUNT 2, one question present
            rcode: ResponseCode::FormErr,
            ..NOERROR
        },
        // Opcodes other than QUERY: NOTIMP.
        Case {
            qname: "web.service.internal.",
            qtype: A,
            tweak: Some(|p| p[2] |= 2 << 3), // STATUS
            rcode: ResponseCode::NotImp,
            ..NOERROR
        },
        Case {
            qname: "internal.",
            qtype: SOA,
            tweak: Some(|p| p[2] |= 4 << 3), // NOTIFY
            rcode: ResponseCode::NotImp,
            ..NOERROR
        },
        Case {
            qname: "internal.",
            qtype: SOA,
            tweak: Some(|p| p[2] |= 5 << 3), // UPDATE
            rcode: ResponseCode::NotImp,
            ..NOERROR
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// asking

/// The query's ID, checked to come back.
const ID: u16 = 0x5150;

/// The wire bytes of a query for `qname` (in the case given) and `qtype`, RD clear, no EDNS.
fn query(qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = ID;
    m.add_query(Query::query(
        Name::from_ascii(qname).expect("a valid name"),
        qtype,
    ));
    m.to_vec().expect("a query encodes")
}

/// A name as lowercase text with its trailing dot.
fn lower(n: &Name) -> String {
    let mut s = n.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// A record as zone-file text: owner, TTL, class, type, data.
fn text(r: &Record) -> String {
    let data = match &r.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::SRV(s) => format!(
            "{} {} {} {}",
            s.priority,
            s.weight,
            s.port,
            lower(&s.target)
        ),
        RData::PTR(p) => lower(&p.0),
        RData::NS(n) => lower(&n.0),
        RData::CNAME(c) => lower(&c.0),
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(" "),
        RData::SOA(s) => format!(
            "{} {} {} {} {} {} {}",
            lower(&s.mname),
            lower(&s.rname),
            s.serial,
            s.refresh,
            s.retry,
            s.expire,
            s.minimum
        ),
        other => format!("{other}"),
    };
    format!(
        "{} {} {} {} {}",
        lower(&r.name),
        r.ttl,
        r.dns_class,
        r.record_type(),
        data
    )
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(text).collect();
    v.sort();
    v
}

fn sorted_str(records: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Sends `packet` to the handler as a client not allowed to forward; the reply's bytes.
fn exchange(table: &Table, packet: &[u8], transport: Transport) -> Vec<u8> {
    let mut out = Vec::new();
    match handle(table, packet, transport, false, LOOPBACK, &mut out) {
        Outcome::Answered { .. } => out,
        other => panic!("{transport:?}: no reply ({other:?})"),
    }
}

/// Asks every case over UDP and TCP and checks the reply against it: RCODE, the sections as
/// sets, the ID, AA exactly on authoritative answers (NOERROR and NXDOMAIN: inside a zone),
/// never RA (this client may not forward) or TC, and the question echoed byte for byte.
fn run(table: &Table, cases: &[Case]) {
    for case in cases {
        let mut packet = query(case.qname, case.qtype);
        if let Some(tweak) = case.tweak {
            tweak(&mut packet);
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            let what = format!("{} {} over {transport:?}", case.qname, case.qtype);
            let reply = exchange(table, &packet, transport);
            let flags = wire::flags(&reply);
            let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(m.metadata.response_code, case.rcode, "{what}: RCODE\n{m}");
            assert_eq!(m.metadata.id, ID, "{what}: ID");
            assert!(flags & QR != 0, "{what}: QR");
            let authoritative =
                matches!(case.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
            assert_eq!(flags & AA != 0, authoritative, "{what}: AA");
            assert_eq!(flags & RA, 0, "{what}: RA");
            assert_eq!(flags & TC, 0, "{what}: TC");
            // FORMERR and NOTIMP go back without a question: there may be none to echo.
            if case.rcode != ResponseCode::FormErr && case.rcode != ResponseCode::NotImp {
                let question = &packet[HEADER_LEN..];
                assert_eq!(&reply[4..6], &[0, 1], "{what}: one question");
                assert_eq!(
                    &reply[HEADER_LEN..HEADER_LEN + question.len()],
                    question,
                    "{what}: the question echoed as sent"
                );
            }
            assert_eq!(
                sorted(&m.answers),
                sorted_str(case.answer),
                "{what}: answer"
            );
            assert_eq!(
                sorted(&m.authorities),
                sorted_str(case.ns),
                "{what}: authority"
            );
            assert_eq!(
                sorted(&m.additionals),
                sorted_str(case.extra),
                "{what}: additional"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the tests

#[test]
fn names_table() {
    run(&table(false, &both_zones()), &cases());
}

/// With `dns.include_warning = true`, warning instances join the service answers;
/// critical ones and those in maintenance still do not.
#[test]
fn warning_instances_when_configured() {
    let cases = [
        Case {
            qname: "web.service.internal.",
            qtype: RecordType::A,
            answer: &[
                "web.service.internal. 5 IN A 10.0.0.11",
                "web.service.internal. 5 IN A 10.0.0.12",
                "web.service.internal. 5 IN A 10.0.0.15",
            ],
            ..NOERROR
        },
        Case {
            qname: "v1.web.service.internal.",
            qtype: RecordType::SRV,
            answer: &[
                "v1.web.service.internal. 5 IN SRV 0 20 8081 web-2.web.instance.internal.",
                "v1.web.service.internal. 5 IN SRV 0 1 8084 web-5.web.instance.internal.",
            ],
            extra: &[GLUE2, "web-5.web.instance.internal. 5 IN A 10.0.0.15"],
            ..NOERROR
        },
        Case {
            qname: "db.service.internal.",
            qtype: RecordType::A,
            ..NXDOMAIN
        },
        Case {
            qname: "jobs.service.internal.",
            qtype: RecordType::A,
            ..NXDOMAIN
        },
    ];
    run(&table(true, &both_zones()), &cases);
}

/// Without a zone file for D, signpost makes up its SOA (`ns.D`, `hostmaster.D`, minimum
/// `dns.negative_ttl`, serial the registry's index, here 0) and NS; it knows no address for
/// `ns.D`, so no glue.
#[test]
fn synthesised_apex() {
    const SOA: &str = "internal. 5 IN SOA ns.internal. hostmaster.internal. 0 3600 600 86400 3";
    const SOA_NEG: &str = "internal. 3 IN SOA ns.internal. hostmaster.internal. 0 3600 600 86400 3";
    let cases = [
        Case {
            qname: "internal.",
            qtype: RecordType::SOA,
            answer: &[SOA],
            ..NOERROR
        },
        Case {
            qname: "internal.",
            qtype: RecordType::NS,
            answer: &["internal. 5 IN NS ns.internal."],
            ..NOERROR
        },
        Case {
            qname: "nope.internal.",
            qtype: RecordType::A,
            rcode: ResponseCode::NXDomain,
            ns: &[SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "web.service.internal.",
            qtype: RecordType::AAAA,
            answer: &["web.service.internal. 5 IN AAAA fd00::13"],
            ..NOERROR
        },
        Case {
            qname: "www.example.test.",
            qtype: RecordType::A,
            ..REFUSED
        },
    ];
    run(&table(false, &[]), &cases);
}

/// A zone file for a reverse zone holding registered addresses: their PTRs join it, a
/// reverse name of no registered address inside it is NXDOMAIN with its SOA, and its apex
/// answers SOA and NS from the file.
#[test]
fn reverse_zone_from_a_zone_file() {
    const REVERSE: &str = "$ORIGIN 0.0.10.in-addr.arpa.\n$TTL 60\n\
        @ IN SOA ns.internal. hostmaster.internal. 9 3600 600 86400 3\n\
        @ IN NS ns.internal.\n";
    const SOA_NEG: &str =
        "0.0.10.in-addr.arpa. 3 IN SOA ns.internal. hostmaster.internal. 9 3600 600 86400 3";
    let cases = [
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: RecordType::PTR,
            answer: &["11.0.0.10.in-addr.arpa. 5 IN PTR web-1.web.instance.internal."],
            ..NOERROR
        },
        Case {
            qname: "11.0.0.10.in-addr.arpa.",
            qtype: RecordType::TXT,
            ns: &[SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "99.0.0.10.in-addr.arpa.",
            qtype: RecordType::PTR,
            rcode: ResponseCode::NXDomain,
            ns: &[SOA_NEG],
            ..NOERROR
        },
        Case {
            qname: "0.0.10.in-addr.arpa.",
            qtype: RecordType::NS,
            answer: &["0.0.10.in-addr.arpa. 60 IN NS ns.internal."],
            extra: &["ns.internal. 300 IN A 127.0.0.1"],
            ..NOERROR
        },
        // Outside the file's zone, a registered name is its own host zone again.
        Case {
            qname: "1.1.0.10.in-addr.arpa.",
            qtype: RecordType::TXT,
            ns: &[
                "1.1.0.10.in-addr.arpa. 3 IN SOA ns.internal. hostmaster.internal. 2026112301 3600 600 86400 3",
            ],
            ..NOERROR
        },
    ];
    let mut zones = both_zones().to_vec();
    zones.push(("0.0.10.in-addr.arpa.zone", REVERSE));
    run(&table(false, &zones), &cases);
}

/// Round-robin: over N consecutive identical queries for a service with N in-service
/// instances of equal weight, each comes first exactly once; A and SRV alike.
#[test]
fn rotation_puts_each_instance_first_once() {
    let table = table(false, &[]);
    for (qtype, firsts) in [
        (RecordType::A, ["10.0.2.1", "10.0.2.2", "10.0.2.3"]),
        (
            RecordType::SRV,
            [
                "0 1 80 pool-1.pool.instance.internal.",
                "0 1 80 pool-2.pool.instance.internal.",
                "0 1 80 pool-3.pool.instance.internal.",
            ],
        ),
    ] {
        let packet = query("pool.service.internal.", qtype);
        let mut seen: Vec<String> = (0..firsts.len())
            .map(|_| {
                let m = Message::from_vec(&exchange(&table, &packet, Transport::Udp))
                    .expect("a reply that parses");
                assert_eq!(m.answers.len(), firsts.len(), "{qtype}: every instance");
                let first = text(&m.answers[0]);
                first.splitn(5, ' ').nth(4).expect("data").to_string()
            })
            .collect();
        seen.sort();
        assert_eq!(seen, firsts, "{qtype}: each first exactly once");
    }
}

/// RA only for a client allowed to forward: its answers from signpost's zones carry RA (and
/// AA), and a name outside every zone, asked with RD, is handed back to be forwarded.
#[test]
fn recursion_only_for_clients_allowed_to_forward() {
    let table = table(false, &[]);
    let mut out = Vec::new();
    let inside = query("web.service.internal.", RecordType::A);
    assert_eq!(
        handle(&table, &inside, Transport::Udp, true, LOOPBACK, &mut out),
        Outcome::Answered {
            rcode: u16::from(wire::NOERROR),
            qtype: wire::A
        }
    );
    assert_eq!(wire::flags(&out) & (AA | RA), AA | RA);
    let mut outside = query("example.com.", RecordType::A);
    outside[2] |= (RD >> 8) as u8;
    assert_eq!(
        handle(&table, &outside, Transport::Udp, true, LOOPBACK, &mut out),
        Outcome::Forward { qtype: wire::A }
    );
    // The same client without forwarding: REFUSED, no RA.
    let reply = exchange(&table, &outside, Transport::Udp);
    assert_eq!(reply[3] & 0x0f, wire::REFUSED);
    assert_eq!(wire::flags(&reply) & (AA | RA), 0);
}
