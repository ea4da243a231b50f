//! Why a record is poison: the stable reasons of the dead-letter headers and metric labels.

/// The stable reason of a poison record, used in DLQ headers and metric labels. A record is
/// poison only when the record itself is proven bad; a registry that cannot answer is never a
/// reason (see [`super::LookupError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonReason {
    /// Empty value, or not starting with the magic byte and a schema id.
    InvalidWireFormat,
    /// The bytes are not a datum of the writer schema.
    InvalidAvro,
    /// The writer schema is not one the consumers read as an event (another record type, a
    /// recursive or too deeply nested type, a field retyped; see [`crate::writer_schema`]).
    IncompatibleSchema,
    /// Reading the datum would take more work than its size pays for (e.g. block counts of
    /// millions of empty values; see [`crate::writer_schema::BUDGET_STEPS_PER_BYTE`]).
    BudgetExceeded,
    /// The event breaks a field rule.
    InvalidFields,
    /// The record's key is not the event's `organization_id` in canonical form (or it has none).
    KeyMismatch,
    /// A valid event a sink cannot store for good: older than the oldest time it keeps (its
    /// identity may already be forgotten there, so storing it could count it twice).
    TooOld,
    /// A valid event a sink cannot store for good: further in the future than it accepts.
    TooFarInFuture,
}

/// What kind of problem a poison reason is, for what counts towards a consumer's poison breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonClass {
    /// The bytes cannot be read as an event.
    Undecodable,
    /// An event that breaks the producer contract.
    Invalid,
    /// A valid event the pipeline declines by policy (e.g. too old or too far ahead). A replay
    /// can legitimately produce these in bulk, so they never trip the breaker.
    Refused,
}

impl PoisonClass {
    /// Whether records of this class count towards the poison breaker.
    pub fn counts_towards_breaker(self) -> bool {
        matches!(self, Self::Undecodable | Self::Invalid)
    }
}

impl PoisonReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidWireFormat => "invalid_wire_format",
            Self::InvalidAvro => "invalid_avro",
            Self::IncompatibleSchema => "incompatible_schema",
            Self::BudgetExceeded => "budget_exceeded",
            Self::InvalidFields => "invalid_fields",
            Self::KeyMismatch => "key_mismatch",
            Self::TooOld => "too_old",
            Self::TooFarInFuture => "too_far_in_future",
        }
    }

    pub fn class(self) -> PoisonClass {
        match self {
            Self::InvalidWireFormat | Self::InvalidAvro | Self::IncompatibleSchema | Self::BudgetExceeded => PoisonClass::Undecodable,
            Self::InvalidFields | Self::KeyMismatch => PoisonClass::Invalid,
            Self::TooOld | Self::TooFarInFuture => PoisonClass::Refused,
        }
    }
}

impl std::fmt::Display for PoisonReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
