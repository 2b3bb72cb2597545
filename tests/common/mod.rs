//! Shared test harness: a real signpost server started in-process on `127.0.0.1:0`, with its
//! own data dir and zones dir, plus small DNS and HTTP clients that talk to it over real
//! sockets; `raw` speaks HTTP/1.1 by hand for requests no client library would send;
//! `browser` and `firefox` drive headless Chromium and Firefox.
#![allow(dead_code)]

pub mod browser;
pub mod etcd;
pub mod firefox;
pub mod probes;
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use signpost::config::Config;

/// A running in-process server. Dropping it stops the server.
pub struct TestServer {
    pub dns: SocketAddr,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    token: CancellationToken,
    done: Option<tokio::task::JoinHandle<Result<(), signpost::Error>>>,
}

/// A config for tests: every listener on 127.0.0.1:0, data and zones inside `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.dns.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.registry.data_dir = dir.join("data");
    c.dns.zones_dir = dir.join("zones");
    c
}

/// The project's own `zones/internal.zone`, copied into a test's zones dir.
pub fn project_zone() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/internal.zone")
}

impl TestServer {
    /// Starts a server with the default test config.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the config (zones may be written into
    /// `cfg.dns.zones_dir` by the caller first).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("zones")).unwrap();
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        cfg.validate().unwrap();
        Self::start_in(dir, cfg).await
    }

    /// Starts a server on `cfg` keeping `dir` alive (a restart reuses the same dir).
    pub async fn start_in(dir: tempfile::TempDir, cfg: Config) -> Self {
        let token = CancellationToken::new();
        let running = signpost::start(cfg, token.clone())
            .await
            .expect("server starts");
        let dns = running.dns_addrs[0];
        let http = running.http_addr;
        let done = tokio::spawn(running.wait());
        TestServer {
            dns,
            http,
            dir,
            client: reqwest::Client::new(),
            token,
            done: Some(done),
        }
    }

    /// Stops the server and waits for its ordered shutdown; returns the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.token.cancel();
        if let Some(d) = self.done.take() {
            d.await.unwrap().expect("clean shutdown");
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// PUTs a registration and asserts 200.
    pub async fn register(&self, service: &str, id: &str, body: serde_json::Value) {
        let r = self
            .client
            .put(self.url(&format!("/v1/services/{service}/instances/{id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status,
            200,
            "register {service}/{id}: {}",
            r.text().await.unwrap()
        );
    }

    /// Reports health for a TTL check and asserts 200.
    pub async fn report(&self, service: &str, id: &str, status: &str) {
        let r = self
            .client
            .put(self.url(&format!("/v1/services/{service}/instances/{id}/health")))
            .json(&serde_json::json!({"status": status}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "health {service}/{id}");
    }

    pub async fn deregister(&self, service: &str, id: &str) -> u16 {
        self.client
            .delete(self.url(&format!("/v1/services/{service}/instances/{id}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// One query over UDP (`edns`: Some(payload) adds an OPT record). Returns the parsed
    /// reply and its size in bytes.
    pub async fn udp(&self, name: &str, rtype: RecordType, edns: Option<u16>) -> (Message, usize) {
        let wire = query(name, rtype, edns);
        let bytes = self.udp_raw(&wire).await.expect("a UDP reply");
        (
            Message::from_vec(&bytes).expect("reply parses"),
            bytes.len(),
        )
    }

    /// One query over TCP.
    pub async fn tcp(&self, name: &str, rtype: RecordType) -> Message {
        let bytes = self
            .tcp_raw(&query(name, rtype, None))
            .await
            .expect("a TCP reply");
        Message::from_vec(&bytes).expect("reply parses")
    }

    /// Sends raw bytes over UDP; the raw reply, or `None` after 2 s.
    pub async fn udp_raw(&self, wire: &[u8]) -> Option<Vec<u8>> {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(wire, self.dns).await.unwrap();
        let mut buf = vec![0u8; 65535];
        match tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Sends one length-prefixed message over TCP; the raw reply, or `None`.
    pub async fn tcp_raw(&self, wire: &[u8]) -> Option<Vec<u8>> {
        let mut s = tokio::net::TcpStream::connect(self.dns).await.unwrap();
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(wire);
        s.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.ok()?;
        Some(buf)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// The wire bytes of a query for `name` (sent in the exact case given), RD clear.
pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_with(name, rtype, edns, rand_id(), false)
}

/// The wire bytes of a query with the given ID and RD flag.
pub fn query_with(name: &str, rtype: RecordType, edns: Option<u16>, id: u16, rd: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7, Ordering::Relaxed)
}
