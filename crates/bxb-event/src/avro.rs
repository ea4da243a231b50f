//! The mapping between [`Event`] and the Avro schema in `schemas/avro/event.avsc`.

use std::sync::LazyLock;

use apache_avro::types::Value;
use apache_avro::Schema;
use uuid::Uuid;

use crate::validate::FieldError;
use crate::{Decimal, Event};

/// The schema text, `schemas/avro/event.avsc` as `bxb-schemas` compiles it in.
pub const EVENT_SCHEMA_JSON: &str = bxb_schemas::avro::EVENT_SCHEMA_JSON;

/// The parsed event schema: what the gateway writes and what the consumers read with (any
/// BACKWARD-compatible writer version resolves to it).
pub static EVENT_SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    limit_allocations();
    Schema::parse_str(EVENT_SCHEMA_JSON).expect("schemas/avro/event.avsc is valid Avro")
});

/// The most apache-avro's generic reader may allocate for one string or bytes value. Its default,
/// 512 MiB, lets a record of a few bytes claim half a gigabyte through a length prefix (found by
/// fuzzing); no datum in a Kafka record is that long (the broker's default limit is 1 MiB).
pub const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Sets [`MAX_ALLOCATION_BYTES`]. The setting is process-wide and the first one wins, so it is
/// made before anything is decoded: when the event schema is first used and before every
/// generic read.
pub(crate) fn limit_allocations() {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
}

/// The event as an Avro record value of [`EVENT_SCHEMA`].
pub fn to_value(event: &Event) -> Value {
    Value::Record(vec![
        ("organization_id".into(), Value::String(event.organization_id.hyphenated().to_string())),
        ("transaction_id".into(), Value::String(event.transaction_id.clone())),
        ("external_customer_id".into(), Value::String(event.external_customer_id.clone())),
        ("code".into(), Value::String(event.code.clone())),
        ("timestamp".into(), Value::TimestampMillis(event.timestamp_ms)),
        ("properties".into(), Value::String(event.properties.clone())),
        (
            "value".into(),
            match event.value {
                Some(v) => Value::Union(1, Box::new(Value::Double(v))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
        (
            "decimal_value".into(),
            match &event.decimal_value {
                Some(d) => Value::Union(1, Box::new(Value::String(d.as_str().to_owned()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
    ])
}

/// The Avro datum (no framing) of an event.
pub fn to_datum(event: &Event) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(&EVENT_SCHEMA)
        .build()
        .and_then(|writer| writer.write_value_to_vec(to_value(event)))
        .expect("an Event always matches its own schema")
}

/// Reads an event from a record already resolved to [`EVENT_SCHEMA`]. Values that the schema
/// allows but the event type does not (a non-UUID organization, a malformed decimal) are
/// reported as field errors; the remaining field rules are [`crate::validate::validate`]'s.
pub fn from_value(value: Value) -> Result<Event, FieldError> {
    let Value::Record(fields) = value else {
        return Err(FieldError::new("", "not_a_record", "the Avro value is not a record"));
    };
    let mut organization_id = None;
    let mut transaction_id = None;
    let mut external_customer_id = None;
    let mut code = None;
    let mut timestamp_ms = None;
    let mut properties = None;
    let mut number = None;
    let mut decimal_value = None;
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("organization_id", Value::String(s)) => {
                let id =
                    Uuid::parse_str(&s).map_err(|_| FieldError::new("organization_id", "invalid_uuid", "organization_id is not a UUID"))?;
                organization_id = Some(id);
            }
            ("transaction_id", Value::String(s)) => transaction_id = Some(s),
            ("external_customer_id", Value::String(s)) => external_customer_id = Some(s),
            ("code", Value::String(s)) => code = Some(s),
            ("timestamp", Value::TimestampMillis(ms) | Value::Long(ms)) => timestamp_ms = Some(ms),
            ("properties", Value::String(s)) => properties = Some(s),
            ("value", v) => number = Some(optional(v, "value")?.map(expect_double).transpose()?),
            ("decimal_value", v) => {
                decimal_value = Some(match optional(v, "decimal_value")? {
                    Some(Value::String(s)) => {
                        Some(s.parse::<Decimal>().map_err(|e| FieldError::new("decimal_value", "invalid_decimal", e.to_string()))?)
                    }
                    Some(_) => return Err(type_error("decimal_value")),
                    None => None,
                });
            }
            (other, _) => return Err(type_error(other)),
        }
    }
    Ok(Event {
        organization_id: organization_id.ok_or_else(|| missing("organization_id"))?,
        transaction_id: transaction_id.ok_or_else(|| missing("transaction_id"))?,
        external_customer_id: external_customer_id.ok_or_else(|| missing("external_customer_id"))?,
        code: code.ok_or_else(|| missing("code"))?,
        timestamp_ms: timestamp_ms.ok_or_else(|| missing("timestamp"))?,
        properties: properties.ok_or_else(|| missing("properties"))?,
        value: number.ok_or_else(|| missing("value"))?,
        decimal_value: decimal_value.ok_or_else(|| missing("decimal_value"))?,
    })
}

/// Appends the Avro datum of `event` to `out`: byte for byte what [`to_datum`] writes, but
/// straight from the event's fields, without an intermediate [`Value`] or copies of its strings.
/// The hot path of the gateway; `to_datum` stays the schema-driven reference it is tested against.
pub fn write_datum(event: &Event, out: &mut Vec<u8>) {
    let mut organization = [0u8; uuid::fmt::Hyphenated::LENGTH];
    write_string(event.organization_id.hyphenated().encode_lower(&mut organization), out);
    write_string(&event.transaction_id, out);
    write_string(&event.external_customer_id, out);
    write_string(&event.code, out);
    write_long(event.timestamp_ms, out);
    write_string(&event.properties, out);
    // Unions are written as the branch index (a long), then the branch value.
    match event.value {
        None => write_long(0, out),
        Some(v) => {
            write_long(1, out);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    match &event.decimal_value {
        None => write_long(0, out),
        Some(d) => {
            write_long(1, out);
            write_string(d.as_str(), out);
        }
    }
}

/// An Avro `long`: zig-zag, then base-128 varint.
pub(crate) fn write_long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An Avro `string`: its byte length as a long, then the UTF-8 bytes.
pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    write_long(s.len() as i64, out);
    out.extend_from_slice(s.as_bytes());
}

/// Why [`read_datum`] could not read an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    /// The bytes are not a datum of the event schema (truncated, bad varint, invalid UTF-8,
    /// unknown union branch, bytes left over).
    Malformed(String),
    /// A well-formed datum whose value the event type cannot hold (a non-UUID organization, a
    /// malformed decimal).
    Field(FieldError),
    /// Reading the datum would take more steps than its size pays for (only readers of other
    /// writer schemas have a budget: see [`crate::writer_schema`]).
    OverBudget(String),
}

/// Reads a datum written with exactly [`EVENT_SCHEMA`]: the mirror of [`write_datum`], without
/// a value tree (the consumers' hot path). Datums of other writer schemas are read with the
/// plan of [`crate::writer_schema`] instead.
pub fn read_datum(mut datum: &[u8]) -> Result<Event, ReadError> {
    let input = &mut datum;
    let organization = read_str(input)?;
    let transaction_id = read_str(input)?;
    let external_customer_id = read_str(input)?;
    let code = read_str(input)?;
    let timestamp_ms = read_long(input)?;
    let properties = read_str(input)?;
    let value = match read_long(input)? {
        0 => None,
        1 => {
            let (bytes, rest) = input.split_first_chunk::<8>().ok_or_else(|| malformed("value: truncated double"))?;
            *input = rest;
            Some(f64::from_le_bytes(*bytes))
        }
        branch => return Err(malformed(format!("value: no union branch {branch}"))),
    };
    let decimal_value = match read_long(input)? {
        0 => None,
        1 => Some(read_str(input)?),
        branch => return Err(malformed(format!("decimal_value: no union branch {branch}"))),
    };
    if !input.is_empty() {
        return Err(malformed(format!("{} bytes left after the datum", input.len())));
    }
    // Values are judged only once the whole datum is known to be well-formed, as the generic
    // reader does: a broken datum is `Malformed` whatever its field values.
    let organization_id = Uuid::parse_str(organization)
        .map_err(|_| ReadError::Field(FieldError::new("organization_id", "invalid_uuid", "organization_id is not a UUID")))?;
    let decimal_value = decimal_value
        .map(|text| text.parse::<Decimal>())
        .transpose()
        .map_err(|e| ReadError::Field(FieldError::new("decimal_value", "invalid_decimal", e.to_string())))?;
    Ok(Event {
        organization_id,
        transaction_id: transaction_id.to_owned(),
        external_customer_id: external_customer_id.to_owned(),
        code: code.to_owned(),
        timestamp_ms,
        properties: properties.to_owned(),
        value,
        decimal_value,
    })
}

fn malformed(message: impl Into<String>) -> ReadError {
    ReadError::Malformed(message.into())
}

/// An Avro `long`: base-128 varint of at most 10 bytes, then zig-zag.
pub(crate) fn read_long(input: &mut &[u8]) -> Result<i64, ReadError> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = input.split_first().ok_or_else(|| malformed("truncated long"))?;
        *input = rest;
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(malformed("a long longer than 10 bytes"))
}

/// An Avro `string`, borrowed from the input.
pub(crate) fn read_str<'a>(input: &mut &'a [u8]) -> Result<&'a str, ReadError> {
    let len = read_long(input)?;
    let len = usize::try_from(len).map_err(|_| malformed(format!("negative string length {len}")))?;
    if len > input.len() {
        return Err(malformed(format!("string of {len} bytes, {} left", input.len())));
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    std::str::from_utf8(bytes).map_err(|e| malformed(format!("string is not UTF-8: {e}")))
}

fn optional(value: Value, field: &'static str) -> Result<Option<Value>, FieldError> {
    match value {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            v => Ok(Some(v)),
        },
        Value::Null => Ok(None),
        _ => Err(type_error(field)),
    }
}

fn expect_double(value: Value) -> Result<f64, FieldError> {
    match value {
        Value::Double(v) => Ok(v),
        _ => Err(type_error("value")),
    }
}

fn type_error(field: &str) -> FieldError {
    FieldError::new(field, "unexpected_type", format!("{field} does not have the type of the event schema"))
}

fn missing(field: &str) -> FieldError {
    FieldError::new(field, "missing", format!("{field} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(value: Option<f64>, decimal: Option<&str>) -> Event {
        Event {
            organization_id: Uuid::from_u128(0x1234),
            transaction_id: "tx-ü-1".into(),
            external_customer_id: "cust-1".into(),
            code: "api_calls".into(),
            timestamp_ms: 1_700_000_000_123,
            properties: r#"{"a":[1,2,{"b":null}]}"#.into(),
            value,
            decimal_value: decimal.map(|d| d.parse().unwrap()),
        }
    }

    fn read(writer: &Schema, reader: Option<&Schema>, datum: &[u8]) -> Value {
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(writer).maybe_reader_schema(reader).build().unwrap();
        reader.read_value(&mut &datum[..]).unwrap()
    }

    fn round_trip(e: &Event) -> Event {
        let datum = to_datum(e);
        let value = read(&EVENT_SCHEMA, None, &datum);
        from_value(value).unwrap()
    }

    #[test]
    fn the_rust_type_matches_the_schema_file() {
        // Every field of the .avsc is a field of Event, in order, and nothing else.
        let Schema::Record(record) = &*EVENT_SCHEMA else { panic!("event schema is not a record") };
        let names: Vec<_> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["organization_id", "transaction_id", "external_customer_id", "code", "timestamp", "properties", "value", "decimal_value"]
        );
        let Value::Record(fields) = to_value(&event(None, None)) else { unreachable!() };
        assert_eq!(fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), names);
    }

    #[test]
    fn events_round_trip_through_avro() {
        for e in [event(None, None), event(Some(-0.5), Some("123.000000000001")), event(Some(1e300), None)] {
            assert_eq!(round_trip(&e), e);
        }
    }

    #[test]
    fn a_newer_writer_with_an_added_optional_field_resolves() {
        let v2_json = EVENT_SCHEMA_JSON.replacen(
            r#""fields": ["#,
            r#""fields": [ {"name": "region", "type": ["null", "string"], "default": null},"#,
            1,
        );
        let v2 = Schema::parse_str(&v2_json).unwrap();
        let Value::Record(mut fields) = to_value(&event(Some(2.0), None)) else { unreachable!() };
        fields.insert(0, ("region".into(), Value::Union(1, Box::new(Value::String("eu".into())))));
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&v2)
            .build()
            .unwrap()
            .write_value_to_vec(Value::Record(fields))
            .unwrap();
        let value = read(&v2, Some(&EVENT_SCHEMA), &datum);
        assert_eq!(from_value(value).unwrap(), event(Some(2.0), None));
    }

    #[test]
    fn a_non_uuid_organization_is_a_field_error() {
        let Value::Record(mut fields) = to_value(&event(None, None)) else { unreachable!() };
        fields[0].1 = Value::String("acme".into());
        assert_eq!(from_value(Value::Record(fields)).unwrap_err().code, "invalid_uuid");
    }

    #[test]
    fn the_direct_reader_refuses_what_the_generic_reader_refuses() {
        let datum = to_datum(&event(Some(1.0), Some("2.5")));
        for cut in 0..datum.len() {
            assert!(matches!(read_datum(&datum[..cut]), Err(ReadError::Malformed(_))), "truncated at {cut}");
        }
        let mut longer = datum.clone();
        longer.push(0);
        assert!(matches!(read_datum(&longer), Err(ReadError::Malformed(_))));
        let mut bad_branch = to_datum(&event(None, None));
        let last = bad_branch.len() - 1;
        bad_branch[last] = 4; // union index 2
        assert!(matches!(read_datum(&bad_branch), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn a_broken_datum_is_malformed_whatever_its_values() {
        // Found by fuzzing: with a non-UUID organization first and a broken structure after it,
        // the direct reader said `Field` and the generic reader `Malformed`.
        let mut e = event(None, None);
        e.transaction_id = "x".repeat(40);
        let mut datum = to_datum(&e);
        datum[1..37].copy_from_slice(&[b'z'; 36]);
        assert!(matches!(read_datum(&datum), Err(ReadError::Field(_))));
        datum[0] += 2; // the organization's length: now 37, and the rest of the datum is off by one
        assert!(matches!(read_datum(&datum), Err(ReadError::Malformed(_))), "{:?}", read_datum(&datum));
    }

    proptest! {
        #[test]
        fn the_direct_reader_reads_what_the_writer_writes(
            tx in "\\PC{0,40}", cust in "\\PC{0,40}", code in "\\PC{0,10}", ts: i64, props in "\\PC{0,60}",
            value: Option<f64>, org: u128, decimal in proptest::option::of(-10_000_000i64..10_000_000),
        ) {
            let e = Event {
                organization_id: Uuid::from_u128(org),
                transaction_id: tx, external_customer_id: cust, code, timestamp_ms: ts, properties: props, value,
                decimal_value: decimal.map(|d| format!("{d}.5").parse().unwrap()),
            };
            let read = read_datum(&to_datum(&e)).unwrap();
            // NaN != NaN: compare the bits of value.
            prop_assert_eq!(read.value.map(f64::to_bits), e.value.map(f64::to_bits));
            prop_assert_eq!(Event { value: None, ..read }, Event { value: None, ..e });
        }

        #[test]
        fn arbitrary_events_round_trip(
            tx in "\\PC{1,40}", cust in "\\PC{1,40}", ts in 0i64..4_000_000_000_000,
            value in proptest::option::of(proptest::num::f64::NORMAL), org: u128,
        ) {
            let e = Event {
                organization_id: Uuid::from_u128(org),
                transaction_id: tx, external_customer_id: cust, code: "c".into(),
                timestamp_ms: ts, properties: "{}".into(), value, decimal_value: None,
            };
            prop_assert_eq!(round_trip(&e), e);
        }

        #[test]
        fn the_direct_writer_writes_what_the_schema_writer_writes(
            tx in "\\PC{0,300}", cust in "\\PC{0,40}", code in "[a-z_]{0,64}", ts: i64,
            properties in "\\PC{0,200}", value: Option<f64>, org: u128,
            decimal in proptest::option::of("-?[0-9]{1,26}(\\.[0-9]{1,12})?"),
        ) {
            let e = Event {
                organization_id: Uuid::from_u128(org),
                transaction_id: tx, external_customer_id: cust, code,
                timestamp_ms: ts, properties, value, decimal_value: decimal.map(|d| d.parse().unwrap()),
            };
            let mut direct = vec![7];
            write_datum(&e, &mut direct);
            prop_assert_eq!(&direct[1..], &to_datum(&e)[..]);
        }
    }
}
