//! Tokens (CONTRACT §3, "Tokens"): with `http.token` set, every write (every method but GET
//! and HEAD, on every path) needs `Authorization: Bearer <token>`; with `http.read_token` set
//! too, reads need it or the write token. `/healthz` stays open (a load balancer asks it),
//! and so do `/ready`, `/v1/status/leader` and reads of the dashboard's page and files
//! (`ui::is_open`). A missing or wrong token is 401 with `WWW-Authenticate: Bearer` and the
//! JSON error shape, before anything runs, so nothing changes.
//!
//! The token may come as `Authorization: Bearer <token>`, as the password of
//! `Authorization: Basic` (Prometheus' and VictoriaMetrics' `basic_auth`; the user name is
//! not looked at), or in `X-Consul-Token` (Consul's clients, CONTRACT §5), on any path.
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

/// Paths open whatever the tokens: liveness and readiness probes, and Consul's
/// `/v1/status/leader`, which Consul serves without a token and its clients ask without one
/// (py-consul sends none there); it names only this server's address.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/ready", "/v1/status/leader"];

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
            "missing or wrong token: send Authorization: Bearer <token> (or X-Consul-Token)",
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
        let sent = sent(req);
        // Every candidate is compared with every token sent, so the time does not tell
        // which one matched.
        needed
            .iter()
            .filter_map(|t| t.as_deref())
            .flat_map(|t| sent.iter().map(move |s| t.ct_eq(s)))
            .fold(subtle::Choice::from(0), |ok, eq| ok | eq)
            .into()
    }
}

/// The tokens a request carries: an `Authorization: Bearer` token, the password of
/// `Authorization: Basic`, `X-Consul-Token`.
fn sent(req: &Request) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(v) = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())
        && let Some(space) = v.iter().position(|&b| b == b' ')
    {
        let (scheme, rest) = v.split_at(space);
        let rest = rest.trim_ascii();
        if scheme.eq_ignore_ascii_case(b"bearer") {
            out.push(rest.to_vec());
        } else if scheme.eq_ignore_ascii_case(b"basic")
            && let Ok(pair) = data_encoding::BASE64.decode(rest)
            && let Some(colon) = pair.iter().position(|&b| b == b':')
        {
            out.push(pair[colon + 1..].to_vec());
        }
    }
    for v in req.headers().get_all(CONSUL_TOKEN) {
        out.push(v.as_bytes().trim_ascii().to_vec());
    }
    out
}

/// Consul's token header.
const CONSUL_TOKEN: &str = "x-consul-token";

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, auth: Option<&str>) -> Request {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = match a.strip_prefix("X-Consul-Token: ") {
                Some(t) => b.header(CONSUL_TOKEN, t),
                None => b.header(AUTHORIZATION, a),
            };
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn consul_token_and_basic_password_count_as_the_token() {
        let w = Secret("w-token".into());
        let r = Secret("r-token".into());
        let t = TokenCheck::new(Some(&w), Some(&r)).tokens;
        let put = |a: Option<&str>| t.admits(&req(Method::PUT, "/v1/agent/service/register", a));
        let get = |a: Option<&str>| t.admits(&req(Method::GET, "/v1/health/service/web", a));
        let basic = |user: &str, pass: &str| {
            format!(
                "Basic {}",
                data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes())
            )
        };
        assert!(put(Some("X-Consul-Token: w-token")));
        assert!(!put(Some("X-Consul-Token: r-token")) && !put(Some("X-Consul-Token: w")));
        assert!(get(Some("X-Consul-Token: r-token")));
        assert!(put(Some(&basic("prometheus", "w-token"))));
        assert!(get(Some(&basic("", "r-token"))));
        assert!(
            !put(Some(&basic("w-token", "x"))),
            "the user name is not the token"
        );
        assert!(!get(Some("Basic not-base64!")) && !get(Some("Basic ")));
        assert!(!get(Some(&format!(
            "Basic {}",
            data_encoding::BASE64.encode(b"no-colon")
        ))));
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
