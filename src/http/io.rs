//! The socket as hyper sees it: a TCP stream that tells its connection's `Conn` when bytes
//! arrive (so the header timeout starts at a request's first byte), and that gives hyper's
//! own refusals the JSON error shape (`protocol::as_json`) on their way out.
//!
//! Telling hyper's refusals from a handler's responses: hyper writes a response of its own
//! only when a request head fails to parse, and then closes the connection. At that moment
//! every request it handed to the service has finished (`Conn::counts`) and hyper has since
//! flushed everything it had to write, for it reads the next head only once the previous
//! response is out. So a write that begins when nothing is owed and nothing was started
//! since the last complete flush is hyper's own. The one case this misses — a malformed head
//! pipelined behind a response the client has not yet read — leaves hyper's bare refusal as
//! it is.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conn::Conn;
use super::protocol;

pub(crate) struct ConnIo {
    stream: TcpStream,
    conn: Arc<Conn>,
    /// Requests started when hyper last completed a flush with nothing owed.
    flushed_at: Option<u64>,
    /// hyper's refusal, rewritten, while it is being written.
    rewrite: Option<Rewrite>,
}

struct Rewrite {
    out: Vec<u8>,
    written: usize,
    /// How many of hyper's bytes it replaces: reported written once it is.
    replaces: usize,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream, conn: Arc<Conn>) -> Self {
        Self {
            stream,
            conn,
            flushed_at: Some(0),
            rewrite: None,
        }
    }

    /// Whether a write beginning now is hyper's own response (see the module's comment).
    fn hypers_own(&self) -> bool {
        let (started, finished) = self.conn.counts();
        started == finished && self.flushed_at == Some(started)
    }

    /// Writes `bufs` through the rewrite when they are hyper's refusal; `None` when they are
    /// not, to be written as they are.
    fn poll_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Option<Poll<std::io::Result<usize>>> {
        if self.rewrite.is_none() {
            if !self.hypers_own() {
                return None;
            }
            let bare: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let out = protocol::as_json(&bare)?;
            self.rewrite = Some(Rewrite {
                out,
                written: 0,
                replaces: bare.len(),
            });
            // Written once: whatever hyper writes after it goes out as it is.
            self.flushed_at = None;
        }
        let rw = self.rewrite.as_mut()?;
        while rw.written < rw.out.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &rw.out[rw.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Some(Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => rw.written += n,
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        let replaces = rw.replaces;
        self.rewrite = None;
        Some(Poll::Ready(Ok(replaces)))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(p) = self.poll_rewrite(cx, &[IoSlice::new(buf)]) {
            return p;
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(p) = self.poll_rewrite(cx, bufs) {
            return p;
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx));
        let (started, finished) = self.conn.counts();
        if started == finished && self.flushed_at.is_some() {
            self.flushed_at = Some(started);
        }
        Poll::Ready(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
