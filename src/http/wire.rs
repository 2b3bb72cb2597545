//! The JSON shapes of the HTTP API (CONTRACT §3) and their hand-written conversions to and
//! from the domain types: plain shapes; every rule is checked by `model`'s constructors, which
//! name the field on error.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{
    CheckKind, CheckSpec, Instance, InstanceKey, InvalidField, Registration, Status, parse_duration,
};
use crate::registry::Entry;

/// Longest health `output` kept; longer reports are refused rather than cut.
pub(crate) const MAX_OUTPUT: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    address: String,
    port: u16,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    weight: Option<u16>,
    priority: Option<u16>,
    ttl: Option<u32>,
    check: Option<CheckBody>,
    deregister_after: Option<String>,
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default)]
    fail_open: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBody {
    http: Option<String>,
    tcp: Option<String>,
    ttl: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    success_before_passing: Option<u32>,
    failures_before_critical: Option<u32>,
}

impl CheckBody {
    fn into_spec(self) -> Result<CheckSpec, InvalidField> {
        let kind = match (self.http, self.tcp, self.ttl) {
            (Some(url), None, None) => CheckKind::Http(url),
            (None, Some(addr), None) => CheckKind::Tcp(addr),
            (None, None, Some(ttl)) => CheckKind::Ttl(parse_duration("check.ttl", &ttl)?),
            _ => {
                return Err(InvalidField::new(
                    "check",
                    "needs exactly one of \"http\", \"tcp\", \"ttl\"",
                ));
            }
        };
        let duration =
            |field: &str, v: Option<String>| v.map(|s| parse_duration(field, &s)).transpose();
        CheckSpec::new(
            kind,
            duration("check.interval", self.interval)?,
            duration("check.timeout", self.timeout)?,
            self.success_before_passing,
            self.failures_before_critical,
        )
    }
}

impl RegisterBody {
    /// The instance for `key`, validated by `Instance::new` (errors name the field).
    pub(crate) fn into_instance(self, key: InstanceKey) -> Result<Instance, InvalidField> {
        let check = self.check.map(CheckBody::into_spec).transpose()?;
        let deregister_after = self
            .deregister_after
            .map(|s| parse_duration("deregister_after", &s))
            .transpose()?;
        Instance::new(
            key,
            Registration {
                address: self.address,
                port: self.port,
                tags: self.tags,
                // The native API takes DNS labels only (CONTRACT §3).
                text_tags: false,
                meta: self.meta,
                weight: self.weight,
                priority: self.priority,
                ttl: self.ttl,
                check,
                deregister_after,
                ports: self.ports,
                fail_open: self.fail_open,
            },
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthBody {
    pub status: Option<String>,
    #[serde(default)]
    pub output: String,
}

impl HealthBody {
    pub(crate) fn validate(self) -> Result<(Status, String), InvalidField> {
        let status = match self.status {
            None => Status::Passing,
            Some(s) => Status::parse("status", &s)?,
        };
        if self.output.len() > MAX_OUTPUT {
            return Err(InvalidField::new(
                "output",
                format!("at most {MAX_OUTPUT} bytes"),
            ));
        }
        Ok((status, self.output))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceBody {
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
}

impl MaintenanceBody {
    /// `Some(reason)` to enable, `None` to disable (the reason is validated with the
    /// maintenance it starts, in `model::Maintenance::new`).
    pub(crate) fn validate(self) -> Result<Option<String>, InvalidField> {
        Ok(self.enabled.then_some(self.reason))
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Serialize)]
pub(crate) struct HealthOut<'a> {
    status: &'static str,
    output: &'a str,
    since: String,
}

#[derive(Serialize)]
pub(crate) struct MaintenanceOut<'a> {
    enabled: bool,
    reason: &'a str,
    since: String,
}

#[derive(Serialize)]
pub(crate) struct CheckOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
    interval: String,
    timeout: String,
    success_before_passing: u32,
    failures_before_critical: u32,
}

/// An instance as returned (CONTRACT §3), plus its registered `ttl`, `check` and
/// `deregister_after` so a client can see exactly what is stored. Borrows from the entry:
/// a reply allocates only what it formats (address, durations, times).
#[derive(Serialize)]
pub(crate) struct InstanceOut<'a> {
    service: &'a str,
    id: &'a str,
    /// serde writes an address as its text (no allocation).
    address: std::net::IpAddr,
    port: u16,
    tags: Vec<&'a str>,
    meta: &'a BTreeMap<String, String>,
    weight: u16,
    priority: u16,
    ttl: Option<u32>,
    check: Option<CheckOut<'a>>,
    deregister_after: Option<String>,
    /// Named ports by name (`{}` when none).
    ports: BTreeMap<&'a str, u16>,
    fail_open: bool,
    health: HealthOut<'a>,
    maintenance: Option<MaintenanceOut<'a>>,
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl<'a> From<&'a Entry> for InstanceOut<'a> {
    fn from(e: &'a Entry) -> Self {
        let i = &e.instance;
        InstanceOut {
            service: i.key().service.as_str(),
            id: i.key().id.as_str(),
            address: i.address(),
            port: i.port(),
            tags: i.tags().iter().map(|t| t.as_str()).collect(),
            meta: i.meta(),
            weight: i.weight(),
            priority: i.priority(),
            ttl: i.ttl(),
            check: i.check().map(|c| {
                let (http, tcp, ttl) = match &c.kind() {
                    CheckKind::Http(u) => (Some(u.as_str()), None, None),
                    CheckKind::Tcp(a) => (None, Some(a.as_str()), None),
                    CheckKind::Ttl(t) => (None, None, Some(dur(*t))),
                };
                CheckOut {
                    http,
                    tcp,
                    ttl,
                    interval: dur(c.interval()),
                    timeout: dur(c.timeout()),
                    success_before_passing: c.success_before_passing(),
                    failures_before_critical: c.failures_before_critical(),
                }
            }),
            deregister_after: i.deregister_after().map(dur),
            ports: i.ports().iter().map(|(n, p)| (n.as_str(), *p)).collect(),
            fail_open: i.fail_open(),
            health: HealthOut {
                status: e.health.status.as_str(),
                output: &e.health.output,
                since: rfc3339(e.health.since),
            },
            maintenance: i.maintenance().as_ref().map(|m| MaintenanceOut {
                enabled: true,
                reason: m.reason(),
                since: rfc3339(m.since()),
            }),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ServiceSummary {
    pub name: String,
    pub instances: usize,
    /// Passing and not in maintenance: the instances DNS hands out.
    pub passing: usize,
    /// `warning`, `critical`, `maintenance`: the other instances, each counted once (an
    /// instance in maintenance counts there whatever its health), so the four add up to
    /// `instances`.
    pub warning: usize,
    pub critical: usize,
    pub maintenance: usize,
}

#[derive(Serialize)]
pub(crate) struct ServiceList {
    pub services: Vec<ServiceSummary>,
}

#[derive(Serialize)]
pub(crate) struct ServiceOut<'a> {
    pub name: String,
    pub instances: Vec<InstanceOut<'a>>,
}
