//! The gateway against real Kafka and the real schema registry (and PostgreSQL for its key
//! table): events round-trip exactly, every error has its status and reason, nothing of a
//! refused request is published, a 202 always means Kafka holds the events, and an organization
//! lands in the partition Java's default partitioner picks for it.
//!
//! Each test serves its own gateway in-process (`bxb_gateway::run` on 127.0.0.1:0) with its own
//! topic and key file (`harness`).

#[path = "gateway/availability.rs"]
mod availability;
#[path = "gateway/harness.rs"]
mod harness;
#[path = "gateway/key_staleness.rs"]
mod key_staleness;
#[path = "gateway/placement.rs"]
mod placement;

use std::collections::BTreeSet;
use std::time::Duration;

use bxb_event::clock::now_ms;
use bxb_event::{Decimal, Event};
use bxb_gateway::auth::file::revoke_key;
use bxb_tests::eventually;
use harness::*;
use rdkafka::message::Headers;
use rdkafka::Message;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use uuid::Uuid;

/// An event as the test sent it, read independently of the gateway's parser.
#[derive(Deserialize)]
struct Sent<'a> {
    transaction_id: String,
    external_customer_id: String,
    code: String,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(borrow, default)]
    decimal_value: Option<&'a RawValue>,
}

/// The event the gateway must publish for `sent`; an event without a timestamp must carry the
/// receive time, which lies in `received`.
fn expected(organization_id: Uuid, sent: &Sent<'_>, published: &Event, received: (i64, i64)) -> Event {
    let timestamp_ms = match sent.timestamp.map(RawValue::get) {
        None => {
            let ts = published.timestamp_ms;
            assert!(received.0 <= ts && ts <= received.1, "default timestamp {ts} not in {received:?}");
            ts
        }
        Some(text) if text.starts_with('"') => {
            let parsed = time::OffsetDateTime::parse(text.trim_matches('"'), &time::format_description::well_known::Rfc3339).unwrap();
            parsed.unix_timestamp_nanos().div_euclid(1_000_000) as i64
        }
        Some(text) => text.parse().unwrap(),
    };
    Event {
        organization_id,
        transaction_id: sent.transaction_id.clone(),
        external_customer_id: sent.external_customer_id.clone(),
        code: sent.code.clone(),
        timestamp_ms,
        properties: sent.properties.map_or("{}", RawValue::get).to_owned(),
        value: sent.value,
        decimal_value: sent.decimal_value.map(|d| d.get().trim_matches('"').parse::<Decimal>().unwrap()),
    }
}

fn header<'a>(record: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a str> {
    let headers = record.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| std::str::from_utf8(h.value?).ok())
}

#[tokio::test]
async fn a_single_event_round_trips_with_its_key_and_trace_headers() {
    let setup = Setup::new(3).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let reader = TopicReader::new(&setup.topic, 3);
    let body = fixture("single_event.json", now_ms());
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);

    let before = now_ms();
    let response = gateway
        .http
        .post(format!("{}/v1/events", gateway.url))
        .bearer_auth(&setup.key)
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    Reply::of(response).await.assert_accepted(1);
    let after = now_ms();

    let record = reader.read(1).await.remove(0);
    assert_eq!(record.key(), Some(setup.organization_id.hyphenated().to_string().as_bytes()));
    let published = reader.decode(&record).await;
    let sent: Sent<'_> = serde_json::from_str(&body).unwrap();
    assert_eq!(published, expected(setup.organization_id, &sent, &published, (before, after)));
    assert!(body.contains(&published.properties), "properties are carried byte for byte");

    let traceparent = header(&record, "traceparent").expect("a traceparent header");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "the client's trace continues: {traceparent}");
    let ingested: i64 = header(&record, bxb_kafka::headers::INGESTED_AT_MS).expect("an ingestion time").parse().unwrap();
    assert!(before <= ingested && ingested <= after, "{ingested} not in [{before}, {after}]");
    reader.assert_no_more(Duration::from_secs(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_round_trips_in_order_keyed_by_organization() {
    let setup = Setup::new(3).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let reader = TopicReader::new(&setup.topic, 3);
    let body = fixture("batch.json", now_ms());

    let before = now_ms();
    let response = gateway
        .http
        .post(format!("{}/v1/events/batch", gateway.url))
        .header("x-api-key", &setup.key)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    Reply::of(response).await.assert_accepted(5);
    let after = now_ms();

    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        events: Vec<Sent<'a>>,
    }
    let sent: Batch<'_> = serde_json::from_str(&body).unwrap();
    let records = reader.read(5).await;
    let partition = records[0].partition();
    for (record, sent) in records.iter().zip(&sent.events) {
        assert_eq!(record.key(), Some(setup.organization_id.hyphenated().to_string().as_bytes()));
        assert_eq!(record.partition(), partition, "one organization, one partition");
        assert!(header(record, "traceparent").is_some());
        let published = reader.decode(record).await;
        assert_eq!(published, expected(setup.organization_id, sent, &published, (before, after)));
    }
    reader.assert_no_more(Duration::from_secs(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn every_client_error_has_its_status_and_reason_and_publishes_nothing() {
    let setup = Setup::new(1).await;
    let limits = ["--max-batch-events=3", "--max-body-bytes=4096", "--max-record-bytes=1024", "--rate-limit-events-per-second=0"];
    let gateway = TestGateway::start_ready(setup.config(&limits)).await;
    let reader = TopicReader::new(&setup.topic, 1);
    let key = setup.key.as_str();
    let ok = event_json("tx-ok");
    let json = "application/json";

    gateway.post_raw("/v1/events", Some(key), json, "{\"transaction_id\": ".into()).await.assert_error(400, "invalid_json");
    gateway.post_raw("/v1/events/batch", Some(key), json, r#"{"events": {}}"#.into()).await.assert_error(400, "invalid_json");
    gateway.post_raw("/v1/events", Some(key), json, "[]".into()).await.assert_error(400, "invalid_json");

    gateway.post_raw("/v1/events", None, json, ok.to_string()).await.assert_error(401, "missing_api_key");
    gateway.post("/v1/events", "bxb_not_a_key", &ok).await.assert_error(401, "invalid_api_key");

    let mut foreign = ok.clone();
    foreign["organization_id"] = json!(Uuid::new_v4());
    gateway.post("/v1/events", key, &foreign).await.assert_error(403, "organization_mismatch");

    let huge = json!({"events": [{"transaction_id": "x".repeat(5_000), "external_customer_id": "c", "code": "c"}]});
    gateway.post("/v1/events/batch", key, &huge).await.assert_error(413, "body_too_large");
    let four = json!({"events": [event_json("a"), event_json("b"), event_json("c"), event_json("d")]});
    gateway.post("/v1/events/batch", key, &four).await.assert_error(413, "batch_too_large");
    let mut large = event_json("tx-large");
    large["properties"] = json!({"blob": "x".repeat(2_000)});
    let reply = gateway.post("/v1/events/batch", key, &json!({"events": [ok, large]})).await;
    reply.assert_error(413, "record_too_large");
    assert_eq!((reply.body["errors"][0]["index"].as_u64(), reply.body["errors"].as_array().unwrap().len()), (Some(1), 1));

    gateway.post_raw("/v1/events", Some(key), "text/plain", ok.to_string()).await.assert_error(415, "unsupported_media_type");
    gateway
        .post_raw("/v1/events", Some(key), "application/x-www-form-urlencoded", ok.to_string())
        .await
        .assert_error(415, "unsupported_media_type");

    let now = now_ms();
    let mut old = event_json("tx-old");
    old["timestamp"] = json!(now - 31 * 86_400_000);
    let mut future = event_json("tx-future");
    future["timestamp"] = json!(rfc3339_with_micros(now + 3_600_000, 0));
    let reply = gateway.post("/v1/events/batch", key, &json!({"events": [old, future]})).await;
    reply.assert_error(422, "validation_failed");
    let problems: Vec<(u64, &str, &str)> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(problems, [(0, "timestamp", "too_old"), (1, "timestamp", "too_far_in_future")]);

    let not_found = Reply::of(gateway.get("/v1/nothing-here").await).await;
    not_found.assert_error(404, "not_found");

    // None of the above reached Kafka: the next accepted event is the first record.
    gateway.post("/v1/events", key, &event_json("tx-marker")).await.assert_accepted(1);
    let record = reader.read(1).await.remove(0);
    assert_eq!(reader.decode(&record).await.transaction_id, "tx-marker");
    reader.assert_no_more(Duration::from_secs(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn one_invalid_event_rejects_the_whole_batch_listing_every_problem() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let reader = TopicReader::new(&setup.topic, 1);

    let body = fixture("invalid_batch.json", now_ms());
    let reply = gateway.post_raw("/v1/events/batch", Some(&setup.key), "application/json", body.clone()).await;
    reply.assert_error(422, "validation_failed");
    let problems: BTreeSet<(u64, String, String)> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap().to_owned(), e["code"].as_str().unwrap().to_owned()))
        .collect();
    let expected: BTreeSet<(u64, String, String)> = [
        ("colour", "unknown_field"),
        ("transaction_id", "empty"),
        ("external_customer_id", "required"),
        ("code", "invalid_characters"),
        ("timestamp", "invalid_format"),
        ("properties", "not_an_object"),
        ("value", "invalid_type"),
        ("decimal_value", "invalid_decimal"),
    ]
    .into_iter()
    .map(|(field, code)| (1, field.to_owned(), code.to_owned()))
    .collect();
    assert_eq!(problems, expected);

    // The valid neighbours of the bad event were not published either.
    let mut fixed: Value = serde_json::from_str(&body).unwrap();
    fixed["events"].as_array_mut().unwrap().remove(1);
    gateway.post("/v1/events/batch", &setup.key, &fixed).await.assert_accepted(2);
    let records = reader.read(2).await;
    assert_eq!(reader.decode(&records[0]).await.transaction_id, "tx-invalid-0001");
    assert_eq!(reader.decode(&records[1]).await.transaction_id, "tx-invalid-0003");
    reader.assert_no_more(Duration::from_secs(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn naming_another_organization_is_forbidden_and_naming_ones_own_is_fine() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let reader = TopicReader::new(&setup.topic, 1);

    let mut foreign = event_json("tx-foreign");
    foreign["organization_id"] = json!(Uuid::new_v4());
    let reply = gateway.post("/v1/events/batch", &setup.key, &json!({"events": [event_json("tx-1"), foreign]})).await;
    reply.assert_error(403, "organization_mismatch");
    assert_eq!((reply.body["errors"][0]["index"].as_u64(), reply.body["errors"][0]["field"].as_str()), (Some(1), Some("organization_id")));

    let mut own = event_json("tx-own");
    own["organization_id"] = json!(setup.organization_id.hyphenated().to_string().to_uppercase());
    gateway.post("/v1/events", &setup.key, &own).await.assert_accepted(1);
    let record = reader.read(1).await.remove(0);
    let published = reader.decode(&record).await;
    assert_eq!((published.transaction_id.as_str(), published.organization_id), ("tx-own", setup.organization_id));
    reader.assert_no_more(Duration::from_secs(1)).await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_organization_over_its_rate_gets_429_with_retry_after() {
    let setup = Setup::new(1).await;
    let flags = ["--max-batch-events=5", "--rate-limit-events-per-second=1", "--rate-limit-burst-events=5"];
    let gateway = TestGateway::start_ready(setup.config(&flags)).await;
    let other = setup.keys.create(Uuid::new_v4()).key;
    gateway.wait_ready().await;
    let five = json!({"events": (0..5).map(|i| event_json(&format!("tx-{i}"))).collect::<Vec<_>>()});

    gateway.post("/v1/events/batch", &setup.key, &five).await.assert_accepted(5);
    let reply = gateway.post("/v1/events", &setup.key, &event_json("tx-over")).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    // Another organization has its own bucket (its key is picked up by the next refresh).
    eventually("the second key to be accepted", Duration::from_secs(10), || async {
        (gateway.post("/v1/events", &other, &event_json("tx-other")).await.status == 202).then_some(())
    })
    .await;
    eventually("the bucket to refill", Duration::from_secs(10), || async {
        (gateway.post("/v1/events", &setup.key, &event_json("tx-later")).await.status == 202).then_some(())
    })
    .await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_key_is_refused_after_the_next_refresh_and_new_keys_work() {
    let setup = Setup::new(1).await;
    let second = setup.keys.create(setup.organization_id);
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    gateway.post("/v1/events", &second.key, &event_json("tx-1")).await.assert_accepted(1);

    revoke_key(&setup.keys.path, &second.key_id).unwrap();
    eventually("the revoked key to be refused", Duration::from_secs(10), || async {
        let reply = gateway.post("/v1/events", &second.key, &event_json("tx-2")).await;
        (reply.status == 401).then_some(reply)
    })
    .await
    .assert_error(401, "revoked_api_key");
    gateway.post("/v1/events", &setup.key, &event_json("tx-3")).await.assert_accepted(1);

    let third = setup.keys.create(setup.organization_id);
    eventually("a new key to be accepted", Duration::from_secs(10), || async {
        (gateway.post("/v1/events", &third.key, &event_json("tx-4")).await.status == 202).then_some(())
    })
    .await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn keys_in_the_postgres_table_authenticate_and_revocations_apply() {
    let setup = Setup::new(1).await;
    let db = KeyDatabase::create().await;
    let organization_id = Uuid::new_v4();
    let key = bxb_api_key::generate_key();
    let insert = "INSERT INTO api_keys (key_id, organization_id, key_sha256) VALUES ($1, $2, $3)";
    db.execute(insert, "key_pg_1", Some(organization_id), Some(&key)).await;

    let mut config = setup.config(&[]);
    config.auth.api_keys_file = None;
    config.auth.postgres_url = Some(db.url.clone());
    let gateway = TestGateway::start_ready(config).await;
    let reader = TopicReader::new(&setup.topic, 1);
    gateway.post("/v1/events", &key, &event_json("tx-pg")).await.assert_accepted(1);
    let published = reader.decode(&reader.read(1).await.remove(0)).await;
    assert_eq!(published.organization_id, organization_id);

    db.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", "key_pg_1", None, None).await;
    eventually("the revoked key to be refused", Duration::from_secs(10), || async {
        let reply = gateway.post("/v1/events", &key, &event_json("tx-pg-2")).await;
        (reply.status == 401 && reply.body["code"] == "revoked_api_key").then_some(())
    })
    .await;

    let second = bxb_api_key::generate_key();
    db.execute(insert, "key_pg_2", Some(organization_id), Some(&second)).await;
    eventually("a new key to be accepted", Duration::from_secs(10), || async {
        (gateway.post("/v1/events", &second, &event_json("tx-pg-3")).await.status == 202).then_some(())
    })
    .await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn health_metrics_and_the_openapi_description_are_served() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    gateway.post("/v1/events", &setup.key, &event_json("tx-metrics")).await.assert_accepted(1);
    gateway.post("/v1/events", &setup.key, &json!({"code": "x"})).await.assert_error(422, "validation_failed");

    assert_eq!(gateway.get("/healthz").await.status(), 200);
    let ready = Reply::of(gateway.get("/readyz").await).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));

    let metrics = gateway.get("/metrics").await.text().await.unwrap();
    for needle in [
        r#"bxb_gateway_requests_total{route="/v1/events",status="202"}"#,
        r#"bxb_gateway_requests_total{route="/v1/events",status="422"}"#,
        r#"bxb_gateway_events_rejected_total{reason="validation_failed"}"#,
        "bxb_gateway_events_accepted_total",
        r#"bxb_gateway_request_duration_seconds_bucket{route="/v1/events""#,
        "bxb_gateway_delivery_duration_seconds_bucket",
        "bxb_gateway_producer_queue_messages",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }

    let spec: Value = gateway.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/v1/events/batch"]["post"]["responses"]["202"].is_object());
    gateway.stop().await.unwrap();
}
