//! The cap on ingest requests being handled at once (`BXB_MAX_REQUESTS_IN_FLIGHT`). Past it a
//! request is answered 503 (`overloaded`, `Retry-After`) at once, before its body is read,
//! instead of queueing: what the gateway holds stays bounded by the cap times the body limit,
//! and a client learns to come back rather than waiting behind a slow Kafka.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::GatewayError;

/// The permits of the requests in flight, shared by every connection.
#[derive(Debug, Clone)]
pub struct InFlightLimit {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl InFlightLimit {
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)), limit }
    }
}

/// Middleware of the ingest routes: holds a permit while the request is handled.
pub async fn admit(State(in_flight): State<InFlightLimit>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.permits.clone().try_acquire_owned() else {
        let error = GatewayError::Overloaded { setting: "BXB_MAX_REQUESTS_IN_FLIGHT", limit: in_flight.limit };
        error.log();
        return error.into_response();
    };
    metrics::gauge!("bxb_gateway_requests_in_flight").increment(1.0);
    let response = next.run(request).await;
    metrics::gauge!("bxb_gateway_requests_in_flight").decrement(1.0);
    response
}
