//! The catalog reads: every service with its tags, and one service's instances whatever
//! their health (Consul's catalog does not filter by health; `/v1/health/service` does);
//! the datacenters and nodes, which are one each.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::blocking::{Scope, headers, wait};
use super::filter::Subject;
use super::query::{Params, allow};
use super::renamed;
use super::wire::{CatalogService, NodeOut, tags};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::model::ServiceName;
use crate::registry::Entry;

/// Whether `e` passes the request's `tag`s (all of them, compared without case as Consul
/// does) and `filter`.
pub(super) fn selected(p: &Params, e: &Entry) -> bool {
    let i = &e.instance;
    if !p.tags.iter().all(|t| {
        i.tags()
            .iter()
            .any(|have| have.as_str().eq_ignore_ascii_case(t))
    }) {
        return false;
    }
    let Some(f) = &p.filter else {
        return true;
    };
    let tag_list = tags(e);
    f.matches(&Subject {
        name: i.key().service.as_str(),
        id: i.key().id.as_str(),
        tags: &tag_list,
        meta: i.meta(),
    })
}

/// `GET /v1/catalog/services?index=&wait=&filter=&node-meta=`: `{"name": [tags…]}`, the tags
/// of the instances the filter selects, sorted, each once. Blocks on the registry's index.
pub(crate) async fn services(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[allow::INDEX, allow::FILTER, allow::NODE_META],
        &st.consul.datacenter,
    )?;
    let snap = wait(&st, p.index, p.wait, Scope::Registry).await;
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    if p.node_matches() {
        for (service, insts) in &snap.services {
            for e in insts.values().filter(|e| selected(&p, e)) {
                out.entry(service.as_str())
                    .or_default()
                    .extend(e.instance.tags().iter().map(|t| t.as_str()));
            }
        }
    }
    Ok((headers(snap.index), Json(out)).into_response())
}

/// A `{service}` path segment: a DNS label, or a 400 naming it.
pub(super) fn service_name(raw: &str) -> Result<ServiceName, ApiError> {
    ServiceName::parse(raw).map_err(renamed("service name"))
}

/// `GET /v1/catalog/service/{service}?tag=&index=&wait=&filter=&node-meta=`: its instances,
/// whatever their health. An unknown service is `[]`, so a tool can wait for it to appear.
pub(crate) async fn service(
    State(st): State<Arc<AppState>>,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[allow::INDEX, allow::FILTER, allow::NODE_META, allow::TAG],
        &st.consul.datacenter,
    )?;
    let service = service_name(&service)?;
    let snap = wait(&st, p.index, p.wait, Scope::Service(&service)).await;
    let index = snap.service_index(&service);
    let out: Vec<CatalogService<'_>> = match snap.services.get(&service) {
        Some(insts) if p.node_matches() => insts
            .values()
            .filter(|e| selected(&p, e))
            .map(|e| CatalogService::new(e, &st.consul, index))
            .collect(),
        _ => Vec::new(),
    };
    Ok((headers(index), Json(out)).into_response())
}

/// `GET /v1/catalog/datacenters`: the one datacenter (consul-template's `datacenters`).
pub(crate) async fn datacenters(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[], &st.consul.datacenter)?;
    let index = st.registry.snapshot().index;
    Ok((headers(index), Json([&st.consul.datacenter])).into_response())
}

/// `GET /v1/catalog/nodes?node-meta=&index=&wait=`: the one node (consul-template's `nodes`).
pub(crate) async fn nodes(
    State(st): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[allow::INDEX, allow::NODE_META],
        &st.consul.datacenter,
    )?;
    // The node never changes: a blocking read waits out its `wait` (or the registry's next
    // change, which is cheap to answer again) rather than spinning.
    let snap = wait(&st, p.index, p.wait, Scope::Registry).await;
    let node = NodeOut::new(&st.consul);
    let out: Vec<&NodeOut<'_>> = if p.node_matches() {
        vec![&node]
    } else {
        Vec::new()
    };
    Ok((headers(snap.index), Json(out)).into_response())
}
