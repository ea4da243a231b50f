//! What the load generator will offer, decided up front from a seed: requests of one
//! organization each, new events mixed with client retries of earlier transaction ids (some the
//! same event again, some with another timestamp, value, decimal value or a code of the other
//! billability), billable and non-billable codes.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::truth::Version;

/// Billable for every organization (consumer-postgres' `BXB_BILLABLE_CODES` in the run).
pub const BILLABLE_CODES: [&str; 2] = ["api_calls", "storage_gb_hours"];
/// Analytics only: ClickHouse stores them, PostgreSQL must not.
pub const OTHER_CODES: [&str; 2] = ["page_views", "search_queries"];

/// Event times are spread over the last hours, so buckets of several hours are involved.
const SPREAD_MS: i64 = 3 * 3_600_000;
/// A retry with another timestamp moves by up to this much (often into another hour).
const RETRY_SHIFT_MS: i64 = 90 * 60_000;
/// Of the retries, this share repeats the event as it was; the others change something.
const SAME_RETRY_SHARE: f64 = 0.4;
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-south-1"];

/// One event as a client sends it; its identity is (organization, transaction_id).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    /// Index into the run's organizations.
    pub organization: usize,
    pub transaction_id: String,
    pub code: &'static str,
    pub timestamp_ms: i64,
    pub customer: u32,
    /// Multiples of 1/4, so sums are exact in both stores' floats.
    pub value: Option<f64>,
    pub decimal_value: Option<String>,
    pub retry: Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The first time this transaction id is offered.
    No,
    /// The same event again.
    Same,
    /// The same transaction id with something else changed: its timestamp, its value or decimal
    /// value, or its code (to one of the other billability). Which version counts is decided
    /// by the broker's order, and this retry races the original (it is in another request).
    Changed,
}

impl PlannedEvent {
    pub fn billable(&self) -> bool {
        BILLABLE_CODES.contains(&self.code)
    }

    /// What the event says, as the truth compares it with a record of the topic.
    pub fn version(&self) -> Version {
        Version {
            external_customer_id: self.external_customer(),
            code: self.code.to_owned(),
            timestamp_ms: self.timestamp_ms,
            value: self.value,
            decimal_value: self.decimal_value.as_deref().map(|d| d.parse().expect("the plan writes valid decimals")),
        }
    }

    fn external_customer(&self) -> String {
        format!("customer-{}", self.customer)
    }

    /// The JSON object of `POST /v1/events/batch` (the organization comes from the API key).
    pub fn json(&self) -> serde_json::Value {
        let mut event = serde_json::json!({
            "transaction_id": self.transaction_id,
            "external_customer_id": self.external_customer(),
            "code": self.code,
            "timestamp": self.timestamp_ms,
            "properties": { "region": REGIONS[self.customer as usize % REGIONS.len()], "customer_tier": self.customer % 4 },
        });
        if let Some(value) = self.value {
            event["value"] = serde_json::json!(value);
        }
        if let Some(decimal) = &self.decimal_value {
            event["decimal_value"] = serde_json::Value::String(decimal.clone());
        }
        event
    }
}

/// One request: events of one organization.
#[derive(Debug, Clone)]
pub struct Request {
    pub organization: usize,
    pub events: Vec<PlannedEvent>,
}

impl Request {
    pub fn body(&self) -> String {
        let events: Vec<serde_json::Value> = self.events.iter().map(PlannedEvent::json).collect();
        serde_json::json!({ "events": events }).to_string()
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub requests: Vec<Request>,
    pub distinct_events: usize,
    pub retries: usize,
    pub retries_with_other_timestamp: usize,
    /// Retries whose `value` or `decimal_value` differs from the original's.
    pub retries_with_other_values: usize,
    /// Retries whose code is billable where the original's is not, or the other way round.
    pub retries_with_other_billability: usize,
}

/// What to plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanShape {
    pub distinct_events: usize,
    pub organizations: usize,
    pub batch_events: usize,
    pub retry_fraction: f64,
    pub now_ms: i64,
}

/// Round-robin over organizations; each slot of a request is, with `retry_fraction`, a retry of
/// an event of the same organization offered in an earlier request (never twice in one request:
/// the gateway refuses a batch that repeats a transaction id), else a new event. Every choice is
/// drawn from the seed's generator, so a seed gives the same plan.
pub fn plan(seed: u64, shape: PlanShape) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let organizations = shape.organizations.max(1);
    let batch_events = shape.batch_events.max(1);
    let mut earlier: Vec<Vec<PlannedEvent>> = vec![Vec::new(); organizations];
    let mut plan = Plan {
        requests: Vec::new(),
        distinct_events: 0,
        retries: 0,
        retries_with_other_timestamp: 0,
        retries_with_other_values: 0,
        retries_with_other_billability: 0,
    };
    let mut request_index = 0usize;
    while plan.distinct_events < shape.distinct_events {
        let organization = request_index % organizations;
        request_index += 1;
        let mut events = Vec::with_capacity(batch_events);
        let mut in_request = HashSet::new();
        while events.len() < batch_events && plan.distinct_events < shape.distinct_events {
            let candidates = &earlier[organization];
            if !candidates.is_empty() && rng.random_bool(shape.retry_fraction.clamp(0.0, 1.0)) {
                // Half the retries repeat an event of the organization's previous request, which
                // may well be in flight still (or be retried by its client) when this one goes.
                let from = if rng.random_bool(0.5) { candidates.len().saturating_sub(batch_events) } else { 0 };
                let original = &candidates[rng.random_range(from..candidates.len())];
                if in_request.contains(&original.transaction_id) {
                    continue;
                }
                let mut retry = original.clone();
                if rng.random_bool(SAME_RETRY_SHARE) {
                    retry.retry = Retry::Same;
                } else {
                    change(&mut retry, original, &mut rng, shape.now_ms, &mut plan);
                }
                plan.retries += 1;
                in_request.insert(retry.transaction_id.clone());
                events.push(retry);
                continue;
            }
            let seq = plan.distinct_events;
            let code = if rng.random_bool(0.5) { BILLABLE_CODES[seq % 2] } else { OTHER_CODES[seq % 2] };
            let event = PlannedEvent {
                organization,
                transaction_id: format!("chaos-{seed:x}-{seq}"),
                code,
                timestamp_ms: shape.now_ms - rng.random_range(60_000..SPREAD_MS),
                customer: rng.random_range(0..500),
                value: random_value(&mut rng),
                decimal_value: random_decimal(&mut rng),
                retry: Retry::No,
            };
            plan.distinct_events += 1;
            in_request.insert(event.transaction_id.clone());
            events.push(event);
        }
        earlier[organization].extend(events.iter().filter(|e| e.retry == Retry::No).cloned());
        plan.requests.push(Request { organization, events });
    }
    plan
}

/// Most events have a value; a retry without one sums as 0 where its original did not.
fn random_value(rng: &mut StdRng) -> Option<f64> {
    rng.random_bool(0.9).then(|| f64::from(rng.random_range(0..400u32)) / 4.0)
}

/// Trailing zeros on purpose: the gateway stores the canonical form.
fn random_decimal(rng: &mut StdRng) -> Option<String> {
    rng.random_bool(0.3).then(|| format!("{}.{:03}", rng.random_range(0..1000u32), rng.random_range(0..1000u32)))
}

/// Makes `retry` a [`Retry::Changed`] version of `original`: at least one of another timestamp,
/// other values, a code of the other billability.
fn change(retry: &mut PlannedEvent, original: &PlannedEvent, rng: &mut StdRng, now_ms: i64, plan: &mut Plan) {
    retry.retry = Retry::Changed;
    let other_timestamp = rng.random_bool(0.5);
    let other_billability = rng.random_bool(0.3);
    let other_values = rng.random_bool(0.5) || !(other_timestamp || other_billability);
    if other_timestamp {
        let shift = rng.random_range(60_000..=RETRY_SHIFT_MS) * if rng.random_bool(0.5) { 1 } else { -1 };
        retry.timestamp_ms = (retry.timestamp_ms + shift).clamp(now_ms - 2 * SPREAD_MS, now_ms - 1_000);
        plan.retries_with_other_timestamp += 1;
    }
    if other_values {
        retry.value = random_value(rng);
        retry.decimal_value = random_decimal(rng);
        if retry.value != original.value || retry.decimal_value != original.decimal_value {
            plan.retries_with_other_values += 1;
        }
    }
    if other_billability {
        let codes = if original.billable() { OTHER_CODES } else { BILLABLE_CODES };
        retry.code = codes[rng.random_range(0..codes.len())];
        plan.retries_with_other_billability += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SHAPE: PlanShape =
        PlanShape { distinct_events: 5_000, organizations: 4, batch_events: 50, retry_fraction: 0.05, now_ms: 1_800_000_000_000 };

    #[test]
    fn offers_every_distinct_event_once_plus_retries_of_earlier_ones() {
        let plan = plan(7, SHAPE);
        let all: Vec<&PlannedEvent> = plan.requests.iter().flat_map(|r| &r.events).collect();
        let firsts: HashSet<(usize, &str)> =
            all.iter().filter(|e| e.retry == Retry::No).map(|e| (e.organization, e.transaction_id.as_str())).collect();
        assert_eq!(firsts.len(), 5_000);
        assert_eq!(plan.distinct_events, 5_000);
        assert_eq!(all.len(), 5_000 + plan.retries);
        // About 5 % retries; of those 60 % change something: about half of them the timestamp,
        // more than half the values, about a third the billability.
        assert!((150..400).contains(&plan.retries), "{} retries", plan.retries);
        let share = |n: usize| n as f64 / plan.retries as f64;
        assert!((0.2..0.4).contains(&share(plan.retries_with_other_timestamp)), "{}", plan.retries_with_other_timestamp);
        assert!((0.25..0.5).contains(&share(plan.retries_with_other_values)), "{}", plan.retries_with_other_values);
        assert!((0.1..0.3).contains(&share(plan.retries_with_other_billability)), "{}", plan.retries_with_other_billability);
        // Every retry repeats an identity offered earlier, never within its own request.
        let mut seen = HashSet::new();
        for request in &plan.requests {
            let ids: HashSet<&str> = request.events.iter().map(|e| e.transaction_id.as_str()).collect();
            assert_eq!(ids.len(), request.events.len(), "a transaction id twice in one request");
            for event in &request.events {
                assert_eq!(event.organization, request.organization);
                let key = (event.organization, event.transaction_id.clone());
                assert_eq!(event.retry != Retry::No, seen.contains(&key), "{key:?}");
            }
            seen.extend(request.events.iter().map(|e| (e.organization, e.transaction_id.clone())));
        }
    }

    #[test]
    fn a_changed_retry_differs_from_its_original_and_a_same_one_does_not() {
        let plan = plan(5, SHAPE);
        let events: Vec<&PlannedEvent> = plan.requests.iter().flat_map(|r| &r.events).collect();
        let originals: HashMap<(usize, &str), &PlannedEvent> =
            events.iter().filter(|e| e.retry == Retry::No).map(|e| ((e.organization, e.transaction_id.as_str()), *e)).collect();
        let (mut same, mut changed) = (0, 0);
        for retry in events.iter().filter(|e| e.retry != Retry::No) {
            let original = originals[&(retry.organization, retry.transaction_id.as_str())];
            assert_eq!(retry.customer, original.customer);
            let content = |e: &PlannedEvent| (e.code, e.timestamp_ms, e.value.map(f64::to_bits), e.decimal_value.clone());
            if retry.retry == Retry::Same {
                same += 1;
                assert_eq!(content(retry), content(original));
            } else {
                changed += 1;
                // A redrawn value may come out the same, so only the timestamp and the code are
                // sure to show the change; the counters say how many changed values.
                if retry.timestamp_ms == original.timestamp_ms && retry.code == original.code {
                    continue;
                }
                assert_ne!(content(retry), content(original));
            }
        }
        assert_eq!(same + changed, plan.retries);
        assert!(same > plan.retries / 4 && changed > plan.retries / 2, "{same} same, {changed} changed");
        let flipped = events
            .iter()
            .filter(|e| e.retry == Retry::Changed)
            .filter(|e| e.billable() != originals[&(e.organization, e.transaction_id.as_str())].billable());
        assert_eq!(flipped.count(), plan.retries_with_other_billability);
    }

    #[test]
    fn mixes_codes_and_keeps_times_in_the_gateway_window() {
        let plan = plan(11, SHAPE);
        let events: Vec<&PlannedEvent> = plan.requests.iter().flat_map(|r| &r.events).collect();
        let billable = events.iter().filter(|e| e.billable()).count();
        assert!(billable > events.len() / 3 && billable < events.len() * 2 / 3);
        assert!(events.iter().all(|e| e.timestamp_ms < SHAPE.now_ms && e.timestamp_ms >= SHAPE.now_ms - 2 * SPREAD_MS));
        let organizations: HashSet<usize> = plan.requests.iter().map(|r| r.organization).collect();
        assert_eq!(organizations.len(), 4);
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let (a, b) = (plan(3, SHAPE), plan(3, SHAPE));
        assert_eq!(a.requests.len(), b.requests.len());
        assert!(a.requests.iter().zip(&b.requests).all(|(x, y)| x.events == y.events));
        assert_ne!(plan(4, SHAPE).requests[5].events, a.requests[5].events);
    }

    #[test]
    fn a_request_body_is_a_batch_the_gateway_parses() {
        let plan = plan(1, PlanShape { distinct_events: 3, batch_events: 3, ..SHAPE });
        let body: serde_json::Value = serde_json::from_str(&plan.requests[0].body()).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[0]["timestamp"].is_i64() && events[0]["properties"].is_object());
        let without_value = PlannedEvent { value: None, ..plan.requests[0].events[0].clone() };
        assert!(without_value.json().get("value").is_none(), "an absent value is left out, not null");
    }
}
