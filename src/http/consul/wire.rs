//! Consul's JSON shapes: the registration a client sends (`AgentServiceRegistration`, read
//! field by field into `model::Registration`) and the bodies clients read (`AgentService`,
//! `ServiceEntry`, `HealthCheck`, `CatalogService`, the node), written in PascalCase with
//! Consul's field names. Lists are `[]` and maps `{}`, never `null`.
//!
//! A registration is read as Consul's Go decoder reads it: keys case-insensitively (the Go
//! client sends `Name`, py-consul `name`, the npm client `Name`), snake_case spellings too
//! (`deregister_critical_service_after`, as Consul translates them), explicit `null`s as
//! absent. A key signpost does not know is a 400 naming it; Consul fields that do not change
//! what signpost serves (`EnableTagOverride`, `TaggedAddresses`, the default `Namespace`) are
//! accepted and ignored, and features signpost lacks (script, gRPC or alias checks, Connect)
//! are a 400 naming the field rather than a registration that quietly does less.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Agent;
use super::blocking::consul_index;
use super::duration;
use crate::model::{CheckKind, CheckSpec, InvalidField, Registration, Status};
use crate::registry::Entry;

/// A Consul service registration, read but not yet validated by `Instance::new`.
pub(crate) struct ServiceRegistration {
    /// `Name`: the service.
    pub name: String,
    /// `ID`; `Name` when absent or empty, as Consul defaults it.
    pub id: String,
    /// The rest, in signpost's terms.
    pub registration: Registration,
    /// A TTL check's `Status`: its status right after registration (Consul's initial status).
    pub initial: Option<Status>,
    /// Where the check came from (`Check`, `Checks[0]`), to name its fields in errors.
    pub check_at: String,
}

/// Consul's spelling of a field `model` named (`tags[2]` → `Tags[2]`), so an error names the
/// field as the client sent it. `check` is where the check came from (`Check`, `Checks[0]`).
pub(crate) fn consul_field(model_field: &str, check: &str) -> String {
    if let Some(i) = model_field.strip_prefix("tags") {
        return format!("Tags{i}");
    }
    if let Some(k) = model_field.strip_prefix("meta") {
        return format!("Meta{k}");
    }
    let check_field = |f: &str| format!("{check}.{f}");
    match model_field {
        "service" => "Name".into(),
        "id" => "ID".into(),
        "address" => "Address".into(),
        "port" => "Port".into(),
        "weight" => "Weights.Passing".into(),
        "deregister_after" => check_field("DeregisterCriticalServiceAfter"),
        "check" => check.into(),
        "check.ttl" => check_field("TTL"),
        "check.http" => check_field("HTTP"),
        "check.tcp" => check_field("TCP"),
        "check.interval" => check_field("Interval"),
        "check.timeout" => check_field("Timeout"),
        "check.success_before_passing" => check_field("SuccessBeforePassing"),
        "check.failures_before_critical" => check_field("FailuresBeforeCritical"),
        other => other.into(),
    }
}

/// A key as Consul matches it: case and underscores aside.
fn norm(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The members of a JSON object, each with its normalised key; a key given twice (in any
/// spelling) is refused, since which one Consul would take is an accident of its decoder.
fn members<'a>(v: &'a Value, field: &str) -> Result<Vec<(String, &'a Value)>, InvalidField> {
    let obj = v
        .as_object()
        .ok_or_else(|| InvalidField::new(field, "must be a JSON object"))?;
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(obj.len());
    let mut seen = std::collections::HashSet::with_capacity(obj.len());
    for (k, v) in obj {
        let n = norm(k);
        if !seen.insert(n.clone()) {
            return Err(InvalidField::new(
                field,
                format!("{k:?} is given twice (keys are matched case-insensitively)"),
            ));
        }
        out.push((n, v));
    }
    Ok(out)
}

fn string(v: &Value, field: &str) -> Result<Option<String>, InvalidField> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(InvalidField::new(field, "must be a string")),
    }
}

/// A string that is absent when empty (Go's zero value).
fn nonempty(v: &Value, field: &str) -> Result<Option<String>, InvalidField> {
    Ok(string(v, field)?.filter(|s| !s.is_empty()))
}

fn integer(v: &Value, field: &str, max: u64) -> Result<Option<u64>, InvalidField> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(x) if x <= max => Ok(Some(x)),
            _ => Err(InvalidField::new(field, format!("must be 0 to {max}"))),
        },
        _ => Err(InvalidField::new(field, "must be a number")),
    }
}

fn go_duration(v: &Value, field: &str) -> Result<Option<std::time::Duration>, InvalidField> {
    nonempty(v, field)?
        .map(|s| duration::parse(&s).map_err(|e| InvalidField::new(field, e)))
        .transpose()
}

/// Accepted only at its zero value (`null`, `""`, `false`, `0`, `{}`, `[]`): a field whose
/// feature signpost lacks, which a client may still send empty.
fn zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn unsupported(field: &str, what: &str) -> InvalidField {
    InvalidField::new(field, format!("{what} is not supported by signpost"))
}

impl ServiceRegistration {
    /// Reads a registration body (already parsed as JSON).
    pub(crate) fn from_json(v: &Value) -> Result<Self, InvalidField> {
        let mut name = None;
        let mut id = None;
        // Tags as Consul takes them: any text (CONTRACT §5 asks labels of names and IDs only).
        let mut r = Registration {
            text_tags: true,
            ..Registration::default()
        };
        let mut checks: Vec<(String, &Value)> = Vec::new();
        for (key, v) in members(v, "body")? {
            match key.as_str() {
                "name" => name = nonempty(v, "Name")?,
                "id" => id = nonempty(v, "ID")?,
                "address" => r.address = string(v, "Address")?.unwrap_or_default(),
                "port" => r.port = integer(v, "Port", 65_535)?.unwrap_or(0) as u16,
                "tags" => {
                    if !v.is_null() {
                        let list = v.as_array().ok_or_else(|| {
                            InvalidField::new("Tags", "must be a list of strings")
                        })?;
                        for (i, t) in list.iter().enumerate() {
                            let field = format!("Tags[{i}]");
                            r.tags.push(
                                string(t, &field)?
                                    .ok_or_else(|| InvalidField::new(field, "must be a string"))?,
                            );
                        }
                    }
                }
                "meta" => {
                    if !v.is_null() {
                        let obj = v.as_object().ok_or_else(|| {
                            InvalidField::new("Meta", "must be an object of strings")
                        })?;
                        for (k, val) in obj {
                            let field = format!("Meta.{k}");
                            let s = string(val, &field)?
                                .ok_or_else(|| InvalidField::new(field, "must be a string"))?;
                            r.meta.insert(k.clone(), s);
                        }
                    }
                }
                "weights" => {
                    if !v.is_null() {
                        for (k, w) in members(v, "Weights")? {
                            match k.as_str() {
                                "passing" => match integer(w, "Weights.Passing", 65_535)? {
                                    Some(0) => {
                                        return Err(InvalidField::new(
                                            "Weights.Passing",
                                            "must be at least 1",
                                        ));
                                    }
                                    p => r.weight = p.map(|p| p as u16),
                                },
                                // DNS hands out no warning instance unless dns.include_warning
                                // is on, and then at its passing weight.
                                "warning" => {
                                    integer(w, "Weights.Warning", 65_535)?;
                                }
                                _ => {
                                    return Err(InvalidField::new(
                                        "Weights",
                                        format!("{k:?} is not a field (Passing, Warning)"),
                                    ));
                                }
                            }
                        }
                    }
                }
                "check" => {
                    if !v.is_null() {
                        checks.push(("Check".into(), v));
                    }
                }
                "checks" => {
                    if !v.is_null() {
                        let list = v
                            .as_array()
                            .ok_or_else(|| InvalidField::new("Checks", "must be a list"))?;
                        for (i, c) in list.iter().enumerate() {
                            if !c.is_null() {
                                checks.push((format!("Checks[{i}]"), c));
                            }
                        }
                    }
                }
                // Consul fields that change nothing signpost serves.
                "enabletagoverride" | "taggedaddresses" => {}
                "namespace" | "partition" => {
                    let s = string(v, &key)?.unwrap_or_default();
                    if !(s.is_empty() || s == "default") {
                        return Err(InvalidField::new(
                            if key == "namespace" {
                                "Namespace"
                            } else {
                                "Partition"
                            },
                            format!("{s:?}: signpost has only the default one"),
                        ));
                    }
                }
                "kind" if zero(v) => {}
                "kind" => return Err(unsupported("Kind", "a Connect service kind")),
                "proxy" | "connect" | "socketpath" | "locality" if zero(v) => {}
                "proxy" => return Err(unsupported("Proxy", "Connect")),
                "connect" => return Err(unsupported("Connect", "Connect")),
                "socketpath" => return Err(unsupported("SocketPath", "a Unix socket")),
                "locality" => {
                    return Err(unsupported(
                        "Locality",
                        "Consul's Locality (signpost's is the `zone` Meta key)",
                    ));
                }
                _ => {
                    return Err(InvalidField::new(
                        "body",
                        format!(
                            "{key:?} is not a field of a service registration signpost accepts"
                        ),
                    ));
                }
            }
        }
        let name = name.ok_or_else(|| InvalidField::new("Name", "is required"))?;
        let id = id.unwrap_or_else(|| name.clone());
        if r.address.is_empty() {
            return Err(InvalidField::new(
                "Address",
                "is required: signpost serves the instance's own IP address (its node has none to lend)",
            ));
        }
        if r.port == 0 {
            return Err(InvalidField::new(
                "Port",
                "is required, 1 to 65535 (SRV answers carry it)",
            ));
        }
        // Consul would run several checks and combine them; signpost keeps one per instance,
        // and dropping some would pass instances their owner meant to fail.
        let checks: Vec<_> = checks.into_iter().filter(|(_, c)| !zero(c)).collect();
        if checks.len() > 1 {
            return Err(InvalidField::new(
                checks[1].0.clone(),
                "signpost keeps one check per instance: register at most one of Check, Checks",
            ));
        }
        let mut initial = None;
        let mut check_at = "Check".to_string();
        if let Some((at, c)) = checks.first() {
            check_at = at.clone();
            let check = read_check(c, at, &id)?;
            r.deregister_after = check.deregister_after;
            initial = check.initial;
            r.check = Some(check.spec);
        }
        Ok(ServiceRegistration {
            name,
            id,
            registration: r,
            initial,
            check_at,
        })
    }
}

struct ReadCheck {
    spec: CheckSpec,
    deregister_after: Option<std::time::Duration>,
    initial: Option<Status>,
}

/// One `AgentServiceCheck` at `at` (`Check`, `Checks[0]`) of instance `id`.
fn read_check(v: &Value, at: &str, id: &str) -> Result<ReadCheck, InvalidField> {
    let f = |name: &str| format!("{at}.{name}");
    let (mut http, mut tcp, mut ttl) = (None, None, None);
    let (mut interval, mut timeout, mut deregister_after) = (None, None, None);
    let (mut success, mut failures, mut status) = (None, None, None);
    for (key, v) in members(v, at)? {
        match key.as_str() {
            "http" => http = nonempty(v, &f("HTTP"))?,
            "tcp" => tcp = nonempty(v, &f("TCP"))?,
            "ttl" => ttl = go_duration(v, &f("TTL"))?,
            "interval" => interval = go_duration(v, &f("Interval"))?,
            "timeout" => timeout = go_duration(v, &f("Timeout"))?,
            "deregistercriticalserviceafter" => {
                deregister_after = go_duration(v, &f("DeregisterCriticalServiceAfter"))?;
            }
            // Consul's 0 is its default (no threshold), signpost's 1.
            "successbeforepassing" => {
                success = integer(v, &f("SuccessBeforePassing"), u64::from(u32::MAX))?
                    .filter(|n| *n > 0)
                    .map(|n| n as u32);
            }
            "failuresbeforecritical" => {
                failures = integer(v, &f("FailuresBeforeCritical"), u64::from(u32::MAX))?
                    .filter(|n| *n > 0)
                    .map(|n| n as u32);
            }
            "status" => {
                status = nonempty(v, &f("Status"))?
                    .map(|s| Status::parse(&f("Status"), &s))
                    .transpose()?;
            }
            "checkid" => {
                if let Some(cid) = nonempty(v, &f("CheckID"))?
                    && !cid.eq_ignore_ascii_case(&format!("service:{id}"))
                {
                    return Err(InvalidField::new(
                        f("CheckID"),
                        format!(
                            "{cid:?}: an instance's check is \"service:{id}\" (the one name signpost's check endpoints know)"
                        ),
                    ));
                }
            }
            "method" => {
                if let Some(m) = nonempty(v, &f("Method"))?
                    && !m.eq_ignore_ascii_case("GET")
                {
                    return Err(unsupported(&f("Method"), "a method other than GET"));
                }
            }
            // Fields that change nothing a check does here: names and notes for people, TLS
            // settings of a checker that only speaks http://, limits on kept output.
            "name" | "notes" | "serviceid" | "tlsskipverify" | "tlsservername"
            | "outputmaxsize" | "disableredirects" => {}
            "header" | "body" | "failuresbeforewarning" if zero(v) => {}
            "header" => return Err(unsupported(&f("Header"), "sending headers")),
            "body" => return Err(unsupported(&f("Body"), "sending a body")),
            "failuresbeforewarning" => {
                return Err(unsupported(
                    &f("FailuresBeforeWarning"),
                    "a warning threshold",
                ));
            }
            "args" | "scriptargs" | "script" | "dockercontainerid" | "shell" | "grpc"
            | "grpcusetls" | "h2ping" | "h2pingusetls" | "udp" | "aliasnode" | "aliasservice"
            | "osservice" | "tcpusetls" => {
                if !zero(v) {
                    return Err(InvalidField::new(
                        at,
                        format!("{key:?}: signpost runs HTTP, TCP and TTL checks only"),
                    ));
                }
            }
            _ => {
                return Err(InvalidField::new(
                    at,
                    format!("{key:?} is not a field of a check signpost accepts"),
                ));
            }
        }
    }
    let kind = match (http, tcp, ttl) {
        (Some(url), None, None) => CheckKind::Http(url),
        (None, Some(addr), None) => CheckKind::Tcp(addr),
        (None, None, Some(ttl)) => CheckKind::Ttl(ttl),
        (None, None, None) => {
            return Err(InvalidField::new(at, "needs one of HTTP, TCP, TTL"));
        }
        _ => return Err(InvalidField::new(at, "needs only one of HTTP, TCP, TTL")),
    };
    let ttl_check = matches!(kind, CheckKind::Ttl(_));
    if let Some(s) = status
        && !ttl_check
        && s != Status::Critical
    {
        // Probed checks start critical until their first pass; a claimed start would put an
        // instance in DNS that nothing has probed.
        return Err(InvalidField::new(
            f("Status"),
            "an HTTP or TCP check starts critical until its first probe passes",
        ));
    }
    let spec = CheckSpec::new(kind, interval, timeout, success, failures)
        .map_err(|e| InvalidField::new(consul_field(&e.field, at), e.reason))?;
    Ok(ReadCheck {
        spec,
        deregister_after,
        initial: status.filter(|_| ttl_check),
    })
}

/// The synthetic node as Consul shows a node (`Node` in health answers).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeOut<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: IpAddr,
    datacenter: &'a str,
    tagged_addresses: BTreeMap<&'static str, IpAddr>,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> NodeOut<'a> {
    pub(crate) fn new(agent: &'a Agent) -> Self {
        NodeOut {
            id: &agent.node_id,
            node: &agent.node,
            address: agent.address,
            datacenter: &agent.datacenter,
            tagged_addresses: [("lan", agent.address), ("wan", agent.address)].into(),
            meta: BTreeMap::new(),
            create_index: 1,
            modify_index: 1,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Weights {
    passing: u16,
    warning: u16,
}

/// An instance as Consul shows a service (`AgentService`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AgentService<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: Vec<&'a str>,
    meta: &'a BTreeMap<String, String>,
    port: u16,
    address: IpAddr,
    weights: Weights,
    enable_tag_override: bool,
    datacenter: &'a str,
    create_index: u64,
    modify_index: u64,
}

impl<'a> AgentService<'a> {
    /// `index`: the last change of the instance's service (signpost keeps no index per
    /// instance).
    pub(crate) fn new(e: &'a Entry, agent: &'a Agent, index: u64) -> Self {
        let i = &e.instance;
        AgentService {
            id: i.key().id.as_str(),
            service: i.key().service.as_str(),
            tags: tags(e),
            meta: i.meta(),
            port: i.port(),
            address: i.address(),
            weights: Weights {
                passing: i.weight(),
                warning: 1,
            },
            enable_tag_override: false,
            datacenter: &agent.datacenter,
            create_index: consul_index(index),
            modify_index: consul_index(index),
        }
    }
}

pub(crate) fn tags(e: &Entry) -> Vec<&str> {
    e.instance.tags().iter().map(|t| t.as_str()).collect()
}

/// A check as Consul shows one (`HealthCheck`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthCheck<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    status: &'static str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: Vec<&'a str>,
    #[serde(rename = "Type")]
    kind: &'static str,
    definition: Map<String, Value>,
    exposed_port: u16,
    create_index: u64,
    modify_index: u64,
}

impl HealthCheck<'_> {
    /// The check's status as Consul spells it.
    pub(crate) fn status(&self) -> &'static str {
        self.status
    }
    /// `service:{id}` or `_service_maintenance:{id}`.
    pub(crate) fn check_id(&self) -> &str {
        &self.check_id
    }
}

/// The checks of one instance, as Consul shows them: its own `service:{id}` (its current
/// health; an instance registered without a check has one too, passing, so that every
/// instance has at least one) and, while in maintenance, `_service_maintenance:{id}`,
/// critical, as Consul adds it.
pub(crate) fn checks<'a>(e: &'a Entry, agent: &'a Agent, index: u64) -> Vec<HealthCheck<'a>> {
    let i = &e.instance;
    let id = i.key().id.as_str();
    let service = i.key().service.as_str();
    let mut out = Vec::with_capacity(2);
    if let Some(m) = i.maintenance() {
        out.push(HealthCheck {
            node: &agent.node,
            check_id: format!("_service_maintenance:{id}"),
            name: "Service Maintenance Mode".into(),
            status: Status::Critical.as_str(),
            notes: m.reason(),
            output: "",
            service_id: id,
            service_name: service,
            service_tags: tags(e),
            kind: "maintenance",
            definition: Map::new(),
            exposed_port: 0,
            create_index: consul_index(index),
            modify_index: consul_index(index),
        });
    }
    out.push(HealthCheck {
        node: &agent.node,
        check_id: format!("service:{id}"),
        name: format!("Service '{service}' check"),
        status: e.health.status.as_str(),
        notes: "",
        output: &e.health.output,
        service_id: id,
        service_name: service,
        service_tags: tags(e),
        kind: match i.check().map(CheckSpec::kind) {
            Some(CheckKind::Http(_)) => "http",
            Some(CheckKind::Tcp(_)) => "tcp",
            Some(CheckKind::Ttl(_)) => "ttl",
            None => "",
        },
        definition: Map::new(),
        exposed_port: 0,
        create_index: consul_index(index),
        modify_index: consul_index(index),
    });
    out
}

/// One instance with its node and checks (`ServiceEntry`, from `/v1/health/service`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceEntry<'a> {
    pub node: &'a NodeOut<'a>,
    pub service: AgentService<'a>,
    pub checks: Vec<HealthCheck<'a>>,
}

/// One instance as the catalog shows it (`CatalogService`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CatalogService<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: IpAddr,
    datacenter: &'a str,
    tagged_addresses: BTreeMap<&'static str, IpAddr>,
    node_meta: BTreeMap<String, String>,
    service_kind: &'static str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: Vec<&'a str>,
    service_address: IpAddr,
    service_weights: Weights,
    service_meta: &'a BTreeMap<String, String>,
    service_port: u16,
    service_enable_tag_override: bool,
    create_index: u64,
    modify_index: u64,
}

impl<'a> CatalogService<'a> {
    pub(crate) fn new(e: &'a Entry, agent: &'a Agent, index: u64) -> Self {
        let i = &e.instance;
        CatalogService {
            id: &agent.node_id,
            node: &agent.node,
            address: agent.address,
            datacenter: &agent.datacenter,
            tagged_addresses: [("lan", agent.address), ("wan", agent.address)].into(),
            node_meta: BTreeMap::new(),
            service_kind: "",
            service_id: i.key().id.as_str(),
            service_name: i.key().service.as_str(),
            service_tags: tags(e),
            service_address: i.address(),
            service_weights: Weights {
                passing: i.weight(),
                warning: 1,
            },
            service_meta: i.meta(),
            service_port: i.port(),
            service_enable_tag_override: false,
            create_index: consul_index(index),
            modify_index: consul_index(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<ServiceRegistration, InvalidField> {
        ServiceRegistration::from_json(&v)
    }

    #[test]
    fn the_go_clients_body_with_its_nulls() {
        let r = read(json!({
            "ID": "web-1", "Name": "web", "Tags": ["v2"], "Port": 8080, "Address": "10.0.0.7",
            "Meta": {"version": "2.1.0"}, "Weights": {"Passing": 10, "Warning": 1},
            "Check": {"TTL": "1m0s", "DeregisterCriticalServiceAfter": "1h2m3.5s",
                      "Status": "passing"},
            "Checks": null, "Proxy": null, "Connect": null, "EnableTagOverride": false,
        }))
        .unwrap();
        assert_eq!((r.name.as_str(), r.id.as_str()), ("web", "web-1"));
        let g = &r.registration;
        assert_eq!(
            (g.address.as_str(), g.port, g.weight),
            ("10.0.0.7", 8080, Some(10))
        );
        assert_eq!(g.tags, ["v2"]);
        assert_eq!(g.meta["version"], "2.1.0");
        let check = g.check.as_ref().unwrap();
        assert_eq!(
            check.kind(),
            &CheckKind::Ttl(std::time::Duration::from_secs(60))
        );
        assert_eq!(
            g.deregister_after,
            Some(std::time::Duration::from_millis(3_723_500))
        );
        assert_eq!(r.initial, Some(Status::Passing));
    }

    #[test]
    fn lowercase_and_snake_case_keys_as_consul_reads_them() {
        let r = read(json!({
            "name": "api", "address": "10.0.0.8", "port": 81,
            "checks": [{"http": "http://10.0.0.8:81/health", "interval": "500ms",
                        "deregister_critical_service_after": "90s"}],
        }))
        .unwrap();
        assert_eq!(r.id, "api", "ID defaults to Name");
        let c = r.registration.check.unwrap();
        assert_eq!(c.interval(), std::time::Duration::from_millis(500));
        assert_eq!(
            r.registration.deregister_after,
            Some(std::time::Duration::from_secs(90))
        );
    }

    #[test]
    fn errors_name_the_consul_field() {
        for (body, field) in [
            (json!({"Address": "10.0.0.1", "Port": 80}), "Name"),
            (json!({"Name": "web", "Port": 80}), "Address"),
            (json!({"Name": "web", "Address": "10.0.0.1"}), "Port"),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 70000}),
                "Port",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Weights": {"Passing": 0}}),
                "Weights.Passing",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Tags": ["a", 3]}),
                "Tags[1]",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"TTL": "10"}}),
                "Check.TTL",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"HTTP": "http://x/", "Interval": "1d"}}),
                "Check.Interval",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Checks": [{"TTL": "1s"}, {"TTL": "2s"}]}),
                "Checks[1]",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"Args": ["/bin/true"], "Interval": "1s"}}),
                "Check",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"Interval": "1s"}}),
                "Check",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"TTL": "5s", "CheckID": "mine"}}),
                "Check.CheckID",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Check": {"TCP": "10.0.0.1:1", "Status": "passing"}}),
                "Check.Status",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Connect": {"Native": true}}),
                "Connect",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Kind": "connect-proxy"}),
                "Kind",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Namespace": "team-a"}),
                "Namespace",
            ),
            (
                json!({"Name": "web", "name": "api", "Address": "10.0.0.1", "Port": 1}),
                "body",
            ),
            (
                json!({"Name": "web", "Address": "10.0.0.1", "Port": 1, "Colour": "red"}),
                "body",
            ),
            (json!(["Name"]), "body"),
        ] {
            let e = read(body.clone())
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!(e.field, field, "{body}: {e}");
        }
        assert_eq!(consul_field("tags[3]", "Check"), "Tags[3]");
        assert_eq!(consul_field("meta.k", "Check"), "Meta.k");
        assert_eq!(
            consul_field("check.timeout", "Checks[0]"),
            "Checks[0].Timeout"
        );
    }
}
