//! DNS over TCP: length-prefixed messages, several per connection, answered in order.
//!
//! A semaphore permit is taken *before* `accept`, so at most `max_connections` are served and
//! the rest wait in the kernel's backlog; an idle connection is closed after `idle_timeout`.
//! On shutdown the listener stops and each connection closes after its current answer.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::Forwarder;
use super::handler::{Outcome, Transport, handle, servfail};
use super::{DnsView, TcpLimits};

pub async fn run(
    listener: TcpListener,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    limits: TcpLimits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let view = view.clone();
        let shutdown = shutdown.clone();
        let recursion = forwarder.as_ref().is_some_and(|f| f.allows(peer.ip()));
        let forwarder = forwarder.clone().filter(|_| recursion);
        tracker.spawn(async move {
            if let Err(e) = connection(stream, view, forwarder, limits, shutdown).await {
                tracing::debug!(%peer, error = %e, "tcp connection");
            }
            drop(permit);
        });
    }
}

/// Serves one connection; `forwarder` is `Some` only when this client may use forwarding.
async fn connection(
    mut stream: TcpStream,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        let read = async {
            stream.read_exact(&mut len).await?;
            let n = usize::from(u16::from_be_bytes(len));
            stream.read_exact(&mut buf[..n]).await?;
            Ok::<usize, std::io::Error>(n)
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(limits.idle_timeout, read) => match r {
                Err(_) => return Ok(()), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
        };
        let recursion = forwarder.is_some();
        let reply: &[u8] = match handle(
            &view.table(),
            &buf[..n],
            Transport::Tcp,
            recursion,
            &mut out,
        ) {
            Outcome::Answered(_) => &out,
            Outcome::Dropped => continue,
            Outcome::Forward => {
                let fwd = forwarder.as_ref().expect("forwarding implies a forwarder");
                match fwd.forward(&buf[..n], true).await {
                    Some(r) => {
                        out = r;
                    }
                    None => servfail(&buf[..n], &mut out),
                }
                &out
            }
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(reply);
        tokio::time::timeout(limits.idle_timeout, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
    }
}
