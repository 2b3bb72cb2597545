//! The TCP check: passing when a connection to `HOST:PORT` opens within the timeout.

use std::time::Duration;

use crate::model::Status;

/// Connects to `target` once; returns the probe's status and a short reason.
pub(crate) async fn probe(target: &str, timeout: Duration) -> (Status, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => (Status::Passing, format!("TCP connect {target}: ok")),
        Ok(Err(e)) => (Status::Critical, format!("TCP connect {target}: {e}")),
        Err(_) => (
            Status::Critical,
            format!(
                "TCP connect {target}: timed out after {}",
                humantime::format_duration(timeout)
            ),
        ),
    }
}
