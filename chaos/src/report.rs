//! What a chaos run found: written to `.dev/chaos.json`, summarised on stdout. The last line is
//! `chaos: events=N lost=L double_counted=D value_mismatch=V`, summed over both stores and both
//! checks.

use crate::faults::{Fault, Outage};
use crate::load::LoadStats;
use crate::tally::StoreTally;
use crate::truth::TopicTruth;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub date: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub seed: u64,
    pub organizations: usize,
    pub offered_rate_events_per_s: u32,
    pub planned_distinct_events: usize,
    pub planned_retries: usize,
    pub planned_retries_with_other_timestamp: usize,
    pub planned_retries_with_other_values: usize,
    pub planned_retries_with_other_billability: usize,
    /// Distinct identities accepted (a `202`), the probe of the outage included.
    pub accepted_distinct_events: usize,
    pub load: LoadStats,
    pub faults: Vec<FaultRecord>,
    pub outage: Option<Outage>,
    pub kills: Vec<(String, usize)>,
    pub peak_rss_bytes: Vec<(String, u64)>,
    /// The run's topic read back once the consumers drained it: the truth of both checks.
    pub topic: Option<TopicTruth>,
    /// Once both groups caught up after the faults.
    pub after_faults: Vec<StoreTally>,
    /// Once both groups caught up again after a replay from the earliest offset.
    pub after_replay: Vec<StoreTally>,
    pub catch_up_seconds: f64,
    pub replay_catch_up_seconds: f64,
    /// Records the consumers sent to the dead-letter topic (every offered event is valid).
    pub dead_lettered: i64,
    /// `bxbctl verify`'s last line and whether it exited 0.
    pub verify: Option<(bool, String)>,
    pub total_seconds: f64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultRecord {
    pub fault: Fault,
    pub planned_at_s: f64,
    pub at_s: f64,
    /// Time until the restarted consumer (or the gateway, for the broker) was ready again.
    pub back_after_s: f64,
}

impl Report {
    fn tallies(&self) -> impl Iterator<Item = &StoreTally> {
        self.after_faults.iter().chain(&self.after_replay)
    }

    pub fn lost(&self) -> u64 {
        self.tallies().map(|t| t.lost).sum()
    }

    pub fn double_counted(&self) -> u64 {
        self.tallies().map(|t| t.double_counted).sum()
    }

    pub fn value_mismatch(&self) -> u64 {
        self.tallies().map(|t| t.value_mismatch).sum()
    }

    /// The topic as the plan and the `202`s say it must be, both stores exact against it after
    /// the faults and after the replay, the outage handled, the stores agreeing with each other,
    /// nothing dead-lettered, every request accepted.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
            && self.topic.as_ref().is_some_and(TopicTruth::passed)
            && self.after_faults.len() == 2
            && self.after_replay.len() == 2
            && self.tallies().all(StoreTally::exact)
            && self.outage.as_ref().is_some_and(Outage::passed)
            && self.verify.as_ref().is_some_and(|(ok, _)| *ok)
            && self.dead_lettered == 0
            && self.load.refused.is_empty()
            && self.load.unfinished == 0
    }

    /// The summary; its last line is the one scripts read.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "chaos load: {} requests, {} attempts, statuses {:?}, {} without answer, {} refused, {} unfinished, {:.1} s",
            self.load.requests,
            self.load.attempts,
            self.load.statuses,
            self.load.transport_errors,
            self.load.refused.len(),
            self.load.unfinished,
            self.load.seconds
        )];
        for f in &self.faults {
            lines.push(format!(
                "chaos fault: {:?} at {:.1} s (planned {:.1} s), back after {:.1} s",
                f.fault, f.at_s, f.planned_at_s, f.back_after_s
            ));
        }
        if let Some(o) = &self.outage {
            lines.push(format!(
                "chaos broker outage: answer {:?} after {:?} ms (limit {} ms), not ready after {:?} ms, ready again {:?} ms after start, outage request accepted after: {}",
                o.answer_status, o.answer_ms, o.answer_limit_ms, o.not_ready_after_ms, o.recovered_after_ms, o.probe_accepted_after
            ));
        }
        if let Some(t) = &self.topic {
            lines.push(format!(
                "chaos topic: records={} identities={} billable={} first_is_another_version={} first_not_planned={} not_accepted={} missing_from_topic={} undecodable={} not_log_append_time={}",
                t.records,
                t.identities,
                t.billable_identities,
                t.first_is_another_version,
                t.first_not_planned,
                t.not_accepted,
                t.missing_from_topic,
                t.undecodable,
                t.not_log_append_time
            ));
            lines.extend(t.examples.iter().map(|e| format!("chaos topic: {e}")));
        }
        for (phase, tallies) in [("after faults", &self.after_faults), ("after replay", &self.after_replay)] {
            for t in tallies {
                lines.push(format!(
                    "chaos {} {phase}: identities expected={} found={} lost={} unexpected={}; buckets={} truth_events={} counted={} lost={} double_counted={} value_mismatch={}",
                    t.store,
                    t.expected,
                    t.found,
                    t.identities_lost,
                    t.unexpected,
                    t.buckets,
                    t.truth_events,
                    t.counted,
                    t.lost,
                    t.double_counted,
                    t.value_mismatch
                ));
                for m in t.mismatching_buckets.iter().take(3) {
                    lines.push(format!(
                        "chaos {} {phase}: {} {} {}: expected {} events, value {}, decimal {}; found {}, {}, {}",
                        t.store,
                        m.organization_id,
                        m.code,
                        m.hour,
                        m.expected.events,
                        m.expected.value_sum,
                        m.expected.decimal_value_sum,
                        m.found.events,
                        m.found.value_sum,
                        m.found.decimal_value_sum
                    ));
                }
            }
        }
        lines.push(format!("chaos dead-lettered: {}", self.dead_lettered));
        if let Some((ok, line)) = &self.verify {
            lines.push(format!("chaos verify ({}): {line}", if *ok { "agree" } else { "DIFFER" }));
        }
        for e in &self.errors {
            lines.push(format!("chaos error: {e}"));
        }
        lines.push(format!(
            "chaos: events={} lost={} double_counted={} value_mismatch={}",
            self.accepted_distinct_events,
            self.lost(),
            self.double_counted(),
            self.value_mismatch()
        ));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(store: &str) -> StoreTally {
        StoreTally {
            store: store.into(),
            expected: 5,
            found: 5,
            identities_lost: 0,
            unexpected: 0,
            buckets: 2,
            truth_events: 5,
            counted: 5,
            lost: 0,
            double_counted: 0,
            value_mismatch: 0,
            mismatching_buckets: Vec::new(),
        }
    }

    fn passing() -> Report {
        Report {
            accepted_distinct_events: 5,
            topic: Some(TopicTruth { records: 6, identities: 5, billable_identities: 5, ..Default::default() }),
            after_faults: vec![exact("clickhouse"), exact("postgres")],
            after_replay: vec![exact("clickhouse"), exact("postgres")],
            outage: Some(Outage {
                answer_status: Some(503),
                answer_ms: Some(10_000),
                not_ready_after_ms: Some(1),
                recovered_after_ms: Some(1),
                probe_accepted_after: true,
                answer_limit_ms: 15_000,
                ..Default::default()
            }),
            verify: Some((true, "verify: 3 bucket(s) compared, 0 difference(s)".into())),
            ..Default::default()
        }
    }

    #[test]
    fn the_last_line_sums_both_stores_and_both_checks() {
        let mut report = passing();
        assert!(report.passed());
        assert_eq!(report.lines().last().unwrap(), "chaos: events=5 lost=0 double_counted=0 value_mismatch=0");
        report.after_replay[1] = StoreTally { lost: 2, counted: 3, ..exact("postgres") };
        report.after_faults[0] = StoreTally { counted: 6, double_counted: 1, ..exact("clickhouse") };
        report.after_faults[1] = StoreTally { value_mismatch: 1, ..exact("postgres") };
        report.after_replay[0] = StoreTally { value_mismatch: 2, ..exact("clickhouse") };
        assert!(!report.passed());
        assert_eq!(report.lines().last().unwrap(), "chaos: events=5 lost=2 double_counted=1 value_mismatch=3");
    }

    #[test]
    fn each_number_alone_fails_the_run() {
        for tally in [
            StoreTally { lost: 1, ..exact("clickhouse") },
            StoreTally { double_counted: 1, ..exact("clickhouse") },
            StoreTally { value_mismatch: 1, ..exact("clickhouse") },
            StoreTally { identities_lost: 1, ..exact("clickhouse") },
            StoreTally { unexpected: 1, ..exact("clickhouse") },
        ] {
            let mut report = passing();
            report.after_replay[0] = tally.clone();
            assert!(!report.passed(), "{tally:?}");
        }
    }

    #[test]
    fn a_topic_unlike_the_plan_fails_the_run() {
        let topic = TopicTruth::default();
        assert!(!Report { topic: None, ..passing() }.passed());
        for wrong in [
            TopicTruth { first_not_planned: 1, ..topic.clone() },
            TopicTruth { missing_from_topic: 1, ..topic.clone() },
            TopicTruth { undecodable: 1, ..topic.clone() },
            TopicTruth { not_log_append_time: 1, ..topic.clone() },
        ] {
            assert!(!Report { topic: Some(wrong), ..passing() }.passed());
        }
        // Retries winning the race and identities without a 202 are reported, not failures
        // of the topic (the stores' `unexpected` and the load's `unfinished` say the rest).
        let raced = TopicTruth { first_is_another_version: 3, not_accepted: 1, ..topic };
        assert!(Report { topic: Some(raced), ..passing() }.passed());
    }

    #[test]
    fn any_failed_condition_fails_the_run() {
        assert!(!Report { dead_lettered: 1, ..passing() }.passed());
        assert!(!Report { verify: Some((false, String::new())), ..passing() }.passed());
        assert!(!Report { errors: vec!["x".into()], ..passing() }.passed());
        assert!(!Report { after_replay: vec![], ..passing() }.passed());
        let mut unfinished = passing();
        unfinished.load.unfinished = 1;
        assert!(!unfinished.passed());
    }
}
