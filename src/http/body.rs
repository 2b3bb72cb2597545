//! Request bodies: read under the configured size limit (413 beyond it) and parsed as JSON
//! with the path of the offending field in the error (`check.interval: invalid type ...`).
//! Any Content-Type is accepted, so `curl -d` works as typed.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The raw body, with size-limit and read failures turned into JSON errors.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|r| ApiError::new(r.status(), format!("body: {}", r.body_text())))
    }
}

/// Parses `bytes` as JSON into `T`, naming the field path on error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body: expected a JSON object, got nothing",
        ));
    }
    // Parsed without tracking the path first (the tracker wraps every value it visits); only
    // a body that fails is parsed again, with it, to name the field.
    if let Ok(v) = T::deserialize(&mut serde_json::Deserializer::from_slice(bytes)) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path == "?" || path.is_empty() {
            ApiError::bad_request(format!("body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}
