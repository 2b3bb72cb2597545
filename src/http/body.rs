//! Request bodies: read under the configured size limit (413 beyond it) and parsed as JSON
//! with the path of the offending field in the error (`check.interval: invalid type ...`).
//! A body is one JSON value: anything but whitespace after it is refused (`body: trailing
//! characters after the JSON value at line 1 column 37`), as a body two writes were glued
//! into must not half succeed. Any Content-Type is accepted, so `curl -d` works as typed.
//! A body must arrive within `http.body_timeout` of the handler starting to read it, or the
//! request is answered 408 (and hyper closes the connection, its body unfinished): a client
//! that stalls mid-body holds a request slot no longer than that. A `Content-Length` over the
//! limit is answered 413 at once, without waiting for a body that will be refused anyway.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// The raw body, with size-limit, read and timeout failures turned into JSON errors.
pub(crate) struct RawBody(pub Bytes);

impl FromRequest<Arc<AppState>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > state.max_body as u64) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body: Content-Length {n} is over the limit of {} bytes (http.max_body_bytes)",
                    state.max_body
                ),
            ));
        }
        let wait = state.body_timeout;
        match tokio::time::timeout(wait, Bytes::from_request(req, state)).await {
            Ok(read) => read
                .map(RawBody)
                .map_err(|r| ApiError::new(r.status(), format!("body: {}", r.body_text()))),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body: not received within {} (http.body_timeout)",
                    humantime::format_duration(wait)
                ),
            )),
        }
    }
}

/// Parses `bytes` as JSON into `T`, naming the field path on error.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body: expected a JSON object, got nothing",
        ));
    }
    // Parsed without tracking the path first (the tracker wraps every value it visits); only
    // a body whose value fails is parsed again, with it, to name the field.
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    if let Ok(v) = T::deserialize(&mut *de) {
        // `deserialize` stops at the value's end; `end` refuses what follows it (its only
        // error on a slice), at the position of the first such character.
        return match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(ApiError::bad_request(format!(
                "body: trailing characters after the JSON value at line {} column {}",
                e.line(),
                e.column()
            ))),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_then_only_whitespace() {
        let v: serde_json::Value = parse(b" {\"a\": 1} \r\n\t").unwrap();
        assert_eq!(v, serde_json::json!({"a": 1}));
        for (body, column) in [(&b"{\"a\": 1}x"[..], 9), (b"{\"a\": 1} {}", 10)] {
            let e = parse::<serde_json::Value>(body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(
                e.message,
                format!("body: trailing characters after the JSON value at line 1 column {column}")
            );
        }
        // A value that fails names its field, whatever follows it.
        let e = parse::<std::collections::HashMap<String, u8>>(b"{\"a\": \"x\"} x").unwrap_err();
        assert!(e.message.starts_with("a: invalid type"), "{}", e.message);
    }
}
