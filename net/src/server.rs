//! The accept loop and the per-connection HTTP/1 driver.

use crate::body::{BodyTimedOut, TimedBody};
use crate::limits::ListenerLimits;
use crate::metrics::{Event, ListenerObserver};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// Serves `router` on `listener` under `limits` until `shutdown` completes; then stops
/// accepting, lets in-flight requests finish for `limits.shutdown_grace` and cuts the rest.
///
/// Accept errors (such as running out of file descriptors) are logged, counted and retried
/// after a short pause, never returned: a listener must outlive a burst of connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    observer: ListenerObserver,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, None, router, limits, observer, shutdown).await
}

/// [`serve`] over TLS: each accepted connection completes a TLS handshake with `tls` first.
///
/// The handshake counts as part of receiving the first request's header: it must finish
/// within `limits.header_read_timeout` (counted as a header timeout), so a client that
/// stalls mid-handshake holds a connection no longer than one that stalls mid-header. A
/// failed handshake closes the connection and is logged at debug, like any bad request.
/// Caps, idle and body timeouts and shutdown behave exactly as in [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    observer: ListenerObserver,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(listener, Some(acceptor), router, limits, observer, shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: ListenerLimits,
    observer: ListenerObserver,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let caps = Arc::new(Caps::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let local = listener.local_addr().ok();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let permit = match caps.admit(peer.ip(), &limits) {
                        Ok(permit) => permit,
                        Err(refusal) => {
                            observer.record(refusal);
                            tracing::debug!(?local, %peer, ?refusal, "connection refused");
                            // Dropping the stream closes it at once.
                            continue;
                        }
                    };
                    connections.spawn(connection(
                        stream,
                        tls.clone(),
                        peer,
                        router.clone(),
                        limits.clone(),
                        observer.clone(),
                        permit,
                        stop_rx.clone(),
                    ));
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    observer.record(Event::AcceptError);
                    tracing::warn!(?local, error = %e, "accept failed; retrying");
                    // Out of descriptors: give closing connections a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            ?local,
            left = connections.len(),
            "grace period over; closing remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one half-accepted connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The address a per-source cap counts: IPv4 addresses as they are, IPv6 by /64, since one
/// subscriber commonly holds a whole /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections, in all and per source.
#[derive(Default)]
struct Caps {
    inner: Mutex<CapsInner>,
}

#[derive(Default)]
struct CapsInner {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Caps {
    fn lock(&self) -> std::sync::MutexGuard<'_, CapsInner> {
        // The critical sections cannot panic halfway; a poisoned lock still holds valid counts.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ListenerLimits) -> Result<Permit, Event> {
        let key = source_key(ip);
        let mut inner = self.lock();
        if inner.total >= limits.max_connections {
            return Err(Event::RefusedTotal);
        }
        let from_source = inner.per_source.entry(key).or_insert(0);
        if *from_source >= limits.max_connections_per_ip {
            // Do not leave a zero entry behind for a refused source.
            if *from_source == 0 {
                inner.per_source.remove(&key);
            }
            return Err(Event::RefusedPerIp);
        }
        *from_source += 1;
        inner.total += 1;
        Ok(Permit {
            caps: self.clone(),
            key,
        })
    }
}

/// One admitted connection's place under the caps, given back when it closes.
struct Permit {
    caps: Arc<Caps>,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut inner = self.caps.lock();
        inner.total = inner.total.saturating_sub(1);
        if let Some(n) = inner.per_source.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_source.remove(&self.key);
            }
        }
    }
}

/// What the idle timer watches on one connection.
struct Activity {
    origin: Instant,
    /// Milliseconds after `origin` that bytes last moved or a handler finished.
    last_ms: AtomicU64,
    /// Requests whose handler has not returned yet.
    in_handler: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_handler: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a handler as running until dropped, so long computations are not "idle".
struct InHandler(Arc<Activity>);

impl InHandler {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_handler.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InHandler {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_handler.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes once the connection has been idle for `idle`: no bytes either way and no
/// handler running.
async fn idle_expired(activity: Arc<Activity>, idle: Duration) {
    loop {
        tokio::time::sleep_until(activity.last() + idle).await;
        if activity.in_handler.load(Ordering::Relaxed) > 0 {
            // A handler is working; look again one period after it could have finished.
            tokio::time::sleep(idle).await;
            continue;
        }
        if activity.last() + idle <= Instant::now() {
            return;
        }
    }
}

/// A socket that records when bytes move.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Drives one connection (after its TLS handshake, with `tls`) until it closes, times out,
/// or shutdown's grace runs out.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ListenerLimits>,
    observer: ListenerObserver,
    permit: Permit,
    mut stop: watch::Receiver<bool>,
) {
    // Recorded through a guard: a connection cut at the end of the grace period is dropped,
    // not returned from.
    let _open = OpenGuard::new(observer.clone());
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    // Bytes are tracked below TLS, so handshake and record traffic keep the idle timer fed.
    let tracked = Tracked {
        stream,
        activity: activity.clone(),
    };
    match tls {
        None => {
            drive(
                TokioIo::new(tracked),
                activity,
                peer,
                router,
                &limits,
                &observer,
                &mut stop,
            )
            .await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tracked));
            let tls_stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        observer.record(Event::HeaderTimeout);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            drive(
                TokioIo::new(tls_stream),
                activity,
                peer,
                router,
                &limits,
                &observer,
                &mut stop,
            )
            .await
        }
    }
    drop(permit);
}

/// Serves HTTP/1 on one connection's byte stream (plain or decrypted TLS).
async fn drive<S>(
    io: TokioIo<S>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    router: Router,
    limits: &ListenerLimits,
    observer: &ListenerObserver,
    stop: &mut watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timed_out = Arc::new(BodyTimedOut::default());
    let service = {
        let activity = activity.clone();
        let timed_out = timed_out.clone();
        let body_timeout = limits.body_read_timeout;
        let observer = observer.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let router = router.clone();
            let running = InHandler::new(activity.clone());
            let timed_out = timed_out.clone();
            let observer = observer.clone();
            async move {
                let req =
                    req.map(|b| Body::new(TimedBody::new(b, body_timeout, timed_out.clone())));
                let response = router.oneshot(req).await;
                drop(running);
                if timed_out.flag.load(Ordering::Acquire) {
                    // Counted here, before the 408 is written: hyper may finish the
                    // connection before the select loop below sees the notification.
                    observer.record(Event::BodyTimeout);
                    return Ok(request_timeout());
                }
                response
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper silently ignores header_read_timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = idle_expired(activity, limits.idle_timeout);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        observer.record(Event::HeaderTimeout);
                    }
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut idle => {
                observer.record(Event::IdleTimeout);
                tracing::debug!(%peer, "idle connection closed");
                break;
            }
            () = timed_out.notify.notified(), if !closing => {
                // Let the 408 go out, then close; the idle timer cuts a client that won't read.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Counts a connection in the open gauge for as long as it lives.
struct OpenGuard(ListenerObserver);

impl OpenGuard {
    fn new(observer: ListenerObserver) -> Self {
        observer.record(Event::Opened);
        Self(observer)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.record(Event::Closed);
    }
}

/// 408 with `Connection: close`: the rest of the body is not worth waiting for.
fn request_timeout() -> Response<Body> {
    let mut response = Response::new(Body::from("request body not received in time\n"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
