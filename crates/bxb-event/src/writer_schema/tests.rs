use apache_avro::types::Value;

use super::*;
use crate::avro::{self, ReadError, EVENT_SCHEMA, EVENT_SCHEMA_JSON};
use crate::Event;

mod properties;

fn event() -> Event {
    Event {
        organization_id: uuid::Uuid::from_u128(0x1234),
        transaction_id: "tx-1".into(),
        external_customer_id: "cust-1".into(),
        code: "api_calls".into(),
        timestamp_ms: 1_700_000_000_123,
        properties: r#"{"a":1}"#.into(),
        value: Some(2.5),
        decimal_value: Some("1.5".parse().unwrap()),
    }
}

fn parse(json: &str) -> Schema {
    Schema::parse_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The event schema with `field` (a JSON object) inserted in front of the others.
fn with_field_in_front(field: &str) -> String {
    let json = EVENT_SCHEMA_JSON.replacen(r#""fields": ["#, &format!(r#""fields": [ {field},"#), 1);
    assert_ne!(json, EVENT_SCHEMA_JSON);
    json
}

/// The event schema with the type of `name` replaced by `field_type` (and its default dropped).
fn with_field_type(name: &str, field_type: &str) -> String {
    let Ok(serde_json::Value::Object(mut schema)) = serde_json::from_str::<serde_json::Value>(EVENT_SCHEMA_JSON) else { unreachable!() };
    let fields = schema["fields"].as_array_mut().unwrap();
    let field = fields.iter_mut().find(|f| f["name"] == name).unwrap().as_object_mut().unwrap();
    field.insert("type".into(), serde_json::from_str(field_type).unwrap());
    field.remove("default");
    serde_json::Value::Object(schema).to_string()
}

fn without_field(name: &str) -> String {
    let Ok(serde_json::Value::Object(mut schema)) = serde_json::from_str::<serde_json::Value>(EVENT_SCHEMA_JSON) else { unreachable!() };
    schema["fields"].as_array_mut().unwrap().retain(|f| f["name"] != name);
    serde_json::Value::Object(schema).to_string()
}

fn write(schema: &Schema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema).build().unwrap().write_value_to_vec(value).unwrap()
}

fn event_fields(event: &Event) -> Vec<(String, Value)> {
    let Value::Record(fields) = avro::to_value(event) else { unreachable!() };
    fields
}

fn refused(json: &str) -> String {
    match plan(&parse(json)) {
        Err(IncompatibleSchema(message)) => message,
        Ok(_) => panic!("accepted: {json}"),
    }
}

#[test]
fn the_event_schema_is_read_like_the_direct_reader_reads_it() {
    let plan = plan(&EVENT_SCHEMA).unwrap();
    assert!(plan.is_event_schema());
    for e in [event(), Event { value: None, decimal_value: None, ..event() }] {
        let datum = avro::to_datum(&e);
        assert_eq!(read(&plan, &datum).unwrap(), e);
        assert_eq!(avro::read_datum(&datum).unwrap(), e);
    }
}

#[test]
fn an_added_field_anywhere_is_skipped() {
    for field_type in
        [r#"["null", "string"], "default": null"#, r#"{"type": "array", "items": {"type": "map", "values": "long"}}"#, r#""boolean""#]
    {
        let json = with_field_in_front(&format!(r#"{{"name": "extra", "type": {field_type}}}"#));
        let writer = parse(&json);
        let plan = plan(&writer).unwrap();
        assert!(!plan.is_event_schema());
        let Schema::Record(record) = &writer else { unreachable!() };
        let extra = match &record.fields[0].schema {
            Schema::Union(_) => Value::Union(1, Box::new(Value::String("eu".into()))),
            Schema::Array(_) => Value::Array(vec![Value::Map([("a".to_owned(), Value::Long(1))].into()), Value::Map(Default::default())]),
            _ => Value::Boolean(true),
        };
        let mut fields = event_fields(&event());
        fields.insert(0, ("extra".into(), extra));
        assert_eq!(read(&plan, &write(&writer, Value::Record(fields))).unwrap(), event(), "{field_type}");
    }
}

#[test]
fn fields_with_a_default_may_be_missing_and_others_may_not() {
    let writer = parse(&without_field("decimal_value"));
    let datum = write(&writer, Value::Record(event_fields(&event()).into_iter().filter(|(n, _)| n != "decimal_value").collect()));
    assert_eq!(read(&plan(&writer).unwrap(), &datum).unwrap(), Event { decimal_value: None, ..event() });
    for required in ["organization_id", "transaction_id", "external_customer_id", "code", "timestamp", "properties"] {
        assert!(refused(&without_field(required)).contains(required));
    }
}

#[test]
fn widened_fields_are_promoted() {
    let cases: [(&str, &str, Value, Event); 6] = [
        ("timestamp", r#""int""#, Value::Int(86_400_000), Event { timestamp_ms: 86_400_000, ..event() }),
        ("timestamp", r#""long""#, Value::Long(5), Event { timestamp_ms: 5, ..event() }),
        ("value", r#""float""#, Value::Float(0.5), Event { value: Some(0.5), ..event() }),
        ("value", r#"["null", "long", "float"]"#, Value::Union(1, Box::new(Value::Long(-7))), Event { value: Some(-7.0), ..event() }),
        ("code", r#""bytes""#, Value::Bytes(b"api.calls".to_vec()), Event { code: "api.calls".into(), ..event() }),
        ("organization_id", r#"{"type": "string", "logicalType": "uuid"}"#, Value::String(event().kafka_key()), event()),
    ];
    for (name, field_type, value, expected) in cases {
        let writer = parse(&with_field_type(name, field_type));
        let fields = event_fields(&event()).into_iter().map(|(n, v)| if n == name { (n, value.clone()) } else { (n, v) }).collect();
        assert_eq!(read(&plan(&writer).unwrap(), &write(&writer, Value::Record(fields))).unwrap(), expected, "{name}: {field_type}");
    }
}

#[test]
fn types_whose_values_mean_something_else_are_refused() {
    for (name, field_type) in [
        ("timestamp", r#"{"type": "long", "logicalType": "timestamp-micros"}"#),
        ("timestamp", r#"{"type": "long", "logicalType": "local-timestamp-millis"}"#),
        ("timestamp", r#""double""#),
        ("code", r#"["null", "string"]"#),
        ("code", r#"{"type": "enum", "name": "Code", "symbols": ["api_calls"]}"#),
        ("value", r#""string""#),
        ("value", r#"{"type": "int", "logicalType": "date"}"#),
        ("decimal_value", r#"{"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}"#),
        ("properties", r#"{"type": "map", "values": "string"}"#),
    ] {
        assert!(refused(&with_field_type(name, field_type)).contains(name), "{name}: {field_type}");
    }
}

#[test]
fn other_records_and_other_types_are_refused() {
    assert!(refused(&EVENT_SCHEMA_JSON.replace(r#""name": "Event""#, r#""name": "Invoice""#)).contains("Invoice"));
    assert!(refused(&EVENT_SCHEMA_JSON.replace("dev.bxb.events", "dev.other")).contains("dev.other.Event"));
    assert!(refused(r#"{"type": "array", "items": "long"}"#).contains("not a record"));
    assert!(refused(r#""string""#).contains("not a record"));
}

#[test]
fn recursive_types_are_refused_however_the_recursion_is_hidden() {
    let recursive = [
        r#"{"type":"record","name":"Event","namespace":"dev.bxb.events","fields":[{"name":"next","type":["null","Event"]}]}"#.to_owned(),
        with_field_in_front(r#"{"name": "parent", "type": ["null", "Event"], "default": null}"#),
        with_field_in_front(
            r#"{"name": "tree", "type": {"type": "record", "name": "Node", "fields": [{"name": "children", "type": {"type": "array", "items": "Node"}}]}}"#,
        ),
        with_field_in_front(
            r#"{"name": "a", "type": {"type": "record", "name": "A", "fields": [{"name": "b", "type": ["null", {"type": "record", "name": "B", "fields": [{"name": "a", "type": {"type": "map", "values": "A"}}]}]}]}}"#,
        ),
    ];
    for json in recursive {
        assert!(refused(&json).contains("refers to itself"), "{json}");
    }
}

#[test]
fn a_named_type_used_twice_is_not_recursion() {
    let json = with_field_in_front(
        r#"{"name": "pair", "type": {"type": "record", "name": "Pair", "fields": [{"name": "left", "type": {"type": "record", "name": "Leaf", "fields": [{"name": "n", "type": "int"}]}}, {"name": "right", "type": "Leaf"}]}}"#,
    );
    let writer = parse(&json);
    let plan = plan(&writer).unwrap();
    let leaf = |n| Value::Record(vec![("n".into(), Value::Int(n))]);
    let mut fields = event_fields(&event());
    fields.insert(0, ("pair".into(), Value::Record(vec![("left".into(), leaf(1)), ("right".into(), leaf(2))])));
    assert_eq!(read(&plan, &write(&writer, Value::Record(fields))).unwrap(), event());
}

fn nested_arrays(depth: usize) -> String {
    let mut field_type = r#""long""#.to_owned();
    for _ in 0..depth {
        field_type = format!(r#"{{"type": "array", "items": {field_type}}}"#);
    }
    with_field_in_front(&format!(r#"{{"name": "deep", "type": {field_type}}}"#))
}

#[test]
fn nesting_is_read_up_to_its_limit_and_refused_beyond() {
    let writer = parse(&nested_arrays(MAX_NESTING));
    let datum = [vec![0], avro::to_datum(&event())].concat();
    assert_eq!(read(&plan(&writer).unwrap(), &datum).unwrap(), event());
    assert!(refused(&nested_arrays(MAX_NESTING + 1)).contains("more than 32 deep"));
}

#[test]
fn a_schema_nested_as_deep_as_json_allows_is_refused_without_exhausting_the_stack() {
    // A consumer decides on the writer schema on a 2 MiB stack (a tokio worker's).
    let outcome = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| match Schema::parse_str(&nested_arrays(120)) {
            Ok(schema) => plan(&schema).map(drop).map_err(|e| e.0),
            Err(e) => Err(e.to_string()),
        })
        .unwrap()
        .join()
        .expect("no stack overflow");
    assert!(outcome.is_err());
}

fn amplifier_plan() -> WriterPlan {
    plan(&parse(&with_field_in_front(r#"{"name": "blowup", "type": {"type": "array", "items": {"type": "array", "items": "null"}}}"#)))
        .unwrap()
}

#[test]
fn block_counts_cannot_claim_more_work_than_the_datum_pays_for() {
    let long = |n: i64| {
        let mut out = Vec::new();
        avro::write_long(n, &mut out);
        out
    };
    let plan = amplifier_plan();
    // A few nulls are read; a million in a few bytes are over budget, and fast.
    let small = [long(2), long(3), long(0), long(1), long(0), long(0), avro::to_datum(&event())].concat();
    assert_eq!(read(&plan, &small).unwrap(), event());
    for count in [1_000_000, i64::MAX] {
        let bomb = [long(1), long(count), long(0), long(0), avro::to_datum(&event())].concat();
        let started = std::time::Instant::now();
        assert!(matches!(read(&plan, &bomb), Err(ReadError::OverBudget(_))), "{count}");
        assert!(started.elapsed() < std::time::Duration::from_millis(200), "{:?}", started.elapsed());
    }
    // A negative count announces the block's size, and the block is skipped whole.
    let sized = [long(-1), long(2), long(1), long(0), long(0), avro::to_datum(&event())].concat();
    assert_eq!(read(&plan, &sized).unwrap(), event());
    let oversized = [long(-1), long(1_000), long(0), avro::to_datum(&event())].concat();
    assert!(matches!(read(&plan, &oversized), Err(ReadError::Malformed(_))));
}

#[test]
fn broken_skipped_values_are_malformed() {
    let writer = parse(&with_field_in_front(
        r#"{"name": "x", "type": ["null", "boolean", {"type": "enum", "name": "E", "symbols": ["A"]}, "string"]}"#,
    ));
    let plan = plan(&writer).unwrap();
    let rest = avro::to_datum(&event());
    for bad in [vec![8], vec![2, 2], vec![4, 2], vec![6, 2, 0xff]] {
        assert!(matches!(read(&plan, &[bad.clone(), rest.clone()].concat()), Err(ReadError::Malformed(_))), "{bad:?}");
    }
    assert_eq!(read(&plan, &[vec![2, 1], rest].concat()).unwrap(), event());
}

#[test]
fn the_fuzz_seeds_read_as_their_names_say() {
    use crate::registry::PoisonReason;
    let check = |input: &[u8]| {
        let (length, rest) = input.split_at(2);
        let (schema, datum) = rest.split_at(usize::from(u16::from_le_bytes([length[0], length[1]])));
        crate::invariants::check_writer_schema(std::str::from_utf8(schema).unwrap(), datum).expect("an Avro schema")
    };
    assert!(check(include_bytes!("../../../../fuzz/seeds/writer_schema/event.bin")).is_ok());
    assert!(check(include_bytes!("../../../../fuzz/seeds/writer_schema/added_field.bin")).is_ok());
    assert_eq!(check(include_bytes!("../../../../fuzz/seeds/writer_schema/recursive.bin")), Err(PoisonReason::IncompatibleSchema));
    assert_eq!(check(include_bytes!("../../../../fuzz/seeds/writer_schema/amplifier.bin")), Err(PoisonReason::BudgetExceeded));
}
