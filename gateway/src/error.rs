//! The one error type of the gateway. Each variant decides, in one place, the HTTP status, the
//! stable `code` of the JSON body, the `Retry-After` header and the log level. The refusals of the
//! parser ([`bxb_event::ingest::Refusal`]) and the errors of publishing
//! ([`bxb_publish::PublishError`]) become gateway errors here and nowhere else.
//!
//! A body stays small whatever the request held: problems come as a [`ProblemList`] (the first
//! ones, at most `MAX_LISTED_PROBLEMS`, plus the count of all), so an error answer is at most
//! `bxb_event::ingest::MAX_ERROR_BODY_BYTES` (64 KiB).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bxb_event::ingest::{Problem, ProblemList, Refusal};
use bxb_publish::PublishError;
use serde::Serialize;
use utoipa::ToSchema;

/// One problem of one event of the request: which event (0-based position; 0 for
/// `POST /v1/events`), which field, a stable code and a human message. The API's description
/// of [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EventError {
    pub index: usize,
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl EventError {
    pub fn new(index: usize, field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { index, field: field.into(), code, message: message.into() }
    }
}

impl From<Problem> for EventError {
    fn from(Problem { index, field, code, message }: Problem) -> Self {
        Self { index, field, code, message }
    }
}

/// The body of every error response, at most 64 KiB.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable reason, e.g. `validation_failed`.
    #[schema(example = "validation_failed")]
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The problems by event and field, in the order they were found: all of them, or the first
    /// 100 (fewer if their text passes 48 KiB) when there are more (empty when the error is not
    /// about events).
    #[schema(max_items = 100)]
    pub errors: Vec<EventError>,
    /// How many problems there are in all; more than `errors` lists when it was cut.
    #[schema(example = 3)]
    pub total_errors: usize,
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Neither `Authorization: Bearer <key>` nor `X-API-Key` was sent.
    #[error("missing API key: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    MissingApiKey,
    /// The key matches no known key.
    #[error("unknown API key")]
    InvalidApiKey,
    /// The key was revoked.
    #[error("this API key has been revoked")]
    RevokedApiKey,
    /// An event names another organization than the one of the API key.
    #[error("events may only be sent for the organization of the API key")]
    OrganizationMismatch { problems: ProblemList },
    /// The body is not declared as JSON.
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedContentType,
    /// The body is not JSON, or not of the expected shape.
    #[error("the body is not valid JSON of the expected shape: {0}")]
    InvalidJson(String),
    /// The body is larger than the configured limit.
    #[error("the body is larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    /// The batch holds more events than the configured limit.
    #[error("the batch holds {events} events, at most {limit} are allowed")]
    BatchTooLarge { events: usize, limit: usize },
    /// An event, encoded, is larger than a Kafka record may be.
    #[error("events too large to publish")]
    RecordTooLarge { problems: ProblemList },
    /// Events break field rules; nothing of the request was published.
    #[error("{} problem(s) in the events; nothing was published", problems.total())]
    Validation { problems: ProblemList },
    /// The organization sent more events than its rate allows.
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The event schema is not registered yet, so nothing can be encoded.
    #[error("the gateway is starting: the event schema is not registered yet")]
    SchemaNotRegistered,
    /// The producer queue stayed full past the enqueue timeout.
    #[error("Kafka is not keeping up: the producer queue is full")]
    KafkaQueueFull,
    /// Kafka did not confirm every event in time (broker down, delivery timeout); some events of
    /// the request may be stored, a retry is safe because consumers deduplicate.
    #[error("Kafka did not confirm the events in time: {0}")]
    KafkaUnavailable(String),
    /// The client did not send its whole body within the request timeout (a slow or stalled
    /// upload); nothing was published.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Publishing took longer than the request timeout.
    #[error("the request took too long")]
    RequestTimeout,
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// The gateway is at one of its capacity limits (`setting`, e.g. `BXB_MAX_CONNECTIONS`): it
    /// refuses rather than grows; nothing of the request was read or published.
    #[error("the gateway is at its limit of {limit} ({setting}); retry shortly")]
    Overloaded { setting: &'static str, limit: usize },
    /// The API keys cannot be trusted: not loaded yet (`stale_for_secs` is `None`), or not
    /// refreshed for longer than `BXB_API_KEYS_MAX_STALENESS_MS`, so a key revoked meanwhile
    /// would still pass. Nothing was published.
    #[error("{}", keys_unavailable_message(*stale_for_secs))]
    ApiKeysUnavailable { stale_for_secs: Option<u64> },
}

fn keys_unavailable_message(stale_for_secs: Option<u64>) -> String {
    match stale_for_secs {
        None => "the API keys are not loaded yet".to_owned(),
        Some(secs) => format!("the API keys could not be refreshed for {secs} s"),
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::MissingApiKey | Self::InvalidApiKey | Self::RevokedApiKey => StatusCode::UNAUTHORIZED,
            Self::OrganizationMismatch { .. } => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge { .. } | Self::BatchTooLarge { .. } | Self::RecordTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::SchemaNotRegistered | Self::KafkaQueueFull | Self::KafkaUnavailable(_) | Self::RequestTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Overloaded { .. } | Self::ApiKeysUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable `code` of the body; also the `reason` label of the rejected-events metric.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RevokedApiKey => "revoked_api_key",
            Self::OrganizationMismatch { .. } => "organization_mismatch",
            Self::UnsupportedContentType => "unsupported_media_type",
            Self::InvalidJson(_) => "invalid_json",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::RecordTooLarge { .. } => "record_too_large",
            Self::Validation { .. } => "validation_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::SchemaNotRegistered => "schema_not_registered",
            Self::KafkaQueueFull => "kafka_queue_full",
            Self::KafkaUnavailable(_) => "kafka_unavailable",
            Self::BodyTimeout => "body_timeout",
            Self::RequestTimeout => "request_timeout",
            Self::NotFound => "not_found",
            Self::Overloaded { .. } => "overloaded",
            Self::ApiKeysUnavailable { .. } => "api_keys_unavailable",
        }
    }

    /// Seconds a client should wait before retrying, for the errors a retry can cure.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            Self::KafkaQueueFull | Self::Overloaded { .. } => Some(1),
            Self::ApiKeysUnavailable { .. } => Some(5),
            Self::SchemaNotRegistered | Self::KafkaUnavailable(_) | Self::RequestTimeout => Some(5),
            _ => None,
        }
    }

    /// Client mistakes are routine (debug); failing to publish is the operator's concern (warn).
    /// Refusals at capacity are counted (`bxb_gateway_requests_total`, status 503), not logged
    /// one by one: a line per refused request would add to the overload.
    pub fn log(&self) {
        if self.status().is_server_error() && !matches!(self, Self::Overloaded { .. }) {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "request rejected");
        }
    }

    /// The JSON body clients see for this error.
    pub fn into_body(self) -> ErrorBody {
        let code = self.code();
        let message = self.to_string();
        match self {
            Self::OrganizationMismatch { problems } | Self::RecordTooLarge { problems } | Self::Validation { problems } => {
                let total_errors = problems.total();
                ErrorBody { code, message, errors: problems.into_listed().into_iter().map(EventError::from).collect(), total_errors }
            }
            _ => ErrorBody { code, message, errors: Vec::new(), total_errors: 0 },
        }
    }
}

impl From<Refusal> for GatewayError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::InvalidJson(message) => Self::InvalidJson(message),
            Refusal::BatchTooLarge { events, limit } => Self::BatchTooLarge { events, limit },
            Refusal::Invalid { problems } => Self::Validation { problems },
            Refusal::OrganizationMismatch { problems } => Self::OrganizationMismatch { problems },
        }
    }
}

impl From<PublishError> for GatewayError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::SchemaNotRegistered => Self::SchemaNotRegistered,
            PublishError::RecordTooLarge { problems } => Self::RecordTooLarge { problems },
            PublishError::QueueFull => Self::KafkaQueueFull,
            PublishError::KafkaUnavailable(reason) => Self::KafkaUnavailable(reason),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_secs();
        let body = self.into_body();
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn list(problems: &[(usize, &str, &'static str, &str)]) -> ProblemList {
        problems.iter().map(|&(index, field, code, message)| Problem::new(index, field, code, message)).collect()
    }

    #[tokio::test]
    async fn validation_errors_list_every_problem() {
        let error =
            GatewayError::Validation { problems: list(&[(0, "code", "invalid_characters", "bad"), (3, "timestamp", "too_old", "old")]) };
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let body = body_of(response).await;
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["errors"][1]["index"], 3);
        assert_eq!(body["errors"][1]["field"], "timestamp");
        assert_eq!(body["errors"][1]["code"], "too_old");
        assert_eq!(body["total_errors"], 2);
    }

    #[tokio::test]
    async fn countless_problems_are_answered_with_the_first_and_their_count() {
        let wide = "\u{1}".repeat(64);
        let problems: ProblemList =
            (0..100_000).map(|i| Problem::new(i, wide.clone(), "unknown_field", format!("{wide:?} is not an event field"))).collect();
        let response = GatewayError::Validation { problems }.into_response();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(bytes.len() <= bxb_event::ingest::MAX_ERROR_BODY_BYTES, "{} bytes", bytes.len());
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["total_errors"], 100_000);
        assert_eq!(body["message"], "100000 problem(s) in the events; nothing was published");
        assert!((1..=bxb_event::ingest::MAX_LISTED_PROBLEMS).contains(&body["errors"].as_array().unwrap().len()));
    }

    #[tokio::test]
    async fn retryable_errors_carry_retry_after() {
        for (error, status, secs) in [
            (GatewayError::RateLimited { retry_after_secs: 3 }, StatusCode::TOO_MANY_REQUESTS, "3"),
            (GatewayError::RateLimited { retry_after_secs: 0 }, StatusCode::TOO_MANY_REQUESTS, "1"),
            (GatewayError::KafkaUnavailable("down".into()), StatusCode::SERVICE_UNAVAILABLE, "5"),
            (GatewayError::KafkaQueueFull, StatusCode::SERVICE_UNAVAILABLE, "1"),
            (GatewayError::SchemaNotRegistered, StatusCode::SERVICE_UNAVAILABLE, "5"),
            (GatewayError::Overloaded { setting: "BXB_MAX_CONNECTIONS", limit: 4 }, StatusCode::SERVICE_UNAVAILABLE, "1"),
            (GatewayError::ApiKeysUnavailable { stale_for_secs: None }, StatusCode::SERVICE_UNAVAILABLE, "5"),
            (GatewayError::ApiKeysUnavailable { stale_for_secs: Some(301) }, StatusCode::SERVICE_UNAVAILABLE, "5"),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::RETRY_AFTER], secs);
            let body = body_of(response).await;
            assert!(body["errors"].as_array().unwrap().is_empty());
            assert_eq!(body["total_errors"], 0);
        }
    }

    #[test]
    fn every_refusal_of_the_parser_is_a_client_error_with_its_code_and_problems() {
        let problems = || list(&[(2, "code", "invalid_characters", "bad")]);
        for (refusal, status) in [
            (Refusal::InvalidJson("x".into()), 400),
            (Refusal::BatchTooLarge { events: 2, limit: 1 }, 413),
            (Refusal::Invalid { problems: problems() }, 422),
            (Refusal::OrganizationMismatch { problems: problems() }, 403),
        ] {
            let code = refusal.code();
            let expected_errors: Vec<EventError> = refusal.problems().iter().cloned().map(EventError::from).collect();
            let total = refusal.total_problems();
            let error = GatewayError::from(refusal);
            assert_eq!((error.status().as_u16(), error.code()), (status, code), "{error}");
            let body = error.into_body();
            assert_eq!((body.errors, body.total_errors), (expected_errors, total));
        }
    }

    /// The parser's invariants bound the answer of every body they check (`invariants::answer`):
    /// the gateway's answer is that one, with its own wording of a few messages.
    #[test]
    fn the_answer_to_a_refusal_is_the_one_the_parsers_invariants_bound() {
        use bxb_event::ingest::invariants::{answer, check_body, context, Endpoint};
        let floods = [
            (Endpoint::Single, format!("{{{}}}", vec![r#""":0"#; 10_000].join(","))),
            (Endpoint::Batch, format!(r#"{{"events":[{}]}}"#, ["{}"; 10].join(","))),
            (
                Endpoint::Batch,
                format!(r#"{{"events":[{}]}}"#, [r#"{"organization_id":"00000000-0000-0000-0000-000000000001"}"#; 10].join(",")),
            ),
            (Endpoint::Batch, format!(r#"{{"events":"{}"}}"#, "x".repeat(10_000))),
            (Endpoint::Batch, format!(r#"{{"events":[{}]}}"#, ["{}"; 11].join(","))),
        ];
        for (endpoint, body) in floods {
            assert!(check_body(endpoint, body.as_bytes(), &context(10)).is_err());
            let parse = if endpoint == Endpoint::Single { bxb_event::ingest::parse_single } else { bxb_event::ingest::parse_batch };
            let refusal = parse(body.as_bytes(), &context(10)).unwrap_err().refusal;
            let bounded = answer(&refusal);
            let sent = serde_json::to_value(GatewayError::from(refusal).into_body()).unwrap();
            let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&sent), keys(&bounded));
            for key in ["code", "errors", "total_errors"] {
                assert_eq!(sent[key], bounded[key], "{key}");
            }
            let (sent_len, bounded_len) = (sent["message"].as_str().unwrap().len(), bounded["message"].as_str().unwrap().len());
            assert!(sent_len <= bounded_len + 32, "the gateway's message is {sent_len} bytes, the bounded one {bounded_len}");
        }
    }

    #[test]
    fn every_publish_error_keeps_its_status_code_and_message() {
        let too_large = || list(&[(1, "", "record_too_large", "the event encodes to 9 bytes")]);
        for (error, status, code, message) in [
            (
                PublishError::SchemaNotRegistered,
                503,
                "schema_not_registered",
                "the gateway is starting: the event schema is not registered yet",
            ),
            (PublishError::QueueFull, 503, "kafka_queue_full", "Kafka is not keeping up: the producer queue is full"),
            (PublishError::KafkaUnavailable("down".into()), 503, "kafka_unavailable", "Kafka did not confirm the events in time: down"),
            (PublishError::RecordTooLarge { problems: too_large() }, 413, "record_too_large", "events too large to publish"),
        ] {
            let error = GatewayError::from(error);
            assert_eq!((error.status().as_u16(), error.code(), error.to_string().as_str()), (status, code, message));
        }
        let body = GatewayError::from(PublishError::RecordTooLarge { problems: too_large() }).into_body();
        assert_eq!((body.errors, body.total_errors), (vec![EventError::new(1, "", "record_too_large", "the event encodes to 9 bytes")], 1));
    }

    #[test]
    fn every_status_of_the_api() {
        for (error, status, code) in [
            (GatewayError::InvalidJson("x".into()), 400, "invalid_json"),
            (GatewayError::MissingApiKey, 401, "missing_api_key"),
            (GatewayError::InvalidApiKey, 401, "invalid_api_key"),
            (GatewayError::RevokedApiKey, 401, "revoked_api_key"),
            (GatewayError::OrganizationMismatch { problems: ProblemList::default() }, 403, "organization_mismatch"),
            (GatewayError::BodyTooLarge { limit_bytes: 1 }, 413, "body_too_large"),
            (GatewayError::BatchTooLarge { events: 2, limit: 1 }, 413, "batch_too_large"),
            (GatewayError::RecordTooLarge { problems: ProblemList::default() }, 413, "record_too_large"),
            (GatewayError::UnsupportedContentType, 415, "unsupported_media_type"),
            (GatewayError::Validation { problems: ProblemList::default() }, 422, "validation_failed"),
            (GatewayError::BodyTimeout, 408, "body_timeout"),
            (GatewayError::RequestTimeout, 503, "request_timeout"),
            (GatewayError::Overloaded { setting: "BXB_MAX_REQUESTS_IN_FLIGHT", limit: 2 }, 503, "overloaded"),
            (GatewayError::ApiKeysUnavailable { stale_for_secs: Some(5) }, 503, "api_keys_unavailable"),
        ] {
            assert_eq!((error.status().as_u16(), error.code()), (status, code), "{error}");
        }
    }
}
