//! The on-disk form of an instance: a versioned serde struct, converted by hand to and from
//! `model::Instance` so that a change of the domain type cannot silently change the disk format.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::{
    CheckKind, CheckSpec, Instance, InstanceId, InstanceKey, Maintenance, ServiceName, Tag,
};

/// Format version written in every record; a reader refuses versions it does not know.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
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

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl From<&Instance> for Record {
    fn from(i: &Instance) -> Self {
        Record {
            v: VERSION,
            service: i.key.service.to_string(),
            id: i.key.id.to_string(),
            address: i.address.to_string(),
            port: i.port,
            tags: i.tags.iter().map(|t| t.to_string()).collect(),
            meta: i.meta.clone(),
            weight: i.weight,
            priority: i.priority,
            ttl: i.ttl,
            check: i.check.as_ref().map(|c| {
                let (kind, target, ttl) = match &c.kind {
                    CheckKind::Http(u) => ("http", u.clone(), Duration::ZERO),
                    CheckKind::Tcp(a) => ("tcp", a.clone(), Duration::ZERO),
                    CheckKind::Ttl(t) => ("ttl", String::new(), *t),
                };
                CheckRecord {
                    kind: kind.into(),
                    target,
                    ttl_ms: ms(ttl),
                    interval_ms: ms(c.interval),
                    timeout_ms: ms(c.timeout),
                    success_before_passing: c.success_before_passing,
                    failures_before_critical: c.failures_before_critical,
                }
            }),
            deregister_after_ms: i.deregister_after.map(ms),
            maintenance: i.maintenance.as_ref().map(|m| MaintenanceRecord {
                reason: m.reason.clone(),
                since_ms: m
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map(ms)
                    .unwrap_or_default(),
            }),
        }
    }
}

impl Record {
    /// Rebuilds the instance, re-validating every field as if it came from a client.
    pub fn into_instance(self) -> Result<Instance, String> {
        if self.v != VERSION {
            return Err(format!("record version {} is not {VERSION}", self.v));
        }
        let e = |x: crate::model::InvalidField| x.to_string();
        let check = match self.check {
            None => None,
            Some(c) => Some(CheckSpec {
                kind: match c.kind.as_str() {
                    "http" => CheckKind::Http(c.target),
                    "tcp" => CheckKind::Tcp(c.target),
                    "ttl" => CheckKind::Ttl(Duration::from_millis(c.ttl_ms)),
                    other => return Err(format!("unknown check kind {other:?}")),
                },
                interval: Duration::from_millis(c.interval_ms),
                timeout: Duration::from_millis(c.timeout_ms),
                success_before_passing: c.success_before_passing,
                failures_before_critical: c.failures_before_critical,
            }),
        };
        Ok(Instance {
            key: InstanceKey {
                service: ServiceName::parse(&self.service).map_err(e)?,
                id: InstanceId::parse(&self.id).map_err(e)?,
            },
            address: self
                .address
                .parse()
                .map_err(|_| format!("address {:?} is not an IP address", self.address))?,
            port: self.port,
            tags: self
                .tags
                .iter()
                .map(|t| Tag::parse(t))
                .collect::<Result<_, _>>()
                .map_err(e)?,
            meta: self.meta,
            weight: self.weight,
            priority: self.priority,
            ttl: self.ttl,
            check,
            deregister_after: self.deregister_after_ms.map(Duration::from_millis),
            maintenance: self.maintenance.map(|m| Maintenance {
                reason: m.reason,
                since: UNIX_EPOCH + Duration::from_millis(m.since_ms),
            }),
        })
    }
}

/// The key an instance is stored under: `service/id`.
pub fn key_of(k: &InstanceKey) -> String {
    format!("{}/{}", k.service, k.id)
}
