//! The registry's keys and values in etcd, under the configured prefix:
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `instances/<service>/<id>` | the instance record (JSON, as `store::record`), or `{"instance": record, "health": status}` when written with the health it starts with | any replica, for a client |
//! | `health/<service>/<id>` | `HealthRecord` (JSON): status, output, since, the check it is for | the check's owner; any replica for a TTL report |
//! | `members/<name>` | `MemberRecord` (JSON), on the member's own lease | each replica, for itself |
//!
//! Health keys are not on any lease: a dying owner must not take the statuses it wrote with
//! it (every instance it checked would flap to "awaiting first check"). They go with their
//! instance. A registration carries the health it starts with inside its own value (so every
//! replica shows the same `since`) rather than in a health key of its own: one key per
//! registration, not two (a second key per registration cost a third of the write
//! throughput, `bench/replicas.sh`). A health key, when there is one, is newer than the
//! health inside the value (a registration that carries one deletes the health key).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{CheckSpec, Health, Instance, InstanceId, InstanceKey, ServiceName, Status};
use crate::store::record;

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    /// An instance's registration.
    Instance(InstanceKey),
    /// An instance's stored health.
    Health(InstanceKey),
    /// A live replica.
    Member(String),
}

/// The key names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
}

impl Layout {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// Everything signpost keeps: one ranged read and one watch cover it.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn instance(&self, k: &InstanceKey) -> String {
        format!("{}instances/{}/{}", self.prefix, k.service, k.id)
    }

    pub(super) fn health(&self, k: &InstanceKey) -> String {
        format!("{}health/{}/{}", self.prefix, k.service, k.id)
    }

    /// Where statuses are kept (every health key starts with it).
    pub(super) fn health_prefix(&self) -> String {
        format!("{}health/", self.prefix)
    }

    pub(super) fn member(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    /// Reads a key back; `None` for a key under the prefix that signpost does not write
    /// (left alone) or whose names are not valid.
    pub(super) fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        let (kind, rest) = rest.split_once('/')?;
        let instance = |rest: &str| {
            let (service, id) = rest.split_once('/')?;
            Some(InstanceKey {
                service: ServiceName::parse(service).ok()?,
                id: InstanceId::parse(id).ok()?,
            })
        };
        match kind {
            "instances" => instance(rest).map(Key::Instance),
            "health" => instance(rest).map(Key::Health),
            "members" if !rest.is_empty() => Some(Key::Member(rest.to_string())),
            _ => None,
        }
    }
}

/// An instance key's value: the registration, with the health it starts with when the two
/// were written together.
pub(super) fn encode_instance(
    inst: &Instance,
    start: Option<(&Health, Option<&CheckSpec>)>,
) -> Vec<u8> {
    let record = record::encode_json(inst);
    let Some((health, check)) = start else {
        return record;
    };
    let mut v = b"{\"instance\":".to_vec();
    v.extend_from_slice(&record);
    v.extend_from_slice(b",\"health\":");
    v.extend_from_slice(&HealthRecord::encode(health, check));
    v.push(b'}');
    v
}

/// Reads an instance key's value (either form) back, re-validating the registration.
pub(super) fn decode_instance(bytes: &[u8]) -> Result<(Instance, Option<HealthRecord>), String> {
    if !bytes.starts_with(b"{\"instance\":") {
        return record::decode(bytes).map(|i| (i, None));
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Both {
        instance: serde_json::Value,
        health: HealthRecord,
    }
    let both: Both = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let record = serde_json::to_vec(&both.instance).map_err(|e| e.to_string())?;
    Ok((record::decode(&record)?, Some(both.health)))
}

/// A stored health status.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthRecord {
    status: String,
    output: String,
    since_ms: u64,
    /// `store::record::check_fingerprint` of the check this status is for; `None` for an
    /// instance without a check.
    check: Option<u32>,
}

impl HealthRecord {
    pub(super) fn encode(health: &Health, check: Option<&CheckSpec>) -> Vec<u8> {
        let rec = HealthRecord {
            status: health.status.as_str().to_string(),
            output: health.output.to_string(),
            since_ms: health
                .since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default(),
            check: check.map(record::check_fingerprint),
        };
        serde_json::to_vec(&rec).expect("a record always serializes")
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The health, if it is for `check` (the instance's current one).
    pub(super) fn health_for(&self, check: Option<&CheckSpec>) -> Result<Option<Health>, String> {
        if self.check != check.map(record::check_fingerprint) {
            return Ok(None);
        }
        let status = match self.status.as_str() {
            "passing" => Status::Passing,
            "warning" => Status::Warning,
            "critical" => Status::Critical,
            other => return Err(format!("unknown status {other:?}")),
        };
        let since = UNIX_EPOCH + Duration::from_millis(self.since_ms);
        Ok(Some(Health::new(status, self.output.clone(), since)))
    }
}

/// A live replica's membership value (informational: the key's presence is what counts).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MemberRecord {
    pub(super) name: String,
    pub(super) started_ms: u64,
}

impl MemberRecord {
    pub(super) fn encode(name: &str) -> Vec<u8> {
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        serde_json::to_vec(&MemberRecord {
            name: name.to_string(),
            started_ms,
        })
        .expect("a record always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_left_alone() {
        let l = Layout::new("/sp/");
        let inst = testing::instance("web", "a1").build();
        let k = inst.key().clone();
        assert_eq!(l.instance(&k), "/sp/instances/web/a1");
        assert_eq!(
            l.parse(l.instance(&k).as_bytes()),
            Some(Key::Instance(k.clone()))
        );
        assert_eq!(l.parse(l.health(&k).as_bytes()), Some(Key::Health(k)));
        assert_eq!(l.parse(b"/sp/members/n1"), Some(Key::Member("n1".into())));
        assert_eq!(l.parse(b"/sp/other/x"), None);
        assert_eq!(l.parse(b"/sp/instances/web"), None);
        assert_eq!(l.parse(b"/sp/instances/Bad Name/x"), None);
        assert_eq!(l.parse(b"/elsewhere/instances/web/a"), None);
    }

    #[test]
    fn an_instance_value_carries_its_starting_health_or_not() {
        let inst = testing::instance("web", "a").build();
        let h = Health::new(Status::Passing, "registered without a check", UNIX_EPOCH);
        let (back, none) = decode_instance(&encode_instance(&inst, None)).unwrap();
        assert_eq!(back, inst);
        assert!(none.is_none());
        let (back, some) = decode_instance(&encode_instance(&inst, Some((&h, None)))).unwrap();
        assert_eq!(back, inst);
        assert_eq!(some.unwrap().health_for(None).unwrap(), Some(h));
        assert!(decode_instance(b"{\"instance\":{},\"health\":1}").is_err());
        // Replicas carry named ports and fail-open (a version 2 record), with a health too.
        let routed = testing::instance("web", "b")
            .port_named("grpc", 9090)
            .fail_open()
            .build();
        let h = Health::new(Status::Critical, "awaiting", UNIX_EPOCH);
        let (back, _) = decode_instance(&encode_instance(&routed, Some((&h, None)))).unwrap();
        assert_eq!(back, routed);
        assert_eq!(back.ports().len(), 1);
        assert!(back.fail_open());
    }

    #[test]
    fn a_status_stored_for_another_check_is_ignored() {
        let now = SystemTime::now();
        let http = |url: &str| {
            let kind = crate::model::CheckKind::Http(url.into());
            CheckSpec::new(kind, None, None, None, None).unwrap()
        };
        let a = testing::instance("web", "a")
            .check(http("http://127.0.0.1:1/a"))
            .build();
        let b = testing::instance("web", "a")
            .check(http("http://127.0.0.1:1/b"))
            .build();
        let h = Health::new(Status::Passing, "HTTP 200 OK", now);
        let rec = HealthRecord::decode(&HealthRecord::encode(&h, a.check())).unwrap();
        let got = rec.health_for(a.check()).unwrap().unwrap();
        assert_eq!(got.status, Status::Passing);
        assert_eq!(got.output, "HTTP 200 OK");
        assert_eq!(rec.health_for(b.check()).unwrap(), None);
        assert_eq!(rec.health_for(None).unwrap(), None);
    }
}
