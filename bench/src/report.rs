//! What a run measured, the ratios and goals derived from it, `.dev/bench.json` and the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{ratio, LatencySummary};

/// Where and with what the run happened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Environment {
    pub date: String,
    pub mode: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub versions: BTreeMap<String, String>,
    /// librdkafka settings given to the consumers on top of their own, if any.
    pub consumer_kafka_options: Option<String>,
    /// Extra environment given to the consumers, if any.
    pub consumer_env: Vec<String>,
}

/// Gateway throughput against a raw producer, and latency at fixed offered rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayFigures {
    pub batch_events_per_request: usize,
    pub concurrency_batch: usize,
    pub concurrency_single: usize,
    pub batch_events_per_s: f64,
    pub single_events_per_s: f64,
    pub raw_producer_events_per_s: f64,
    pub rejected_requests: u64,
    /// Of the batch requests' mean duration inside the gateway, the mean wait for Kafka's
    /// delivery reports (from the gateway's own histograms).
    pub batch_request_mean_ms: Option<f64>,
    pub batch_delivery_mean_ms: Option<f64>,
    pub latency_at_rate: Vec<RateLatency>,
}

/// Latency of batch requests sent open-loop at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateLatency {
    pub offered_events_per_s: u32,
    pub accepted_events_per_s: f64,
    pub failed_requests: u64,
    pub latency: Option<LatencySummary>,
}

/// A consumer draining a backlog against the raw write of the same rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainFigures {
    pub backlog_events: u64,
    pub batch_events: usize,
    /// From the first to the last committed offset: start-up excluded.
    pub consumer_events_per_s: f64,
    /// From the process start to the last committed offset.
    pub consumer_total_seconds: f64,
    pub raw_events_per_s: f64,
    /// Where the consumer's time went (one instance): start-up until ready, then the drain,
    /// of which the sink writes and the commits (the rest is fetching, decoding, mapping).
    pub consumer_startup_seconds: f64,
    pub consumer_write_seconds: f64,
    pub consumer_commit_seconds: f64,
    /// CPU time the consumer process used, start-up included (user + system, all threads).
    pub consumer_cpu_seconds: f64,
    /// The same drain by two instances in one group, when measured.
    pub two_instances_events_per_s: Option<f64>,
    /// PostgreSQL only: the raw COPY into both tables the consumer writes (`events` and
    /// `event_keys`), for comparison; the goal stays against the plain COPY.
    pub raw_keyed_events_per_s: Option<f64>,
}

/// Gateway `202` to row visible, sampled by probe events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndToEndFigures {
    pub offered_events_per_s: u32,
    pub seconds: u64,
    pub accepted_events: u64,
    pub failed_requests: u64,
    pub probes: usize,
    pub poll_interval_ms: u64,
    pub clickhouse: Option<LatencySummary>,
    pub postgres: Option<LatencySummary>,
    pub clickhouse_missing_probes: usize,
    pub postgres_missing_probes: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub gateway: Option<GatewayFigures>,
    pub clickhouse: Option<DrainFigures>,
    pub postgres: Option<DrainFigures>,
    pub end_to_end: Option<EndToEndFigures>,
    /// The gateway under hostile bodies: its memory and its largest answer.
    pub hostile: Option<crate::hostile::HostileFigures>,
    /// In-process cost of the consumers' CPU stages (decode, row mapping, COPY encoding).
    pub stage_costs: Option<crate::raw::StageCosts>,
    /// Peak resident memory (VmHWM) per binary and phase, in bytes.
    pub peak_rss_bytes: BTreeMap<String, u64>,
    /// Phases that failed, with why: a report is written even when one phase breaks.
    pub errors: Vec<String>,
}

/// A goal of the issue and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    pub name: String,
    pub measured: Option<f64>,
    pub target: f64,
    pub at_least: bool,
    pub met: Option<bool>,
}

impl Goal {
    fn new(name: impl Into<String>, measured: Option<f64>, target: f64, at_least: bool) -> Self {
        let met = measured.map(|m| if at_least { m >= target } else { m <= target });
        Self { name: name.into(), measured, target, at_least, met }
    }
}

pub const RSS_GOAL_BYTES: f64 = 100.0 * 1024.0 * 1024.0;
/// Issue 14: a refused request's answer stays small, whatever its body held.
pub const HOSTILE_RESPONSE_GOAL_BYTES: f64 = 64.0 * 1024.0;

impl Report {
    /// The gateway's figures when its phase ran (the drain phase alone fills in only the raw
    /// producer's rate).
    fn gateway_measured(&self) -> Option<&GatewayFigures> {
        self.gateway.as_ref().filter(|g| g.batch_events_per_request > 0)
    }

    pub fn gateway_vs_raw_producer(&self) -> Option<f64> {
        self.gateway_measured().and_then(|g| ratio(g.batch_events_per_s, g.raw_producer_events_per_s))
    }

    pub fn gateway_single_vs_raw_producer(&self) -> Option<f64> {
        self.gateway_measured().and_then(|g| ratio(g.single_events_per_s, g.raw_producer_events_per_s))
    }

    pub fn clickhouse_vs_raw_insert(&self) -> Option<f64> {
        self.clickhouse.as_ref().and_then(|d| ratio(d.consumer_events_per_s, d.raw_events_per_s))
    }

    pub fn postgres_vs_raw_copy(&self) -> Option<f64> {
        self.postgres.as_ref().and_then(|d| ratio(d.consumer_events_per_s, d.raw_events_per_s))
    }

    /// consumer-postgres against a raw COPY into `events` and `event_keys` (not a goal).
    pub fn postgres_vs_raw_keyed_copy(&self) -> Option<f64> {
        self.postgres.as_ref().and_then(|d| ratio(d.consumer_events_per_s, d.raw_keyed_events_per_s?))
    }

    /// The worse p99 of the two stores.
    pub fn e2e_p99_ms(&self) -> Option<f64> {
        let e2e = self.end_to_end.as_ref()?;
        let ch = e2e.clickhouse.map(|s| s.p99_ms);
        let pg = e2e.postgres.map(|s| s.p99_ms);
        match (ch, pg) {
            (Some(a), Some(b)) => Some(a.max(b)),
            // One store never showed the probes: the figure would hide that.
            _ => None,
        }
    }

    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = vec![
            Goal::new("gateway_vs_raw_producer", self.gateway_vs_raw_producer(), 0.6, true),
            Goal::new("clickhouse_vs_raw_insert", self.clickhouse_vs_raw_insert(), 0.7, true),
            Goal::new("postgres_vs_raw_copy", self.postgres_vs_raw_copy(), 0.6, true),
            Goal::new("e2e_p99_ms", self.e2e_p99_ms(), 2000.0, false),
            Goal::new(
                "hostile_largest_response_bytes",
                self.hostile.as_ref().map(|h| h.largest_response_bytes as f64),
                HOSTILE_RESPONSE_GOAL_BYTES,
                false,
            ),
        ];
        let mut peaks: BTreeMap<&str, u64> = BTreeMap::new();
        for (key, bytes) in &self.peak_rss_bytes {
            let binary = key.split('/').next().unwrap_or(key);
            let peak = peaks.entry(binary).or_default();
            *peak = (*peak).max(*bytes);
        }
        for (binary, bytes) in peaks {
            goals.push(Goal::new(format!("{binary}_peak_rss_mib"), Some(mib(bytes)), RSS_GOAL_BYTES / 1024.0 / 1024.0, false));
        }
        goals
    }

    /// `.dev/bench.json`: the headline ratios at the top level, then every raw figure.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "gateway_vs_raw_producer": self.gateway_vs_raw_producer(),
            "gateway_single_vs_raw_producer": self.gateway_single_vs_raw_producer(),
            "clickhouse_vs_raw_insert": self.clickhouse_vs_raw_insert(),
            "postgres_vs_raw_copy": self.postgres_vs_raw_copy(),
            "postgres_vs_raw_keyed_copy": self.postgres_vs_raw_keyed_copy(),
            "e2e_p99_ms": self.e2e_p99_ms(),
            "goals": self.goals(),
        });
        let details = serde_json::to_value(self).expect("the report serialises");
        if let (Some(out), serde_json::Value::Object(fields)) = (json.as_object_mut(), details) {
            out.extend(fields);
        }
        json
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let env = &self.environment;
        let _ = writeln!(
            out,
            "bxb benchmarks ({}) {} on {} cores, {:.1} GiB",
            env.mode,
            env.date,
            env.cores,
            env.memory_bytes as f64 / 1024f64.powi(3)
        );
        let _ = writeln!(out, "{:<44} {:>14} {:>14} {:>8}", "figure", "measured", "baseline", "ratio");
        let row = |out: &mut String, name: &str, measured: f64, baseline: f64| {
            let r = ratio(measured, baseline).map_or("-".into(), |r| format!("{r:.3}"));
            let _ = writeln!(out, "{name:<44} {measured:>14.0} {baseline:>14.0} {r:>8}");
        };
        if let Some(g) = &self.gateway {
            if g.batch_events_per_request == 0 {
                let _ = writeln!(out, "{:<44} {:>14.0}", "raw producer events/s (backlog)", g.raw_producer_events_per_s);
            }
        }
        if let Some(g) = self.gateway_measured() {
            row(
                &mut out,
                &format!("gateway batch({}) events/s vs raw producer", g.batch_events_per_request),
                g.batch_events_per_s,
                g.raw_producer_events_per_s,
            );
            row(&mut out, "gateway single-event events/s vs raw producer", g.single_events_per_s, g.raw_producer_events_per_s);
            if let (Some(request), Some(delivery)) = (g.batch_request_mean_ms, g.batch_delivery_mean_ms) {
                let _ = writeln!(out, "  gateway batch request mean {request:.1} ms, of which waiting for Kafka {delivery:.1} ms");
            }
            for l in &g.latency_at_rate {
                let (p50, p99) = l.latency.map_or((f64::NAN, f64::NAN), |s| (s.p50_ms, s.p99_ms));
                let _ = writeln!(
                    out,
                    "gateway at {:>6} events/s offered: p50 {p50:.1} ms, p99 {p99:.1} ms, accepted {:.0}/s, failed {}",
                    l.offered_events_per_s, l.accepted_events_per_s, l.failed_requests
                );
            }
        }
        for (name, drain) in [("consumer-clickhouse", &self.clickhouse), ("consumer-postgres", &self.postgres)] {
            if let Some(d) = drain {
                row(&mut out, &format!("{name} drain {} events/s vs raw", d.backlog_events), d.consumer_events_per_s, d.raw_events_per_s);
                let drain_seconds = d.consumer_total_seconds - d.consumer_startup_seconds;
                let _ = writeln!(
                    out,
                    "  {name}: {drain_seconds:.1} s after start-up ({:.1} s), of which writes {:.1} s, commits {:.2} s; its CPU {:.1} s",
                    d.consumer_startup_seconds, d.consumer_write_seconds, d.consumer_commit_seconds, d.consumer_cpu_seconds
                );
                if let Some(keyed) = d.raw_keyed_events_per_s {
                    row(&mut out, &format!("{name} vs raw COPY into events + event_keys"), d.consumer_events_per_s, keyed);
                }
                if let Some(two) = d.two_instances_events_per_s {
                    row(&mut out, &format!("{name} 2 instances vs 1 instance"), two, d.consumer_events_per_s);
                }
            }
        }
        if let Some(c) = &self.stage_costs {
            let _ = writeln!(
                out,
                "per event (one core): decode {:.2} us, ClickHouse row {:.2} us, COPY encode {:.2} us",
                c.decode_us_per_event, c.clickhouse_row_us_per_event, c.postgres_copy_encode_us_per_event
            );
        }
        if let Some(e) = &self.end_to_end {
            for (store, summary, missing) in
                [("ClickHouse", e.clickhouse, e.clickhouse_missing_probes), ("PostgreSQL", e.postgres, e.postgres_missing_probes)]
            {
                let text = summary
                    .map_or("no probe seen".into(), |s| format!("p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", s.p50_ms, s.p99_ms, s.max_ms));
                let _ = writeln!(
                    out,
                    "end to end at {} events/s, 202 -> {store}: {text} ({} probes, {missing} missing)",
                    e.offered_events_per_s, e.probes
                );
            }
        }
        if let Some(h) = &self.hostile {
            let rss = |bytes: Option<u64>| bytes.map_or("-".into(), |b| format!("{:.1} MiB", mib(b)));
            let _ = writeln!(
                out,
                "gateway under hostile bodies of {:.1} MiB, {} clients for {:.0} s: peak RSS {} (before the load {}), largest answer {} bytes",
                h.body_limit_bytes as f64 / 1024.0 / 1024.0, h.concurrency, h.seconds, rss(h.gateway_peak_rss_bytes), rss(h.gateway_rss_before_bytes), h.largest_response_bytes
            );
            for k in &h.kinds {
                let statuses: Vec<String> = k.statuses.iter().map(|(status, n)| format!("{n} x {status}")).collect();
                let _ = writeln!(
                    out,
                    "  {:<16} {:>9} bytes: {:>5} requests ({}), mean {:.0} ms, largest answer {} bytes",
                    k.kind,
                    k.body_bytes,
                    k.requests,
                    statuses.join(", "),
                    k.mean_ms,
                    k.largest_response_bytes
                );
            }
        }
        for (key, bytes) in &self.peak_rss_bytes {
            let _ = writeln!(out, "peak RSS {key:<36} {:>8.1} MiB", mib(*bytes));
        }
        let _ = writeln!(out, "goals:");
        for goal in self.goals() {
            let verdict = match goal.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let measured = goal.measured.map_or("-".into(), |m| format!("{m:.3}"));
            let _ = writeln!(
                out,
                "  {:<36} {measured:>10} {} {:<8} {verdict}",
                goal.name,
                if goal.at_least { ">=" } else { "<=" },
                goal.target
            );
        }
        for error in &self.errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(p99_ms: f64) -> Option<LatencySummary> {
        Some(LatencySummary { samples: 10, p50_ms: p99_ms / 2.0, p99_ms, max_ms: p99_ms })
    }

    fn report() -> Report {
        Report {
            gateway: Some(GatewayFigures {
                batch_events_per_request: 100,
                batch_events_per_s: 30_000.0,
                single_events_per_s: 5_000.0,
                raw_producer_events_per_s: 60_000.0,
                ..Default::default()
            }),
            clickhouse: Some(DrainFigures { consumer_events_per_s: 80.0, raw_events_per_s: 100.0, ..Default::default() }),
            postgres: Some(DrainFigures {
                consumer_events_per_s: 50.0,
                raw_events_per_s: 100.0,
                raw_keyed_events_per_s: Some(80.0),
                ..Default::default()
            }),
            end_to_end: Some(EndToEndFigures { clickhouse: summary(900.0), postgres: summary(2_500.0), ..Default::default() }),
            peak_rss_bytes: BTreeMap::from([("gateway/load".into(), 40 << 20), ("gateway/e2e".into(), 120 << 20)]),
            ..Default::default()
        }
    }

    #[test]
    fn ratios_and_the_worse_p99() {
        let r = report();
        assert_eq!(r.gateway_vs_raw_producer(), Some(0.5));
        assert_eq!(r.gateway_single_vs_raw_producer(), Some(0.083));
        assert_eq!(r.clickhouse_vs_raw_insert(), Some(0.8));
        assert_eq!(r.postgres_vs_raw_copy(), Some(0.5));
        assert_eq!(r.postgres_vs_raw_keyed_copy(), Some(0.625));
        assert_eq!(r.clickhouse.as_ref().and_then(|d| d.raw_keyed_events_per_s), None);
        assert_eq!(r.e2e_p99_ms(), Some(2_500.0));
    }

    #[test]
    fn a_store_without_probes_gives_no_e2e_figure() {
        let mut r = report();
        r.end_to_end.as_mut().unwrap().postgres = None;
        assert_eq!(r.e2e_p99_ms(), None);
        assert!(r.goals().iter().any(|g| g.name == "e2e_p99_ms" && g.met.is_none()));
    }

    #[test]
    fn goals_are_judged_in_their_direction_and_rss_by_the_worst_phase() {
        let goals = report().goals();
        let met = |name: &str| goals.iter().find(|g| g.name == name).unwrap().met;
        assert_eq!(met("gateway_vs_raw_producer"), Some(false));
        assert_eq!(met("clickhouse_vs_raw_insert"), Some(true));
        assert_eq!(met("postgres_vs_raw_copy"), Some(false));
        assert_eq!(met("e2e_p99_ms"), Some(false));
        assert_eq!(met("gateway_peak_rss_mib"), Some(false));
        assert_eq!(met("hostile_largest_response_bytes"), None, "the hostile phase did not run");
        let hostile = |largest_response_bytes| Report {
            hostile: Some(crate::hostile::HostileFigures { largest_response_bytes, ..Default::default() }),
            ..Default::default()
        };
        let met_hostile = |r: Report| r.goals().into_iter().find(|g| g.name == "hostile_largest_response_bytes").unwrap().met;
        assert_eq!(met_hostile(hostile(65_536)), Some(true));
        assert_eq!(met_hostile(hostile(71_000_000)), Some(false));
        assert!(Report::default().goals().iter().all(|g| g.met.is_none()));
        let drain_only =
            Report { gateway: Some(GatewayFigures { raw_producer_events_per_s: 1.0, ..Default::default() }), ..Default::default() };
        assert_eq!(drain_only.gateway_vs_raw_producer(), None, "the gateway phase did not run");
    }

    #[test]
    fn the_json_has_the_headline_ratios_and_the_raw_figures() {
        let json = report().to_json();
        assert_eq!(json["gateway_vs_raw_producer"], 0.5);
        assert_eq!(json["postgres_vs_raw_copy"], 0.5);
        assert_eq!(json["postgres_vs_raw_keyed_copy"], 0.625);
        assert_eq!(json["e2e_p99_ms"], 2_500.0);
        assert_eq!(json["gateway"]["raw_producer_events_per_s"], 60_000.0);
        assert_eq!(json["peak_rss_bytes"]["gateway/e2e"], 120u64 << 20);
        assert!(report().table().contains("MISSED"));
    }
}
