//! The Confluent wire format through a Confluent-compatible schema registry (Confluent Schema
//! Registry, or Apicurio Registry's `/apis/ccompat/v7`).
//!
//! A record value is `0x00`, the schema id as a big-endian `u32`, then the Avro datum. The
//! gateway and direct producers register `schemas/avro/event.avsc` under `<topic>-value` with
//! BACKWARD compatibility; consumers read any writer schema that resolves to the schema they
//! were built with ([`crate::writer_schema`]), so a producer that adds an optional field does
//! not break them.
//!
//! - [`EventDecoder`] fetches a record's writer schema by id (`lookup`), judges it once and
//!   reads datums with it (`decoder`).
//! - A registry that cannot answer is a [`LookupError`], retried by the consumer, never a
//!   [`PoisonReason`] (`poison`).

use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::avro::{self, EVENT_SCHEMA_JSON};
use crate::Event;

mod decoder;
mod lookup;
mod poison;

pub use decoder::{decode_event_datum, decode_with_plan, DecodeError, EventDecoder};
pub use lookup::LookupError;
pub use poison::{PoisonClass, PoisonReason};

/// The registry of the local stack (`./dev/up`): the default of `BXB_SCHEMA_REGISTRY_URL`.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:18081/apis/ccompat/v7";

const MAGIC_BYTE: u8 = 0;
const HEADER_LEN: usize = 5;

/// How to reach the schema registry. Argument ids carry the `schema_registry_` prefix so the
/// struct can be flattened beside other settings that have a `url` or a `password`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Base URL of the Confluent-compatible API (for Apicurio: `.../apis/ccompat/v7`).
    #[arg(id = "schema_registry_url", long = "schema-registry-url", env = "BXB_SCHEMA_REGISTRY_URL", default_value = DEFAULT_REGISTRY_URL)]
    pub url: String,
    /// Timeout of one registry request.
    #[arg(
        id = "schema_registry_timeout_ms",
        long = "schema-registry-timeout-ms",
        env = "BXB_SCHEMA_REGISTRY_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub timeout_ms: u64,
    /// Basic-auth user, if the registry requires one.
    #[arg(id = "schema_registry_username", long = "schema-registry-username", env = "BXB_SCHEMA_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Basic-auth password (never printed).
    #[arg(
        id = "schema_registry_password",
        long = "schema-registry-password",
        env = "BXB_SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl RegistryArgs {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self { url: url.into(), timeout_ms: 5_000, username: None, password: None }
    }
}

/// The registry subject of a topic's values (the topic-name strategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The settings cannot make a client (bad URL, TLS set-up).
    #[error("schema registry settings: {0}")]
    Settings(String),
    /// The registry could not be reached or answered with a server error; try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused the request (e.g. the schema breaks the subject's compatibility rule).
    #[error("schema registry refused the request: {0}")]
    Refused(String),
}

impl From<SRCError> for RegistryError {
    fn from(e: SRCError) -> Self {
        if e.retriable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Refused(e.to_string())
        }
    }
}

/// A client of the registry for the event schema.
#[derive(Clone)]
pub struct SchemaRegistry {
    args: RegistryArgs,
    settings: SrSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").field("url", &self.args.url).finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    pub fn new(args: &RegistryArgs) -> Result<Self, RegistryError> {
        let timeout = Duration::from_millis(args.timeout_ms);
        let url = args.url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(url.clone());
        builder.set_timeout(timeout);
        if let Some(user) = &args.username {
            builder.set_basic_authorization(user, args.password.as_deref());
        }
        let settings = builder.build().map_err(|e| RegistryError::Settings(e.to_string()))?;
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| RegistryError::Settings(e.to_string()))?;
        Ok(Self { args: RegistryArgs { url, ..args.clone() }, settings, http })
    }

    /// Sets the subject's compatibility rule to BACKWARD and registers the event schema under it
    /// (a no-op when that exact schema is already there). Returns the schema id to encode with.
    pub async fn register_event_schema(&self, subject: &str) -> Result<u32, RegistryError> {
        self.register_schema(subject, EVENT_SCHEMA_JSON).await
    }

    /// Registers any Avro schema text under `subject` with BACKWARD compatibility.
    pub async fn register_schema(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        self.set_backward_compatibility(subject).await?;
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema_json.to_owned());
        let registered = post_schema(&self.settings, subject.to_owned(), supplied).await?;
        Ok(registered.id)
    }

    async fn set_backward_compatibility(&self, subject: &str) -> Result<(), RegistryError> {
        let mut request = self
            .http
            .put(format!("{}/config/{subject}", self.args.url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(r#"{"compatibility":"BACKWARD"}"#);
        if let Some(user) = &self.args.username {
            request = request.basic_auth(user, self.args.password.as_deref());
        }
        let response = request.send().await.map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            let error = format!("setting compatibility of {subject}: {status} {body}");
            if status.is_server_error() {
                Err(RegistryError::Unavailable(error))
            } else {
                Err(RegistryError::Refused(error))
            }
        }
    }

    /// A decoder sharing this registry's settings.
    pub fn decoder(&self) -> EventDecoder {
        EventDecoder::new(lookup::SchemaFetcher::new(&self.args, self.http.clone()))
    }
}

/// Writes events in the Confluent wire format with a registered schema id.
#[derive(Debug, Clone, Copy)]
pub struct EventEncoder {
    schema_id: u32,
}

impl EventEncoder {
    pub fn new(schema_id: u32) -> Self {
        Self { schema_id }
    }

    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    pub fn encode(&self, event: &Event) -> Vec<u8> {
        frame(self.schema_id, &avro::to_datum(event))
    }

    /// Clears `out` and writes the record value of `event` into it (the same bytes as
    /// [`Self::encode`]), reusing its allocation: for producers that encode many events.
    pub fn encode_into(&self, event: &Event, out: &mut Vec<u8>) {
        out.clear();
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&self.schema_id.to_be_bytes());
        avro::write_datum(event, out);
    }
}

/// Frames an Avro datum in the Confluent wire format.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a record value in the Confluent wire format into its schema id and Avro datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(decoder::poison(
            PoisonReason::InvalidWireFormat,
            format!("{} bytes not in the Confluent wire format (magic byte 0, 4-byte schema id, datum)", bytes.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event of the registry's tests (also `decoder`'s).
    pub(super) fn event() -> Event {
        Event {
            properties: r#"{"a":1}"#.into(),
            value: Some(2.5),
            decimal_value: Some("-1.25".parse().unwrap()),
            ..crate::test_support::event_of(uuid::Uuid::from_u128(42), "tx")
        }
    }

    #[test]
    fn encode_into_writes_what_encode_writes() {
        let event = event();
        let encoder = EventEncoder::new(0x0102_0304);
        let mut out = vec![9; 3];
        encoder.encode_into(&event, &mut out);
        assert_eq!(out, encoder.encode(&event));
    }

    #[test]
    fn frames_with_magic_byte_and_big_endian_id() {
        assert_eq!(frame(0x01020304, &[9, 9]), [0, 1, 2, 3, 4, 9, 9]);
        assert_eq!(unframe(&[0, 1, 2, 3, 4, 9, 9]).unwrap(), (0x01020304, &[9u8, 9][..]));
    }
}
