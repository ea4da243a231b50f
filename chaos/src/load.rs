//! The load generator: offers the plan's requests at a fixed rate with bounded concurrency and,
//! like a well-behaved client, retries a request until it gets `202` (honouring `Retry-After`).
//! It records which requests were accepted: the truth the stores are compared with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bxb_harness::GatewayClient;
use bxb_retry::Backoff;
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use crate::plan::Plan;

/// The gateway as the load generator sees it.
#[derive(Clone)]
pub struct Gateway {
    pub client: GatewayClient,
    /// One API key per organization, by organization index.
    pub keys: Arc<Vec<String>>,
}

impl Gateway {
    /// The gateway on `port`. A request may take 60 s, longer than the outage answer limit, so
    /// that a late answer is measured rather than cut off.
    pub fn new(port: u16, keys: Vec<String>) -> anyhow::Result<Self> {
        let client = bxb_harness::http::client(Duration::from_secs(60), 64)?;
        Ok(Self { client: GatewayClient::new(client, port), keys: Arc::new(keys) })
    }

    pub async fn post(&self, path: &str, organization: usize, body: String) -> reqwest::Result<reqwest::Response> {
        self.client.post(path, &self.keys[organization], body).await
    }

    /// Whether `/readyz` answers 200 (within 2 s).
    pub async fn ready(&self) -> bool {
        self.client.ready().await
    }
}

/// What the load generator saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadStats {
    pub requests: usize,
    pub attempts: u64,
    /// Answers by HTTP status, over every attempt.
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts that got no answer (connection refused, client timeout).
    pub transport_errors: u64,
    /// Requests answered with a status a retry cannot fix (a defect: the plan is valid).
    pub refused: Vec<String>,
    /// Requests still not accepted at the deadline.
    pub unfinished: usize,
    pub seconds: f64,
    /// Index of every request that got its `202`.
    #[serde(skip)]
    pub accepted: Vec<bool>,
}

/// Progress other tasks can read while the load runs.
#[derive(Default)]
pub struct Progress {
    pub accepted_events: AtomicU64,
    pub attempts: AtomicU64,
    pub unavailable: AtomicU64,
}

/// Statuses a client retries: the gateway could not take the events now.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response.headers().get("retry-after")?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Offers every request of `plan`, one every `batch / rate` seconds, at most `concurrency` in
/// flight, each retried until accepted or `deadline`.
pub async fn offer(
    gateway: Gateway,
    plan: Arc<Plan>,
    rate: u32,
    concurrency: usize,
    deadline: Instant,
    progress: Arc<Progress>,
) -> LoadStats {
    let started = Instant::now();
    let events_per_request = plan.requests.first().map_or(1, |r| r.events.len()).max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(events_per_request as f64 / f64::from(rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let shared =
        Arc::new(Mutex::new(LoadStats { requests: plan.requests.len(), accepted: vec![false; plan.requests.len()], ..Default::default() }));
    let mut tasks = Vec::with_capacity(plan.requests.len());
    for index in 0..plan.requests.len() {
        ticker.tick().await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (gateway, plan, shared, progress) = (gateway.clone(), plan.clone(), shared.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let request = &plan.requests[index];
            let outcome = until_accepted(&gateway, request.organization, request.body(), deadline, &progress).await;
            let mut stats = shared.lock().expect("not poisoned");
            for (status, count) in outcome.statuses {
                *stats.statuses.entry(status).or_default() += count;
            }
            stats.attempts += outcome.attempts;
            stats.transport_errors += outcome.transport_errors;
            match outcome.result {
                Finish::Accepted => {
                    stats.accepted[index] = true;
                    progress.accepted_events.fetch_add(request.events.len() as u64, Ordering::Relaxed);
                }
                Finish::Refused(reason) => stats.refused.push(format!("request {index}: {reason}")),
                Finish::Deadline => stats.unfinished += 1,
            }
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut stats = std::mem::take(&mut *shared.lock().expect("not poisoned"));
    stats.seconds = started.elapsed().as_secs_f64();
    stats
}

enum Finish {
    Accepted,
    Refused(String),
    Deadline,
}

struct Outcome {
    result: Finish,
    attempts: u64,
    transport_errors: u64,
    statuses: BTreeMap<u16, u64>,
}

/// Posts one batch until `202`; backs off on 408/429/5xx and on transport errors.
async fn until_accepted(gateway: &Gateway, organization: usize, body: String, deadline: Instant, progress: &Progress) -> Outcome {
    let mut outcome = Outcome { result: Finish::Deadline, attempts: 0, transport_errors: 0, statuses: BTreeMap::new() };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    while Instant::now() < deadline {
        outcome.attempts += 1;
        progress.attempts.fetch_add(1, Ordering::Relaxed);
        let wait = match gateway.post("/v1/events/batch", organization, body.clone()).await {
            Ok(response) => {
                let status = response.status();
                *outcome.statuses.entry(status.as_u16()).or_default() += 1;
                if status == StatusCode::ACCEPTED {
                    outcome.result = Finish::Accepted;
                    return outcome;
                }
                if !retryable(status) {
                    let text = response.text().await.unwrap_or_default();
                    outcome.result = Finish::Refused(format!("{status}: {}", text.chars().take(300).collect::<String>()));
                    return outcome;
                }
                progress.unavailable.fetch_add(1, Ordering::Relaxed);
                retry_after(&response).unwrap_or_else(|| backoff.next())
            }
            Err(_) => {
                outcome.transport_errors += 1;
                backoff.next()
            }
        };
        tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_retry_what_the_gateway_could_not_take_now_only() {
        for status in [429, 408, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 415, 422] {
            assert!(!retryable(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
