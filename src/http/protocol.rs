//! Protocol-level limits and errors, in the API's JSON error shape.
//!
//! Three kinds of refusal come before any handler:
//! - the request head (line and headers) over `MAX_HEAD_BYTES`, or with more than
//!   `MAX_HEADERS` headers: hyper refuses it with 431 while parsing (`serve` hands it the
//!   limits);
//! - a head hyper cannot parse (a bad request line, an invalid or doubled `Content-Length`,
//!   a bad header name): hyper refuses it with 400;
//! - a URI over `MAX_URI_BYTES`: `UriLimit` refuses it with 414 (hyper's own URI limit is
//!   64 KiB, past the head limit, and a long path would otherwise be echoed back in the
//!   handler's error).
//!
//! hyper writes its refusals itself, with an empty body, and offers no hook to shape them;
//! `as_json` turns such a bare response into the JSON error shape on its way to the socket
//! (`io::ConnIo` knows when hyper, not a handler, is writing), keeping its status and its
//! `Connection: close`.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::refuse::Check;

/// The longest request head (request line and headers) hyper reads: 32 KiB, four times
/// nginx's default line buffer, ample for any client of this API and a bounded buffer per
/// connection.
pub(crate) const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The most headers a request may carry (hyper's default, stated here to be named in errors).
pub(crate) const MAX_HEADERS: usize = 100;

/// The longest URI (path and query) accepted: 8 KiB, as nginx and most proxies in front of an
/// API allow; a service name, an id and the query take a few hundred bytes at most.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// Refuses a URI over `MAX_URI_BYTES` with 414 before anything else looks at it.
#[derive(Clone, Copy)]
pub(crate) struct UriLimit;

impl Check for UriLimit {
    fn refusal(&self, req: &Request) -> Option<Response> {
        let uri = req.uri();
        let len = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        (len > MAX_URI_BYTES).then(|| {
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                format!("URI too long: {len} bytes, at most {MAX_URI_BYTES}"),
            )
            .into_response()
        })
    }
}

/// hyper's own bare refusal (`HTTP/1.1 400 Bad Request`, its headers, `content-length: 0`,
/// no body) rewritten with a `{"error": ...}` body; `None` for anything else, which is then
/// sent as it is.
pub(crate) fn as_json(bare: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(bare).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let headers: Vec<&str> = lines.collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let message = match code {
        400 => "malformed request: the request line or a header (such as Content-Length) \
                is invalid"
            .to_string(),
        431 => format!(
            "request headers too large: at most {MAX_HEAD_BYTES} bytes and {MAX_HEADERS} \
             headers"
        ),
        414 => format!("URI too long: at most {MAX_URI_BYTES} bytes"),
        _ => "malformed request".to_string(),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).ok()?;
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("content-length:"))
    {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_refusal_becomes_json() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Sat, 05 Dec 2026 04:39:35 GMT\r\n\r\n";
        let out = String::from_utf8(as_json(bare).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head.split("\r\n").collect::<Vec<_>>(),
            [
                "HTTP/1.1 431 Request Header Fields Too Large",
                "connection: close",
                "date: Sat, 05 Dec 2026 04:39:35 GMT",
                "content-type: application/json",
                &format!("content-length: {}", body.len()),
            ]
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("32768 bytes"), "{v}");
    }

    #[test]
    fn anything_else_is_left_alone() {
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"[..], // not a whole head
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"\x00\x01",
        ] {
            assert_eq!(as_json(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
