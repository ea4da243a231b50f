//! End to end: batches posted to the gateway at a fixed rate, each carrying one probe event
//! whose appearance in ClickHouse and PostgreSQL is polled. Latency = first poll that sees the
//! probe minus the gateway's `202` of its request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bxb_event::clock::now_ms;
use bxb_harness::{ApiKey, GatewayClient};
use indicatif::ProgressBar;
use uuid::Uuid;

use crate::report::EndToEndFigures;
use crate::stats::LatencySummary;

pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// After the load stops, how long probes may still take to appear before they count as missing.
const SETTLE: Duration = Duration::from_secs(30);
pub const EVENTS_PER_REQUEST: usize = 100;

fn probe_id(seq: u64) -> String {
    format!("probe-{seq:09}")
}

fn probe_seq(transaction_id: &str) -> Option<u64> {
    transaction_id.strip_prefix("probe-")?.parse().ok()
}

/// A request body of `EVENTS_PER_REQUEST` events whose first is probe `seq`.
fn body(organization_id: Uuid, seq: u64, now_ms: i64) -> String {
    let events: Vec<serde_json::Value> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            let id = if i == 0 { probe_id(seq) } else { format!("e2e-{seq}-{i}") };
            crate::events::json(&crate::events::event(organization_id, id, seq + i as u64, now_ms))
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

/// Where probes become visible.
pub struct Stores {
    pub clickhouse: clickhouse::Client,
    pub postgres: sqlx::PgPool,
    pub organization_ids: Vec<Uuid>,
}

impl Stores {
    async fn clickhouse_probes(&self, from_seq: u64) -> anyhow::Result<Vec<String>> {
        let orgs: Vec<String> = self.organization_ids.iter().map(|o| format!("toUUID('{o}')")).collect();
        let sql = format!(
            "SELECT transaction_id FROM events_raw WHERE organization_id IN ({}) AND transaction_id >= '{}' AND transaction_id < 'probe.'",
            orgs.join(","),
            probe_id(from_seq)
        );
        Ok(self.clickhouse.query(&sql).fetch_all::<String>().await?)
    }

    async fn postgres_probes(&self, from_seq: u64) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT transaction_id FROM event_keys WHERE organization_id = ANY($1) AND transaction_id >= $2 AND transaction_id < 'probe.'",
        )
        .bind(&self.organization_ids)
        .bind(probe_id(from_seq))
        .fetch_all(&self.postgres)
        .await?)
    }
}

/// First-seen wall times of probes in one store, and the lowest probe not yet seen.
#[derive(Default)]
struct Seen {
    at_ms: BTreeMap<u64, f64>,
    lowest_unseen: u64,
}

impl Seen {
    fn record(&mut self, ids: Vec<String>, at_ms: f64, sent: u64) {
        for seq in ids.iter().filter_map(|id| probe_seq(id)) {
            self.at_ms.entry(seq).or_insert(at_ms);
        }
        while self.lowest_unseen < sent && self.at_ms.contains_key(&self.lowest_unseen) {
            self.lowest_unseen += 1;
        }
    }
}

/// Latencies (ms) of the probes seen, matched to their acknowledgement; and how many acked
/// probes were never seen.
pub fn latencies(acked_ms: &BTreeMap<u64, f64>, seen_ms: &BTreeMap<u64, f64>) -> (Vec<f64>, usize) {
    let mut missing = 0;
    let mut out = Vec::with_capacity(acked_ms.len());
    for (seq, acked) in acked_ms {
        match seen_ms.get(seq) {
            // Seen by a poll that started before the 202 arrived: visible at once.
            Some(seen) => out.push((seen - acked).max(0.0)),
            None => missing += 1,
        }
    }
    (out, missing)
}

/// Offers `rate` events/s for `duration` over `keys` (round robin), polling both stores.
pub async fn run(
    target: Arc<GatewayClient>,
    keys: &[ApiKey],
    stores: Stores,
    rate: u32,
    duration: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<EndToEndFigures> {
    let acked: Arc<Mutex<BTreeMap<u64, f64>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_secs_f64(EVENTS_PER_REQUEST as f64 / f64::from(rate));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut seq = 0u64;
    let mut ch_seen = Seen::default();
    let mut pg_seen = Seen::default();
    let mut next_poll = Instant::now();
    let sending_ends = started + duration;
    while Instant::now() < sending_ends {
        tokio::select! {
            _ = ticker.tick() => {
                let key = &keys[(seq as usize) % keys.len()];
                let (target, acked, failed, bar) = (target.clone(), acked.clone(), failed.clone(), bar.clone());
                let (api_key, body) = (key.key.clone(), body(key.organization_id, seq, now_ms()));
                let this = seq;
                seq += 1;
                tasks.push(tokio::spawn(async move {
                    if target.accepted("/v1/events/batch", &api_key, body).await {
                        acked.lock().expect("not poisoned").insert(this, now_ms() as f64);
                        bar.inc(EVENTS_PER_REQUEST as u64);
                    } else {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }));
            }
            _ = tokio::time::sleep_until(next_poll.into()) => {
                poll(&stores, &mut ch_seen, &mut pg_seen, seq).await;
                next_poll = Instant::now() + POLL_INTERVAL;
            }
        }
    }
    let sent = seq;
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let settle_until = Instant::now() + SETTLE;
    while Instant::now() < settle_until && (ch_seen.lowest_unseen < sent || pg_seen.lowest_unseen < sent) {
        poll(&stores, &mut ch_seen, &mut pg_seen, sent).await;
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let acked = acked.lock().expect("not poisoned").clone();
    let (ch, ch_missing) = latencies(&acked, &ch_seen.at_ms);
    let (pg, pg_missing) = latencies(&acked, &pg_seen.at_ms);
    Ok(EndToEndFigures {
        offered_events_per_s: rate,
        seconds: elapsed.as_secs(),
        accepted_events: acked.len() as u64 * EVENTS_PER_REQUEST as u64,
        failed_requests: failed.load(std::sync::atomic::Ordering::Relaxed),
        probes: acked.len(),
        poll_interval_ms: POLL_INTERVAL.as_millis() as u64,
        clickhouse: LatencySummary::of(ch),
        postgres: LatencySummary::of(pg),
        clickhouse_missing_probes: ch_missing,
        postgres_missing_probes: pg_missing,
    })
}

async fn poll(stores: &Stores, ch_seen: &mut Seen, pg_seen: &mut Seen, sent: u64) {
    let at = now_ms() as f64;
    let (ch, pg) = tokio::join!(stores.clickhouse_probes(ch_seen.lowest_unseen), stores.postgres_probes(pg_seen.lowest_unseen));
    // A failed poll only delays seeing a probe; the next poll retries.
    if let Ok(ids) = ch {
        ch_seen.record(ids, at, sent);
    }
    if let Ok(ids) = pg {
        pg_seen.record(ids, at, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ids_sort_in_sequence_order_and_parse_back() {
        assert!(probe_id(9) < probe_id(10));
        assert_eq!(probe_seq(&probe_id(1234)), Some(1234));
        assert_eq!(probe_seq("e2e-1-2"), None);
        let body: serde_json::Value = serde_json::from_str(&body(Uuid::nil(), 7, 0)).unwrap();
        assert_eq!(body["events"][0]["transaction_id"], probe_id(7));
        assert_eq!(body["events"].as_array().unwrap().len(), EVENTS_PER_REQUEST);
    }

    #[test]
    fn latencies_pair_acks_with_first_sightings_and_count_the_missing() {
        let acked = BTreeMap::from([(0, 1_000.0), (1, 1_100.0), (2, 1_200.0)]);
        let mut seen = Seen::default();
        seen.record(vec![probe_id(0), probe_id(1)], 1_050.0, 3);
        seen.record(vec![probe_id(0), probe_id(1)], 1_500.0, 3);
        assert_eq!(seen.lowest_unseen, 2);
        let (ms, missing) = latencies(&acked, &seen.at_ms);
        assert_eq!(ms, vec![50.0, 0.0]);
        assert_eq!(missing, 1);
    }
}
