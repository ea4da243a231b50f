//! Arbitrary writer schemas — the event schema with fields dropped, retyped and added (records,
//! arrays, maps, unions, enums and fixed types nested up to past the limit, named types used
//! twice and referring to themselves), sometimes renamed — with datums written for them, then
//! cut, flipped or replaced by random bytes. Whatever the schema and the bytes:
//!
//! - the verdict on the schema is the rule's (`plan` accepts exactly what the generator built
//!   to be accepted), and nothing panics or overflows the stack;
//! - a datum is an event or a poison reason, and a well-formed datum of an accepted schema is
//!   the event it was written from;
//! - what is allocated (the event's strings) is never more than the datum's bytes.
//!
//! The case count is `BXB_FUZZ_CASES` (default [`DEFAULT_CASES`]).

use apache_avro::types::Value;
use apache_avro::Schema;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::avro;
use crate::registry::{decode_with_plan, DecodeError};
use crate::writer_schema::{plan, MAX_NESTING};
use crate::Event;

const DEFAULT_CASES: u32 = 4_000;

fn cases() -> u32 {
    std::env::var("BXB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(DEFAULT_CASES, |n: u32| (n / 10).max(1))
}

/// A small deterministic generator: schemas are built from one seed, so proptest explores seeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// What the generator built, as far as the rule is concerned.
#[derive(Default)]
struct Built {
    named: usize,
    /// Named types defined so far, with their nesting.
    defined: Vec<(String, usize)>,
    /// Records being defined (a reference to one is recursion).
    open: Vec<String>,
    recursive: bool,
}

/// An extra field's type, and its nesting as the rule counts it.
fn extra_type(rng: &mut Rng, built: &mut Built, depth: usize) -> (Json, usize) {
    let leaves = [
        json!("null"),
        json!("boolean"),
        json!("int"),
        json!("long"),
        json!("float"),
        json!("double"),
        json!("bytes"),
        json!("string"),
        json!({"type": "long", "logicalType": "timestamp-micros"}),
        json!({"type": "int", "logicalType": "date"}),
        json!({"type": "string", "logicalType": "uuid"}),
        json!({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}),
    ];
    let choice = if depth > MAX_NESTING + 2 { 0 } else { rng.below(11) };
    match choice {
        0..=2 => (leaves[rng.below(leaves.len())].clone(), 0),
        3 => {
            built.named += 1;
            let name = format!("E{}", built.named);
            built.defined.push((name.clone(), 0));
            (json!({"type": "enum", "name": name, "symbols": ["A", "B", "C"]}), 0)
        }
        4 => {
            built.named += 1;
            let name = format!("F{}", built.named);
            built.defined.push((name.clone(), 0));
            (json!({"type": "fixed", "name": name, "size": rng.below(5)}), 0)
        }
        5 => {
            let (items, nesting) = extra_type(rng, built, depth + 1);
            (json!({"type": "array", "items": items}), nesting + 1)
        }
        6 => {
            let (values, nesting) = extra_type(rng, built, depth + 1);
            (json!({"type": "map", "values": values}), nesting + 1)
        }
        7 => {
            // A union of null and one other kind, so that the branches never clash.
            let (other, nesting) = loop {
                let (defined, recursive) = (built.defined.len(), built.recursive);
                let (t, n) = extra_type(rng, built, depth + 1);
                if t != json!("null") && !t.is_array() {
                    break (t, n);
                }
                // Forget what the discarded type defined: nothing may refer to it.
                built.defined.truncate(defined);
                built.recursive = recursive;
            };
            (json!(["null", other]), nesting + 1)
        }
        8 => {
            built.named += 1;
            let name = format!("R{}", built.named);
            built.open.push(name.clone());
            let mut fields = Vec::new();
            let mut deepest = 0;
            for i in 0..rng.below(3) {
                let (t, n) = extra_type(rng, built, depth + 1);
                fields.push(json!({"name": format!("f{i}"), "type": t}));
                deepest = deepest.max(n);
            }
            built.open.pop();
            built.defined.push((name.clone(), deepest + 1));
            (json!({"type": "record", "name": name, "fields": fields}), deepest + 1)
        }
        9 if !built.defined.is_empty() => {
            let (name, nesting) = built.defined[rng.below(built.defined.len())].clone();
            (json!(name), nesting)
        }
        10 if rng.chance(25) => {
            // Recursion, always with a way out (null or an empty array) so data exists.
            built.recursive = true;
            let target = built.open[rng.below(built.open.len())].clone();
            if rng.chance(50) {
                (json!(["null", target]), 1)
            } else {
                (json!({"type": "array", "items": target}), 1)
            }
        }
        _ => (json!("long"), 0),
    }
}

/// A type for an event field, and whether the rule accepts it there.
fn event_field_type(rng: &mut Rng, name: &str, original: &Json) -> (Json, bool) {
    let options: Vec<(Json, bool)> = match name {
        "timestamp" => vec![
            (json!("int"), true),
            (json!("long"), true),
            (json!({"type": "long", "logicalType": "timestamp-micros"}), false),
            (json!("double"), false),
        ],
        "value" => vec![(json!("float"), true), (json!("long"), true), (json!(["null", "int", "double"]), true), (json!("string"), false)],
        "decimal_value" => vec![(json!("string"), true), (json!(["null", "bytes"]), true), (json!("double"), false)],
        _ => vec![(json!("bytes"), true), (json!(["string"]), true), (json!(["null", "string"]), false), (json!("int"), false)],
    };
    if rng.chance(90) {
        (original.clone(), true)
    } else {
        options[rng.below(options.len())].clone()
    }
}

struct Generated {
    json: String,
    accepted: bool,
}

fn writer_schema(seed: u64) -> Generated {
    let mut rng = Rng(seed);
    let Ok(Json::Object(mut schema)) = serde_json::from_str::<Json>(avro::EVENT_SCHEMA_JSON) else { unreachable!() };
    let renamed = rng.chance(5);
    if renamed {
        schema.insert("name".into(), json!("Other"));
    }
    let mut built = Built { open: vec![if renamed { "Other" } else { "Event" }.into()], ..Built::default() };
    let mut accepted = !renamed;
    let mut fields = Vec::new();
    for field in schema["fields"].as_array().unwrap().clone() {
        let name = field["name"].as_str().unwrap().to_owned();
        let has_default = field.get("default").is_some();
        if rng.chance(4) {
            accepted &= has_default;
            continue;
        }
        let (field_type, ok) = event_field_type(&mut rng, &name, &field["type"]);
        accepted &= ok;
        fields.push(json!({"name": name, "type": field_type}));
    }
    let deep_chain = rng.chance(10);
    // Extra fields keep the order they were made in, so a named type is defined before it is used.
    let mut next_at = 0;
    for i in 0..rng.below(4) {
        let (mut field_type, mut nesting) = extra_type(&mut rng, &mut built, 0);
        if deep_chain && i == 0 {
            for _ in 0..(MAX_NESTING - 2 + rng.below(5)) {
                field_type = json!({"type": "array", "items": field_type});
                nesting += 1;
            }
        }
        accepted &= nesting <= MAX_NESTING;
        let at = next_at + rng.below(fields.len() + 1 - next_at);
        fields.insert(at, json!({"name": format!("extra_{i}"), "type": field_type}));
        next_at = at + 1;
    }
    accepted &= !built.recursive;
    schema.insert("fields".into(), Json::Array(fields));
    Generated { json: Json::Object(schema).to_string(), accepted }
}

/// A value of `schema` for a datum: event fields from `event`, the rest arbitrary but finite.
fn value_of(
    rng: &mut Rng,
    schema: &Schema,
    names: &apache_avro::schema::NamesRef<'_>,
    event: &Event,
    field: Option<&str>,
    depth: usize,
) -> Value {
    if let Some(name) = field.filter(|name| super::super::TARGETS.iter().any(|(target, _)| target == name)) {
        return event_value(rng, schema, name, event);
    }
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(rng.chance(50)),
        Schema::Int => Value::Int(rng.next() as i32),
        Schema::Date => Value::Date(rng.next() as i32),
        Schema::Long => Value::Long(rng.next() as i64),
        Schema::TimestampMicros => Value::TimestampMicros(rng.next() as i64),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(-2.25),
        Schema::Bytes => Value::Bytes(vec![0xff; rng.below(4)]),
        Schema::String => Value::String("é".repeat(rng.below(3))),
        Schema::Uuid(_) => Value::Uuid(uuid::Uuid::from_u128(u128::from(rng.next()))),
        Schema::Decimal(_) => Value::Decimal(apache_avro::Decimal::from(vec![1u8, 2])),
        Schema::Enum(e) => Value::Enum(1, e.symbols[1].clone()),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![7; f.size]),
        Schema::Array(a) => {
            let count = if depth > 6 { 0 } else { rng.below(3) };
            Value::Array((0..count).map(|_| value_of(rng, &a.items, names, event, None, depth + 1)).collect())
        }
        Schema::Map(m) => {
            let count = if depth > 6 { 0 } else { rng.below(3) };
            Value::Map((0..count).map(|i| (format!("k{i}"), value_of(rng, &m.types, names, event, None, depth + 1))).collect())
        }
        Schema::Union(u) => {
            let branch = if depth > 6 { 0 } else { rng.below(u.variants().len()) };
            Value::Union(branch as u32, Box::new(value_of(rng, &u.variants()[branch], names, event, None, depth + 1)))
        }
        Schema::Record(r) => {
            Value::Record(r.fields.iter().map(|f| (f.name.clone(), value_of(rng, &f.schema, names, event, None, depth + 1))).collect())
        }
        Schema::Ref { name } => {
            let definition = names.iter().find(|(n, _)| n.name() == name.name()).map(|(_, s)| *s).expect("a defined name");
            value_of(rng, definition, names, event, None, depth)
        }
        other => panic!("the generator made no {other:?}"),
    }
}

fn event_value(rng: &mut Rng, schema: &Schema, name: &str, event: &Event) -> Value {
    let text = |event: &Event| match name {
        "organization_id" => event.kafka_key(),
        "transaction_id" => event.transaction_id.clone(),
        "external_customer_id" => event.external_customer_id.clone(),
        "code" => event.code.clone(),
        "properties" => event.properties.clone(),
        _ => event.decimal_value.as_ref().map(|d| d.as_str().to_owned()).unwrap_or_default(),
    };
    match schema {
        Schema::Union(u) => {
            let wanted_null = matches!(name, "value" | "decimal_value") && rng.chance(30);
            let branch = u.variants().iter().position(|v| (*v == Schema::Null) == wanted_null).unwrap_or(0);
            Value::Union(branch as u32, Box::new(event_value(rng, &u.variants()[branch], name, event)))
        }
        Schema::Null => Value::Null,
        Schema::String => Value::String(text(event)),
        Schema::Bytes => Value::Bytes(text(event).into_bytes()),
        Schema::TimestampMillis => Value::TimestampMillis(event.timestamp_ms),
        Schema::Long if name == "timestamp" => Value::Long(event.timestamp_ms),
        Schema::Int if name == "timestamp" => Value::Int(86_400_000),
        Schema::Long => Value::Long(3),
        Schema::Int => Value::Int(-4),
        Schema::Float => Value::Float(0.75),
        Schema::Double => Value::Double(event.value.unwrap_or(1.0)),
        _ => Value::Null,
    }
}

/// What an accepted schema's datum must read as: `event` with each field as its value was written.
fn expected_event(written: &Value, event: &Event) -> Event {
    let Value::Record(fields) = written else { unreachable!() };
    let mut expected = Event { value: None, decimal_value: None, ..event.clone() };
    for (name, value) in fields {
        let value = match value {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        };
        match (name.as_str(), value) {
            ("timestamp", Value::Int(ms)) => expected.timestamp_ms = i64::from(*ms),
            ("value", Value::Long(n)) => expected.value = Some(*n as f64),
            ("value", Value::Int(n)) => expected.value = Some(f64::from(*n)),
            ("value", Value::Float(f)) => expected.value = Some(f64::from(*f)),
            ("value", Value::Double(d)) => expected.value = Some(*d),
            ("decimal_value", Value::String(_) | Value::Bytes(_)) => expected.decimal_value = event.decimal_value.clone(),
            _ => {}
        }
    }
    expected
}

fn base_event(seed: u64) -> Event {
    Event {
        organization_id: uuid::Uuid::from_u128(u128::from(seed) << 3),
        transaction_id: format!("tx-{seed}"),
        external_customer_id: "customer".into(),
        code: "api_calls".into(),
        timestamp_ms: 1_700_000_000_000 + (seed % 1000) as i64,
        properties: r#"{"k":[1]}"#.into(),
        value: Some(0.5),
        decimal_value: Some("12.5".parse().unwrap()),
    }
}

/// Every outcome is an event or a poison reason, and an event never holds more than the datum.
fn assert_outcome(outcome: &Result<Event, DecodeError>, datum: &[u8]) {
    match outcome {
        Ok(event) => {
            let held = event.transaction_id.len()
                + event.external_customer_id.len()
                + event.code.len()
                + event.properties.len()
                + event.decimal_value.as_ref().map_or(0, |d| d.as_str().len());
            assert!(held <= datum.len(), "an event of {held} bytes from a datum of {}", datum.len());
        }
        Err(DecodeError::Poison { message, .. }) => assert!(!message.is_empty()),
        Err(other) => panic!("bytes alone made the decoder wait: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_writer_schemas_and_datums(seed: u64, cut: prop::sample::Index, flip: (prop::sample::Index, u8), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        let generated = writer_schema(seed);
        let writer = Schema::parse_str(&generated.json).unwrap_or_else(|e| panic!("the generator made an invalid schema: {e}: {}", generated.json));
        let verdict = plan(&writer);
        prop_assert_eq!(verdict.is_ok(), generated.accepted, "{:?}: {}", verdict.as_ref().err(), generated.json);
        let Ok(plan) = verdict else { return Ok(()) };

        let event = base_event(seed);
        let mut rng = Rng(seed ^ 0x5555);
        let resolved = apache_avro::schema::ResolvedSchema::try_from(&writer).unwrap();
        let Schema::Record(record) = &writer else { unreachable!() };
        let value = Value::Record(record.fields.iter().map(|f| (f.name.clone(), value_of(&mut rng, &f.schema, resolved.get_names(), &event, Some(f.name.as_str()), 0))).collect());
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&writer).build().unwrap().write_value_to_vec(value.clone())
            .unwrap_or_else(|e| panic!("the generator made a value its schema does not take: {e}: {value:?} for {}", generated.json));

        let read = decode_with_plan(&plan, &datum);
        assert_outcome(&read, &datum);
        let decoded = read.unwrap_or_else(|e| panic!("a well-formed datum was refused: {e}: {}", generated.json));
        let expected = expected_event(&value, &event);
        prop_assert_eq!(decoded.value.map(f64::to_bits), expected.value.map(f64::to_bits));
        prop_assert_eq!(Event { value: None, ..decoded }, Event { value: None, ..expected });
        if plan.is_event_schema() {
            assert_outcome(&crate::registry::decode_event_datum(&writer, true, &datum), &datum);
        }

        let mut broken = datum.clone();
        broken.truncate(cut.index(datum.len() + 1));
        assert_outcome(&decode_with_plan(&plan, &broken), &broken);
        let mut flipped = datum.clone();
        if !flipped.is_empty() {
            let at = flip.0.index(flipped.len());
            flipped[at] ^= flip.1.max(1);
        }
        assert_outcome(&decode_with_plan(&plan, &flipped), &flipped);
        assert_outcome(&decode_with_plan(&plan, &noise), &noise);
    }
}
