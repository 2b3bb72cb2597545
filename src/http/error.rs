//! `ApiError`: every HTTP error as `{"error": "..."}` with a 4xx/5xx status. Messages name
//! the field at fault.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::model::InvalidField;
use crate::registry::RegistryError;
use crate::store::StoreError;

/// How long a client is asked to wait before retrying a write the store could not take.
const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Invalid(_) => StatusCode::BAD_REQUEST,
            RegistryError::NoTtlCheck(..) => StatusCode::CONFLICT,
            RegistryError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            // Another replica's write to the same instance got there first: a retry, once
            // this replica has it, applies to it.
            RegistryError::Store(StoreError::Conflict(_)) => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Store(StoreError::Unavailable(err)) => {
                tracing::warn!(error = %err, "the store takes no writes; the change was not applied");
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Store(err) => {
                tracing::error!(error = %err, "store write failed; the change was not applied");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}
