//! The on-disk form of an instance: a versioned serde struct, converted by hand to and from
//! `model::Instance` so that a change of the domain type cannot silently change the disk format.
//!
//! Two encodings of the struct are read: JSON (how records were first written; it starts with
//! `{`) and, written now, the byte `POSTCARD` followed by the struct in postcard, serde's
//! compact binary format. Decoding 100,000 JSON records was a fifth of start-up; postcard
//! reads the same fields without parsing names, quotes and escapes.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{
    CheckKind, CheckSpec, Instance, InstanceId, InstanceKey, Maintenance, Registration, ServiceName,
};

/// Format version of a record with named ports or fail-open (version 2); a reader refuses
/// versions it does not know. A record without them is written as version 1, byte for byte
/// what earlier versions wrote, so they still read it (a replica not yet upgraded, a
/// downgrade).
pub(crate) const VERSION: u32 = 2;

/// First byte of a postcard-encoded version-1 record (never the first byte of a JSON one).
const POSTCARD: u8 = 0x01;
/// First byte of a postcard-encoded version-2 record: postcard is positional, so a record
/// with more fields needs its own marker.
const POSTCARD_V2: u8 = 0x02;

fn postcard_into<T: Serialize>(buf: &mut Vec<u8>, marker: u8, t: &T) -> Result<(), String> {
    buf.push(marker);
    *buf = postcard::to_extend(t, std::mem::take(buf)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Appends `inst`'s stored form to `buf`: version 1 when it has no field of version 2.
pub(crate) fn encode_into(buf: &mut Vec<u8>, inst: &Instance) -> Result<(), String> {
    let rec = Record::from(inst);
    match rec.versioned() {
        Versioned::V1(v1) => postcard_into(buf, POSTCARD, &v1),
        Versioned::V2(rec) => postcard_into(buf, POSTCARD_V2, &rec),
    }
}

fn postcard_from<'a, T: Deserialize<'a>>(rest: &'a [u8]) -> Result<T, String> {
    let (rec, left) = postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
    if !left.is_empty() {
        return Err(format!("{} bytes after the record", left.len()));
    }
    Ok(rec)
}

/// Reads a stored record (any encoding, any known version) back into an instance,
/// re-validating it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Instance, String> {
    let rec: Record = match bytes.split_first() {
        Some((&POSTCARD, rest)) => postcard_from::<RecordV1>(rest)?.into(),
        Some((&POSTCARD_V2, rest)) => postcard_from(rest)?,
        // JSON of either version: version 1 has no `ports` or `fail_open` (their defaults).
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string())?,
    };
    rec.into_instance()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    v: u32,
    service: String,
    id: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    weight: u16,
    priority: u16,
    ttl: Option<u32>,
    check: Option<CheckRecord>,
    deregister_after_ms: Option<u64>,
    maintenance: Option<MaintenanceRecord>,
    /// Version 2: named ports.
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    /// Version 2: fail-open.
    #[serde(default)]
    fail_open: bool,
    // Version 2 also: tags that are not DNS labels (taken through the Consul API).
}

/// Version 1 of `Record`, field for field: how postcard records without version 2's fields
/// are written and read (postcard has no defaults for missing fields).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordV1 {
    v: u32,
    service: String,
    id: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    weight: u16,
    priority: u16,
    ttl: Option<u32>,
    check: Option<CheckRecord>,
    deregister_after_ms: Option<u64>,
    maintenance: Option<MaintenanceRecord>,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Self {
        Record {
            v: r.v,
            service: r.service,
            id: r.id,
            address: r.address,
            port: r.port,
            tags: r.tags,
            meta: r.meta,
            weight: r.weight,
            priority: r.priority,
            ttl: r.ttl,
            check: r.check,
            deregister_after_ms: r.deregister_after_ms,
            maintenance: r.maintenance,
            ports: BTreeMap::new(),
            fail_open: false,
        }
    }
}

/// A record in the earliest version that holds it.
enum Versioned {
    V1(RecordV1),
    V2(Record),
}

impl Record {
    /// The version-1 form, when nothing of version 2 is set.
    fn versioned(self) -> Versioned {
        let text_tag = self
            .tags
            .iter()
            .any(|t| !crate::model::is_lowercase_label(t));
        if !self.ports.is_empty() || self.fail_open || text_tag {
            return Versioned::V2(self);
        }
        Versioned::V1(RecordV1 {
            v: 1,
            service: self.service,
            id: self.id,
            address: self.address,
            port: self.port,
            tags: self.tags,
            meta: self.meta,
            weight: self.weight,
            priority: self.priority,
            ttl: self.ttl,
            check: self.check,
            deregister_after_ms: self.deregister_after_ms,
            maintenance: self.maintenance,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRecord {
    kind: String,
    target: String,
    ttl_ms: u64,
    interval_ms: u64,
    timeout_ms: u64,
    success_before_passing: u32,
    failures_before_critical: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRecord {
    reason: String,
    since_ms: u64,
}

impl From<&CheckSpec> for CheckRecord {
    fn from(c: &CheckSpec) -> Self {
        let (kind, target, ttl) = match &c.kind() {
            CheckKind::Http(u) => ("http", u.clone(), Duration::ZERO),
            CheckKind::Tcp(a) => ("tcp", a.clone(), Duration::ZERO),
            CheckKind::Ttl(t) => ("ttl", String::new(), *t),
        };
        CheckRecord {
            kind: kind.into(),
            target,
            ttl_ms: ms(ttl),
            interval_ms: ms(c.interval()),
            timeout_ms: ms(c.timeout()),
            success_before_passing: c.success_before_passing(),
            failures_before_critical: c.failures_before_critical(),
        }
    }
}

/// `inst`'s stored form as JSON (the shared store's values: readable with `etcdctl get`).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn encode_json(inst: &Instance) -> Vec<u8> {
    let json = match Record::from(inst).versioned() {
        Versioned::V1(v1) => serde_json::to_vec(&v1),
        Versioned::V2(v2) => serde_json::to_vec(&v2),
    };
    json.expect("a record always serializes")
}

/// A stable name of a check's settings: a stored status names the check it belongs to, so a
/// status stored for a replaced check is recognised and ignored. CRC-32 of the check's JSON
/// record, written out field by field in a fixed order.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn check_fingerprint(spec: &CheckSpec) -> u32 {
    let json = serde_json::to_vec(&CheckRecord::from(spec)).expect("a record always serializes");
    crc32fast::hash(&json)
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl From<&Instance> for Record {
    fn from(i: &Instance) -> Self {
        Record {
            v: VERSION,
            service: i.key().service.to_string(),
            id: i.key().id.to_string(),
            address: i.address().to_string(),
            port: i.port(),
            tags: i.tags().iter().map(|t| t.to_string()).collect(),
            meta: i.meta().clone(),
            weight: i.weight(),
            priority: i.priority(),
            ttl: i.ttl(),
            check: i.check().map(CheckRecord::from),
            deregister_after_ms: i.deregister_after().map(ms),
            ports: i.ports().iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            fail_open: i.fail_open(),
            maintenance: i.maintenance().as_ref().map(|m| MaintenanceRecord {
                reason: m.reason().to_string(),
                since_ms: m
                    .since()
                    .duration_since(UNIX_EPOCH)
                    .map(ms)
                    .unwrap_or_default(),
            }),
        }
    }
}

impl Record {
    /// Rebuilds the instance, re-validating every field as if it came from a client.
    pub(crate) fn into_instance(self) -> Result<Instance, String> {
        if self.v == 0 || self.v > VERSION {
            return Err(format!("record version {} is not 1 to {VERSION}", self.v));
        }
        if self.v == 1 && (!self.ports.is_empty() || self.fail_open) {
            return Err("a version 1 record with ports or fail_open".into());
        }
        // The same rules as a client's registration: a record that breaks one (written by
        // another version, or by another replica) is an error, never encoded silently.
        let e = |x: crate::model::InvalidField| x.to_string();
        let check = match self.check {
            None => None,
            Some(c) => {
                let kind = match c.kind.as_str() {
                    "http" => CheckKind::Http(c.target),
                    "tcp" => CheckKind::Tcp(c.target),
                    "ttl" => CheckKind::Ttl(Duration::from_millis(c.ttl_ms)),
                    other => return Err(format!("unknown check kind {other:?}")),
                };
                let spec = CheckSpec::new(
                    kind,
                    Some(Duration::from_millis(c.interval_ms)),
                    Some(Duration::from_millis(c.timeout_ms)),
                    Some(c.success_before_passing),
                    Some(c.failures_before_critical),
                );
                Some(spec.map_err(e)?)
            }
        };
        let key = InstanceKey {
            service: ServiceName::parse(&self.service).map_err(e)?,
            id: InstanceId::parse(&self.id).map_err(e)?,
        };
        let registration = Registration {
            address: self.address,
            port: self.port,
            tags: self.tags,
            // A version 2 record may hold a tag the Consul API took as text.
            text_tags: self.v >= 2,
            meta: self.meta,
            weight: Some(self.weight),
            priority: Some(self.priority),
            ttl: self.ttl,
            check,
            deregister_after: self.deregister_after_ms.map(Duration::from_millis),
            ports: self.ports,
            fail_open: self.fail_open,
        };
        let maintenance = self
            .maintenance
            .map(|m| {
                Maintenance::new(m.reason, UNIX_EPOCH + Duration::from_millis(m.since_ms))
                    .map_err(e)
            })
            .transpose()?;
        Ok(Instance::new(key, registration)
            .map_err(e)?
            .with_maintenance(maintenance))
    }
}

/// The key an instance is stored under: `service/id`.
pub(crate) fn key_of(k: &InstanceKey) -> String {
    format!("{}/{}", k.service, k.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn full() -> Instance {
        let check = CheckSpec::new(
            CheckKind::Http("http://[fd00::7]:8443/health".into()),
            Some(Duration::from_millis(2500)),
            Some(Duration::from_millis(700)),
            Some(2),
            Some(3),
        )
        .unwrap();
        testing::instance("web", "web-1")
            .address("fd00::7")
            .port(8443)
            .tags(&["v2", "blue"])
            .meta("zone", "a \"quoted\" é")
            .weight(7)
            .priority(3)
            .ttl(9)
            .check(check)
            .deregister_after(Duration::from_secs(90))
            .maintenance(
                "disk swap",
                UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            )
            .build()
    }

    /// A stored record (written by another version or replica) that breaks a registration
    /// rule is an error naming the rule, never taken as it is: a metadata pair over 255 bytes
    /// would otherwise wrap its length byte in DNS TXT data.
    #[test]
    fn records_breaking_a_rule_are_errors() {
        let good = serde_json::to_value(Record::from(&full())).unwrap();
        let cases: [(&str, serde_json::Value); 6] = [
            ("meta.zone", serde_json::json!({"zone": "x".repeat(300)})),
            ("port", serde_json::json!(0)),
            ("check.interval", serde_json::json!(5)),
            ("check.failures_before_critical", serde_json::json!(101)),
            ("ttl", serde_json::json!(86_401)),
            ("tags[0]", serde_json::json!([""])),
        ];
        for (field, value) in cases {
            let mut rec = good.clone();
            match field {
                "meta.zone" => rec["meta"] = value,
                "port" => rec["port"] = value,
                "check.interval" => rec["check"]["interval_ms"] = value,
                "check.failures_before_critical" => {
                    rec["check"]["failures_before_critical"] = value
                }
                "ttl" => rec["ttl"] = value,
                _ => rec["tags"] = value,
            }
            let e = decode(&serde_json::to_vec(&rec).unwrap()).unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
        let mut rec = good;
        rec["check"]["kind"] = serde_json::json!("http");
        rec["check"]["target"] = serde_json::json!("https://x/health");
        assert!(
            decode(&serde_json::to_vec(&rec).unwrap()).is_err(),
            "https refused"
        );
    }

    #[test]
    fn binary_records_round_trip() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &full()).unwrap();
        assert_eq!(buf[0], POSTCARD);
        assert_eq!(decode(&buf).unwrap(), full());
    }

    #[test]
    fn json_records_written_before_still_read() {
        let json = encode_json(&full());
        assert_eq!(json[0], b'{');
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["v"], 1, "nothing of version 2: written as version 1");
        assert!(value.get("ports").is_none() && value.get("fail_open").is_none());
        assert_eq!(decode(&json).unwrap(), full());
    }

    /// An instance with version 2's fields (named ports, fail-open).
    fn routed() -> Instance {
        testing::instance("web", "web-2")
            .port_named("grpc", 9090)
            .port_named("admin", 8081)
            .fail_open()
            .build()
    }

    #[test]
    fn version_2_records_round_trip_in_both_encodings() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &routed()).unwrap();
        assert_eq!(buf[0], POSTCARD_V2);
        assert_eq!(decode(&buf).unwrap(), routed());
        let json = encode_json(&routed());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["v"], 2);
        assert_eq!(value["ports"]["grpc"], 9090);
        assert_eq!(value["fail_open"], true);
        assert_eq!(decode(&json).unwrap(), routed());
        // A version 1 record never carries them; an unknown version is refused.
        let mut v1 = value.clone();
        v1["v"] = 1.into();
        assert!(decode(&serde_json::to_vec(&v1).unwrap()).is_err());
        let mut v3 = value;
        v3["v"] = 3.into();
        assert!(decode(&serde_json::to_vec(&v3).unwrap()).is_err());
    }

    /// A tag that is not a DNS label (the Consul API's) makes a version 2 record, which
    /// earlier builds refuse instead of misreading; a version 1 record may not hold one.
    #[test]
    fn text_tags_round_trip_as_version_2() {
        let inst = testing::instance("web", "web-1")
            .text_tags(&["v2", "traefik.enable=true"])
            .build();
        assert!(!inst.tags()[1].is_label());
        let mut buf = Vec::new();
        encode_into(&mut buf, &inst).unwrap();
        assert_eq!(buf[0], POSTCARD_V2);
        assert_eq!(decode(&buf).unwrap(), inst);
        let json = encode_json(&inst);
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["v"], 2);
        assert_eq!(decode(&json).unwrap(), inst);
        value["v"] = 1.into();
        let err = decode(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.contains("tags[1]"), "{err}");
        // Label tags alone keep version 1.
        let mut buf = Vec::new();
        encode_into(
            &mut buf,
            &testing::instance("web", "web-1").text_tags(&["V2"]).build(),
        )
        .unwrap();
        assert_eq!(buf[0], POSTCARD);
    }

    /// Postcard records of version 1, as earlier builds wrote them, still read.
    #[test]
    fn version_1_binary_records_still_read() {
        let Versioned::V1(v1) = Record::from(&full()).versioned() else {
            panic!("full() has nothing of version 2")
        };
        let mut buf = vec![POSTCARD];
        buf = postcard::to_extend(&v1, buf).unwrap();
        assert_eq!(decode(&buf).unwrap(), full());
    }

    #[test]
    fn damaged_binary_records_are_errors() {
        let mut buf = Vec::new();
        encode_into(&mut buf, &full()).unwrap();
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().contains("after the record"));
        assert!(decode(&buf[..buf.len() / 2]).is_err());
        assert!(decode(&[POSTCARD]).is_err());
    }
}
