//! The HTTP accept loop: axum's router served by hyper's connection builder, HTTP/1 and HTTP/2
//! (h2c with prior knowledge) alike. `axum::serve` bounds nothing about a connection; here each
//! one is bounded three ways:
//!
//! - **Header read timeout** (HTTP/1, hyper's own): a client sending its request line and
//!   headers one byte a second is cut off.
//! - **Idle timeout**, whatever the protocol: a connection with no request in flight for that
//!   long is closed. That covers what nothing else does: a connection that never sends a byte
//!   or stops inside the HTTP/2 preface (hyper-util's protocol detection reads it without any
//!   timeout), an HTTP/2 connection that never opens a stream, and one idling between requests.
//!   hyper's HTTP/2 keep-alive pings would not do: a live client answers them forever.
//! - **Connection cap**: past `max_connections` open connections a new one is answered 503
//!   (`overloaded`, `Retry-After`) on either protocol and closed; a client learns why and when
//!   to come back, which a bare close (indistinguishable from a network fault) would not tell
//!   it. Those answers are themselves bounded: at most [`MAX_REFUSING`] at a time, each within
//!   [`REFUSAL_DEADLINE`]; past that a connection is closed at once, so a flood of connections
//!   costs a bounded amount of memory either way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;

/// Connections over the cap being answered 503 at once; more are closed without an answer.
pub const MAX_REFUSING: usize = 64;
/// How long a connection over the cap may take to send its request and read the 503.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);
/// After a connection is asked to close (idle, or shutdown) and has no request in flight: how
/// long it gets to read the HTTP/2 GOAWAY and go, before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The bounds every connection is served under (`BXB_HEADER_READ_TIMEOUT_MS`,
/// `BXB_IDLE_CONNECTION_TIMEOUT_MS`, `BXB_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting, asks every
/// connection to close after its requests in flight (HTTP/1 after its current request, HTTP/2
/// with a GOAWAY) and waits up to `drain` for them.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits, drain: Duration, shutdown: CancellationToken) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let refusal_builder = refusal_builder();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    pause_after_accept_error(&error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refuse(stream, &refusal_builder, &refusing, limits.max_connections);
            continue;
        };
        spawn_connection(stream, &builder, app.clone(), permit, limits.idle_timeout, shutdown.clone());
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let every_connection = u32::try_from(limits.max_connections).expect("BXB_MAX_CONNECTIONS is validated to fit");
    if tokio::time::timeout(drain, open.acquire_many(every_connection)).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the request timeout");
    }
}

/// Serves one connection under its `permit` of the connection cap, counting its requests in
/// flight for the idle timeout.
fn spawn_connection(
    stream: TcpStream,
    builder: &Builder<TokioExecutor>,
    app: Router,
    permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (requests, requests_seen) = watch::channel(0usize);
    let (requests, routes) = (Arc::new(requests), TowerToHyperService::new(app));
    let service = service_fn(move |request| {
        let in_flight = RequestInFlight::begin(&requests);
        let response = routes.call(request);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    tokio::spawn(async move {
        let _open = permit;
        metrics::gauge!("bxb_gateway_open_connections").increment(1.0);
        let connection = std::pin::pin!(connection);
        drive(connection, |c| c.graceful_shutdown(), requests_seen, idle_timeout, shutdown).await;
        metrics::gauge!("bxb_gateway_open_connections").decrement(1.0);
    });
}

/// A connection over the cap: answered 503 while fewer than [`MAX_REFUSING`] are being
/// answered, else dropped here, i.e. closed without an answer.
fn refuse(stream: TcpStream, builder: &Builder<TokioExecutor>, refusing: &Arc<Semaphore>, max_connections: usize) {
    metrics::counter!("bxb_gateway_connections_refused_total").increment(1);
    let Ok(refusal) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let answer =
        builder.serve_connection(TokioIo::new(stream), service_fn(move |request| overloaded(request, max_connections))).into_owned();
    tokio::spawn(async move {
        let _refusal = refusal;
        let _ = tokio::time::timeout(REFUSAL_DEADLINE, answer).await;
    });
}

/// Runs one connection to its end: by itself, or once it has idled for `idle_timeout` or
/// `shutdown` is cancelled, by asking it to close, and dropping it if it has not closed
/// [`CLOSE_GRACE`] after its last request in flight.
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    mut requests: watch::Receiver<usize>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        () = until_idle(&mut requests, idle_timeout) => {
            metrics::counter!("bxb_gateway_idle_connections_closed_total").increment(1);
            tracing::debug!(idle_timeout_ms = idle_timeout.as_millis() as u64, "closing an idle connection");
            None
        }
        () = shutdown.cancelled() => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            graceful_shutdown(connection.as_mut());
            tokio::select! {
                ended = connection.as_mut() => ended,
                () = until_idle(&mut requests, CLOSE_GRACE) => return,
            }
        }
    };
    // Errors here are the client's (reset, header timeout, malformed HTTP): nothing to do.
    if let Err(error) = ended {
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

/// Returns once no request has been in flight for `timeout` (counted from now, or from the end
/// of the last request in flight).
async fn until_idle(requests: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if requests.wait_for(|in_flight| *in_flight == 0).await.is_err() {
            return;
        }
        if tokio::time::timeout(timeout, requests.changed()).await.is_err() {
            return;
        }
    }
}

/// Counts a request in flight on its connection until it is answered (or hyper drops it).
struct RequestInFlight(Arc<watch::Sender<usize>>);

impl RequestInFlight {
    fn begin(requests: &Arc<watch::Sender<usize>>) -> Self {
        requests.send_modify(|in_flight| *in_flight += 1);
        Self(requests.clone())
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.send_modify(|in_flight| *in_flight -= 1);
    }
}

/// Serves connections over the cap: one request each on HTTP/1, and no waiting for slow ones.
fn refusal_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(false).timer(TokioTimer::new()).header_read_timeout(REFUSAL_DEADLINE);
    builder
}

async fn overloaded(request: Request<Incoming>, max_connections: usize) -> Result<Response<axum::body::Body>, Infallible> {
    let error = GatewayError::Overloaded { setting: "BXB_MAX_CONNECTIONS", limit: max_connections };
    error.log();
    let mut response = error.into_response();
    if request.version() < Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// A connection that failed before it was accepted concerns only that client; anything else
/// (e.g. out of file descriptors) would spin, so wait a little before accepting again.
async fn pause_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
