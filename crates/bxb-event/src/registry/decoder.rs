//! Record values to events: the Confluent framing, the writer schema of the record's id (fetched
//! once and judged once, see [`crate::writer_schema`]), then the datum read under its budget and
//! the field rules.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use apache_avro::Schema;

use super::lookup::{LookupError, Registered, SchemaFetcher};
use super::{unframe, PoisonReason};
use crate::avro::{self, ReadError};
use crate::validate::{self, FieldErrors};
use crate::writer_schema::{self, WriterPlan};
use crate::Event;

/// Why a record value could not become an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The writer schema of the record's id has not been fetched yet (only from
    /// [`EventDecoder::decode_known`]): fetch it with [`EventDecoder::load_schema`], then decode
    /// again.
    #[error("schema id {0} is not loaded yet")]
    SchemaNotLoaded(u32),
    /// The registry could not give the record's writer schema: retry the record later. Never a
    /// reason to dead-letter it.
    #[error(transparent)]
    Unavailable(LookupError),
    /// The record can never be decoded: dead-letter it with this reason.
    #[error("{reason}: {message}")]
    Poison { reason: PoisonReason, message: String },
}

pub(super) fn poison(reason: PoisonReason, message: impl Into<String>) -> DecodeError {
    DecodeError::Poison { reason, message: message.into() }
}

/// What a schema id's writer schema was judged to be, once.
enum Writer {
    Readable { plan: WriterPlan, direct: bool },
    Incompatible(String),
}

/// Reads record values written with any writer schema that resolves to the event schema. Only
/// answers of the registry are cached (a schema, or a verdict on one); a failure to get one is
/// asked again on the next attempt.
pub struct EventDecoder {
    fetcher: SchemaFetcher,
    writers: RwLock<HashMap<u32, Writer>>,
}

impl std::fmt::Debug for EventDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDecoder").finish_non_exhaustive()
    }
}

impl EventDecoder {
    pub(super) fn new(fetcher: SchemaFetcher) -> Self {
        Self { fetcher, writers: RwLock::default() }
    }

    /// Decodes and validates one record value, fetching its writer schema first if needed.
    pub async fn decode(&self, bytes: Option<&[u8]>) -> Result<Event, DecodeError> {
        match self.decode_known(bytes) {
            Err(DecodeError::SchemaNotLoaded(id)) => {
                self.load_schema(id).await.map_err(DecodeError::Unavailable)?;
                self.decode_known(bytes)
            }
            other => other,
        }
    }

    /// Decodes and validates one record value if its writer schema is loaded, without waiting
    /// for anything: [`DecodeError::SchemaNotLoaded`] otherwise.
    pub fn decode_known(&self, bytes: Option<&[u8]>) -> Result<Event, DecodeError> {
        let (schema_id, datum) = unframe(bytes.unwrap_or_default())?;
        let writers = self.writers.read().unwrap_or_else(PoisonError::into_inner);
        match writers.get(&schema_id) {
            None => Err(DecodeError::SchemaNotLoaded(schema_id)),
            Some(Writer::Incompatible(message)) => {
                Err(poison(PoisonReason::IncompatibleSchema, format!("schema id {schema_id}: {message}")))
            }
            Some(Writer::Readable { plan, direct }) => decode_datum((!direct).then_some(plan), datum),
        }
    }

    /// Fetches the writer schema of `schema_id` and judges it, unless that was done before.
    pub async fn load_schema(&self, schema_id: u32) -> Result<(), LookupError> {
        if self.writers.read().unwrap_or_else(PoisonError::into_inner).contains_key(&schema_id) {
            return Ok(());
        }
        let writer = judge(self.fetcher.fetch(schema_id).await?);
        if let Writer::Incompatible(message) = &writer {
            tracing::warn!(schema_id, %message, "writer schema refused: its records are dead-lettered as incompatible_schema");
        }
        self.writers.write().unwrap_or_else(PoisonError::into_inner).insert(schema_id, writer);
        Ok(())
    }
}

fn judge(registered: Registered) -> Writer {
    let text = match registered {
        Registered::Avro(text) => text,
        Registered::Unreadable(message) => return Writer::Incompatible(message),
    };
    let schema = match Schema::parse_str(&text) {
        Ok(schema) => schema,
        Err(e) => return Writer::Incompatible(format!("not an Avro schema the consumers can parse: {e}")),
    };
    match writer_schema::plan(&schema) {
        Ok(plan) => Writer::Readable { direct: plan.is_event_schema(), plan },
        Err(refused) => Writer::Incompatible(refused.0),
    }
}

/// Decodes and validates a datum written with `writer`, once its schema is known: `direct` when
/// `writer` is exactly [`crate::avro::EVENT_SCHEMA`] (read by [`avro::read_datum`]), otherwise
/// by the plan of [`writer_schema::plan`]. Pure, so hostile bytes and schemas can be thrown at
/// it without a registry.
pub fn decode_event_datum(writer: &Schema, direct: bool, datum: &[u8]) -> Result<Event, DecodeError> {
    if direct {
        return decode_datum(None, datum);
    }
    let plan = writer_schema::plan(writer).map_err(|e| poison(PoisonReason::IncompatibleSchema, e.0))?;
    decode_datum(Some(&plan), datum)
}

/// Decodes and validates a datum with the plan of its writer schema.
pub fn decode_with_plan(plan: &WriterPlan, datum: &[u8]) -> Result<Event, DecodeError> {
    decode_datum(Some(plan), datum)
}

/// Reads with `plan`, or with the direct reader when there is none.
fn decode_datum(plan: Option<&WriterPlan>, datum: &[u8]) -> Result<Event, DecodeError> {
    let read = match plan {
        Some(plan) => writer_schema::read(plan, datum),
        None => avro::read_datum(datum),
    };
    let event = read.map_err(|e| match e {
        ReadError::Malformed(message) => poison(PoisonReason::InvalidAvro, message),
        ReadError::OverBudget(message) => poison(PoisonReason::BudgetExceeded, message),
        ReadError::Field(e) => poison(PoisonReason::InvalidFields, FieldErrors(vec![e]).to_string()),
    })?;
    validate::validate(&event).map_err(|e| poison(PoisonReason::InvalidFields, e.to_string()))?;
    Ok(event)
}

#[cfg(test)]
mod tests;
