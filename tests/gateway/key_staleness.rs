//! API keys that stop refreshing: once the keys are older than `BXB_API_KEYS_MAX_STALENESS_MS`
//! every request with a key gets 503 (so a key revoked meanwhile stops working) and `/readyz`
//! fails on `api_keys`; a key query that hangs is cut off by `BXB_API_KEYS_QUERY_TIMEOUT_MS`; and
//! the gateway recovers by itself once the table answers again. Against the real PostgreSQL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bxb_api_key::generate_key;
use bxb_tests::eventually;
use serde_json::json;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::harness::*;

const MAX_STALENESS_MS: u64 = 2_000;

/// A gateway whose only key source is `db`, refreshed every 200 ms, stale after 2 s.
async fn gateway_on(setup: &Setup, db: &KeyDatabase, query_timeout_ms: u64) -> TestGateway {
    gateway_on_url(setup, &db.url, query_timeout_ms).await
}

async fn gateway_on_url(setup: &Setup, url: &str, query_timeout_ms: u64) -> TestGateway {
    let mut config = setup
        .config(&[&format!("--api-keys-max-staleness-ms={MAX_STALENESS_MS}"), &format!("--api-keys-query-timeout-ms={query_timeout_ms}")]);
    config.auth.api_keys_file = None;
    config.auth.postgres_url = Some(url.to_owned());
    TestGateway::start_ready(config).await
}

async fn insert_key(db: &KeyDatabase, key_id: &str, organization_id: Uuid) -> String {
    let key = generate_key();
    db.execute("INSERT INTO api_keys (key_id, organization_id, key_sha256) VALUES ($1, $2, $3)", key_id, Some(organization_id), Some(&key))
        .await;
    key
}

async fn sql(db: &KeyDatabase, statement: &str) {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect to the test database");
    sqlx::raw_sql(statement).execute(&mut conn).await.expect("SQL on the test database");
}

async fn only_api_keys_fail(gateway: &TestGateway) -> Option<()> {
    let reply = Reply::of(gateway.get("/readyz").await).await;
    (reply.status == 503 && reply.body["failing"] == json!(["api_keys"])).then_some(())
}

fn assert_keys_unavailable(reply: &Reply) {
    reply.assert_error(503, "api_keys_unavailable");
    assert_eq!(reply.retry_after.as_deref(), Some("5"), "{reply:?}");
}

#[tokio::test]
async fn a_key_table_that_fails_to_refresh_turns_every_key_into_503_after_the_max_staleness_and_recovers() {
    let setup = Setup::new(1).await;
    let db = KeyDatabase::create().await;
    let organization_id = Uuid::new_v4();
    let revoked = insert_key(&db, "key_to_revoke", organization_id).await;
    let kept = insert_key(&db, "key_kept", organization_id).await;
    let gateway = gateway_on(&setup, &db, 1_000).await;
    gateway.post("/v1/events", &revoked, &event_json("tx-before")).await.assert_accepted(1);

    // The gateway can no longer read the table, and meanwhile a key is revoked in it.
    sql(&db, "ALTER TABLE api_keys RENAME TO api_keys_away").await;
    let broken = Instant::now();
    db.execute("UPDATE api_keys_away SET revoked_at = now() WHERE key_id = $1", "key_to_revoke", None, None).await;
    let reply = eventually("the revoked key to stop working", Duration::from_millis(MAX_STALENESS_MS) + Duration::from_secs(5), || async {
        let reply = gateway.post("/v1/events", &revoked, &event_json("tx-stale")).await;
        (reply.status != 202).then_some(reply)
    })
    .await;
    let elapsed = broken.elapsed();
    assert_keys_unavailable(&reply);
    assert!(elapsed >= Duration::from_millis(MAX_STALENESS_MS - 500), "stale after {elapsed:?}, before the max staleness");
    eprintln!("keys stale: 503 after {} ms without a good refresh (max staleness {MAX_STALENESS_MS} ms)", elapsed.as_millis());
    assert_keys_unavailable(&gateway.post("/v1/events", &kept, &event_json("tx-stale-kept")).await);
    gateway.post("/v1/events", "bxb_unknown", &event_json("tx-stale-unknown")).await.assert_error(503, "api_keys_unavailable");
    eventually("readiness to fail on api_keys", Duration::from_secs(5), || only_api_keys_fail(&gateway)).await;
    let metrics = gateway.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("bxb_gateway_api_keys_staleness_seconds"), "{metrics}");

    sql(&db, "ALTER TABLE api_keys_away RENAME TO api_keys").await;
    eventually("the revocation to apply once the table is back", Duration::from_secs(10), || async {
        let reply = gateway.post("/v1/events", &revoked, &event_json("tx-after")).await;
        (reply.status == 401 && reply.body["code"] == "revoked_api_key").then_some(())
    })
    .await;
    gateway.post("/v1/events", &kept, &event_json("tx-after-kept")).await.assert_accepted(1);
    gateway.wait_ready().await;
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_query_that_hangs_is_cut_off_by_the_query_timeout() {
    let setup = Setup::new(1).await;
    let db = KeyDatabase::create().await;
    let key = insert_key(&db, "key_locked", Uuid::new_v4()).await;
    let gateway = gateway_on(&setup, &db, 500).await;
    gateway.post("/v1/events", &key, &event_json("tx-before-lock")).await.assert_accepted(1);

    // A transaction holding the table makes the gateway's SELECT wait, not fail.
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
    let locked = Instant::now();
    eventually(
        "readiness to fail on api_keys while the key query hangs",
        Duration::from_millis(MAX_STALENESS_MS) + Duration::from_secs(5),
        || only_api_keys_fail(&gateway),
    )
    .await;
    eprintln!("keys stale: /readyz failing {} ms after the key table was locked", locked.elapsed().as_millis());
    assert_keys_unavailable(&gateway.post("/v1/events", &key, &event_json("tx-locked")).await);

    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    gateway.wait_ready().await;
    gateway.post("/v1/events", &key, &event_json("tx-after-lock")).await.assert_accepted(1);
    gateway.stop().await.unwrap();
}

/// A TCP forwarder to PostgreSQL that can go silent: while stalled it holds every connection
/// open and forwards nothing, as a network dropping packets does; resuming cuts the held
/// connections (as a firewall or NAT losing its state would) and forwards again.
struct StallingProxy {
    addr: SocketAddr,
    stall: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stall = CancellationToken::new();
        Self { addr, stall: stall.clone(), task: tokio::spawn(forward(listener, target, stall)) }
    }

    fn stall(&self) {
        self.stall.cancel();
    }

    async fn resume(&mut self, target: SocketAddr) {
        self.task.abort();
        let listener =
            eventually("the proxy port to be free again", Duration::from_secs(10), || async { TcpListener::bind(self.addr).await.ok() })
                .await;
        self.stall = CancellationToken::new();
        self.task = tokio::spawn(forward(listener, target, self.stall.clone()));
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(listener: TcpListener, target: SocketAddr, stall: CancellationToken) {
    // Dropping the set when the task is aborted cuts every connection with it.
    let mut connections = JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        let stall = stall.clone();
        connections.spawn(async move {
            if stall.is_cancelled() {
                return std::future::pending::<()>().await;
            }
            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = stall.cancelled() => std::future::pending::<()>().await,
            }
        });
    }
}

/// `url` with its `host:port` replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> (String, SocketAddr) {
    let (scheme_and_user, rest) = url.split_once('@').expect("a URL with credentials");
    let (authority, path) = rest.split_once('/').expect("a URL with a database");
    let target = authority.parse().expect("PostgreSQL at ip:port");
    (format!("{scheme_and_user}@{addr}/{path}"), target)
}

#[tokio::test]
async fn a_key_database_that_stops_answering_is_cut_off_by_the_query_timeout_and_recovers() {
    let setup = Setup::new(1).await;
    let db = KeyDatabase::create().await;
    let key = insert_key(&db, "key_behind_proxy", Uuid::new_v4()).await;
    let (_, target) = through(&db.url, "127.0.0.1:1".parse().unwrap());
    let mut proxy = StallingProxy::start(target).await;
    let (url, _) = through(&db.url, proxy.addr);
    let gateway = gateway_on_url(&setup, &url, 500).await;
    gateway.post("/v1/events", &key, &event_json("tx-before-silence")).await.assert_accepted(1);

    // The server never sees the query, so only the gateway's own timeout can end the wait.
    proxy.stall();
    let silent = Instant::now();
    eventually(
        "readiness to fail on api_keys while the database is silent",
        Duration::from_millis(MAX_STALENESS_MS) + Duration::from_secs(5),
        || only_api_keys_fail(&gateway),
    )
    .await;
    eprintln!("keys stale: /readyz failing {} ms after the key database went silent", silent.elapsed().as_millis());
    assert_keys_unavailable(&gateway.post("/v1/events", &key, &event_json("tx-silent")).await);

    proxy.resume(target).await;
    gateway.wait_ready().await;
    gateway.post("/v1/events", &key, &event_json("tx-after-silence")).await.assert_accepted(1);
    gateway.stop().await.unwrap();
}
