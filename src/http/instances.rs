//! Handlers of one instance: register, deregister, read, health report, maintenance.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::body::{RawBody, parse};
use super::error::ApiError;
use super::wire::{HealthBody, InstanceOut, MaintenanceBody, RegisterBody};
use super::{AppState, index_header};
use crate::model::{InstanceId, InstanceKey, ServiceName};

/// Validates the `{service}` and `{id}` path segments.
pub(crate) fn key(service: &str, id: &str) -> Result<InstanceKey, ApiError> {
    Ok(InstanceKey {
        service: ServiceName::parse(service)?,
        id: InstanceId::parse(id)?,
    })
}

/// The instance as stored, with the index of the write that produced it.
fn reply(entry: &crate::registry::Entry, index: u64) -> Response {
    (index_header(index), Json(InstanceOut::from(entry))).into_response()
}

pub(crate) async fn register(
    State(st): State<Arc<AppState>>,
    Path((service, id)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let key = key(&service, &id)?;
    let inst = parse::<RegisterBody>(&body)?.into_instance(key)?;
    let entry = st.registry.register(inst).await?;
    Ok(reply(&entry, st.registry.snapshot().index))
}

pub(crate) async fn deregister(
    State(st): State<Arc<AppState>>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = key(&service, &id)?;
    st.registry.deregister(&key).await?;
    Ok((
        index_header(st.registry.snapshot().index),
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

pub(crate) async fn get(
    State(st): State<Arc<AppState>>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = key(&service, &id)?;
    let snap = st.registry.snapshot();
    let entry = snap.get(&key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("instance {key} is not registered"),
        )
    })?;
    Ok(reply(entry, snap.index))
}

pub(crate) async fn health(
    State(st): State<Arc<AppState>>,
    Path((service, id)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let key = key(&service, &id)?;
    // An empty body is a plain "passing" heartbeat.
    let report = if body.iter().all(u8::is_ascii_whitespace) {
        HealthBody::default()
    } else {
        parse::<HealthBody>(&body)?
    };
    let (status, output) = report.validate()?;
    let entry = st.registry.report(&key, status, output).await?;
    Ok(reply(&entry, st.registry.snapshot().index))
}

pub(crate) async fn maintenance(
    State(st): State<Arc<AppState>>,
    Path((service, id)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let key = key(&service, &id)?;
    let reason = parse::<MaintenanceBody>(&body)?.validate()?;
    let entry = st.registry.set_maintenance(&key, reason).await?;
    Ok(reply(&entry, st.registry.snapshot().index))
}
