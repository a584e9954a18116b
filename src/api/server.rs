//! The HTTP/1.1 listener: accepts connections up to a limit and serves each with hyper,
//! bounding how long a client may take over its request head, its body and the silence between
//! two requests. The settings are [`HttpSettings`] (`HOOKLEDGER_*`, see `config`).
//!
//! Invariants: at most `max_connections` connections are served at once (one more is answered
//! 503 `too_many_connections` and closed at once, without touching the others); a connection
//! whose head is not in within the header timeout, or on which nothing moved for the idle
//! timeout, is closed; a request body must arrive within the body timeout (see [`drain`]). On
//! shutdown the listener stops accepting, every connection finishes the request in flight and
//! closes, and [`serve`] returns once all are gone.
//!
//! Choices, and why. Measured before: 3,000 connections that had each sent half a request line
//! were all still open 35 s later (about 40 KB each), because `axum::serve` sets no timer on
//! hyper, so no timeout can fire. After (tests/it/slow_clients.rs, timeouts at 300 ms): 1,000
//! such connections are all dropped while a normal client is served throughout; a held one
//! costs about 15 KiB, and the server's VmRSS settles a few MB above a fresh process after a
//! flood (the allocator keeps freed memory for reuse) without growing flood after flood.
//! - The head: hyper's own `http1::Builder::header_read_timeout` with hyper-util's `TokioTimer`.
//!   hyper starts that clock whenever it waits for a head, so it also bounds a keep-alive
//!   connection's wait for its next request; hence the idle timeout may not exceed it.
//! - Idle: hyper has no idle timeout of its own; each connection's I/O records when a byte last
//!   moved, and when nothing moved for the idle timeout the connection gets hyper's
//!   `graceful_shutdown`, which closes an idle connection at once and lets a request in flight
//!   finish (so a slow handler is never cut, it only loses keep-alive).
//! - The connection limit: a semaphore taken at accept; at the limit the connection is refused
//!   rather than left unaccepted, so a client learns at once (a backlog would hold it mute).
//! - The body: a deadline from the head, in [`drain`], not tower-http's per-frame timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::drain::{bound_body, BodyBounds};
use crate::config::HttpSettings;

/// Serves `router` on `listener` until `stop` resolves, then waits for every connection to
/// finish its request in flight and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    stop: impl std::future::Future<Output = ()>,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        BodyBounds {
            timeout: settings.body_timeout,
            drain_limit: settings.drain_limit,
        },
        bound_body,
    ));
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let (closing, closed) = watch::channel(false);
    let refusal = refusal();
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or the like: the next accept may work; do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(connection(
                    stream,
                    router.clone(),
                    settings.clone(),
                    permit,
                    closed.clone(),
                ));
            }
            Err(_) => {
                // A fresh socket's send buffer takes these few bytes at once; then it closes.
                let _ = stream.try_write(&refusal);
                tracing::debug!("refused a connection over the limit");
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds one slot until it is gone.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// The answer to a connection over the limit.
fn refusal() -> Vec<u8> {
    let body = serde_json::json!({ "error": {
        "code": "too_many_connections",
        "message": "the server has as many connections open as it takes; try again shortly",
        "field": null,
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection until it ends, is idle too long, or the server stops.
async fn connection(
    stream: TcpStream,
    router: Router,
    settings: HttpSettings,
    permit: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let mut shutting = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            () = activity.idle_for(settings.idle_timeout), if !shutting => {
                conn.as_mut().graceful_shutdown();
                shutting = true;
            }
            _ = closing.changed(), if !shutting => {
                conn.as_mut().graceful_shutdown();
                shutting = true;
            }
        }
    }
    drop(permit);
}

/// When a byte last moved on a connection, in milliseconds since it was accepted.
struct Activity {
    since: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let until = last + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

/// A connection's stream, recording every read and write that moved bytes.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
