//! `GET /openapi.json`: the OpenAPI 3.1 description of the API, generated from the handlers'
//! annotations and the types below.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ErrorBody, EventError};
use crate::routes::Accepted;

/// One usage event as clients send it. `organization_id` is taken from the API key.
#[allow(dead_code)] // Documentation only: the parser reads events field by field.
#[derive(Deserialize, ToSchema)]
pub struct EventJson {
    /// Idempotency key: an event with the same (organization, transaction_id) is counted once. 1 to 255 characters.
    #[schema(example = "tx-20240501-0001", min_length = 1, max_length = 255)]
    transaction_id: String,
    /// The organization's own id of the billed customer. 1 to 255 characters.
    #[schema(example = "customer-42", min_length = 1, max_length = 255)]
    external_customer_id: String,
    /// Metric code: 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    #[schema(example = "api_calls", pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    code: String,
    /// When the usage happened; defaults to the receive time. Must lie within the configured window
    /// (by default at most 30 days old and at most 5 minutes ahead). Stored with millisecond precision.
    timestamp: Option<Timestamp>,
    /// Any JSON object (at most 64 KiB, nesting depth at most 16); stored byte for byte.
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
    /// Optional finite number.
    #[schema(example = 1.5)]
    value: Option<f64>,
    /// Optional exact decimal (at most 38 digits, 12 after the point), as a string or a JSON number taken by its text.
    #[schema(example = "12.50")]
    decimal_value: Option<String>,
    /// Optional; must equal the organization of the API key (else 403).
    organization_id: Option<uuid::Uuid>,
}

/// An RFC 3339 date-time or epoch milliseconds.
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Timestamp {
    /// e.g. `2024-05-01T12:00:00.123Z`; digits below the millisecond are truncated.
    #[schema(value_type = String, format = DateTime)]
    Rfc3339(String),
    /// Milliseconds since the Unix epoch.
    EpochMilliseconds(i64),
}

/// A batch of events, published all or nothing.
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
pub struct BatchJson {
    /// 1 to the configured maximum (default 1000) events.
    events: Vec<EventJson>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("The API key")).build()),
        );
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "bxb gateway", description = "Usage event ingestion. A 202 means Kafka durably holds every event of the request."),
    paths(crate::routes::post_event, crate::routes::post_batch, healthz, readyz, metrics),
    components(schemas(EventJson, BatchJson, Timestamp, Accepted, ErrorBody, EventError)),
    modifiers(&Security),
    tags((name = "events", description = "Event ingestion"), (name = "operations", description = "Health and metrics"))
)]
pub struct ApiDoc;

static SPEC_JSON: LazyLock<String> = LazyLock::new(|| ApiDoc::openapi().to_pretty_json().expect("the spec serialises"));

pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SPEC_JSON.as_str())
}

// The operational routes are served by `bxb_telemetry::health`; these describe them.

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
#[allow(dead_code)]
fn healthz() {}

/// Kafka serves the events topic, the event schema is registered and the API keys are loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "not ready; `failing` lists the checks: `kafka`, `schema`, `api_keys`"),
))]
#[allow(dead_code)]
fn readyz() {}

/// Prometheus metrics (`bxb_gateway_*`).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
#[allow(dead_code)]
fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_schema_names_exactly_the_fields_the_parser_reads() {
        let spec: serde_json::Value = serde_json::from_str(&SPEC_JSON).unwrap();
        let properties = spec["components"]["schemas"]["EventJson"]["properties"].as_object().unwrap();
        let mut documented: Vec<&str> = properties.keys().map(String::as_str).collect();
        let mut parsed = bxb_event::ingest::FIELDS.to_vec();
        documented.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(documented, parsed);
    }

    #[test]
    fn the_error_body_says_how_many_problems_it_lists_and_counts_them_all() {
        let spec: serde_json::Value = serde_json::from_str(&SPEC_JSON).unwrap();
        let error_body = &spec["components"]["schemas"]["ErrorBody"];
        assert_eq!(error_body["properties"]["errors"]["maxItems"], bxb_event::ingest::MAX_LISTED_PROBLEMS);
        assert!(error_body["properties"]["total_errors"].is_object(), "{error_body}");
        let required: Vec<&str> = error_body["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert!(required.contains(&"total_errors"), "{required:?}");
    }

    #[test]
    fn every_route_is_described() {
        let spec: serde_json::Value = serde_json::from_str(&SPEC_JSON).unwrap();
        for path in ["/v1/events", "/v1/events/batch", "/healthz", "/readyz", "/metrics"] {
            assert!(spec["paths"][path].is_object(), "{path}");
        }
        let responses = spec["paths"]["/v1/events/batch"]["post"]["responses"].as_object().unwrap();
        let mut statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, ["202", "400", "401", "403", "408", "413", "415", "422", "429", "503"]);
    }
}
