//! The health reads: one service's instances with their node and checks (what
//! `consul_sd_configs` watches), one service's checks, and every check by status.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::blocking::{Scope, headers, wait};
use super::catalog::{selected, service_name};
use super::query::{Params, allow};
use super::wire::{AgentService, HealthCheck, NodeOut, ServiceEntry, checks};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::model::Status;

/// `GET /v1/health/service/{service}?passing&tag=&index=&wait=&filter=&node-meta=`. With
/// `passing`, an instance is left out unless every check of it passes: warning and critical
/// are dropped, and so is maintenance (its check is critical), as Consul does.
pub(crate) async fn service(
    State(st): State<Arc<AppState>>,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[
            allow::INDEX,
            allow::FILTER,
            allow::NODE_META,
            allow::TAG,
            allow::PASSING,
        ],
        &st.consul.datacenter,
    )?;
    let service = service_name(&service)?;
    let snap = wait(&st, p.index, p.wait, Scope::Service(&service)).await;
    let index = snap.service_index(&service);
    let node = NodeOut::new(&st.consul);
    let out: Vec<ServiceEntry<'_>> = match snap.services.get(&service) {
        Some(insts) if p.node_matches() => insts
            .values()
            .filter(|e| {
                !p.passing
                    || (e.health.status == Status::Passing && e.instance.maintenance().is_none())
            })
            .filter(|e| selected(&p, e))
            .map(|e| ServiceEntry {
                node: &node,
                service: AgentService::new(e, &st.consul, index),
                checks: checks(e, &st.consul, index),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok((headers(index), Json(out)).into_response())
}

/// `GET /v1/health/state/{any|passing|warning|critical}?index=&wait=&filter=&node-meta=`:
/// every check in that state (all of them for `any`), instance by instance. Blocks on the
/// registry's index.
pub(crate) async fn state(
    State(st): State<Arc<AppState>>,
    Path(state): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let wanted = match state.as_str() {
        "any" => None,
        other => Some(Status::parse("state", other).map_err(|_| {
            ApiError::bad_request(format!(
                "state: {other:?} is not one of any, passing, warning, critical"
            ))
        })?),
    };
    let p = Params::parse(
        q.as_deref(),
        &[allow::INDEX, allow::FILTER, allow::NODE_META],
        &st.consul.datacenter,
    )?;
    let snap = wait(&st, p.index, p.wait, Scope::Registry).await;
    let mut out: Vec<HealthCheck<'_>> = Vec::new();
    if p.node_matches() {
        for (service, insts) in &snap.services {
            let index = snap.service_index(service);
            for e in insts.values().filter(|e| selected(&p, e)) {
                out.extend(
                    checks(e, &st.consul, index)
                        .into_iter()
                        .filter(|c| wanted.is_none_or(|w| c.status() == w.as_str())),
                );
            }
        }
    }
    Ok((headers(snap.index), Json(out)).into_response())
}

/// `GET /v1/health/checks/{service}?index=&wait=&filter=&node-meta=`: the checks of the
/// service's instances. Blocks on the service's own index.
pub(crate) async fn service_checks(
    State(st): State<Arc<AppState>>,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[allow::INDEX, allow::FILTER, allow::NODE_META],
        &st.consul.datacenter,
    )?;
    let service = service_name(&service)?;
    let snap = wait(&st, p.index, p.wait, Scope::Service(&service)).await;
    let index = snap.service_index(&service);
    let out: Vec<HealthCheck<'_>> = match snap.services.get(&service) {
        Some(insts) if p.node_matches() => insts
            .values()
            .filter(|e| selected(&p, e))
            .flat_map(|e| checks(e, &st.consul, index))
            .collect(),
        _ => Vec::new(),
    };
    Ok((headers(index), Json(out)).into_response())
}
