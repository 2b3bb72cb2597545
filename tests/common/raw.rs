//! HTTP/1.1 by hand over a TCP socket, for the tests that need what a well-behaved client
//! never sends: half a request, a stalled body, a forged `Host`, a malformed header, an idle
//! connection held open. Every read is bounded, so a server that never answers fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as it came off the wire.
pub struct RawReply {
    pub status: u16,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The text of a `{"error": "..."}` body, asserting that shape (and its content type).
    pub fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{} with {:?}",
            self.status,
            self.headers
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        });
        let obj = v.as_object().expect("an error body is a JSON object");
        assert_eq!(obj.len(), 1, "an error body holds only `error`: {v}");
        let text = obj["error"].as_str().expect("`error` is a string");
        assert!(!text.is_empty(), "empty error text");
        text.to_string()
    }
}

/// A request with `Host: 127.0.0.1`, the given extra headers and a body with its
/// Content-Length (none for an empty body on GET).
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        out.push_str("Host: 127.0.0.1\r\n");
    }
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect within 5 s")
        .expect("connect")
}

/// Sends `bytes` on a new connection and reads one reply (at most 5 s).
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> RawReply {
    let mut s = connect(addr).await;
    s.write_all(bytes).await.unwrap();
    read_reply(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no reply within 5 s to {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })
}

/// Reads one response within `bound`; `None` when none (or only part of one) came in time,
/// or the connection closed first.
pub async fn read_reply(s: &mut TcpStream, bound: Duration) -> Option<RawReply> {
    let until = Instant::now() + bound;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(s, &mut buf, until).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("a numeric Content-Length"))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        read_more(s, &mut buf, until).await?;
    }
    Some(RawReply {
        status,
        headers,
        body: buf[head_end..head_end + len].to_vec(),
    })
}

/// Appends what arrives before `until`; `None` on timeout, EOF or a reset.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, until: Instant) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let left = until.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}

/// How long until the server closes `s` (EOF or a reset), reading and discarding anything
/// it sends first; `None` if it is still open after `bound`.
pub async fn closed_within(s: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        let left = bound.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}
