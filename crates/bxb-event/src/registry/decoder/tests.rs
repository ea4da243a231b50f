use apache_avro::types::Value;

use super::*;
use crate::avro::EVENT_SCHEMA;
use crate::registry::tests::event;

fn reason(outcome: Result<Event, DecodeError>) -> PoisonReason {
    match outcome {
        Err(DecodeError::Poison { reason, .. }) => reason,
        other => panic!("expected a poison error, got {other:?}"),
    }
}

#[test]
fn another_record_type_is_incompatible() {
    let other = Schema::parse_str(r#"{"type":"record","name":"Other","fields":[{"name":"x","type":"long"}]}"#).unwrap();
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&other)
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(vec![("x".into(), Value::Long(1))]))
        .unwrap();
    assert_eq!(reason(decode_event_datum(&other, false, &datum)), PoisonReason::IncompatibleSchema);
}

#[test]
fn a_truncated_datum_is_invalid_avro_on_both_paths() {
    // Found by fuzzing the generic reader, which read a datum cut before its unions as nulls:
    // both readers now refuse every cut.
    let datum = avro::to_datum(&event());
    for cut in 0..datum.len() {
        for direct in [true, false] {
            assert_eq!(
                reason(decode_event_datum(&EVENT_SCHEMA, direct, &datum[..cut])),
                PoisonReason::InvalidAvro,
                "cut at {cut} (direct: {direct})"
            );
        }
    }
}

#[test]
fn a_length_prefix_allocates_nothing_before_the_bytes_are_there() {
    // Found by fuzzing the generic reader: 10 bytes claiming a 400 MB string made it allocate
    // 400 MB. The plan reads strings in place.
    let mut datum = Vec::new();
    avro::write_long(100 * 1024 * 1024, &mut datum);
    datum.extend_from_slice(b"abc");
    match decode_event_datum(&EVENT_SCHEMA, false, &datum) {
        Err(DecodeError::Poison { reason, message }) => {
            assert_eq!(reason, PoisonReason::InvalidAvro);
            assert!(message.contains("104857600"), "{message}");
        }
        other => panic!("expected a poison error, got {other:?}"),
    }
}

#[test]
fn random_bytes_are_invalid_avro() {
    assert_eq!(reason(decode_event_datum(&EVENT_SCHEMA, false, &[0xff, 0xff, 0xff])), PoisonReason::InvalidAvro);
}

#[test]
fn a_valid_datum_decodes_the_same_on_both_paths() {
    let datum = avro::to_datum(&event());
    assert_eq!(decode_event_datum(&EVENT_SCHEMA, true, &datum).unwrap(), event());
    assert_eq!(decode_event_datum(&EVENT_SCHEMA, false, &datum).unwrap(), event());
}

#[test]
fn an_unreadable_or_unparsable_registered_schema_is_judged_incompatible() {
    assert!(matches!(judge(Registered::Unreadable("a PROTOBUF schema".into())), Writer::Incompatible(m) if m.contains("PROTOBUF")));
    assert!(matches!(judge(Registered::Avro("{not json".into())), Writer::Incompatible(m) if m.contains("parse")));
    assert!(matches!(judge(Registered::Avro(avro::EVENT_SCHEMA_JSON.into())), Writer::Readable { direct: true, .. }));
}
