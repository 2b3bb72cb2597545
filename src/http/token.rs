//! Tokens (CONTRACT §3, "Tokens"): with `http.token` set, every write (every method but GET
//! and HEAD, on every path) needs `Authorization: Bearer <token>`; with `http.read_token` set
//! too, reads need it or the write token. `/healthz` stays open (a load balancer asks it),
//! and so does `/ready`. A missing or wrong token is 401 with `WWW-Authenticate: Bearer` and
//! the JSON error shape, before anything runs, so nothing changes.
//!
//! Tokens are compared in constant time (`subtle`), so the time of a refusal says nothing
//! about how much of a guess was right, and they are never logged (`config::Secret` hides
//! them from `Debug`). The layer sits above the registration path (`fast`), like every layer
//! that must see every request (ARCHITECTURE.md, "Invariants").

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::refuse::Check;
use crate::config::Secret;

/// Paths open whatever the tokens: liveness and readiness probes.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/ready"];

/// The tokens, shared by every connection's copy of the layer.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    tokens: Arc<Tokens>,
}

struct Tokens {
    write: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
}

impl TokenCheck {
    pub(crate) fn new(write: Option<&Secret>, read: Option<&Secret>) -> Self {
        let bytes = |s: Option<&Secret>| s.map(|s| s.0.as_bytes().to_vec());
        Self {
            tokens: Arc::new(Tokens {
                write: bytes(write),
                read: bytes(read),
            }),
        }
    }
}

impl Check for TokenCheck {
    fn refusal(&self, req: &Request) -> Option<Response> {
        if self.tokens.admits(req) {
            return None;
        }
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <token>",
        )
        .into_response();
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(resp)
    }
}

impl Tokens {
    /// Whether `req` carries what its method and path need.
    fn admits(&self, req: &Request) -> bool {
        if OPEN_PATHS.contains(&req.uri().path()) {
            return true;
        }
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        // The dashboard's page and files hold no data; the reads its script makes need the
        // token (`ui`, and README, "Web dashboard").
        if read && super::ui::is_open(req.uri().path()) {
            return true;
        }
        let needed: &[&Option<Vec<u8>>] = if read {
            if self.read.is_none() {
                return true;
            }
            &[&self.read, &self.write]
        } else {
            if self.write.is_none() {
                return true;
            }
            &[&self.write]
        };
        let Some(sent) = bearer(req) else {
            return false;
        };
        // Every candidate is compared, so the time does not tell which one matched.
        needed
            .iter()
            .filter_map(|t| t.as_deref())
            .fold(subtle::Choice::from(0), |ok, t| ok | t.ct_eq(sent))
            .into()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, auth: Option<&str>) -> Request {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn writes_need_the_write_token_and_reads_the_read_or_write_token() {
        let w = Secret("w-token".into());
        let r = Secret("r-token".into());
        let t = TokenCheck::new(Some(&w), Some(&r)).tokens;
        let put = |a| t.admits(&req(Method::PUT, "/v1/services/web/instances/a", a));
        let get = |a| t.admits(&req(Method::GET, "/v1/services", a));
        assert!(!put(None) && !put(Some("Bearer r-token")) && !put(Some("Bearer w-tokenx")));
        assert!(put(Some("Bearer w-token")) && put(Some("bearer  w-token ")));
        assert!(!put(Some("Basic w-token")) && !put(Some("Bearerw-token")));
        assert!(!get(None) && get(Some("Bearer r-token")) && get(Some("Bearer w-token")));
        assert!(t.admits(&req(Method::GET, "/healthz", None)));
        assert!(t.admits(&req(Method::GET, "/ready", None)));
        assert!(!t.admits(&req(Method::DELETE, "/healthz/x", None)));

        let open_reads = TokenCheck::new(Some(&w), None).tokens;
        assert!(open_reads.admits(&req(Method::GET, "/v1/services", None)));
        assert!(!open_reads.admits(&req(Method::POST, "/anything", None)));
        let none = TokenCheck::new(None, None).tokens;
        assert!(none.admits(&req(Method::PUT, "/v1/services/web/instances/a", None)));
    }
}
