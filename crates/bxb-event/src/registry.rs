//! The Confluent wire format through a Confluent-compatible schema registry (Confluent Schema
//! Registry, or Apicurio Registry's `/apis/ccompat/v7`).
//!
//! A record value is `0x00`, the schema id as a big-endian `u32`, then the Avro datum. The
//! gateway and direct producers register `schemas/avro/event.avsc` under `<topic>-value` with
//! BACKWARD compatibility; consumers read any registered version and resolve it to the schema
//! they were built with, so a producer that adds an optional field does not break them.

use std::time::Duration;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::avro::{self, EVENT_SCHEMA, EVENT_SCHEMA_JSON};
use crate::validate::{self, FieldErrors};
use crate::Event;

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
    #[arg(id = "schema_registry_timeout_ms", long = "schema-registry-timeout-ms", env = "BXB_SCHEMA_REGISTRY_TIMEOUT_MS", default_value_t = 5_000)]
    pub timeout_ms: u64,
    /// Basic-auth user, if the registry requires one.
    #[arg(id = "schema_registry_username", long = "schema-registry-username", env = "BXB_SCHEMA_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Basic-auth password (never printed).
    #[arg(id = "schema_registry_password", long = "schema-registry-password", env = "BXB_SCHEMA_REGISTRY_PASSWORD", hide_env_values = true)]
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
        if e.retriable { Self::Unavailable(e.to_string()) } else { Self::Refused(e.to_string()) }
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
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RegistryError::Settings(e.to_string()))?;
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
            if status.is_server_error() { Err(RegistryError::Unavailable(error)) } else { Err(RegistryError::Refused(error)) }
        }
    }

    /// A decoder sharing this registry's settings.
    pub fn decoder(&self) -> EventDecoder {
        EventDecoder { inner: AvroDecoder::new(self.settings.clone()), is_event_schema: Default::default() }
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

/// Why a record value could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The registry could not be reached: transient, retry the record later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The record can never be decoded: dead-letter it with this reason.
    #[error("{reason}: {message}")]
    Poison { reason: PoisonReason, message: String },
}

/// The stable reason of a poison record, used in DLQ headers and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonReason {
    /// Empty value, or not starting with the magic byte and a schema id.
    InvalidWireFormat,
    /// The registry does not know the schema id.
    UnknownSchema,
    /// The bytes are not a datum of the writer schema.
    InvalidAvro,
    /// The writer schema cannot be resolved to the event schema (another record type).
    IncompatibleSchema,
    /// The event breaks a field rule.
    InvalidFields,
}

impl PoisonReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidWireFormat => "invalid_wire_format",
            Self::UnknownSchema => "unknown_schema",
            Self::InvalidAvro => "invalid_avro",
            Self::IncompatibleSchema => "incompatible_schema",
            Self::InvalidFields => "invalid_fields",
        }
    }
}

impl std::fmt::Display for PoisonReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn poison(reason: PoisonReason, message: impl Into<String>) -> DecodeError {
    DecodeError::Poison { reason, message: message.into() }
}

/// Reads record values written with any registered version of the event schema.
pub struct EventDecoder {
    inner: AvroDecoder,
    /// Per schema id: whether the writer schema is exactly the event schema, so the datum can be
    /// read directly (`avro::read_datum`) instead of through the generic reader and resolution.
    is_event_schema: std::sync::RwLock<std::collections::HashMap<u32, bool>>,
}

impl EventDecoder {
    /// Decodes and validates one record value.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Event, DecodeError> {
        let (schema_id, datum) = unframe(bytes.unwrap_or_default())?;
        let writer = self.inner.get_schema(schema_id).await.map_err(|e| {
            if e.retriable {
                DecodeError::Unavailable(e.to_string())
            } else {
                poison(PoisonReason::UnknownSchema, format!("schema id {schema_id}: {}", e.error))
            }
        })?;
        let direct = self.is_event_schema(schema_id, &writer.parsed);
        decode_event_datum(&writer.parsed, direct, datum)
    }
}

/// Splits a record value in the Confluent wire format into its schema id and Avro datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(poison(
            PoisonReason::InvalidWireFormat,
            format!("{} bytes not in the Confluent wire format (magic byte 0, 4-byte schema id, datum)", bytes.len()),
        )),
    }
}

/// Decodes and validates a datum written with `writer`, once its schema is known: `direct` when
/// `writer` is exactly [`EVENT_SCHEMA`] (read by [`avro::read_datum`]), otherwise through the
/// generic reader and schema resolution. Pure, so hostile bytes can be thrown at it without a
/// registry.
pub fn decode_event_datum(writer: &apache_avro::Schema, direct: bool, datum: &[u8]) -> Result<Event, DecodeError> {
    let event = if direct {
        avro::read_datum(datum).map_err(|e| match e {
            avro::ReadError::Malformed(message) => poison(PoisonReason::InvalidAvro, message),
            avro::ReadError::Field(e) => poison(PoisonReason::InvalidFields, FieldErrors(vec![e]).to_string()),
        })?
    } else {
        let value = decode_datum(writer, datum)?;
        avro::from_value(value).map_err(|e| poison(PoisonReason::InvalidFields, FieldErrors(vec![e]).to_string()))?
    };
    validate::validate(&event).map_err(|e| poison(PoisonReason::InvalidFields, e.to_string()))?;
    Ok(event)
}

impl EventDecoder {
    fn is_event_schema(&self, schema_id: u32, writer: &apache_avro::Schema) -> bool {
        if let Some(known) = self.is_event_schema.read().expect("schema cache lock").get(&schema_id) {
            return *known;
        }
        let same = writer.canonical_form() == EVENT_SCHEMA.canonical_form();
        self.is_event_schema.write().expect("schema cache lock").insert(schema_id, same);
        same
    }
}

fn decode_datum(writer: &apache_avro::Schema, datum: &[u8]) -> Result<Value, DecodeError> {
    avro::limit_allocations();
    let mut input = DatumInput { rest: datum, read_past_end: false };
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .build()
        .and_then(|reader| reader.read_value(&mut input))
        .map_err(|e| poison(PoisonReason::InvalidAvro, e.to_string()))?;
    if input.read_past_end {
        return Err(poison(PoisonReason::InvalidAvro, "the datum ends before its last field"));
    }
    if !input.rest.is_empty() {
        return Err(poison(PoisonReason::InvalidAvro, format!("{} bytes left after the datum", input.rest.len())));
    }
    value.resolve(&EVENT_SCHEMA).map_err(|e| poison(PoisonReason::IncompatibleSchema, e.to_string()))
}

/// The datum as the generic reader reads it, noting a read past its end: that reader turns a
/// string or a union cut off by the end of the input into a null rather than an error, so a
/// truncated record would otherwise decode with its last fields silently missing.
struct DatumInput<'a> {
    rest: &'a [u8],
    read_past_end: bool,
}

impl std::io::Read for DatumInput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.read_past_end = true;
        }
        self.rest.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            organization_id: uuid::Uuid::from_u128(42),
            transaction_id: "tx".into(),
            external_customer_id: "c".into(),
            code: "api_calls".into(),
            timestamp_ms: 1_700_000_000_000,
            properties: r#"{"a":1}"#.into(),
            value: Some(2.5),
            decimal_value: Some("-1.25".parse().unwrap()),
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
    }

    #[test]
    fn another_record_type_is_incompatible() {
        let other = apache_avro::Schema::parse_str(r#"{"type":"record","name":"Other","fields":[{"name":"x","type":"long"}]}"#).unwrap();
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&other)
            .build()
            .unwrap()
            .write_value_to_vec(Value::Record(vec![("x".into(), Value::Long(1))]))
            .unwrap();
        match decode_datum(&other, &datum) {
            Err(DecodeError::Poison { reason, .. }) => assert_eq!(reason, PoisonReason::IncompatibleSchema),
            other => panic!("expected a poison error, got {other:?}"),
        }
    }

    #[test]
    fn a_truncated_datum_is_invalid_avro_on_both_paths() {
        // Found by fuzzing: the generic reader read a datum cut before its unions as nulls, and
        // one cut inside a string as an incompatible schema.
        let datum = avro::to_datum(&event());
        for cut in 0..datum.len() {
            for direct in [true, false] {
                match decode_event_datum(&EVENT_SCHEMA, direct, &datum[..cut]) {
                    Err(DecodeError::Poison { reason, .. }) => assert_eq!(reason, PoisonReason::InvalidAvro, "cut at {cut}"),
                    other => panic!("cut at {cut} (direct: {direct}): {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_length_prefix_cannot_make_the_generic_reader_allocate_much() {
        // Found by fuzzing: 10 bytes claiming a 400 MB string made the reader allocate 400 MB.
        let mut datum = Vec::new();
        avro::write_long(100 * 1024 * 1024, &mut datum);
        datum.extend_from_slice(b"abc");
        match decode_event_datum(&EVENT_SCHEMA, false, &datum) {
            Err(DecodeError::Poison { reason, message }) => {
                assert_eq!(reason, PoisonReason::InvalidAvro);
                assert!(message.contains(&format!("maximum allowed: {}", avro::MAX_ALLOCATION_BYTES)), "{message}");
            }
            other => panic!("expected a poison error, got {other:?}"),
        }
    }

    #[test]
    fn random_bytes_are_invalid_avro() {
        match decode_datum(&EVENT_SCHEMA, &[0xff, 0xff, 0xff]) {
            Err(DecodeError::Poison { reason, .. }) => assert_eq!(reason, PoisonReason::InvalidAvro),
            other => panic!("expected a poison error, got {other:?}"),
        }
    }
}
