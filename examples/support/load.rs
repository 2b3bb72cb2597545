//! Shared by the load generators `scale_load` and `replica_load` (each includes it with
//! `#[path]`; this folder is not an example of its own): a raw HTTP/1.1 keep-alive connection,
//! a raw DNS A query and its check, percentiles, and argument parsing.
#![allow(dead_code)] // each load generator uses its own part

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// The `Host` header: the address connected to, as a client would send it.
    host: String,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let s = TcpStream::connect(addr).await?;
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

    /// Reads one response (Content-Length bodies only); returns its status.
    pub async fn response(&mut self) -> io::Result<u16> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("header"))?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    return Err(bad("chunked responses are not supported"));
                }
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                self.buf.drain(..total);
                return Ok(status);
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
