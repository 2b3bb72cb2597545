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

/// `GET /v1/services?index=&wait=`: every service with its instances counted by health. A
/// long-poll waits for any change of the registry (a dashboard's overview follows them all).
pub(crate) async fn list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut index = None;
    let mut wait = None;
    for (k, v) in &q {
        match k.as_str() {
            "index" => index = Some(parse_index(v)?),
            "wait" => wait = Some(parse_duration("wait", v)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other}: unknown query parameter (index, wait)"
                )));
            }
        }
    }
    if let Some(n) = index {
        let wait = wait.unwrap_or(DEFAULT_WAIT).min(st.max_wait);
        let mut rx = st.registry.subscribe();
        // Any index but `n` is news: above it a change, below it a restart (as in `get`).
        tokio::select! {
            _ = tokio::time::timeout(wait, rx.wait_for(|i| *i != n)) => {}
            _ = st.shutdown.cancelled() => {}
        }
    }
    let snap = st.registry.snapshot();
    let services = snap
        .services
        .iter()
        .map(|(name, insts)| {
            let mut s = ServiceSummary {
                name: name.to_string(),
                instances: insts.len(),
                passing: 0,
                warning: 0,
                critical: 0,
                maintenance: 0,
            };
            for e in insts.values() {
                let count = match (e.instance.maintenance(), e.health.status) {
                    (Some(_), _) => &mut s.maintenance,
                    (None, Status::Passing) => &mut s.passing,
                    (None, Status::Warning) => &mut s.warning,
                    (None, Status::Critical) => &mut s.critical,
                };
                *count += 1;
            }
            s
        })
        .collect();
    Ok((index_header(snap.index), Json(ServiceList { services })).into_response())
}

/// A long-poll's `index`.
fn parse_index(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("index: {v:?} is not a non-negative integer")))
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
            "index" => index = Some(parse_index(v)?),
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
        // Waits while this service is unchanged since index `n`, on the service's own
        // channel: a change of another service does not even wake it, as with Consul's
        // blocking queries. An index above the registry's means the server restarted below
        // it (health changes are not stored), so, as with Consul, the client gets the
        // current state at once and starts over.
        if st.registry.snapshot().index >= n {
            let mut w = st.watches.watch(&st.registry, &st.shutdown, &service);
            tokio::select! {
                _ = tokio::time::timeout(wait, w.index.wait_for(|i| *i > n)) => {}
                _ = st.shutdown.cancelled() => {}
            }
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
