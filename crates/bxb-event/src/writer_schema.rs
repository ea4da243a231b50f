//! Which writer schemas the consumers read, decided once per schema, and the reading plan of the
//! ones they accept.
//!
//! A record's writer schema comes from the registry by the id in the record, so a producer can
//! point a record at any schema registered under any subject. The consumers accept a writer
//! schema only when it resolves to the event record by this rule (`docs/producer-contract.md`
//! states it for producers); everything else is `incompatible_schema`:
//!
//! - It is a record named `dev.bxb.events.Event`, and no named type in it refers to itself,
//!   directly or through other types (recursion is refused even when a union with `null` would
//!   end it).
//! - Every event field is in it by name (aliases play no part), except `value` and
//!   `decimal_value`, whose default (`null`) is used when missing. Each has a type the event
//!   field can take, or a union of only such types:
//!   - the string fields: `string` (any logical type, e.g. `uuid`) or `bytes` (read as UTF-8);
//!   - `timestamp`: `long` with `timestamp-millis` or no logical type, or `int` (promoted);
//!   - `value`: `null`, `double`, or `float`, `long`, `int` without a logical type (promoted);
//!   - `decimal_value`: `null`, `string` or `bytes`.
//!
//!   So a field may be widened (`int` to `long`, `float` to `double`) or made a union of such
//!   types, but never given a type whose values mean something else (`timestamp-micros`, a
//!   `date`, a `decimal` in bytes) or a null where the event needs a value.
//! - Any other field is skipped, whatever its type, as long as that type nests records, arrays,
//!   maps and unions at most [`MAX_NESTING`] deep.
//!
//! The plan reads a datum without building a value tree: event fields straight into the event,
//! other fields skipped without allocating. Every value read or skipped costs one step of a
//! budget of [`BUDGET_STEPS_PER_BYTE`] steps per byte of the datum (plus
//! [`BUDGET_BASE_STEPS`]): a datum can only claim what its own size pays for, so no record can
//! make a consumer loop, allocate or recurse beyond a small multiple of its size, whatever its
//! length prefixes and block counts say.
//!
//! apache-avro's generic reader is not used for records: it recurses once per nesting level of
//! the datum with no limit (a recursive writer schema turns a 400 KB record into a stack
//! overflow), materialises every value of fields it then drops, and caps only each single
//! allocation, so an array of a million nulls costs it tens of megabytes for a few bytes.

use std::collections::HashMap;

use apache_avro::schema::ResolvedSchema;
use apache_avro::Schema;

mod planner;
mod read;

use planner::{kind, Planner};
pub use read::read;

/// The deepest nesting of records, arrays, maps and unions a skipped field may have.
pub const MAX_NESTING: usize = 32;
/// Steps of the decoding budget per byte of the datum.
pub const BUDGET_STEPS_PER_BYTE: usize = 8;
/// Steps of the decoding budget every datum gets whatever its size.
pub const BUDGET_BASE_STEPS: usize = 1024;

const EVENT_NAMESPACE: &str = "dev.bxb.events";
const EVENT_NAME: &str = "Event";

/// Why a writer schema is not read: the message of an `incompatible_schema` dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IncompatibleSchema(pub String);

fn incompatible(message: impl Into<String>) -> IncompatibleSchema {
    IncompatibleSchema(message.into())
}

/// An event field, in the order of the event schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    OrganizationId,
    TransactionId,
    ExternalCustomerId,
    Code,
    Timestamp,
    Properties,
    Value,
    DecimalValue,
}

const TARGETS: [(&str, Target); 8] = [
    ("organization_id", Target::OrganizationId),
    ("transaction_id", Target::TransactionId),
    ("external_customer_id", Target::ExternalCustomerId),
    ("code", Target::Code),
    ("timestamp", Target::Timestamp),
    ("properties", Target::Properties),
    ("value", Target::Value),
    ("decimal_value", Target::DecimalValue),
];

impl Target {
    fn name(self) -> &'static str {
        TARGETS.iter().find(|(_, t)| *t == self).map_or("", |(name, _)| name)
    }

    fn has_default(self) -> bool {
        matches!(self, Self::Value | Self::DecimalValue)
    }

    fn takes(self, wire: Wire) -> bool {
        match self {
            Self::OrganizationId | Self::TransactionId | Self::ExternalCustomerId | Self::Code | Self::Properties => wire == Wire::Str,
            Self::Timestamp => matches!(wire, Wire::Int | Wire::Long),
            Self::Value => matches!(wire, Wire::Null | Wire::Int | Wire::Long | Wire::Float | Wire::Double),
            Self::DecimalValue => matches!(wire, Wire::Null | Wire::Str),
        }
    }
}

/// How an event field's value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Null,
    /// A length, then UTF-8 bytes (`string`, or `bytes` read as a string).
    Str,
    Int,
    Long,
    Float,
    Double,
}

/// Where an event field's value comes from in the datum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    One(Wire),
    /// A union: the branch index, then the value of that branch.
    Union(Vec<Wire>),
}

/// The encoding of a value that is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(usize),
    Array(SkipId),
    Map(SkipId),
    Union(Vec<SkipId>),
    Record(Vec<SkipId>),
}

pub(crate) type SkipId = usize;

/// One field of the writer schema, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Read(Target, Source),
    Skip(SkipId),
}

/// How to read datums of one accepted writer schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterPlan {
    pub(crate) steps: Vec<Step>,
    pub(crate) skips: Vec<Skip>,
}

impl WriterPlan {
    /// Whether the writer schema is the event schema itself, field for field: its datums can be
    /// read by [`crate::avro::read_datum`], the consumers' hot path.
    pub fn is_event_schema(&self) -> bool {
        let exact = [
            (Target::OrganizationId, Source::One(Wire::Str)),
            (Target::TransactionId, Source::One(Wire::Str)),
            (Target::ExternalCustomerId, Source::One(Wire::Str)),
            (Target::Code, Source::One(Wire::Str)),
            (Target::Timestamp, Source::One(Wire::Long)),
            (Target::Properties, Source::One(Wire::Str)),
            (Target::Value, Source::Union(vec![Wire::Null, Wire::Double])),
            (Target::DecimalValue, Source::Union(vec![Wire::Null, Wire::Str])),
        ];
        self.steps.len() == exact.len() && self.steps.iter().zip(exact).all(|(step, (target, source))| *step == Step::Read(target, source))
    }
}

/// Decides whether datums of `writer` can be read as events, and how.
pub fn plan(writer: &Schema) -> Result<WriterPlan, IncompatibleSchema> {
    let Schema::Record(record) = writer else {
        return Err(incompatible(format!("the writer schema is not a record but {}", kind(writer))));
    };
    let name = record.name.fully_qualified_name(None);
    if name.name() != EVENT_NAME || name.namespace() != Some(EVENT_NAMESPACE) {
        return Err(incompatible(format!("the writer schema is the record {}, not {EVENT_NAMESPACE}.{EVENT_NAME}", name.fullname(None))));
    }
    let resolved = ResolvedSchema::try_from(writer).map_err(|e| incompatible(format!("the writer schema's names do not resolve: {e}")))?;
    let mut planner =
        Planner { names: resolved.get_names(), skips: Vec::new(), compiled: HashMap::new(), in_progress: vec![name.into_owned()] };
    let namespace = Some(EVENT_NAMESPACE);
    let mut steps = Vec::with_capacity(record.fields.len());
    let mut seen = Vec::new();
    for field in &record.fields {
        if seen.contains(&field.name.as_str()) {
            return Err(incompatible(format!("the writer schema has two fields named {}", field.name)));
        }
        seen.push(field.name.as_str());
        match TARGETS.iter().find(|(name, _)| *name == field.name) {
            Some(&(_, target)) => steps.push(Step::Read(target, planner.source(target, &field.schema, namespace)?)),
            None => {
                let (id, _) =
                    planner.skip(&field.schema, namespace, 0).map_err(|e| incompatible(format!("field {}: {}", field.name, e.0)))?;
                steps.push(Step::Skip(id));
            }
        }
    }
    for (name, target) in TARGETS {
        if !target.has_default() && !seen.contains(&name) {
            return Err(incompatible(format!("the writer schema has no field {name}, and the event schema gives it no default")));
        }
    }
    Ok(WriterPlan { steps, skips: planner.skips })
}

#[cfg(test)]
mod tests;
