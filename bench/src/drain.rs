//! The consumers draining a backlog, timed by the offsets their group commits.

use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::ProgressBar;

use bxb_harness::consumer::{env_pairs, ConsumerKind, ConsumerSetup};
use bxb_harness::{measure, services, Running};

use crate::settings::BenchArgs;

/// The settings of a consumer under test: its own group, topic, DLQ and database, the run's
/// batch size, and the command line's librdkafka options and extra environment.
pub fn consumer_setup(
    args: &BenchArgs,
    kind: ConsumerKind,
    topic: String,
    dlq_topic: String,
    group: String,
    database: String,
    batch_events: usize,
) -> ConsumerSetup {
    let mut extra_env = vec![("BXB_BATCH_MAX_EVENTS".to_owned(), batch_events.to_string())];
    if let Some(options) = &args.consumer_kafka_options {
        extra_env.push(("BXB_KAFKA_OPTIONS".into(), options.clone()));
    }
    extra_env.extend(env_pairs(&args.consumer_env));
    ConsumerSetup { kind, topic, dlq_topic, group, database, billable_codes: crate::events::CODE.into(), extra_env }
}

/// Starts one instance of `setup` labelled `label`, logging into the run's work dir.
pub async fn start(args: &BenchArgs, setup: &ConsumerSetup, label: &str) -> anyhow::Result<Running> {
    Ok(setup.start(&args.stack, &args.bin_dir, label, &args.work_dir).await?)
}

/// What one drain measured.
pub struct Drain {
    pub events_per_s: f64,
    pub total_seconds: f64,
    /// From the process start until every instance was ready.
    pub startup_seconds: f64,
    /// Time spent in sink writes and in offset commits, summed over the instances (from their
    /// `bxb_consumer_write_duration_seconds` and `bxb_consumer_commit_duration_seconds`).
    pub write_seconds: f64,
    pub commit_seconds: f64,
    /// Peak RSS of each instance, bytes.
    pub peak_rss_bytes: Vec<u64>,
    /// CPU time of the instances from their start to the end of the drain, summed.
    pub cpu_seconds: f64,
}

/// Starts `instances` consumers in one group and waits until the group has committed all
/// `backlog` records. The rate counts from the first commit, so start-up is excluded.
pub async fn drain(args: &BenchArgs, setup: &ConsumerSetup, instances: usize, backlog: u64, bar: &ProgressBar) -> anyhow::Result<Drain> {
    let started = Instant::now();
    // Started together, so that every instance joins the group's first assignment.
    let labels: Vec<String> = (0..instances).map(|i| format!("{}-{}-{i}", setup.kind.binary(), setup.group)).collect();
    let running = futures::future::try_join_all(labels.iter().map(|label| start(args, setup, label))).await?;
    let startup_seconds = started.elapsed().as_secs_f64();
    // A drain that stalls (a fatal write error, a rebalance loop) must not hang the run.
    let limit = Duration::from_secs(120) + Duration::from_millis(backlog / 2);
    let mut first: Option<(Instant, i64)> = None;
    // Each position query makes a new Kafka client (about 100 ms, most of it the client's
    // shutdown): a fixed cadence rather than a sleep after each query keeps the rate's resolution.
    let mut cadence = tokio::time::interval(Duration::from_millis(100));
    cadence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        cadence.tick().await;
        let committed = services::committed_total(&args.stack, &setup.group, &setup.topic).await?;
        bar.set_position(committed.max(0) as u64);
        let now = Instant::now();
        if first.is_none() && committed > 0 {
            first = Some((now, committed));
        }
        if committed >= backlog as i64 {
            let (t0, c0) = first.expect("set above");
            let span = now.duration_since(t0);
            // A backlog drained between two polls has no span: count it from the start.
            let events_per_s = if span.is_zero() || c0 >= committed {
                crate::stats::per_second(backlog, now.duration_since(started))
            } else {
                crate::stats::per_second((committed - c0) as u64, span)
            };
            break Ok((events_per_s, now.duration_since(started).as_secs_f64()));
        }
        if started.elapsed() > limit {
            break Err(anyhow::anyhow!("{} drained only {committed} of {backlog} in {limit:?}", setup.kind.binary()));
        }
        for instance in &running {
            if instance.pid().is_some_and(|pid| measure::peak_rss_bytes(pid).is_none()) {
                bail!("{} exited while draining (log in {})", instance.name, args.work_dir.display());
            }
        }
    };
    let peak_rss_bytes = running.iter().filter_map(Running::peak_rss_bytes).collect();
    let cpu_seconds = running.iter().filter_map(Running::cpu_seconds).sum();
    let (mut write_seconds, mut commit_seconds) = (0.0, 0.0);
    for instance in &running {
        if let Some(text) = instance.metrics().await {
            write_seconds += measure::metric_total(&text, "bxb_consumer_write_duration_seconds_sum");
            commit_seconds += measure::metric_total(&text, "bxb_consumer_commit_duration_seconds_sum");
        }
    }
    for instance in running {
        let _ = instance.stop().await;
    }
    let (events_per_s, total_seconds) = result?;
    Ok(Drain { events_per_s, total_seconds, startup_seconds, write_seconds, commit_seconds, peak_rss_bytes, cpu_seconds })
}
