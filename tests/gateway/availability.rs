//! Availability: what the gateway answers when Kafka, the registry or the key database is out
//! of reach, and that a shutdown loses nothing it acknowledged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bxb_tests::eventually;
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn kafka_unreachable_answers_503_within_the_delivery_timeout_and_is_not_ready() {
    let setup = Setup::new(1).await;
    let mut config = setup.config(&["--kafka-delivery-timeout-ms=2000", "--kafka-enqueue-timeout-ms=500", "--request-timeout-ms=4000"]);
    config.kafka.brokers = format!("127.0.0.1:{}", closed_port());
    let gateway = TestGateway::start(config).await;

    // The schema registers (the registry is up) but Kafka never becomes ready.
    let failing = eventually("only the kafka check to fail", Duration::from_secs(30), || async {
        let reply = Reply::of(gateway.get("/readyz").await).await;
        (reply.status == 503 && reply.body["failing"] == json!(["kafka"])).then_some(reply.body)
    })
    .await;
    assert_eq!(failing["status"], "not_ready");

    let started = Instant::now();
    let reply = gateway.post("/v1/events", &setup.key, &event_json("tx-nowhere")).await;
    let elapsed = started.elapsed();
    reply.assert_error(503, "kafka_unavailable");
    assert_eq!(reply.retry_after.as_deref(), Some("5"));
    assert!(elapsed < Duration::from_millis(2_000 + 3_000), "503 after {elapsed:?}, the delivery timeout is 2 s");
    assert_eq!(gateway.get("/readyz").await.status(), 503);
    assert_eq!(gateway.get("/healthz").await.status(), 200);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn schema_registry_unreachable_answers_503_and_is_not_ready() {
    let setup = Setup::new(1).await;
    let mut config = setup.config(&[]);
    config.registry.url = format!("http://127.0.0.1:{}/apis/ccompat/v7", closed_port());
    let gateway = TestGateway::start(config).await;
    eventually("only the schema check to fail", Duration::from_secs(30), || async {
        let reply = Reply::of(gateway.get("/readyz").await).await;
        (reply.status == 503 && reply.body["failing"] == json!(["schema"])).then_some(())
    })
    .await;
    let reply = gateway.post("/v1/events", &setup.key, &event_json("tx-unencodable")).await;
    reply.assert_error(503, "schema_not_registered");
    assert_eq!(reply.retry_after.as_deref(), Some("5"));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_key_database_keeps_the_gateway_not_ready() {
    let setup = Setup::new(1).await;
    let mut config = setup.config(&[]);
    config.auth.api_keys_file = None;
    config.auth.postgres_url = Some(format!("postgres://bxb:bxb@127.0.0.1:{}/bxb", closed_port()));
    let gateway = TestGateway::start(config).await;
    eventually("only the api_keys check to fail", Duration::from_secs(30), || async {
        let reply = Reply::of(gateway.get("/readyz").await).await;
        (reply.status == 503 && reply.body["failing"] == json!(["api_keys"])).then_some(())
    })
    .await;
    // Not "unknown key" (401): the key may well be in the table the gateway has not read yet.
    let reply = gateway.post("/v1/events", &setup.key, &event_json("tx")).await;
    reply.assert_error(503, "api_keys_unavailable");
    assert_eq!(reply.retry_after.as_deref(), Some("5"));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_every_acknowledged_event_is_in_kafka() {
    let setup = Setup::new(2).await;
    // A long linger keeps requests waiting for their delivery reports when shutdown starts.
    let gateway = TestGateway::start_ready(setup.config(&["--kafka-linger-ms=300"])).await;
    let reader = TopicReader::new(&setup.topic, 2);

    let requests: Vec<_> = (0..20)
        .map(|r| {
            let (http, url, key) = (gateway.http.clone(), gateway.url.clone(), setup.key.clone());
            let ids: Vec<String> = (0..25).map(|i| format!("tx-{r}-{i}")).collect();
            let body = json!({"events": ids.iter().map(|id| event_json(id)).collect::<Vec<_>>()});
            tokio::spawn(async move {
                let response = http.post(format!("{url}/v1/events/batch")).bearer_auth(key).json(&body).send().await;
                let status = match response {
                    Ok(response) => Some(Reply::of(response).await.status),
                    Err(_) => None,
                };
                (status, ids)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = gateway.url.clone();
    gateway.stop().await.expect("a clean shutdown");

    let mut acknowledged = BTreeSet::new();
    for request in requests {
        let (status, ids) = request.await.unwrap();
        match status {
            Some(202) => acknowledged.extend(ids),
            // Not yet accepted by the server when it stopped listening: never acknowledged.
            None => {}
            Some(other) => panic!("an in-flight request ended with {other} instead of finishing"),
        }
    }
    assert!(!acknowledged.is_empty(), "requests in flight at shutdown must complete");
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err(), "nothing listens after shutdown");

    let records = reader.read(acknowledged.len()).await;
    let mut published = BTreeSet::new();
    for record in &records {
        published.insert(reader.decode(record).await.transaction_id);
    }
    assert_eq!(published, acknowledged);
}
