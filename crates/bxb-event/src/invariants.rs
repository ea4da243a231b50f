//! What must hold for any record value a consumer reads from Kafka, whatever its bytes (direct
//! producers bypass the gateway, so the bytes are as hostile as a request body). The property
//! tests of this crate and the coverage-guided fuzz targets (`fuzz/`) both go through
//! [`check_record`].
//!
//! Compiled for tests and with the `invariants` feature (which the fuzz targets enable).

use std::sync::LazyLock;

use apache_avro::Schema;

use crate::avro::{self, EVENT_SCHEMA, EVENT_SCHEMA_JSON};
use crate::registry::{decode_event_datum, unframe, DecodeError, PoisonReason};
use crate::Event;

/// A newer writer version: the event schema with an optional field added in front, which the
/// consumers resolve to the event schema.
pub static WRITER_WITH_ADDED_FIELD: LazyLock<Schema> = LazyLock::new(|| {
    let json = EVENT_SCHEMA_JSON.replacen(
        r#""fields": ["#,
        r#""fields": [ {"name": "region", "type": ["null", "string"], "default": null},"#,
        1,
    );
    Schema::parse_str(&json).expect("the event schema with an added optional field")
});

/// Decodes `bytes` as a consumer does and panics when an invariant breaks:
///
/// - nothing is ever `Unavailable` (that would make a consumer retry a record forever);
/// - with the event schema as writer, the direct reader and the generic reader agree: the same
///   event, or the same poison reason;
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
    let generic = decode_event_datum(&EVENT_SCHEMA, false, datum).map_err(poison_reason);
    let _ = decode_event_datum(&WRITER_WITH_ADDED_FIELD, false, datum).map_err(poison_reason);
    match (&direct, &generic) {
        (Ok(a), Ok(b)) => {
            assert_same_event(a, b);
            let mut again = Vec::new();
            avro::write_datum(a, &mut again);
            let reread = decode_event_datum(&EVENT_SCHEMA, true, &again).map_err(poison_reason);
            assert_same_event(&reread.expect("an event's own datum decodes"), a);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "the direct and the generic reader refuse for different reasons"),
        _ => panic!("the direct and the generic reader disagree: {direct:?} vs {generic:?}"),
    }
    direct
}

fn poison_reason(error: DecodeError) -> PoisonReason {
    match error {
        DecodeError::Poison { reason, message } => {
            assert!(!message.is_empty(), "poison {reason} without a message");
            reason
        }
        DecodeError::Unavailable(message) => panic!("bytes alone made the decoder ask for a retry: {message}"),
    }
}

/// Equal, with `value` compared by its bits (NaN never reaches here, but `-0.0` and `0.0` differ).
pub fn assert_same_event(read: &Event, written: &Event) {
    assert_eq!(read.value.map(f64::to_bits), written.value.map(f64::to_bits), "value of {written:?}");
    assert_eq!(&Event { value: None, ..read.clone() }, &Event { value: None, ..written.clone() });
}
