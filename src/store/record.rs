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

/// Format version written in every record; a reader refuses versions it does not know.
pub(crate) const VERSION: u32 = 1;

/// First byte of a postcard-encoded record (never the first byte of a JSON one).
const POSTCARD: u8 = 0x01;

/// Appends `inst`'s stored form to `buf`.
pub(crate) fn encode_into(buf: &mut Vec<u8>, inst: &Instance) -> Result<(), String> {
    buf.push(POSTCARD);
    *buf =
        postcard::to_extend(&Record::from(inst), std::mem::take(buf)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Reads a stored record (either encoding) back into an instance, re-validating it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Instance, String> {
    let rec: Record = match bytes.split_first() {
        Some((&POSTCARD, rest)) => {
            let (rec, left) = postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
            if !left.is_empty() {
                return Err(format!("{} bytes after the record", left.len()));
            }
            rec
        }
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
    serde_json::to_vec(&Record::from(inst)).expect("a record always serializes")
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
        if self.v != VERSION {
            return Err(format!("record version {} is not {VERSION}", self.v));
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
            meta: self.meta,
            weight: Some(self.weight),
            priority: Some(self.priority),
            ttl: self.ttl,
            check,
            deregister_after: self.deregister_after_ms.map(Duration::from_millis),
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
            ("tags[0]", serde_json::json!(["-bad"])),
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
        let json = serde_json::to_vec(&Record::from(&full())).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode(&json).unwrap(), full());
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
