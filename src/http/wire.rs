//! The JSON shapes of the HTTP API (CONTRACT §3) and their hand-written conversions to and
//! from the domain types, where every field is validated and named on error.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{
    CheckKind, CheckSpec, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, Instance, InstanceKey,
    InvalidField, MAX_TAGS, MAX_TTL, Status, Tag, parse_duration, validate_meta,
};
use crate::registry::Entry;

/// Longest health `output` kept; longer reports are refused rather than cut.
pub const MAX_OUTPUT: usize = 4096;
/// Longest maintenance `reason`.
pub const MAX_REASON: usize = 1024;
/// Shortest check interval and TTL: below this a check is a load generator.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    http: Option<String>,
    tcp: Option<String>,
    ttl: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    success_before_passing: Option<u32>,
    failures_before_critical: Option<u32>,
}

fn at_least(field: &str, d: Duration, min: Duration) -> Result<Duration, InvalidField> {
    if d < min {
        return Err(InvalidField::new(
            field,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
    Ok(d)
}

impl CheckBody {
    fn into_spec(self) -> Result<CheckSpec, InvalidField> {
        let kind = match (self.http, self.tcp, self.ttl) {
            (Some(url), None, None) => CheckKind::Http(validate_url(&url)?),
            (None, Some(addr), None) => CheckKind::Tcp(validate_host_port(&addr)?),
            (None, None, Some(ttl)) => {
                let d = parse_duration("check.ttl", &ttl)?;
                CheckKind::Ttl(at_least("check.ttl", d, Duration::from_secs(1))?)
            }
            _ => {
                return Err(InvalidField::new(
                    "check",
                    "needs exactly one of \"http\", \"tcp\", \"ttl\"",
                ));
            }
        };
        let interval = match self.interval {
            Some(s) => at_least(
                "check.interval",
                parse_duration("check.interval", &s)?,
                MIN_INTERVAL,
            )?,
            None => DEFAULT_CHECK_INTERVAL,
        };
        let timeout = match self.timeout {
            Some(s) => at_least(
                "check.timeout",
                parse_duration("check.timeout", &s)?,
                Duration::from_millis(10),
            )?,
            None => DEFAULT_CHECK_TIMEOUT.min(interval),
        };
        let count = |field: &str, v: Option<u32>| match v {
            None => Ok(1),
            Some(0) => Err(InvalidField::new(field, "must be at least 1")),
            Some(n) if n > 100 => Err(InvalidField::new(field, "must be at most 100")),
            Some(n) => Ok(n),
        };
        Ok(CheckSpec {
            kind,
            interval,
            timeout,
            success_before_passing: count(
                "check.success_before_passing",
                self.success_before_passing,
            )?,
            failures_before_critical: count(
                "check.failures_before_critical",
                self.failures_before_critical,
            )?,
        })
    }
}

/// An `http://` URL with a host.
fn validate_url(raw: &str) -> Result<String, InvalidField> {
    let bad = |why: &str| InvalidField::new("check.http", format!("{raw:?} {why}"));
    let uri: axum::http::Uri = raw.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        // The checker carries no TLS stack; a tcp check covers a TLS port's liveness.
        Some("https") => {
            return Err(bad(
                "is https, which checks do not support: use http:// or a tcp check",
            ));
        }
        _ => return Err(bad("must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(raw.to_string())
}

/// `HOST:PORT` or `[V6]:PORT`, port 1–65535.
fn validate_host_port(raw: &str) -> Result<String, InvalidField> {
    let bad = || InvalidField::new("check.tcp", format!("{raw:?} is not HOST:PORT"));
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(raw.to_string())
}

impl RegisterBody {
    /// Validates every field and builds the instance for `key`.
    pub fn into_instance(self, key: InstanceKey) -> Result<Instance, InvalidField> {
        let address = self.address.parse().map_err(|_| {
            InvalidField::new(
                "address",
                format!("{:?} is not an IPv4 or IPv6 address", self.address),
            )
        })?;
        if self.port == 0 {
            return Err(InvalidField::new("port", "must be 1 to 65535"));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(InvalidField::new(
                "tags",
                format!("at most {MAX_TAGS} tags"),
            ));
        }
        let mut tags: Vec<Tag> = Vec::with_capacity(self.tags.len());
        for (i, t) in self.tags.iter().enumerate() {
            let t = Tag::parse_at(t, i)?;
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        validate_meta(&self.meta)?;
        if let Some(t) = self.ttl
            && t > MAX_TTL
        {
            return Err(InvalidField::new(
                "ttl",
                format!("at most {MAX_TTL} seconds"),
            ));
        }
        let check = self.check.map(CheckBody::into_spec).transpose()?;
        let deregister_after = match self.deregister_after {
            None => None,
            Some(s) => Some(at_least(
                "deregister_after",
                parse_duration("deregister_after", &s)?,
                Duration::from_secs(1),
            )?),
        };
        Ok(Instance {
            key,
            address,
            port: self.port,
            tags,
            meta: self.meta,
            weight: self.weight.unwrap_or(1),
            priority: self.priority.unwrap_or(0),
            ttl: self.ttl,
            check,
            deregister_after,
            maintenance: None,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    pub status: Option<String>,
    #[serde(default)]
    pub output: String,
}

impl HealthBody {
    pub fn validate(self) -> Result<(Status, String), InvalidField> {
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
pub struct MaintenanceBody {
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
}

impl MaintenanceBody {
    /// `Some(reason)` to enable, `None` to disable.
    pub fn validate(self) -> Result<Option<String>, InvalidField> {
        if self.reason.len() > MAX_REASON {
            return Err(InvalidField::new(
                "reason",
                format!("at most {MAX_REASON} bytes"),
            ));
        }
        Ok(self.enabled.then_some(self.reason))
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[derive(Serialize)]
pub struct HealthOut<'a> {
    status: &'static str,
    output: &'a str,
    since: String,
}

#[derive(Serialize)]
pub struct MaintenanceOut<'a> {
    enabled: bool,
    reason: &'a str,
    since: String,
}

#[derive(Serialize)]
pub struct CheckOut<'a> {
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
pub struct InstanceOut<'a> {
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
            service: i.key.service.as_str(),
            id: i.key.id.as_str(),
            address: i.address,
            port: i.port,
            tags: i.tags.iter().map(|t| t.as_str()).collect(),
            meta: &i.meta,
            weight: i.weight,
            priority: i.priority,
            ttl: i.ttl,
            check: i.check.as_ref().map(|c| {
                let (http, tcp, ttl) = match &c.kind {
                    CheckKind::Http(u) => (Some(u.as_str()), None, None),
                    CheckKind::Tcp(a) => (None, Some(a.as_str()), None),
                    CheckKind::Ttl(t) => (None, None, Some(dur(*t))),
                };
                CheckOut {
                    http,
                    tcp,
                    ttl,
                    interval: dur(c.interval),
                    timeout: dur(c.timeout),
                    success_before_passing: c.success_before_passing,
                    failures_before_critical: c.failures_before_critical,
                }
            }),
            deregister_after: i.deregister_after.map(dur),
            health: HealthOut {
                status: e.health.status.as_str(),
                output: &e.health.output,
                since: rfc3339(e.health.since),
            },
            maintenance: i.maintenance.as_ref().map(|m| MaintenanceOut {
                enabled: true,
                reason: &m.reason,
                since: rfc3339(m.since),
            }),
        }
    }
}

#[derive(Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub instances: usize,
    pub passing: usize,
}

#[derive(Serialize)]
pub struct ServiceList {
    pub services: Vec<ServiceSummary>,
}

#[derive(Serialize)]
pub struct ServiceOut<'a> {
    pub name: String,
    pub instances: Vec<InstanceOut<'a>>,
}
