//! Handlers of services: the list, and one service's instances with filters and long-poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::wire::{InstanceOut, ServiceList, ServiceOut, ServiceSummary};
use super::{AppState, index_header};
use crate::model::{ServiceName, Status, Tag, parse_duration};

/// A long-poll's `wait` when `index` is given without one.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub(crate) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let snap = st.registry.snapshot();
    let services = snap
        .services
        .iter()
        .map(|(name, insts)| ServiceSummary {
            name: name.to_string(),
            instances: insts.len(),
            passing: insts
                .values()
                .filter(|e| {
                    e.health.status == Status::Passing && e.instance.maintenance().is_none()
                })
                .count(),
        })
        .collect();
    (index_header(snap.index), Json(ServiceList { services })).into_response()
}

/// `GET /v1/services/{service}?status=&tag=&index=&wait=`. An unknown service is an empty
/// list, so a client can long-poll for a service to appear.
pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    Path(service): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let service = ServiceName::parse(&service)?;
    let mut status = None;
    let mut tag = None;
    let mut index = None;
    let mut wait = None;
    for (k, v) in &q {
        match k.as_str() {
            "status" => status = Some(Status::parse("status", v)?),
            "tag" => tag = Some(Tag::parse(v)?),
            "index" => {
                index = Some(v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("index: {v:?} is not a non-negative integer"))
                })?)
            }
            "wait" => wait = Some(parse_duration("wait", v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other}: unknown query parameter (status, tag, index, wait)"
                )));
            }
        }
    }
    if let Some(n) = index {
        let max = st.max_wait;
        let wait = wait.unwrap_or(DEFAULT_WAIT).min(max);
        let mut rx = st.registry.subscribe();
        // Waits while this service is unchanged since index `n` (a change of another service
        // does not wake it, as with Consul's blocking queries). An index above the registry's
        // means the server restarted below it (health changes are not stored), so, as with
        // Consul, the client gets the current state at once and starts over.
        let registry = &st.registry;
        let changed = |i: &u64| *i < n || registry.snapshot().service_index(&service) > n;
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.wait_for(changed)) => {}
            _ = st.shutdown.cancelled() => {}
        }
    }
    let snap = st.registry.snapshot();
    let instances = snap
        .services
        .get(&service)
        .map(|insts| {
            insts
                .values()
                .filter(|e| status.is_none_or(|s| e.health.status == s))
                .filter(|e| tag.as_ref().is_none_or(|t| e.instance.has_tag(t)))
                .map(|e| InstanceOut::from(&**e))
                .collect()
        })
        .unwrap_or_default();
    let body = ServiceOut {
        name: service.to_string(),
        instances,
    };
    Ok((index_header(snap.index), Json(body)).into_response())
}
