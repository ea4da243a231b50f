//! The gateway under hostile load: bodies of the body limit made to cost the most, sent by a
//! fixed number of clients at once for a bounded time. What it measures is memory, not speed:
//! the gateway's peak RSS and the largest answer it sent (a figure, never a pass or fail of
//! the run).
//!
//! Every body is valid JSON that the gateway must read whole before it can refuse it:
//! countless empty-named or unknown fields, `properties` nested as deep as the bytes allow, a full
//! batch of events that each hold countless fields, and a batch far past the event limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bxb_harness::{ApiKey, GatewayClient};
use serde::Serialize;

/// The gateway's body limit during the phase (its default, `BXB_MAX_BODY_BYTES`).
pub const BODY_LIMIT_BYTES: usize = 5 * 1024 * 1024;
/// The gateway's event limit of a batch during the phase (its default, `BXB_MAX_BATCH_EVENTS`).
pub const BATCH_EVENTS: usize = 1_000;
/// Hostile clients at once, each with one request in flight.
pub const CONCURRENCY: usize = 8;

/// One kind of hostile body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `{"":0,"":0,...}` to `POST /v1/events`.
    EmptyNames,
    /// Distinct 80-character unknown names to `POST /v1/events`.
    UnknownFields,
    /// A valid event whose `properties` are arrays nested as deep as the limit allows.
    DeepProperties,
    /// A full batch whose events each hold empty-named fields.
    InvalidEvents,
    /// `{"events":[0,0,...]}`: far past the event limit, every element as short as can be.
    TooManyEvents,
}

pub const KINDS: [Kind; 5] = [Kind::EmptyNames, Kind::UnknownFields, Kind::DeepProperties, Kind::InvalidEvents, Kind::TooManyEvents];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::EmptyNames => "empty_names",
            Self::UnknownFields => "unknown_fields",
            Self::DeepProperties => "deep_properties",
            Self::InvalidEvents => "invalid_events",
            Self::TooManyEvents => "too_many_events",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::EmptyNames | Self::UnknownFields | Self::DeepProperties => "/v1/events",
            Self::InvalidEvents | Self::TooManyEvents => "/v1/events/batch",
        }
    }

    /// The body, at most `limit` bytes and close to it.
    pub fn body(self, limit: usize) -> String {
        match self {
            Self::EmptyNames => members(limit, |_| String::new()),
            Self::UnknownFields => members(limit, |i| format!("f{i:09}{}", "x".repeat(70))),
            Self::DeepProperties => {
                let head = r#"{"transaction_id":"t","external_customer_id":"c","code":"hostile","properties":{"a":"#;
                let depth = (limit - head.len() - 3) / 2;
                format!("{head}{}{}}}}}", "[".repeat(depth), "]".repeat(depth))
            }
            Self::InvalidEvents => {
                let event = members((limit - 12) / BATCH_EVENTS - 1, |_| String::new());
                format!("{{\"events\":[{}]}}", vec![event; BATCH_EVENTS].join(","))
            }
            Self::TooManyEvents => {
                let count = (limit - 12) / 2;
                format!("{{\"events\":[{}0]}}", "0,".repeat(count - 1))
            }
        }
    }
}

/// An object of members `"<name(i)>":0`, as many as fit in `limit` bytes.
fn members(limit: usize, name: impl Fn(usize) -> String) -> String {
    let mut body = String::with_capacity(limit);
    body.push('{');
    for i in 0.. {
        let member = format!("{}:0", serde_json::Value::String(name(i)));
        if body.len() + member.len() + 2 > limit {
            break;
        }
        if i > 0 {
            body.push(',');
        }
        body.push_str(&member);
    }
    body.push('}');
    body
}

/// What the gateway answered to one kind of body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindFigures {
    pub kind: String,
    pub path: String,
    pub body_bytes: usize,
    pub requests: u64,
    /// Answers by status; `"none"` counts requests that got no answer (refused connection,
    /// client timeout).
    pub statuses: BTreeMap<String, u64>,
    pub largest_response_bytes: u64,
    pub mean_ms: f64,
}

/// The phase's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostileFigures {
    pub concurrency: usize,
    pub seconds: f64,
    pub body_limit_bytes: usize,
    /// `VmHWM` of the gateway once ready, before the load, and after it.
    pub gateway_rss_before_bytes: Option<u64>,
    pub gateway_peak_rss_bytes: Option<u64>,
    pub largest_response_bytes: u64,
    pub kinds: Vec<KindFigures>,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    statuses: BTreeMap<String, u64>,
    largest_response_bytes: u64,
    total_ms: f64,
}

/// Posts one body; its status (`None` without an answer) and the size of the answer's body,
/// counted as it streams in so the client never holds a large answer.
async fn post_counting(target: &GatewayClient, path: &str, key: &str, body: String) -> (Option<u16>, u64) {
    let Ok(mut response) = target.post(path, key, body).await else { return (None, 0) };
    let status = response.status().as_u16();
    let mut bytes = 0u64;
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes += chunk.len() as u64;
    }
    (Some(status), bytes)
}

/// [`CONCURRENCY`] clients post the bodies of every kind, one after the other, for `duration`.
/// The caller reads the gateway's memory before and after.
pub async fn load(target: Arc<GatewayClient>, key: &ApiKey, duration: Duration, bar: &indicatif::ProgressBar) -> (Vec<KindFigures>, f64) {
    let bodies: Arc<Vec<String>> = Arc::new(KINDS.iter().map(|kind| kind.body(BODY_LIMIT_BYTES)).collect());
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = Vec::with_capacity(CONCURRENCY);
    for client in 0..CONCURRENCY {
        let (target, bodies, bar, key) = (target.clone(), bodies.clone(), bar.clone(), key.key.clone());
        clients.push(tokio::spawn(async move {
            let mut tallies: Vec<Tally> = KINDS.iter().map(|_| Tally::default()).collect();
            let mut i = client;
            while Instant::now() < deadline {
                let k = i % KINDS.len();
                let sent = Instant::now();
                let (status, bytes) = post_counting(&target, KINDS[k].path(), &key, bodies[k].clone()).await;
                let tally = &mut tallies[k];
                tally.requests += 1;
                tally.total_ms += sent.elapsed().as_secs_f64() * 1000.0;
                *tally.statuses.entry(status.map_or_else(|| "none".to_owned(), |s| s.to_string())).or_default() += 1;
                tally.largest_response_bytes = tally.largest_response_bytes.max(bytes);
                bar.inc(1);
                i += 1;
            }
            tallies
        }));
    }
    let mut totals: Vec<Tally> = KINDS.iter().map(|_| Tally::default()).collect();
    for client in clients {
        let Ok(tallies) = client.await else { continue };
        for (total, tally) in totals.iter_mut().zip(tallies) {
            total.requests += tally.requests;
            total.total_ms += tally.total_ms;
            total.largest_response_bytes = total.largest_response_bytes.max(tally.largest_response_bytes);
            for (status, n) in tally.statuses {
                *total.statuses.entry(status).or_default() += n;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let figures = KINDS
        .iter()
        .zip(totals)
        .zip(bodies.iter())
        .map(|((kind, tally), body)| KindFigures {
            kind: kind.name().to_owned(),
            path: kind.path().to_owned(),
            body_bytes: body.len(),
            requests: tally.requests,
            mean_ms: if tally.requests > 0 { tally.total_ms / tally.requests as f64 } else { 0.0 },
            statuses: tally.statuses,
            largest_response_bytes: tally.largest_response_bytes,
        })
        .collect();
    (figures, seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_is_json_close_to_the_limit() {
        let limit = 64 * 1024;
        for kind in KINDS {
            let body = kind.body(limit);
            assert!(body.len() <= limit && body.len() > limit * 9 / 10, "{}: {} bytes", kind.name(), body.len());
            // Deep enough to be past serde_json's recursion limit only when large.
            let parseable = if kind == Kind::DeepProperties { kind.body(300) } else { body };
            serde_json::from_str::<serde_json::Value>(&parseable).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        }
        let batch: serde_json::Value = serde_json::from_str(&Kind::InvalidEvents.body(limit)).unwrap();
        assert_eq!(batch["events"].as_array().unwrap().len(), BATCH_EVENTS);
        let too_many: serde_json::Value = serde_json::from_str(&Kind::TooManyEvents.body(limit)).unwrap();
        assert!(too_many["events"].as_array().unwrap().len() > BATCH_EVENTS);
    }
}
