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

    fn port_named(mut self, name: &str, port: u16) -> Self {
        self.instance = self.instance.port_named(name, port);
        self
    }

    fn fail_open(mut self) -> Self {
        self.instance = self.instance.fail_open();
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
    snapshot_of(instances)
}

/// A registry snapshot of `instances`.
fn snapshot_of(instances: impl IntoIterator<Item = Inst>) -> Snapshot {
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

// ---------------------------------------------------------------------------------------------
// routing (CONTRACT §2 "Routing")

/// The table of `instances` with `settings`, built as `DnsView` builds it; the builder is
/// handed back for later changes.
fn routing_table(settings: Settings, snap: &Snapshot) -> (Arc<Table>, Builder, Statics) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("internal.zone"), INTERNAL_ZONE).expect("a zone file");
    let files = zonefile::load_dir(dir.path()).expect("the zone file loads");
    let statics = Statics::new(settings, &files, 0);
    let mut builder = Builder::default();
    builder.set_all(&statics, snap);
    let mut published = Arc::new(Builder::empty_table(&statics));
    builder.publish(&statics, |t| std::mem::replace(&mut published, t));
    (published, builder, statics)
}

/// `dns.locality` of the routing cases: eu-1 is 10.1.0.0/16, us-1 10.2.0.0/16 and
/// fd00:2::/32.
fn locality_settings() -> Settings {
    let cfg: Vec<crate::config::LocalityConfig> = vec![
        crate::config::LocalityConfig {
            networks: vec![crate::config::Network::parse("10.1.0.0/16").unwrap()],
            zone: "eu-1".into(),
        },
        crate::config::LocalityConfig {
            networks: ["10.2.0.0/16", "fd00:2::/32"]
                .into_iter()
                .filter_map(crate::config::Network::parse)
                .collect(),
            zone: "us-1".into(),
        },
    ];
    Settings {
        locality: super::routing::Locality::new(&cfg),
        ..settings(false)
    }
}

/// The data of the first answer record of a reply.
fn first_of(reply: &[u8]) -> String {
    let m = Message::from_vec(reply).expect("a reply that parses");
    let t = text(m.answers.first().expect("an answer"));
    t.splitn(5, ' ').nth(4).expect("data").to_string()
}

/// Asks `qname`/`qtype` `n` times from `peer` over `transport`; the firsts in order.
fn firsts(
    table: &Table,
    qname: &str,
    qtype: RecordType,
    n: usize,
    transport: Transport,
    peer: std::net::IpAddr,
) -> Vec<String> {
    let packet = query(qname, qtype);
    (0..n)
        .map(|_| {
            let mut out = Vec::new();
            let o = handle(table, &packet, transport, false, peer, &mut out);
            assert!(
                matches!(o, Outcome::Answered { rcode: 0, .. }),
                "{qname}: {o:?}"
            );
            first_of(&out)
        })
        .collect()
}

/// Every window of `w` consecutive firsts holds each of `want` (first, times) exactly.
fn assert_windows(firsts: &[String], want: &[(&str, usize)], what: &str) {
    let w: usize = want.iter().map(|(_, n)| n).sum();
    assert!(firsts.len() >= w, "{what}");
    for start in 0..=firsts.len() - w {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for f in &firsts[start..start + w] {
            *counts.entry(f.as_str()).or_default() += 1;
        }
        let want: std::collections::BTreeMap<&str, usize> =
            want.iter().copied().filter(|(_, n)| *n > 0).collect();
        assert_eq!(counts, want, "{what}: window from query {start}");
    }
}

fn weighted_registry() -> Snapshot {
    snapshot_of([
        Inst::new("canary", "stable", "10.0.5.1", 80).weight(99),
        Inst::new("canary", "canary", "10.0.5.2", 80).weight(1),
        Inst::new("mix", "m1", "10.0.6.1", 81)
            .weight(3)
            .tags(&["blue"]),
        Inst::new("mix", "m2", "10.0.6.2", 82)
            .weight(1)
            .tags(&["blue"]),
        Inst::new("mix", "m3", "10.0.6.3", 83)
            .weight(2)
            .tags(&["blue"]),
        Inst::new("mix", "m4", "10.0.6.4", 84).weight(5),
        Inst::new("even", "e1", "10.0.7.1", 80).weight(4),
        Inst::new("even", "e2", "10.0.7.2", 80).weight(4),
        Inst::new("even", "e3", "10.0.7.3", 80).weight(4),
    ])
}

/// Weights decide how often each instance comes first: over W (the sum of the in-service
/// weights) consecutive queries, exactly `weight` times each, in every window of W; A and SRV
/// alike, over UDP and TCP, through a tag filter, and again after a health change.
#[test]
fn weights_decide_first_positions() {
    let (table, mut builder, statics) = routing_table(settings(false), &weighted_registry());
    let srv = |id: &str, w: u16, port: u16, svc: &str| {
        format!("0 {w} {port} {id}.{svc}.instance.internal.")
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let what = |n: &str| format!("{n} over {transport:?}");
        let f = firsts(
            &table,
            "canary.service.internal.",
            RecordType::A,
            200,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[("10.0.5.1", 99), ("10.0.5.2", 1)],
            &what("canary A 1:99"),
        );
        let f = firsts(
            &table,
            "canary.service.internal.",
            RecordType::SRV,
            200,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[
                (&srv("stable", 99, 80, "canary"), 99),
                (&srv("canary", 1, 80, "canary"), 1),
            ],
            &what("canary SRV 1:99"),
        );
        // The tag filter: m1..m3 (3:1:2), without m4.
        let f = firsts(
            &table,
            "blue.mix.service.internal.",
            RecordType::A,
            18,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[("10.0.6.1", 3), ("10.0.6.2", 1), ("10.0.6.3", 2)],
            &what("blue.mix A 3:1:2"),
        );
        let f = firsts(
            &table,
            "_mix._blue.service.internal.",
            RecordType::SRV,
            18,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[
                (&srv("m1", 3, 81, "mix"), 3),
                (&srv("m2", 1, 82, "mix"), 1),
                (&srv("m3", 2, 83, "mix"), 2),
            ],
            &what("_mix._blue SRV 3:1:2"),
        );
        let f = firsts(
            &table,
            "mix.service.internal.",
            RecordType::A,
            33,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[
                ("10.0.6.1", 3),
                ("10.0.6.2", 1),
                ("10.0.6.3", 2),
                ("10.0.6.4", 5),
            ],
            &what("mix A 3:1:2:5"),
        );
        // Equal weights: plain round-robin.
        let f = firsts(
            &table,
            "even.service.internal.",
            RecordType::A,
            9,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[("10.0.7.1", 1), ("10.0.7.2", 1), ("10.0.7.3", 1)],
            &what("even A"),
        );
    }
    // Spread evenly: nginx's order for 3:1:2 over one round.
    let f = firsts(
        &table,
        "blue.mix.service.internal.",
        RecordType::A,
        12,
        Transport::Udp,
        LOOPBACK,
    );
    let letters: String = f
        .iter()
        .map(|a| match a.as_str() {
            "10.0.6.1" => 'a',
            "10.0.6.2" => 'b',
            _ => 'c',
        })
        .collect();
    assert!(
        ["acabca", "cabcaa", "abcaac", "bcaaca", "caacab", "aacabc"]
            .iter()
            .any(|r| letters.starts_with(r) && letters.ends_with(r)),
        "smooth: {letters}"
    );
    // A health change: m1 fails; the rest share W = 1 + 2 (blue) and 1 + 2 + 5.
    let mut snap = weighted_registry();
    let svc = crate::model::ServiceName::parse("mix").unwrap();
    let mut set = (**snap.services.get(&svc).unwrap()).clone();
    set.insert(
        Inst::new("mix", "m1", "10.0.6.1", 81)
            .weight(3)
            .tags(&["blue"])
            .status(Status::Critical)
            .entry(),
    );
    snap.services.insert(svc.clone(), Arc::new(set));
    builder.set_service(&statics, &svc, snap.services.get(&svc).map(|s| &**s));
    let mut table = table;
    builder.publish(&statics, |t| std::mem::replace(&mut table, t));
    for transport in [Transport::Udp, Transport::Tcp] {
        let f = firsts(
            &table,
            "blue.mix.service.internal.",
            RecordType::A,
            9,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[("10.0.6.2", 1), ("10.0.6.3", 2)],
            "blue.mix after m1 failed",
        );
        let f = firsts(
            &table,
            "mix.service.internal.",
            RecordType::SRV,
            16,
            transport,
            LOOPBACK,
        );
        assert_windows(
            &f,
            &[
                (&srv("m2", 1, 82, "mix"), 1),
                (&srv("m3", 2, 83, "mix"), 2),
                (&srv("m4", 5, 84, "mix"), 5),
            ],
            "mix SRV after m1 failed",
        );
    }
}

fn geo_registry() -> Snapshot {
    snapshot_of([
        Inst::new("geo", "g1", "10.0.8.1", 80).meta(&[("zone", "eu-1")]),
        Inst::new("geo", "g2", "10.0.8.2", 80).meta(&[("zone", "eu-1")]),
        Inst::new("geo", "g3", "10.0.8.3", 80).meta(&[("zone", "us-1")]),
        Inst::new("geo", "g4", "10.0.8.4", 80),
        Inst::new("geo", "g5", "10.0.8.5", 80).meta(&[("zone", "mars")]),
        Inst::new("plain", "p1", "10.0.9.1", 80),
        Inst::new("plain", "p2", "10.0.9.2", 80),
    ])
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

/// Locality by the client's address: a client in a zone gets that zone's instances first,
/// rotating among them, then the others; a client outside every network gets the plain
/// rotation over all.
#[test]
fn locality_puts_the_clients_zone_first() {
    let (table, _, _) = routing_table(locality_settings(), &geo_registry());
    let eu = ["10.0.8.1", "10.0.8.2"];
    for transport in [Transport::Udp, Transport::Tcp] {
        let packet = query("geo.service.internal.", RecordType::A);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            handle(&table, &packet, transport, false, ip("10.1.3.4"), &mut out);
            let m = Message::from_vec(&out).unwrap();
            let order: Vec<String> = m.answers.iter().map(text).collect();
            assert_eq!(order.len(), 5, "{order:?}");
            for a in &order[..2] {
                assert!(eu.iter().any(|e| a.ends_with(e)), "eu-1 first: {order:?}");
            }
            seen.push(first_of(&out));
        }
        assert_windows(&seen, &[("10.0.8.1", 1), ("10.0.8.2", 1)], "eu-1 rotates");
        let f = firsts_from(&table, "10.2.0.9", transport, 3);
        assert_eq!(f, ["10.0.8.3"; 3], "us-1: its one instance first");
        let f = firsts_from(&table, "fd00:2::1", transport, 3);
        assert_eq!(f, ["10.0.8.3"; 3], "us-1 by its IPv6 network");
        let f = firsts_from(&table, "192.0.2.1", transport, 10);
        assert_windows(
            &f,
            &[
                ("10.0.8.1", 1),
                ("10.0.8.2", 1),
                ("10.0.8.3", 1),
                ("10.0.8.4", 1),
                ("10.0.8.5", 1),
            ],
            "outside every zone: plain rotation",
        );
        // SRV alike.
        let f = firsts(
            &table,
            "geo.service.internal.",
            RecordType::SRV,
            2,
            transport,
            ip("10.2.1.1"),
        );
        assert_eq!(f, ["0 1 80 g3.geo.instance.internal."; 2]);
    }
}

fn firsts_from(table: &Table, peer: &str, transport: Transport, n: usize) -> Vec<String> {
    firsts(
        table,
        "geo.service.internal.",
        RecordType::A,
        n,
        transport,
        ip(peer),
    )
}

/// A query with an EDNS Client Subnet of `addr`/`source`.
fn ecs_query(qname: &str, qtype: RecordType, addr: &str, source: u8) -> Vec<u8> {
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let mut m = Message::query();
    m.metadata.id = ID;
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(ip(addr), source, 0)));
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// The reply's Client Subnet: (address, source, scope).
fn ecs_of(reply: &[u8]) -> Option<(std::net::IpAddr, u8, u8)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let m = Message::from_vec(reply).unwrap();
    match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

/// EDNS Client Subnet stands for the client's address (the packet's source is a resolver's),
/// and the reply echoes it with a scope within which every address is in the same zone; an
/// answer that does not depend on the address has scope 0, and so has a source prefix of 0
/// (the resolver asks for no tailoring). A malformed option is FORMERR.
#[test]
fn client_subnet_places_the_client_and_scopes_the_answer() {
    let (table, _, _) = routing_table(locality_settings(), &geo_registry());
    let resolver = ip("127.0.0.1");
    let ask = |qname: &str, qtype: RecordType, addr: &str, source: u8, transport| {
        let mut out = Vec::new();
        let packet = ecs_query(qname, qtype, addr, source);
        handle(&table, &packet, transport, false, resolver, &mut out);
        out
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        // us-1 by the subnet: g3 first; the us-1 /16 is the scope (10.2/16 vs eu-1's 10.1/16
        // share 14 bits: a /15 would reach eu-1).
        let r = ask(
            "geo.service.internal.",
            RecordType::A,
            "10.2.7.0",
            24,
            transport,
        );
        assert_eq!(first_of(&r), "10.0.8.3");
        assert_eq!(ecs_of(&r), Some((ip("10.2.7.0"), 24, 16)));
        let r = ask(
            "geo.service.internal.",
            RecordType::SRV,
            "10.1.0.0",
            16,
            transport,
        );
        assert!(first_of(&r).contains(".geo.instance"), "an SRV answer");
        assert!(["g1.", "g2."].iter().any(|g| first_of(&r).contains(g)));
        assert_eq!(ecs_of(&r), Some((ip("10.1.0.0"), 16, 16)));
        // Outside every zone: the plain answer, valid as far as no zone's network reaches.
        let r = ask(
            "geo.service.internal.",
            RecordType::A,
            "192.0.2.0",
            24,
            transport,
        );
        assert_eq!(ecs_of(&r), Some((ip("192.0.2.0"), 24, 1)));
        let r = ask(
            "geo.service.internal.",
            RecordType::A,
            "fd00:2:1::",
            48,
            transport,
        );
        assert_eq!(first_of(&r), "10.0.8.3");
        assert_eq!(ecs_of(&r), Some((ip("fd00:2:1::"), 48, 32)));
        // Names whose answer does not depend on the address: scope 0.
        for (qname, qtype) in [
            ("plain.service.internal.", RecordType::A),
            ("g1.geo.instance.internal.", RecordType::A),
            ("nope.service.internal.", RecordType::A),
        ] {
            let r = ask(qname, qtype, "10.2.7.0", 24, transport);
            assert_eq!(ecs_of(&r), Some((ip("10.2.7.0"), 24, 0)), "{qname}");
        }
        // Source prefix 0: no location; the resolver's own address does not count either.
        let mut out = Vec::new();
        let packet = ecs_query("geo.service.internal.", RecordType::A, "0.0.0.0", 0);
        handle(&table, &packet, transport, false, ip("10.2.0.1"), &mut out);
        assert_eq!(ecs_of(&out), Some((ip("0.0.0.0"), 0, 0)));
    }
    // Without an ECS option the packet's source places the client, and no option comes back.
    let mut out = Vec::new();
    handle(
        &table,
        &query("geo.service.internal.", RecordType::A),
        Transport::Udp,
        false,
        ip("10.2.0.1"),
        &mut out,
    );
    assert_eq!(first_of(&out), "10.0.8.3");
    // Malformed: a bit set past the source prefix (10.2.7.0/23). FORMERR, with an OPT.
    let mut bad = ecs_query("geo.service.internal.", RecordType::A, "10.2.6.0", 23);
    let n = bad.len();
    assert_eq!(bad[n - 1], 6, "the address's last byte ends the query");
    bad[n - 1] = 7;
    let mut out = Vec::new();
    handle(&table, &bad, Transport::Udp, false, resolver, &mut out);
    assert_eq!(out[3] & 0x0f, wire::FORMERR);
    assert_eq!(&out[10..12], &[0, 1], "an OPT");
    // Without dns.locality nothing depends on the address: scope 0.
    let (plain, _, _) = routing_table(settings(false), &geo_registry());
    let mut out = Vec::new();
    let packet = ecs_query("geo.service.internal.", RecordType::A, "10.2.7.0", 24);
    handle(&plain, &packet, Transport::Udp, false, resolver, &mut out);
    assert_eq!(ecs_of(&out), Some((ip("10.2.7.0"), 24, 0)));
}

fn failing_registry() -> Snapshot {
    snapshot_of([
        Inst::new("down", "d1", "10.0.10.1", 80).status(Status::Critical),
        Inst::new("down", "d2", "10.0.10.2", 80).status(Status::Warning),
        Inst::new("down", "d3", "10.0.10.3", 80)
            .status(Status::Passing)
            .maintenance(),
        Inst::new("opt", "o1", "10.0.11.1", 80)
            .status(Status::Critical)
            .fail_open(),
        Inst::new("opt", "o2", "10.0.11.2", 80).status(Status::Critical),
        Inst::new("up", "u1", "10.0.12.1", 80),
        Inst::new("up", "u2", "10.0.12.2", 80).status(Status::Critical),
    ])
}

/// Fail-open: with no instance in service, a service failing open answers with every
/// instance not in maintenance (by `dns.fail_open`, or a registration's `fail_open` for its
/// service); off, NXDOMAIN. A service with an instance in service answers with it alone.
#[test]
fn fail_open_answers_every_instance_not_in_maintenance() {
    const OPT: &[&str] = &[
        "opt.service.internal. 5 IN A 10.0.11.1",
        "opt.service.internal. 5 IN A 10.0.11.2",
    ];
    const UP: &[&str] = &["up.service.internal. 5 IN A 10.0.12.1"];
    let (off, _, _) = routing_table(settings(false), &failing_registry());
    run(
        &off,
        &[
            Case {
                qname: "down.service.internal.",
                ..NXDOMAIN
            },
            Case {
                qname: "opt.service.internal.",
                answer: OPT,
                ..NOERROR
            },
            Case {
                qname: "_opt._tcp.service.internal.",
                qtype: RecordType::SRV,
                answer: &[
                    "_opt._tcp.service.internal. 5 IN SRV 0 1 80 o1.opt.instance.internal.",
                    "_opt._tcp.service.internal. 5 IN SRV 0 1 80 o2.opt.instance.internal.",
                ],
                extra: &[
                    "o1.opt.instance.internal. 5 IN A 10.0.11.1",
                    "o2.opt.instance.internal. 5 IN A 10.0.11.2",
                ],
                ..NOERROR
            },
            Case {
                qname: "up.service.internal.",
                answer: UP,
                ..NOERROR
            },
        ],
    );
    let (on, _, _) = routing_table(
        Settings {
            fail_open: true,
            ..settings(false)
        },
        &failing_registry(),
    );
    run(
        &on,
        &[
            Case {
                qname: "down.service.internal.",
                answer: &[
                    "down.service.internal. 5 IN A 10.0.10.1",
                    "down.service.internal. 5 IN A 10.0.10.2",
                ],
                ..NOERROR
            },
            Case {
                qname: "up.service.internal.",
                answer: UP,
                ..NOERROR
            },
        ],
    );
}

/// Named ports: `_<name>._tcp.<service>.service.D` SRV of the instances registering that
/// name, on that port, with glue, in service only, rotating; the ENT above it is NODATA.
#[test]
fn named_ports_are_srv_names_with_glue() {
    let snap = snapshot_of([
        Inst::new("rpc", "r1", "10.0.13.1", 8080)
            .port_named("grpc", 9090)
            .weight(2),
        Inst::new("rpc", "r2", "fd00::13:2", 8080)
            .port_named("grpc", 9091)
            .port_named("admin", 8081),
        Inst::new("rpc", "r3", "10.0.13.3", 8080).port_named("grpc", 9092),
        Inst::new("rpc", "r4", "10.0.13.4", 8080)
            .port_named("grpc", 9093)
            .status(Status::Critical),
    ]);
    let (table, _, _) = routing_table(settings(false), &snap);
    run(
        &table,
        &[
            Case {
                qname: "_grpc._tcp.rpc.service.internal.",
                qtype: RecordType::SRV,
                answer: &[
                    "_grpc._tcp.rpc.service.internal. 5 IN SRV 0 2 9090 r1.rpc.instance.internal.",
                    "_grpc._tcp.rpc.service.internal. 5 IN SRV 0 1 9091 r2.rpc.instance.internal.",
                    "_grpc._tcp.rpc.service.internal. 5 IN SRV 0 1 9092 r3.rpc.instance.internal.",
                ],
                extra: &[
                    "r1.rpc.instance.internal. 5 IN A 10.0.13.1",
                    "r2.rpc.instance.internal. 5 IN AAAA fd00::13:2",
                    "r3.rpc.instance.internal. 5 IN A 10.0.13.3",
                ],
                ..NOERROR
            },
            Case {
                qname: "_ADMIN._tcp.rpc.service.internal.",
                qtype: RecordType::SRV,
                answer: &[
                    "_admin._tcp.rpc.service.internal. 5 IN SRV 0 1 8081 r2.rpc.instance.internal.",
                ],
                extra: &["r2.rpc.instance.internal. 5 IN AAAA fd00::13:2"],
                ..NOERROR
            },
            Case {
                qname: "_grpc._tcp.rpc.service.internal.",
                qtype: RecordType::A,
                ..NODATA
            },
            Case {
                qname: "_tcp.rpc.service.internal.",
                qtype: RecordType::SRV,
                ..NODATA
            },
            Case {
                qname: "_http._tcp.rpc.service.internal.",
                qtype: RecordType::SRV,
                ..NXDOMAIN
            },
        ],
    );
    // Weighted like the service's own SRV: r1 (2) first twice in four.
    let f = firsts(
        &table,
        "_grpc._tcp.rpc.service.internal.",
        RecordType::SRV,
        8,
        Transport::Udp,
        LOOPBACK,
    );
    assert_windows(
        &f,
        &[
            ("0 2 9090 r1.rpc.instance.internal.", 2),
            ("0 1 9091 r2.rpc.instance.internal.", 1),
            ("0 1 9092 r3.rpc.instance.internal.", 1),
        ],
        "named port rotation",
    );
}
