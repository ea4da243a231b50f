//! The gateway under HTTP load: closed-loop throughput with bounded concurrency and open-loop
//! latency at fixed offered rates. Load goes to 127.0.0.1 only and is bounded in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::Semaphore;

use bxb_harness::{ApiKey, GatewayClient, Running};

use crate::events;
use crate::report::RateLatency;
use crate::settings::BenchArgs;
use crate::stats::{per_second, LatencySummary};

/// Distinct request bodies cycled through: parsing cannot be cached, and building bodies does
/// not load the 2 cores while measuring.
const BODIES: usize = 32;

/// The gateway's settings for a run: its own topic and key file, the per-organization rate limit
/// off (the benchmark measures capacity, not the limiter).
pub fn gateway_env(args: &BenchArgs, topic: &str, key_file: &std::path::Path) -> Vec<(String, String)> {
    let mut env = bxb_harness::gateway::gateway_env(&args.stack, topic, key_file);
    env.push(("BXB_RATE_LIMIT_EVENTS_PER_SECOND".into(), "0".into()));
    env
}

/// A client of the gateway under load: as many pooled connections as the open loop keeps in
/// flight, so it does not reconnect.
pub fn target(gateway: &Running) -> anyhow::Result<GatewayClient> {
    Ok(GatewayClient::new(bxb_harness::http::client(Duration::from_secs(30), OPEN_LOOP_IN_FLIGHT)?, gateway.port))
}

/// Result of a closed-loop run.
pub struct Throughput {
    pub events_per_s: f64,
    pub rejected_requests: u64,
}

/// `concurrency` workers post `events_per_request`-event requests back to back for `duration`.
pub async fn closed_loop(
    target: Arc<GatewayClient>,
    key: &ApiKey,
    events_per_request: usize,
    concurrency: usize,
    duration: Duration,
    bar: &ProgressBar,
) -> Throughput {
    let now = bxb_event::clock::now_ms();
    let (path, bodies): (&str, Vec<String>) = if events_per_request == 1 {
        (
            "/v1/events",
            (0..BODIES)
                .map(|i| events::json(&events::event(key.organization_id, format!("single-{i}"), i as u64, now)).to_string())
                .collect(),
        )
    } else {
        (
            "/v1/events/batch",
            (0..BODIES).map(|i| events::batch_body(key.organization_id, &format!("batch-{i}"), events_per_request, now)).collect(),
        )
    };
    let bodies = Arc::new(bodies);
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (target, bodies, accepted, rejected, bar) = (target.clone(), bodies.clone(), accepted.clone(), rejected.clone(), bar.clone());
        let key = key.key.clone();
        workers.push(tokio::spawn(async move {
            let mut i = worker;
            while Instant::now() < deadline {
                if target.accepted(path, &key, bodies[i % bodies.len()].clone()).await {
                    accepted.fetch_add(events_per_request as u64, Ordering::Relaxed);
                    bar.inc(events_per_request as u64);
                } else {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
                i += concurrency;
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    Throughput {
        events_per_s: per_second(accepted.load(Ordering::Relaxed), started.elapsed()),
        rejected_requests: rejected.load(Ordering::Relaxed),
    }
}

/// Most requests in flight in open-loop mode; a request that finds none free counts as failed.
const OPEN_LOOP_IN_FLIGHT: usize = 512;

/// One `/v1/events/batch` request of `events_per_request` every `1 / (rate / events_per_request)`
/// s for `duration`, whatever the answers: latency is measured from when a request was due.
pub async fn open_loop(
    target: Arc<GatewayClient>,
    key: &ApiKey,
    rate_events_per_s: u32,
    events_per_request: usize,
    duration: Duration,
    bar: &ProgressBar,
) -> RateLatency {
    let now = bxb_event::clock::now_ms();
    let bodies: Arc<Vec<String>> =
        Arc::new((0..BODIES).map(|i| events::batch_body(key.organization_id, &format!("rate-{i}"), events_per_request, now)).collect());
    let interval = Duration::from_secs_f64(events_per_request as f64 / f64::from(rate_events_per_s));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let failed = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < duration {
        let due = ticker.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (target, bodies, failed, tx, bar) = (target.clone(), bodies.clone(), failed.clone(), tx.clone(), bar.clone());
        let key = key.key.clone();
        let body = bodies[sent % bodies.len()].clone();
        sent += 1;
        tokio::spawn(async move {
            if target.accepted("/v1/events/batch", &key, body).await {
                let _ = tx.send(due.elapsed().as_secs_f64() * 1000.0);
                bar.inc(events_per_request as u64);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    drop(tx);
    let mut latencies = Vec::new();
    while let Some(ms) = rx.recv().await {
        latencies.push(ms);
    }
    let elapsed = started.elapsed();
    RateLatency {
        offered_events_per_s: rate_events_per_s,
        accepted_events_per_s: per_second((latencies.len() * events_per_request) as u64, elapsed),
        failed_requests: failed.load(Ordering::Relaxed),
        latency: LatencySummary::of(latencies),
    }
}
