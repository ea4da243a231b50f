//! The HTTP API: `POST /v1/events`, `POST /v1/events/batch`, `GET /openapi.json`, plus the
//! operational routes of `bxb_telemetry::health`.
//!
//! A request goes: authenticate → refused if its organization's rate bucket is empty → content
//! type → body (size-limited) → parse and validate → rate limit (a token per event) → encode,
//! size-check and publish → 202 once Kafka has every event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bxb_event::ingest::{parse_batch, parse_single, ParseContext, TimestampWindow};
use bxb_event::Event;
use bxb_publish::Publisher;
use bxb_telemetry::health::Readiness;
use serde::Serialize;
use tracing::field::{display, Empty};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::auth::KeyStore;
use crate::config::LimitArgs;
use crate::error::{ErrorBody, GatewayError};
use crate::limits::rate::{self, RateLimiter};

/// Everything a request needs, shared by all of them.
pub struct AppState {
    pub keys: Arc<KeyStore>,
    pub publisher: Publisher,
    pub rate_limiter: Option<RateLimiter>,
    pub limits: LimitArgs,
    pub window: TimestampWindow,
    pub request_timeout: Duration,
    pub in_flight: crate::limits::in_flight::InFlightLimit,
}

/// The body of a 202.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// How many events Kafka now holds.
    pub accepted: usize,
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Single,
    Batch,
}

pub fn router(state: Arc<AppState>, readiness: Readiness) -> Router {
    let max_body_bytes = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/v1/events/batch", post(post_batch))
        .route_layer(middleware::from_fn_with_state(state.in_flight.clone(), crate::limits::in_flight::admit))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
        .route("/openapi.json", get(crate::openapi::serve))
        .merge(bxb_telemetry::health::router(readiness))
        .fallback(|| async { GatewayError::NotFound })
        .layer(middleware::from_fn(record_request))
}

#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(content = crate::openapi::EventJson, content_type = "application/json"),
    responses(
        (status = 202, description = "Kafka holds the event", body = Accepted),
        (status = 400, description = "`invalid_json`: the body is not one JSON event object", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key` or `revoked_api_key`", body = ErrorBody),
        (status = 403, description = "`organization_mismatch`: organization_id is not the key's", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive within the request timeout", body = ErrorBody),
        (status = 413, description = "`body_too_large` or `record_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not declared as JSON", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the problems by field (the first 100, `total_errors` counts all)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the organization is over its rate (an organization with no allowance left is refused before its body is read); see Retry-After", body = ErrorBody),
        (status = 503, description = "`kafka_unavailable`, `kafka_queue_full`, `schema_not_registered` or `request_timeout`; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn post_event(State(app): State<Arc<AppState>>, request: Request) -> Response {
    ingest(app, request, Endpoint::Single).await
}

#[utoipa::path(
    post, path = "/v1/events/batch", tag = "events",
    request_body(content = crate::openapi::BatchJson, content_type = "application/json"),
    responses(
        (status = 202, description = "Kafka holds every event of the batch", body = Accepted),
        (status = 400, description = "`invalid_json`: the body is not `{\"events\": [...]}`", body = ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key` or `revoked_api_key`", body = ErrorBody),
        (status = 403, description = "`organization_mismatch`: an event names another organization", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive within the request timeout", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `batch_too_large` or `record_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not declared as JSON", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the problems by event index and field (the first 100, `total_errors` counts all); nothing was published", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the organization is over its rate (an organization with no allowance left is refused before its body is read); see Retry-After", body = ErrorBody),
        (status = 503, description = "`kafka_unavailable`, `kafka_queue_full`, `schema_not_registered` or `request_timeout`; see Retry-After. Retrying is safe: events are deduplicated by (organization_id, transaction_id)", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub(crate) async fn post_batch(State(app): State<Arc<AppState>>, request: Request) -> Response {
    ingest(app, request, Endpoint::Batch).await
}

async fn ingest(app: Arc<AppState>, request: Request, endpoint: Endpoint) -> Response {
    let span = tracing::info_span!("ingest", organization_id = Empty, events = Empty);
    // Continue the client's trace when it sends one; the Kafka headers then carry it on.
    bxb_telemetry::trace_context::set_parent_from(&span, request.headers().iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    let result = accept(&app, request, endpoint, &span).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(accepted) => {
            metrics::counter!("bxb_gateway_events_accepted_total").increment(accepted as u64);
            (StatusCode::ACCEPTED, Json(Accepted { accepted })).into_response()
        }
        Err((error, events)) => {
            error.log();
            if events > 0 {
                metrics::counter!("bxb_gateway_events_rejected_total", "reason" => error.code()).increment(events as u64);
            }
            error.into_response()
        }
    }
}

/// Accepts a request's events; on failure also says how many events it rejected (0 when the
/// body was never understood).
async fn accept(app: &AppState, request: Request, endpoint: Endpoint, span: &tracing::Span) -> Result<usize, (GatewayError, usize)> {
    let received_at_ms = bxb_event::clock::now_ms();
    let unknown_count = |e| (e, 0);
    let organization_id = app.keys.authenticate(request.headers()).map_err(unknown_count)?;
    span.record("organization_id", display(organization_id));
    let rate_limited = |wait| GatewayError::RateLimited { retry_after_secs: rate::retry_after_secs(wait) };
    if let Some(limiter) = &app.rate_limiter {
        // Over the limit already: refused before the body costs reading and parsing. The events
        // are charged once counted, below.
        limiter.check_not_empty(organization_id, Instant::now()).map_err(|wait| (rate_limited(wait), 0))?;
    }
    check_content_type(request.headers()).map_err(unknown_count)?;
    // The upload and the publishing each get the request timeout: a slow client is the
    // client's problem (408), a slow Kafka the service's (503 + Retry-After).
    let body = tokio::time::timeout(app.request_timeout, read_body(request, app.limits.max_body_bytes))
        .await
        .unwrap_or(Err(GatewayError::BodyTimeout))
        .map_err(unknown_count)?;

    let context = ParseContext { organization_id, received_at_ms, window: app.window, max_batch_events: app.limits.max_batch_events };
    let parsed = match endpoint {
        Endpoint::Single => parse_single(&body, &context),
        Endpoint::Batch => parse_batch(&body, &context),
    };
    drop(body);
    let events: Vec<Event> = parsed.map_err(|rejection| (GatewayError::from(rejection.refusal), rejection.events))?;
    let count = events.len();
    span.record("events", count);
    metrics::histogram!("bxb_gateway_request_size_events").record(count as f64);

    if let Some(limiter) = &app.rate_limiter {
        limiter.try_acquire(organization_id, count, Instant::now()).map_err(|wait| (rate_limited(wait), count))?;
    }
    tokio::time::timeout(app.request_timeout, app.publisher.publish(&events, span, received_at_ms))
        .await
        .map_or(Err(GatewayError::RequestTimeout), |published| published.map_err(GatewayError::from))
        .map_err(|e| (e, count))?;
    tracing::debug!(events = count, "events accepted");
    Ok(count)
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedContentType)
    }
}

async fn read_body(request: Request, max_body_bytes: usize) -> Result<Bytes, GatewayError> {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_body_bytes) {
        return Err(GatewayError::BodyTooLarge { limit_bytes: max_body_bytes });
    }
    Bytes::from_request(request, &()).await.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            GatewayError::BodyTooLarge { limit_bytes: max_body_bytes }
        }
        other => GatewayError::InvalidJson(format!("the body could not be read: {other}")),
    })
}

/// Counts every request by route and status and times it.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| static_route(p.as_str()));
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bxb_gateway_requests_total", "route" => route, "status" => status).increment(1);
    metrics::histogram!("bxb_gateway_request_duration_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// Routes as static labels (bounded cardinality, no allocation).
fn static_route(path: &str) -> &'static str {
    match path {
        "/v1/events" => "/v1/events",
        "/v1/events/batch" => "/v1/events/batch",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.bxb+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            assert_eq!(check_content_type(&headers).is_ok(), ok, "{value}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
