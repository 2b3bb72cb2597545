//! An HTTP health-check target for tests: answers every request 200 and records when each
//! path was probed, so a test can count a check's probes and see when they started again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Path → the times it was probed.
pub type Hits = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// Starts the target on a free loopback port; runs until the test's runtime ends.
pub async fn target() -> (SocketAddr, Hits) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Hits = Arc::default();
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                h.lock()
                    .unwrap()
                    .entry(path)
                    .or_default()
                    .push(Instant::now());
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, hits)
}

/// How many probes each path had so far.
pub fn counts(hits: &Hits) -> HashMap<String, usize> {
    hits.lock()
        .unwrap()
        .iter()
        .map(|(p, t)| (p.clone(), t.len()))
        .collect()
}
