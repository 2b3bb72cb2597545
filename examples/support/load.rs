//! Shared by the load generators `scale_load`, `replica_load` and `soak_load` (each includes it with
//! `#[path]`; this folder is not an example of its own): a raw HTTP/1.1 keep-alive connection,
//! a raw DNS A query and its check, percentiles, and argument parsing.
#![allow(dead_code)] // each load generator uses its own part

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Connecting or one exchange taking longer than this is an error (the server is expected
/// to answer in milliseconds).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// The `Host` header: the address connected to, as a client would send it.
    host: String,
}

/// A response's status and `X-Signpost-Index`.
pub struct Reply {
    pub status: u16,
    pub index: Option<u64>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let s = tokio::time::timeout(EXCHANGE_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        s.set_nodelay(true)?;
        Ok(Self {
            s,
            buf: Vec::with_capacity(16 * 1024),
            host: addr.to_string(),
        })
    }

    pub async fn send(&mut self, method: &str, path: &str, body: &str) -> io::Result<()> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.s.write_all(req.as_bytes()).await
    }

    /// Writes `bytes` as they are (a request cut short, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes).await
    }

    /// Reads one response (Content-Length bodies only); returns its status.
    pub async fn response(&mut self) -> io::Result<u16> {
        Ok(self.reply().await?.status)
    }

    /// Reads one response (Content-Length bodies only): its status and `X-Signpost-Index`.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("header"))?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let header = |name: &str| {
                    head.lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.trim())
                };
                if header("transfer-encoding").is_some() {
                    return Err(bad("chunked responses are not supported"));
                }
                let len = header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let index = header("x-signpost-index").and_then(|v| v.parse().ok());
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                self.buf.drain(..total);
                return Ok(Reply { status, index });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut tmp = [0u8; 16 * 1024];
        let n = self.s.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    /// One request and its response, bounded by `limit`.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        limit: Duration,
    ) -> io::Result<Reply> {
        let exchange = async {
            self.send(method, path, body).await?;
            self.reply().await
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in time"))?
    }
}

/// One registration PUT of instance `i` (address from `i`, port 8000 + `i % per`) on `conn`,
/// counted in `errors` when it fails: `Some(Some(µs))` when answered 200, `Some(None)` when
/// refused or when the connection broke and was replaced, `None` when no new connection to
/// `addr` could be made (the caller stops).
pub async fn put_instance(
    conn: &mut Conn,
    addr: SocketAddr,
    path: &str,
    (i, per): (u64, u64),
    errors: &std::sync::atomic::AtomicU64,
) -> Option<Option<u64>> {
    use std::sync::atomic::Ordering::Relaxed;
    let body = format!(
        r#"{{"address":"{}","port":{},"weight":1,"priority":0}}"#,
        address(i),
        8000 + i % per
    );
    let t = std::time::Instant::now();
    let r = match conn.send("PUT", path, &body).await {
        Ok(()) => conn.response().await,
        Err(e) => Err(e),
    };
    match r {
        Ok(200) => Some(Some(t.elapsed().as_micros() as u64)),
        Ok(status) => {
            if errors.fetch_add(1, Relaxed) < 5 {
                eprintln!("PUT {path} on {addr}: HTTP {status}");
            }
            Some(None)
        }
        Err(e) => {
            eprintln!("PUT {path} on {addr}: {e}");
            errors.fetch_add(1, Relaxed);
            *conn = Conn::connect(addr).await.ok()?;
            Some(None)
        }
    }
}

pub fn address(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, A, IN
    q
}

/// Asks `name` A once; true when the answer with our id has NOERROR and at least one record.
pub async fn dns_has_records(sock: &UdpSocket, id: u16, name: &str, wait: Duration) -> bool {
    let q = dns_query(id, name);
    if sock.send(&q).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                let rcode = buf[3] & 0x0f;
                let ancount = u16::from_be_bytes([buf[6], buf[7]]);
                return rcode == 0 && ancount > 0;
            }
            Ok(Ok(_)) => continue, // a late answer to an earlier query
            _ => return false,
        }
    }
}

/// One registration-to-DNS visibility sample: writes a PUT of `path` with `body`, and asks
/// `name` A over `sock` in a loop (one query outstanding) until an answer has records. The
/// PUT's status, its latency, and how long after the PUT was written the name was first seen
/// (`None` after 5 s).
pub async fn visibility_sample(
    conn: &mut Conn,
    sock: &UdpSocket,
    id: &mut u16,
    (path, body, name): (&str, &str, &str),
) -> (io::Result<u16>, Duration, Option<Duration>) {
    let t0 = std::time::Instant::now();
    if let Err(e) = conn.send("PUT", path, body).await {
        return (Err(e), t0.elapsed(), None);
    }
    let http_fut = async {
        let s = conn.response().await;
        (s, t0.elapsed())
    };
    let dns_fut = async {
        loop {
            *id = id.wrapping_add(1);
            if dns_has_records(sock, *id, name, Duration::from_millis(200)).await {
                return Some(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return None;
            }
        }
    };
    let ((status, put), seen) = tokio::join!(http_fut, dns_fut);
    (status, put, seen)
}

pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> T {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: missing or invalid value")),
        None => default.unwrap_or_else(|| panic!("{name} is required")),
    }
}

pub fn list<T: std::str::FromStr>(args: &[String], name: &str) -> Vec<T> {
    let s: String = arg(args, name, None);
    s.split(',')
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: invalid item {v:?}"))
        })
        .collect()
}
