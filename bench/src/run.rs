//! One benchmark run: the phases in order, each next to its baseline, then cleanup of every
//! topic, group and database the run created. A failing phase is recorded in the report and the
//! run goes on.

use std::sync::Arc;

use bxb_harness::consumer::ConsumerKind;
use bxb_harness::services::{self, Created};
use bxb_harness::{measure, process, ApiKey, RunNames};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::drain::{self, consumer_setup};
use crate::gateway;
use crate::hostile::{self, HostileFigures};
use crate::report::{DrainFigures, Environment, GatewayFigures, Report};
use crate::settings::{BenchArgs, Phase, Sizes};

const BATCH_EVENTS_PER_REQUEST: usize = 100;
const CONCURRENCY_BATCH: usize = 16;
const CONCURRENCY_SINGLE: usize = 64;
const OFFERED_RATES: [u32; 3] = [1_000, 5_000, 10_000];
const E2E_RATE: u32 = 10_000;
/// Organizations of the backlog: enough keys to land on every partition.
const BACKLOG_ORGANIZATIONS: usize = 16;

struct Bench {
    args: BenchArgs,
    sizes: Sizes,
    names: RunNames,
    bars: MultiProgress,
    created: Created,
    report: Report,
    backlog_orgs: Vec<Uuid>,
    backlog_topic: Option<String>,
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<Report> {
    let names = RunNames::new("bench");
    args.work_dir = args.work_dir.join(&names.id);
    std::fs::create_dir_all(&args.work_dir)?;
    let sizes = Sizes::of(&args);
    let mut bench = Bench {
        report: Report { environment: environment(&args).await, ..Default::default() },
        args,
        sizes,
        names,
        bars: MultiProgress::new(),
        created: Created::default(),
        backlog_orgs: (0..BACKLOG_ORGANIZATIONS).map(|_| Uuid::new_v4()).collect(),
        backlog_topic: None,
    };
    let phases = bench.args.phases.clone();
    for phase in [Phase::Gateway, Phase::Drain, Phase::E2e, Phase::Hostile] {
        if !phases.contains(&phase) {
            continue;
        }
        let result = match phase {
            Phase::Gateway => bench.gateway_phase().await,
            Phase::Drain => bench.drain_phase().await,
            Phase::E2e => bench.e2e_phase().await,
            Phase::Hostile => bench.hostile_phase().await,
        };
        if let Err(error) = result {
            bench.report.errors.push(format!("{phase:?}: {error:#}"));
        }
    }
    bench.cleanup().await;
    Ok(bench.report)
}

async fn environment(args: &BenchArgs) -> Environment {
    let mut versions = std::collections::BTreeMap::new();
    let command = |program: &str, arguments: &[&str]| {
        std::process::Command::new(program)
            .args(arguments)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    versions.insert("git".into(), command("git", &["rev-parse", "--short", "HEAD"]));
    versions.insert("rustc".into(), command("rustc", &["--version"]));
    versions.insert("kafka".into(), args.kafka_version.clone());
    let (ch, pg) = services::server_versions(&args.stack).await;
    versions.insert("clickhouse".into(), ch);
    versions.insert("postgresql".into(), pg);
    Environment {
        date: measure::now_rfc3339(),
        mode: if args.quick { "quick".into() } else { "full".into() },
        cores: measure::cores(),
        memory_bytes: measure::machine_memory_bytes(),
        versions,
        consumer_kafka_options: args.consumer_kafka_options.clone(),
        consumer_env: args.consumer_env.clone(),
    }
}

impl Bench {
    fn bar(&self, len: u64, message: &str) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{msg:<44} [{bar:30}] {pos:>9}/{len:<9} {per_sec:>12} {elapsed:>4}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar
    }

    async fn topic(&mut self, what: &str) -> anyhow::Result<String> {
        let topic = self.names.topic(what);
        services::create_topic(&self.args.stack, &topic, services::PARTITIONS).await?;
        self.created.topics.push(topic.clone());
        Ok(topic)
    }

    fn group(&mut self, what: &str) -> String {
        let group = self.names.group(what);
        self.created.groups.push(group.clone());
        group
    }

    async fn keys(&self, label: &str, count: usize) -> anyhow::Result<(std::path::PathBuf, Vec<ApiKey>)> {
        let file = self.args.work_dir.join(format!("{label}-api-keys.json"));
        let keys = bxb_harness::gateway::create_api_keys(&self.args.bin_dir, &file, count).await?;
        Ok((file, keys))
    }

    /// Fills the backlog topic with the raw producer; its rate is the gateway's baseline.
    async fn backlog(&mut self) -> anyhow::Result<String> {
        if let Some(topic) = &self.backlog_topic {
            return Ok(topic.clone());
        }
        let topic = self.topic("backlog").await?;
        self.topic("dlq").await?;
        let count = self.sizes.backlog_events;
        let bar = self.bar(count, "raw producer: backlog");
        let rate = crate::raw::produce(&self.args, &topic, &self.backlog_orgs, count, &bar).await?;
        bar.finish();
        self.report.gateway.get_or_insert_with(GatewayFigures::default).raw_producer_events_per_s = rate;
        self.backlog_topic = Some(topic.clone());
        Ok(topic)
    }

    async fn gateway_phase(&mut self) -> anyhow::Result<()> {
        self.backlog().await?;
        let topic = self.topic("gateway").await?;
        let (key_file, keys) = self.keys("gateway", 1).await?;
        let env = gateway::gateway_env(&self.args, &topic, &key_file);
        let process = process::start(&self.args.bin_dir, "gateway", "gateway-load", &env, &self.args.work_dir).await?;
        let target = Arc::new(gateway::target(&process)?);
        let key = &keys[0];
        let load = self.sizes.gateway_load;
        let bar = self.bar(0, &format!("gateway batch({BATCH_EVENTS_PER_REQUEST}) x{CONCURRENCY_BATCH}"));
        let batch = gateway::closed_loop(target.clone(), key, BATCH_EVENTS_PER_REQUEST, CONCURRENCY_BATCH, load, &bar).await;
        bar.finish();
        let (request_mean_ms, delivery_mean_ms) = match process.metrics().await {
            Some(text) => {
                use bxb_harness::measure::metric_total_where;
                let mean = |name: &str, label: &str| {
                    let count = metric_total_where(&text, &format!("{name}_count"), label);
                    (count > 0.0).then(|| metric_total_where(&text, &format!("{name}_sum"), label) / count * 1000.0)
                };
                // Only batch requests have reached the delivery histogram at this point.
                (
                    mean("bxb_gateway_request_duration_seconds", "route=\"/v1/events/batch\""),
                    mean("bxb_gateway_delivery_duration_seconds", ""),
                )
            }
            None => (None, None),
        };
        let bar = self.bar(0, &format!("gateway single-event x{CONCURRENCY_SINGLE}"));
        let single = gateway::closed_loop(target.clone(), key, 1, CONCURRENCY_SINGLE, load, &bar).await;
        bar.finish();
        let mut latency_at_rate = Vec::new();
        for rate in OFFERED_RATES {
            let bar = self.bar(u64::from(rate) * self.sizes.rate_step.as_secs(), &format!("gateway latency at {rate} events/s"));
            latency_at_rate.push(gateway::open_loop(target.clone(), key, rate, BATCH_EVENTS_PER_REQUEST, self.sizes.rate_step, &bar).await);
            bar.finish();
        }
        if let Some(rss) = process.peak_rss_bytes() {
            self.report.peak_rss_bytes.insert("gateway/load".into(), rss);
        }
        process.stop().await?;
        let figures = self.report.gateway.get_or_insert_with(GatewayFigures::default);
        figures.batch_events_per_request = BATCH_EVENTS_PER_REQUEST;
        figures.concurrency_batch = CONCURRENCY_BATCH;
        figures.concurrency_single = CONCURRENCY_SINGLE;
        figures.batch_events_per_s = batch.events_per_s;
        figures.single_events_per_s = single.events_per_s;
        figures.rejected_requests = batch.rejected_requests + single.rejected_requests;
        figures.latency_at_rate = latency_at_rate;
        figures.batch_request_mean_ms = request_mean_ms;
        figures.batch_delivery_mean_ms = delivery_mean_ms;
        Ok(())
    }

    /// The run's database `what` for `kind`: recorded for ClickHouse (its consumer creates it),
    /// created on the PostgreSQL server (the consumer migrates it).
    async fn database(&mut self, kind: ConsumerKind, what: &str) -> anyhow::Result<String> {
        let database = self.names.database(what);
        match kind {
            ConsumerKind::ClickHouse => self.created.ch_databases.push(database.clone()),
            ConsumerKind::Postgres => {
                services::create_pg_database(&self.args.stack, &database).await?;
                self.created.pg_databases.push(database.clone());
            }
        }
        Ok(database)
    }

    async fn consumer_drain(&mut self, consumer: ConsumerKind, label: &str, instances: usize) -> anyhow::Result<drain::Drain> {
        let topic = self.backlog().await?;
        let group = self.group(label);
        let database = self.database(consumer, label).await?;
        let setup = consumer_setup(&self.args, consumer, topic, self.names.topic("dlq"), group, database, self.sizes.batch_events);
        let bar = self.bar(self.sizes.backlog_events, &format!("{} x{instances} drain", consumer.binary()));
        let result = drain::drain(&self.args, &setup, instances, self.sizes.backlog_events, &bar).await;
        bar.finish();
        let result = result?;
        for (i, rss) in result.peak_rss_bytes.iter().enumerate() {
            self.report.peak_rss_bytes.insert(format!("{}/drain-x{instances}-{i}", consumer.binary()), *rss);
        }
        Ok(result)
    }

    async fn drain_phase(&mut self) -> anyhow::Result<()> {
        let count = self.sizes.backlog_events;
        let batch = self.sizes.batch_events;
        // ClickHouse: the consumer, the raw insert, then two instances in one group.
        let one = self.consumer_drain(ConsumerKind::ClickHouse, "ch1", 1).await?;
        let raw_db = self.database(ConsumerKind::ClickHouse, "chraw").await?;
        let bar = self.bar(count, "raw ClickHouse insert");
        let raw = crate::raw::clickhouse_insert(&self.args, &raw_db, &self.backlog_orgs, count, batch, &bar).await?;
        bar.finish();
        self.report.clickhouse = Some(drain_figures(count, batch, &one, raw));
        match self.consumer_drain(ConsumerKind::ClickHouse, "ch2", 2).await {
            Ok(two) => self.report.clickhouse.as_mut().expect("set above").two_instances_events_per_s = Some(two.events_per_s),
            Err(error) => self.report.errors.push(format!("consumer-clickhouse x2: {error:#}")),
        }
        let topic = self.backlog().await?;
        match crate::raw::stage_costs(&self.args, &topic, &self.backlog_orgs, count.min(100_000)).await {
            Ok(costs) => self.report.stage_costs = Some(costs),
            Err(error) => self.report.errors.push(format!("stage costs: {error:#}")),
        }
        // PostgreSQL: the consumer, the raw COPY, two instances.
        let one = self.consumer_drain(ConsumerKind::Postgres, "pg1", 1).await?;
        let raw_db = self.database(ConsumerKind::Postgres, "pgraw").await?;
        let raw_url = self.args.stack.postgres_url_of(&raw_db);
        let bar = self.bar(count, "raw PostgreSQL COPY");
        let raw = crate::raw::postgres_copy(&raw_url, &self.backlog_orgs, count, batch, false, &bar).await?;
        bar.finish();
        self.report.postgres = Some(drain_figures(count, batch, &one, raw));
        let raw_db = self.database(ConsumerKind::Postgres, "pgrawkeyed").await?;
        let raw_url = self.args.stack.postgres_url_of(&raw_db);
        let bar = self.bar(count, "raw PostgreSQL COPY, events + event_keys");
        match crate::raw::postgres_copy(&raw_url, &self.backlog_orgs, count, batch, true, &bar).await {
            Ok(keyed) => self.report.postgres.as_mut().expect("set above").raw_keyed_events_per_s = Some(keyed),
            Err(error) => self.report.errors.push(format!("raw PostgreSQL keyed COPY: {error:#}")),
        }
        bar.finish();
        match self.consumer_drain(ConsumerKind::Postgres, "pg2", 2).await {
            Ok(two) => self.report.postgres.as_mut().expect("set above").two_instances_events_per_s = Some(two.events_per_s),
            Err(error) => self.report.errors.push(format!("consumer-postgres x2: {error:#}")),
        }
        Ok(())
    }

    async fn e2e_phase(&mut self) -> anyhow::Result<()> {
        let topic = self.topic("e2e").await?;
        self.topic("dlq").await?;
        let (key_file, keys) = self.keys("e2e", 4).await?;
        let ch_db = self.database(ConsumerKind::ClickHouse, "e2ech").await?;
        let pg_db = self.database(ConsumerKind::Postgres, "e2epg").await?;
        let pg_url = self.args.stack.postgres_url_of(&pg_db);
        let dlq_topic = self.names.topic("dlq");
        let (ch_group, pg_group) = (self.group("e2ech"), self.group("e2epg"));
        let batch = self.sizes.batch_events;
        let ch = consumer_setup(&self.args, ConsumerKind::ClickHouse, topic.clone(), dlq_topic.clone(), ch_group, ch_db.clone(), batch);
        let pg = consumer_setup(&self.args, ConsumerKind::Postgres, topic.clone(), dlq_topic, pg_group, pg_db, batch);
        let ch_process = drain::start(&self.args, &ch, "consumer-clickhouse-e2e").await?;
        let pg_process = drain::start(&self.args, &pg, "consumer-postgres-e2e").await?;
        let gateway_process = process::start(
            &self.args.bin_dir,
            "gateway",
            "gateway-e2e",
            &gateway::gateway_env(&self.args, &topic, &key_file),
            &self.args.work_dir,
        )
        .await?;
        let target = Arc::new(gateway::target(&gateway_process)?);
        let stores = crate::e2e::Stores {
            clickhouse: services::clickhouse(&self.args.stack).with_database(&ch_db),
            postgres: sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&pg_url).await?,
            organization_ids: keys.iter().map(|k| k.organization_id).collect(),
        };
        let duration = self.sizes.e2e;
        let bar = self.bar(u64::from(E2E_RATE) * duration.as_secs(), &format!("end to end at {E2E_RATE} events/s"));
        let result = crate::e2e::run(target, &keys, stores, E2E_RATE, duration, &bar).await;
        bar.finish();
        for (label, process) in
            [("gateway/e2e", &gateway_process), ("consumer-clickhouse/e2e", &ch_process), ("consumer-postgres/e2e", &pg_process)]
        {
            if let Some(rss) = process.peak_rss_bytes() {
                self.report.peak_rss_bytes.insert(label.into(), rss);
            }
        }
        for process in [gateway_process, ch_process, pg_process] {
            let _ = process.stop().await;
        }
        self.report.end_to_end = Some(result?);
        Ok(())
    }

    /// The gateway with its default body and batch limits under [`hostile::CONCURRENCY`] clients
    /// of hostile bodies; its peak RSS is reported with the phase, not with the load phases.
    async fn hostile_phase(&mut self) -> anyhow::Result<()> {
        let topic = self.topic("hostile").await?;
        let (key_file, keys) = self.keys("hostile", 1).await?;
        let mut env = gateway::gateway_env(&self.args, &topic, &key_file);
        env.push(("BXB_MAX_BODY_BYTES".into(), hostile::BODY_LIMIT_BYTES.to_string()));
        env.push(("BXB_MAX_BATCH_EVENTS".into(), hostile::BATCH_EVENTS.to_string()));
        let process = process::start(&self.args.bin_dir, "gateway", "gateway-hostile", &env, &self.args.work_dir).await?;
        let client = bxb_harness::http::client(std::time::Duration::from_secs(120), hostile::CONCURRENCY)?;
        let target = Arc::new(bxb_harness::GatewayClient::new(client, process.port));
        let rss_before = process.peak_rss_bytes();
        let bar = self.bar(0, &format!("gateway hostile bodies x{}", hostile::CONCURRENCY));
        let (kinds, seconds) = hostile::load(target, &keys[0], self.sizes.hostile, &bar).await;
        bar.finish();
        let peak = process.peak_rss_bytes();
        process.stop().await?;
        self.report.hostile = Some(HostileFigures {
            concurrency: hostile::CONCURRENCY,
            seconds,
            body_limit_bytes: hostile::BODY_LIMIT_BYTES,
            gateway_rss_before_bytes: rss_before,
            gateway_peak_rss_bytes: peak,
            largest_response_bytes: kinds.iter().map(|k| k.largest_response_bytes).max().unwrap_or(0),
            kinds,
        });
        Ok(())
    }

    async fn cleanup(&mut self) {
        std::mem::take(&mut self.created).remove(&self.args.stack).await;
    }
}

/// One instance's drain next to the raw baseline; the two-instance figure is added later.
fn drain_figures(backlog_events: u64, batch_events: usize, one: &drain::Drain, raw_events_per_s: f64) -> DrainFigures {
    DrainFigures {
        backlog_events,
        batch_events,
        consumer_events_per_s: one.events_per_s,
        consumer_total_seconds: one.total_seconds,
        raw_events_per_s,
        consumer_startup_seconds: one.startup_seconds,
        consumer_write_seconds: one.write_seconds,
        consumer_commit_seconds: one.commit_seconds,
        consumer_cpu_seconds: one.cpu_seconds,
        two_instances_events_per_s: None,
        raw_keyed_events_per_s: None,
    }
}
