//! The agent endpoints: register, deregister, TTL check reports, maintenance, and the
//! agent's reads (its services, itself) with `/v1/status/leader`.
//!
//! Writes answer 200 with an empty body, as Consul does, once the change is durable and in
//! DNS (the registry's promise). A Consul ID names one instance whatever its service
//! (`super::by_id`); registering an ID under another name moves it, as Consul replaces a
//! service registered under the same ID.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::blocking::headers;
use super::filter::Subject;
use super::query::{Params, allow};
use super::wire::{AgentService, HealthCheck, ServiceRegistration, checks, consul_field, tags};
use super::{by_id, renamed, unknown};
use crate::http::AppState;
use crate::http::body::{RawBody, parse};
use crate::http::error::ApiError;
use crate::http::wire::MAX_OUTPUT;
use crate::model::{Instance, InstanceId, InstanceKey, InvalidField, ServiceName, Status};
use crate::registry::RegistryError;

/// Consul's reason for maintenance enabled without one.
const DEFAULT_REASON: &str = "Maintenance mode is enabled for this service, \
     but no reason was provided. This is a default message.";

/// A write's answer: 200, no body.
fn done() -> Response {
    StatusCode::OK.into_response()
}

/// `PUT /v1/agent/service/register`.
pub(crate) async fn register(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    Params::parse(
        q.as_deref(),
        &[allow::REPLACE_CHECKS],
        &st.consul.datacenter,
    )?;
    let reg = ServiceRegistration::from_json(&parse::<Value>(&body)?)?;
    let key = InstanceKey {
        service: ServiceName::parse(&reg.name).map_err(renamed("Name"))?,
        id: InstanceId::parse(&reg.id).map_err(renamed("ID"))?,
    };
    let at = reg.check_at.clone();
    let inst = Instance::new(key.clone(), reg.registration)
        .map_err(|e| InvalidField::new(consul_field(&e.field, &at), e.reason))?;
    // The same ID under another service: Consul would replace that registration.
    let moved = by_id(&st.registry.snapshot(), &key.id)?.filter(|k| k.service != key.service);
    st.registry.register(inst).await?;
    if let Some(status) = reg.initial {
        st.registry.report(&key, status, String::new()).await?;
    }
    if let Some(old) = moved {
        gone_is_fine(st.registry.deregister(&old).await)?;
    }
    Ok(done())
}

fn gone_is_fine(r: Result<(), RegistryError>) -> Result<(), ApiError> {
    match r {
        Ok(()) | Err(RegistryError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn consul_id(raw: &str) -> Result<InstanceId, ApiError> {
    InstanceId::parse(raw).map_err(renamed("ID"))
}

/// `PUT /v1/agent/service/deregister/{id}`: 200 also when nothing has the ID.
pub(crate) async fn deregister(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let id = consul_id(&id)?;
    if let Some(key) = by_id(&st.registry.snapshot(), &id)? {
        gone_is_fine(st.registry.deregister(&key).await)?;
    }
    Ok(done())
}

/// `PUT /v1/agent/service/maintenance/{id}?enable=&reason=`.
pub(crate) async fn maintenance(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[allow::ENABLE, allow::REASON],
        &st.consul.datacenter,
    )?;
    let enable = p
        .enable
        .ok_or_else(|| ApiError::bad_request("enable: required (true or false)"))?;
    let id = consul_id(&id)?;
    let key =
        by_id(&st.registry.snapshot(), &id)?.ok_or_else(|| unknown("service ID", id.as_str()))?;
    let reason = enable.then(|| {
        p.reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_REASON.to_string())
    });
    st.registry.set_maintenance(&key, reason).await?;
    Ok(done())
}

/// The instance a check ID names: `service:{id}`, the one check each instance has.
fn check_key(st: &AppState, check: &str) -> Result<InstanceKey, ApiError> {
    let not_found = || unknown("check ID", check);
    let id = check.strip_prefix("service:").ok_or_else(not_found)?;
    let id = InstanceId::parse(id).map_err(|_| not_found())?;
    by_id(&st.registry.snapshot(), &id)?.ok_or_else(not_found)
}

/// Consul keeps the first 4 KiB of a check's output; so does signpost, cut at a character.
fn cut(mut output: String) -> String {
    if output.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output.truncate(end);
    }
    output
}

async fn report(
    st: &AppState,
    check: &str,
    status: Status,
    output: String,
) -> Result<Response, ApiError> {
    let key = check_key(st, check)?;
    st.registry.report(&key, status, cut(output)).await?;
    Ok(done())
}

async fn report_note(
    st: Arc<AppState>,
    check: String,
    q: Option<String>,
    status: Status,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[allow::NOTE], &st.consul.datacenter)?;
    report(&st, &check, status, p.note.unwrap_or_default()).await
}

/// `PUT /v1/agent/check/pass/{check}?note=`.
pub(crate) async fn pass(
    State(st): State<Arc<AppState>>,
    Path(check): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    report_note(st, check, q, Status::Passing).await
}

/// `PUT /v1/agent/check/warn/{check}?note=`.
pub(crate) async fn warn(
    State(st): State<Arc<AppState>>,
    Path(check): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    report_note(st, check, q, Status::Warning).await
}

/// `PUT /v1/agent/check/fail/{check}?note=`.
pub(crate) async fn fail(
    State(st): State<Arc<AppState>>,
    Path(check): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    report_note(st, check, q, Status::Critical).await
}

/// `PUT /v1/agent/check/update/{check}` with `{"Status": ..., "Output": ...}`.
pub(crate) async fn update(
    State(st): State<Arc<AppState>>,
    Path(check): Path<String>,
    RawQuery(q): RawQuery,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let v = parse::<Value>(&body)?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body: must be a JSON object"))?;
    let (mut status, mut output) = (None, String::new());
    for (k, v) in obj {
        let text = || {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::bad_request(format!("{k}: must be a string")))
        };
        match k.to_ascii_lowercase().as_str() {
            "status" => status = Some(text()?),
            "output" => output = text()?,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "body: {k:?} is not a field (Status, Output)"
                )));
            }
        }
    }
    let status = Status::parse(
        "Status",
        status.as_deref().ok_or_else(|| {
            ApiError::bad_request("Status: required (passing, warning or critical)")
        })?,
    )?;
    report(&st, &check, status, output).await
}

/// `GET /v1/agent/services?filter=`: every instance by ID. An ID two services share (only
/// signpost's own API makes one) is keyed `{service}/{id}` after the first, so neither is
/// hidden.
pub(crate) async fn services(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[allow::FILTER], &st.consul.datacenter)?;
    let snap = st.registry.snapshot();
    let mut out: BTreeMap<String, AgentService<'_>> = BTreeMap::new();
    for (service, insts) in &snap.services {
        let index = snap.service_index(service);
        for e in insts.values() {
            let i = &e.instance;
            let tag_list = tags(e);
            let subject = Subject {
                name: service.as_str(),
                id: i.key().id.as_str(),
                tags: &tag_list,
                meta: i.meta(),
            };
            if p.filter.as_ref().is_some_and(|f| !f.matches(&subject)) {
                continue;
            }
            let mut key = i.key().id.to_string();
            if out.contains_key(&key) {
                key = i.key().to_string();
            }
            out.insert(key, AgentService::new(e, &st.consul, index));
        }
    }
    Ok((headers(snap.index), Json(out)).into_response())
}

/// `GET /v1/agent/self`: the node and its datacenter, where Prometheus and VictoriaMetrics
/// read `Config.Datacenter`. Every member is an object, as the Go client decodes a map of
/// maps.
pub(crate) async fn self_(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let a = &st.consul;
    let body = json!({
        "Config": {
            "Datacenter": a.datacenter,
            "PrimaryDatacenter": a.datacenter,
            "NodeName": a.node,
            "NodeID": a.node_id,
            "Server": true,
        },
        "Member": {
            "Name": a.node,
            "Addr": a.address.to_string(),
            "Port": st_port(&a.leader),
            "Tags": {"dc": a.datacenter, "role": "consul"},
            "Status": 1,
        },
        "Meta": {},
    });
    Ok((headers(st.registry.snapshot().index), Json(body)).into_response())
}

fn st_port(leader: &str) -> u16 {
    leader
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

/// `GET /v1/status/leader`: this server while its registry can take writes, else `""`, as
/// Consul answers without a leader.
pub(crate) async fn leader(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let leader = match st.registry.ready().await {
        Ok(()) => st.consul.leader.as_str(),
        Err(_) => "",
    };
    Ok((headers(st.registry.snapshot().index), Json(leader)).into_response())
}

/// `GET /v1/agent/checks?filter=`: every instance's checks by check ID.
pub(crate) async fn agent_checks(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[allow::FILTER], &st.consul.datacenter)?;
    let snap = st.registry.snapshot();
    let mut out: BTreeMap<String, HealthCheck<'_>> = BTreeMap::new();
    for (service, insts) in &snap.services {
        let index = snap.service_index(service);
        for e in insts.values() {
            let i = &e.instance;
            let tag_list = tags(e);
            let subject = Subject {
                name: service.as_str(),
                id: i.key().id.as_str(),
                tags: &tag_list,
                meta: i.meta(),
            };
            if p.filter.as_ref().is_some_and(|f| !f.matches(&subject)) {
                continue;
            }
            for c in checks(e, &st.consul, index) {
                out.insert(c.check_id().to_string(), c);
            }
        }
    }
    Ok((headers(snap.index), Json(out)).into_response())
}

/// `GET /v1/status/peers`: this server, the one peer (`[]` while it cannot take writes).
pub(crate) async fn peers(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let peers: Vec<&str> = match st.registry.ready().await {
        Ok(()) => vec![st.consul.leader.as_str()],
        Err(_) => Vec::new(),
    };
    Ok((headers(st.registry.snapshot().index), Json(peers)).into_response())
}
