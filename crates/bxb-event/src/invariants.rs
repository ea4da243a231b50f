//! What must hold for any record value a consumer reads from Kafka, whatever its bytes (direct
//! producers bypass the gateway, so the bytes are as hostile as a request body). The property
//! tests of this crate and the coverage-guided fuzz targets (`fuzz/`) both go through
//! [`check_record`] and, for the writer schema a record names, [`check_writer_schema`].
//!
//! Compiled for tests and with the `invariants` feature (which the fuzz targets enable).

use std::sync::LazyLock;

use apache_avro::Schema;

use crate::avro::{self, EVENT_SCHEMA, EVENT_SCHEMA_JSON};
use crate::registry::{decode_event_datum, decode_with_plan, unframe, DecodeError, PoisonReason};
use crate::Event;

/// A newer writer version: the event schema with an optional field added in front, which the
/// consumers resolve to the event schema.
pub static WRITER_WITH_ADDED_FIELD: LazyLock<Schema> = LazyLock::new(|| {
    let json =
        EVENT_SCHEMA_JSON.replacen(r#""fields": ["#, r#""fields": [ {"name": "region", "type": ["null", "string"], "default": null},"#, 1);
    Schema::parse_str(&json).expect("the event schema with an added optional field")
});

/// Decodes `bytes` as a consumer does and panics when an invariant breaks:
///
/// - nothing is ever `Unavailable` (that would make a consumer retry a record forever);
/// - with the event schema as writer, the direct reader and the reader of other writer schemas
///   (`writer_schema::read`) agree: the same event, or the same poison reason;
/// - a decoded event passes the field rules and comes back unchanged from its own datum;
/// - read with a newer writer schema, the bytes decode or are poison, without panicking.
///
/// Returns the event or the poison reason.
pub fn check_record(bytes: &[u8]) -> Result<Event, PoisonReason> {
    let datum = match unframe(bytes) {
        Ok((_, datum)) => datum,
        Err(e) => {
            let reason = poison_reason(e);
            assert_eq!(reason, PoisonReason::InvalidWireFormat);
            return Err(reason);
        }
    };
    let direct = decode_event_datum(&EVENT_SCHEMA, true, datum).map_err(poison_reason);
    let planned = decode_event_datum(&EVENT_SCHEMA, false, datum).map_err(poison_reason);
    let _ = decode_event_datum(&WRITER_WITH_ADDED_FIELD, false, datum).map_err(poison_reason);
    match (&direct, &planned) {
        (Ok(a), Ok(b)) => {
            assert_same_event(a, b);
            let mut again = Vec::new();
            avro::write_datum(a, &mut again);
            let reread = decode_event_datum(&EVENT_SCHEMA, true, &again).map_err(poison_reason);
            assert_same_event(&reread.expect("an event's own datum decodes"), a);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "the direct and the planned reader refuse for different reasons"),
        _ => panic!("the direct and the planned reader disagree: {direct:?} vs {planned:?}"),
    }
    direct
}

/// Parses `schema_json` as a registered writer schema and decodes `datum` with it as a consumer
/// does (the verdict on the schema, then the budgeted reader), panicking when an invariant
/// breaks:
///
/// - the verdict and the read never panic, recurse without bound or wait for anything;
/// - a decoded event holds no more bytes than the datum (nothing is allocated that the record
///   did not pay for) and passes the field rules;
/// - when the writer schema is the event schema itself, the direct reader agrees.
///
/// Returns `None` when the text is not an Avro schema, otherwise the event or the poison reason.
pub fn check_writer_schema(schema_json: &str, datum: &[u8]) -> Option<Result<Event, PoisonReason>> {
    let writer = Schema::parse_str(schema_json).ok()?;
    let plan = match crate::writer_schema::plan(&writer) {
        Ok(plan) => plan,
        Err(refused) => {
            assert!(!refused.0.is_empty(), "a refusal without a reason");
            return Some(Err(PoisonReason::IncompatibleSchema));
        }
    };
    let outcome = decode_with_plan(&plan, datum).map_err(poison_reason);
    if let Ok(event) = &outcome {
        let held = event.transaction_id.len()
            + event.external_customer_id.len()
            + event.code.len()
            + event.properties.len()
            + event.decimal_value.as_ref().map_or(0, |d| d.as_str().len());
        assert!(held <= datum.len(), "an event of {held} bytes from a datum of {}", datum.len());
        crate::validate::validate(event).expect("a decoded event passes the field rules");
    }
    if plan.is_event_schema() {
        let direct = decode_event_datum(&writer, true, datum).map_err(poison_reason);
        match (&direct, &outcome) {
            (Ok(a), Ok(b)) => assert_same_event(a, b),
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("the direct and the planned reader disagree: {direct:?} vs {outcome:?}"),
        }
    }
    Some(outcome)
}

fn poison_reason(error: DecodeError) -> PoisonReason {
    match error {
        DecodeError::Poison { reason, message } => {
            assert!(!message.is_empty(), "poison {reason} without a message");
            reason
        }
        other => panic!("bytes alone made the decoder wait: {other}"),
    }
}

/// Equal, with `value` compared by its bits (NaN never reaches here, but `-0.0` and `0.0` differ).
pub fn assert_same_event(read: &Event, written: &Event) {
    assert_eq!(read.value.map(f64::to_bits), written.value.map(f64::to_bits), "value of {written:?}");
    assert_eq!(&Event { value: None, ..read.clone() }, &Event { value: None, ..written.clone() });
}
