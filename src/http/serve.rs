//! The HTTP accept loop: the connection cap, hyper's HTTP/1 settings, each connection's task
//! (closed at its header or idle deadline, `conn::Conn`) and graceful shutdown.
//!
//! axum's `serve` has none of these knobs, so the loop is ours, driving hyper the way axum's
//! does. A connection takes a slot of `http.max_connections` *before* `accept`, as DNS over
//! TCP does: past the cap, new connections wait in the kernel's backlog (holding no file
//! descriptor of ours) and are served as slots free, which the header and idle timeouts
//! guarantee. Accepting and closing at once would turn a burst into errors for clients that
//! would have been served a moment later, and would still spend a descriptor per attempt.
//! A flood of idle connections therefore costs at most the cap in descriptors, and DNS over
//! TCP and the store keep theirs.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::App;
use super::conn::{Conn, Counted, Timeouts};
use super::io::ConnIo;
use super::protocol;

/// How long to pause accepting after an error that is not one connection's (out of file
/// descriptors, memory): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection-level limits (`http.*` in the config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub timeouts: Timeouts,
}

/// Serves `app` on `listener` until `shutdown`: then stops accepting, lets each connection
/// finish the request it is serving (long-polls return at once), closes idle ones, and
/// returns once every connection is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Gives the memory a flood of connections leaves behind back to the system.
    let reclaim = Arc::new(crate::memory::Reclaim::default());
    let mut builder = http1::Builder::new();
    // Ours instead (`conn::Conn`): hyper's would also cut kept-alive connections that are
    // merely idle, and needs a hyper timer.
    builder.header_read_timeout(None);
    // Past it hyper answers 431 (in the JSON shape, by `io::ConnIo`). The header count keeps
    // hyper's default (`protocol::MAX_HEADERS`): setting it moves hyper's header array from the
    // stack to the heap for every request.
    builder.max_header_size(protocol::MAX_HEAD_BYTES);
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) if one_connections(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        reclaim.opened();
        let served = connection(
            stream,
            app.clone(),
            builder.clone(),
            limits.timeouts,
            shutdown.clone(),
            slot,
        );
        let reclaim = reclaim.clone();
        connections.spawn(async move {
            served.await;
            reclaim.closed();
        });
    }
    // Closed now, so clients are refused rather than left waiting in the backlog.
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// An accept error about one connection only (it went away before it was accepted).
fn one_connections(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    )
}

/// Serves one connection, holding its slot, until the client closes it, hyper closes it
/// (an error, `Connection: close`, shutdown) or its deadline passes.
async fn connection(
    stream: TcpStream,
    app: App,
    builder: http1::Builder,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let conn = Arc::new(Conn::new(timeouts));
    let io = TokioIo::new(ConnIo::new(stream, conn.clone()));
    let mut served = pin!(builder.serve_connection(io, Counted::new(app, conn.clone())));
    let mut cancelled = pin!(shutdown.cancelled());
    let mut draining = false;
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed = None;
    // Polled by hand rather than with `select!`: the deadline moves as the connection reads
    // and answers (inside `served`'s poll), so it is read again after every poll of it.
    let outcome = std::future::poll_fn(|cx| {
        if !draining && cancelled.as_mut().poll(cx).is_ready() {
            draining = true;
            served.as_mut().graceful_shutdown();
        }
        if let Poll::Ready(r) = served.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        let Some(deadline) = conn.deadline() else {
            armed = None;
            return Poll::Pending;
        };
        if armed != Some(deadline) {
            timer.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended"),
        // Dropping the connection closes the socket.
        None => tracing::debug!("HTTP connection closed: header or idle timeout"),
    }
}
