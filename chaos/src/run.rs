//! One chaos run, in order: its own topic, groups, databases and API keys; both consumers and
//! the gateway as processes; the load with the faults at their moments; catch-up; the truth
//! read back from the topic; the counts; a replay of both groups from the earliest offset with
//! `bxbctl`; catch-up and counts again; `bxbctl verify`; cleanup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bxb_event::clock::now_ms;
use bxb_harness::consumer::{env_pairs, ConsumerSetup};
use bxb_harness::services::{self, Created};
use bxb_harness::{measure, process, ConsumerKind, RunNames, Running};
use rand::rngs::StdRng;
use rand::SeedableRng;
use uuid::Uuid;

use crate::consumers::Instance;
use crate::faults::{self, Fault};
use crate::load::{self, Gateway, Progress};
use crate::plan::{self, PlanShape, PlannedEvent, Retry, BILLABLE_CODES};
use crate::report::Report;
use crate::settings::ChaosArgs;
use crate::stores;
use crate::tally::{tally, Expected, Identity, StoreTally};
use crate::topic;
use crate::truth::{Truth, Version};

/// The names a run owns (never the dev stack's `events`, `bxb` or `bxb-*`).
struct Names {
    topic: String,
    dlq: String,
    clickhouse_group: String,
    postgres_group: String,
    /// One database of that name in ClickHouse and one in PostgreSQL.
    database: String,
}

impl Names {
    fn of(run: &RunNames) -> Self {
        Self {
            topic: run.topic("events"),
            dlq: run.topic("dlq"),
            clickhouse_group: run.group("clickhouse"),
            postgres_group: run.group("postgres"),
            database: run.database("stores"),
        }
    }

    fn group(&self, kind: ConsumerKind) -> &str {
        match kind {
            ConsumerKind::ClickHouse => &self.clickhouse_group,
            ConsumerKind::Postgres => &self.postgres_group,
        }
    }
}

struct Chaos {
    args: ChaosArgs,
    names: Names,
    created: Created,
    report: Report,
    started: Instant,
}

pub async fn run(mut args: ChaosArgs) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let run = RunNames::new("chaos");
    args.work_dir = args.work_dir.join(&run.id);
    std::fs::create_dir_all(&args.work_dir)?;
    let mut chaos =
        Chaos { report: environment(seed, &args), args, names: Names::of(&run), created: Created::default(), started: Instant::now() };
    eprintln!("chaos: seed {seed}, topic {}, logs in {}", chaos.names.topic, chaos.args.work_dir.display());
    let deadline = chaos.args.deadline();
    match tokio::time::timeout(deadline, chaos.exercise(seed)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => chaos.report.errors.push(format!("{error:#}")),
        Err(_) => chaos.report.errors.push(format!("not finished within the deadline of {deadline:?}")),
    }
    if !chaos.args.keep {
        std::mem::take(&mut chaos.created).remove(&chaos.args.stack).await;
    }
    chaos.report.total_seconds = chaos.started.elapsed().as_secs_f64();
    Ok(chaos.report)
}

fn environment(seed: u64, args: &ChaosArgs) -> Report {
    Report {
        date: measure::now_rfc3339(),
        cores: measure::cores(),
        memory_bytes: measure::machine_memory_bytes(),
        seed,
        organizations: args.organizations,
        offered_rate_events_per_s: args.rate,
        ..Default::default()
    }
}

impl Chaos {
    /// One consumer of the run, not started yet; its group is recorded for the cleanup.
    fn consumer(&mut self, kind: ConsumerKind) -> Instance {
        let args = &self.args;
        let setup = ConsumerSetup {
            kind,
            topic: self.names.topic.clone(),
            dlq_topic: self.names.dlq.clone(),
            group: self.names.group(kind).to_owned(),
            database: self.names.database.clone(),
            billable_codes: BILLABLE_CODES.join(","),
            extra_env: env_pairs(&args.consumer_env),
        };
        self.created.groups.push(setup.group.clone());
        Instance::new(kind, setup.env(&args.stack), args.bin_dir.clone(), args.work_dir.clone())
    }

    async fn start_gateway(&self, key_file: &std::path::Path) -> anyhow::Result<Running> {
        let env = bxb_harness::gateway::gateway_env(&self.args.stack, &self.names.topic, key_file);
        Ok(process::start(&self.args.bin_dir, "gateway", "gateway", &env, &self.args.work_dir).await?)
    }

    /// The run's topic and dead-letter topic, and its database in both stores.
    async fn create_services(&mut self) -> anyhow::Result<String> {
        let stack = &self.args.stack;
        for (topic, partitions) in [(&self.names.topic, services::PARTITIONS), (&self.names.dlq, 1)] {
            services::create_topic(stack, topic, partitions).await?;
            self.created.topics.push(topic.clone());
        }
        // consumer-clickhouse creates its database; consumer-postgres needs it to exist.
        self.created.ch_databases.push(self.names.database.clone());
        let database_url = services::create_pg_database(stack, &self.names.database).await?;
        self.created.pg_databases.push(self.names.database.clone());
        Ok(database_url)
    }

    async fn exercise(&mut self, seed: u64) -> anyhow::Result<()> {
        let database_url = self.create_services().await?;
        let admin = sqlx::PgPool::connect(&database_url).await?;

        let key_file = self.args.work_dir.join("api-keys.json");
        let api_keys = bxb_harness::gateway::create_api_keys(&self.args.bin_dir, &key_file, self.args.organizations.max(1)).await?;
        let organizations: Vec<Uuid> = api_keys.iter().map(|k| k.organization_id).collect();
        let keys: Vec<String> = api_keys.into_iter().map(|k| k.key).collect();
        let mut clickhouse = self.consumer(ConsumerKind::ClickHouse);
        let mut postgres = self.consumer(ConsumerKind::Postgres);
        clickhouse.start().await?;
        postgres.start().await?;
        let gateway_process = self.start_gateway(&key_file).await?;
        let gateway = Gateway::new(gateway_process.port, keys)?;

        let start_ms = now_ms();
        let shape = PlanShape {
            distinct_events: self.args.events,
            organizations: organizations.len(),
            batch_events: self.args.batch_events,
            retry_fraction: self.args.retry_fraction,
            now_ms: start_ms,
        };
        let plan = Arc::new(plan::plan(seed, shape));
        self.report.planned_distinct_events = plan.distinct_events;
        self.report.planned_retries = plan.retries;
        self.report.planned_retries_with_other_timestamp = plan.retries_with_other_timestamp;
        self.report.planned_retries_with_other_values = plan.retries_with_other_values;
        self.report.planned_retries_with_other_billability = plan.retries_with_other_billability;
        let probe = PlannedEvent {
            organization: 0,
            transaction_id: format!("chaos-{seed:x}-outage-probe"),
            code: BILLABLE_CODES[0],
            timestamp_ms: start_ms - 1_000,
            customer: 0,
            value: Some(1.0),
            decimal_value: None,
            retry: Retry::No,
        };

        // The load runs on its own task; the faults happen here at their moments.
        let schedule = faults::schedule(&mut StdRng::seed_from_u64(seed ^ 0x5eed), self.args.kills, self.args.load_duration());
        let moments = |fault: Fault| -> Vec<Duration> { schedule.iter().filter(|(_, f)| *f == fault).map(|(at, _)| *at).collect() };
        let progress = Arc::new(Progress::default());
        let load_deadline = self.started + self.args.deadline().mul_f64(0.6);
        let load_started = Instant::now();
        let load = tokio::spawn(load::offer(
            gateway.clone(),
            plan.clone(),
            self.args.rate,
            self.args.concurrency,
            load_deadline,
            progress.clone(),
        ));
        let reporter = tokio::spawn(report_progress(progress.clone(), plan.distinct_events + plan.retries));
        // One lane per consumer and one for the broker, so every fault happens at its moment
        // whatever the others take.
        let clickhouse_lane =
            tokio::spawn(faults::kill_lane(clickhouse, moments(Fault::Kill(ConsumerKind::ClickHouse)), load_started, seed ^ 1));
        let postgres_lane = tokio::spawn(faults::kill_lane(postgres, moments(Fault::Kill(ConsumerKind::Postgres)), load_started, seed ^ 2));
        let broker = faults::BrokerCommands { stop: self.args.broker_stop_command.clone(), start: self.args.broker_start_command.clone() };
        let probe_body = serde_json::json!({ "events": [probe.json()] }).to_string();
        let answer_limit = Duration::from_millis(self.args.outage_answer_limit_ms);
        let broker_at = moments(Fault::BrokerRestart).first().copied().unwrap_or_default();
        let (outage, broker_record) = faults::broker_lane(&gateway, &broker, probe_body, answer_limit, broker_at, load_started).await?;
        let probe_accepted = outage.probe_accepted_after;
        self.report.outage = Some(outage);
        let (mut clickhouse, clickhouse_records) = clickhouse_lane.await??;
        let (mut postgres, postgres_records) = postgres_lane.await??;
        self.report.faults = clickhouse_records.into_iter().chain(postgres_records).chain([broker_record]).collect();
        self.report.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        self.report.load = load.await.context("load generator")?;
        reporter.abort();

        // What the gateway accepted (a `202`), and which of those had a billable version: the
        // topic decides which version counts.
        let mut accepted: HashSet<Identity> = HashSet::new();
        let mut billable_version: HashSet<Identity> = HashSet::new();
        let accepted_events = plan.requests.iter().zip(&self.report.load.accepted).filter(|(_, ok)| **ok).flat_map(|(r, _)| &r.events);
        for event in accepted_events.chain(probe_accepted.then_some(&probe)) {
            let identity = (organizations[event.organization], event.transaction_id.clone());
            if event.billable() {
                billable_version.insert(identity.clone());
            }
            accepted.insert(identity);
        }
        self.report.accepted_distinct_events = accepted.len();
        // Every version offered, accepted or not: a request answered 503 may be in the topic too.
        let mut planned: HashMap<Identity, Vec<Version>> = HashMap::new();
        for event in plan.requests.iter().flat_map(|r| &r.events).chain([&probe]) {
            planned.entry((organizations[event.organization], event.transaction_id.clone())).or_default().push(event.version());
        }

        let clickhouse_client = services::clickhouse(&self.args.stack).with_database(&self.names.database);
        let range_ms = (start_ms - 8 * 3_600_000, now_ms() + 3_600_000);
        self.report.catch_up_seconds = self.caught_up().await?;
        // consumer-postgres bills BILLABLE_CODES for every organization; the run fills no
        // `billable_metrics`.
        let read = topic::read(&self.args.stack, &self.names.topic).await?;
        let truth = Truth::build(read, &planned, &accepted, |_, code| BILLABLE_CODES.contains(&code));
        self.report.topic = Some(truth.summary.clone());
        let missing_billable = truth.missing_from_topic.intersection(&billable_version).count();
        let expected = [
            Expected {
                identities: &truth.identities,
                buckets: &truth.clickhouse,
                accepted: &accepted,
                missing_from_topic: truth.missing_from_topic.len(),
            },
            Expected { identities: &truth.billable, buckets: &truth.postgres, accepted: &accepted, missing_from_topic: missing_billable },
        ];
        self.report.after_faults = self.tallies(&clickhouse_client, &admin, range_ms, expected).await?;

        clickhouse.stop().await?;
        postgres.stop().await?;
        for group in [&self.names.clickhouse_group, &self.names.postgres_group] {
            self.replay_from_earliest(group).await?;
        }
        clickhouse.start().await?;
        postgres.start().await?;
        self.report.replay_catch_up_seconds = self.caught_up().await?;
        self.report.after_replay = self.tallies(&clickhouse_client, &admin, range_ms, expected).await?;
        self.report.dead_lettered = self.dead_lettered().await?;
        self.report.verify = Some(self.verify(range_ms).await?);

        for instance in [&mut clickhouse, &mut postgres] {
            instance.stop().await?;
            self.report.kills.push((instance.kind.binary().to_owned(), instance.kills));
            self.report.peak_rss_bytes.push((instance.kind.binary().to_owned(), instance.peak_rss_bytes));
        }
        if let Some(rss) = gateway_process.peak_rss_bytes() {
            self.report.peak_rss_bytes.push(("gateway".into(), rss));
        }
        gateway_process.stop().await?;
        admin.close().await;
        Ok(())
    }

    /// Both stores against the truth: `expected` is ClickHouse's, then PostgreSQL's.
    async fn tallies(
        &self,
        clickhouse: &clickhouse::Client,
        postgres: &sqlx::PgPool,
        range_ms: (i64, i64),
        expected: [Expected<'_>; 2],
    ) -> anyhow::Result<Vec<StoreTally>> {
        let ch = stores::clickhouse(clickhouse, range_ms).await.context("counting in ClickHouse")?;
        let pg = stores::postgres(postgres).await.context("counting in PostgreSQL")?;
        Ok(vec![tally("clickhouse", expected[0], &ch.held), tally("postgres", expected[1], &pg.held)])
    }

    /// Waits until both groups have committed the end of every partition.
    async fn caught_up(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let mut lag = 0;
            for group in [&self.names.clickhouse_group, &self.names.postgres_group] {
                lag += services::group_positions(&self.args.stack, group, &self.names.topic).await?.iter().map(|p| p.lag()).sum::<i64>();
            }
            if lag == 0 {
                return Ok(started.elapsed().as_secs_f64());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("chaos: waiting for the consumers, {lag} record(s) of lag");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `bxbctl replay --to-earliest --execute`, retried while the stopped consumers' group still
    /// lists members.
    async fn replay_from_earliest(&self, group: &str) -> anyhow::Result<()> {
        let args = [
            "replay",
            "--group",
            group,
            "--topic",
            &self.names.topic,
            "--to-earliest",
            "--execute",
            "--kafka-brokers",
            &self.args.stack.kafka_brokers,
        ];
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            match process::output(&self.args.bin_dir, "bxbctl", &args, &[]).await {
                Ok(out) => {
                    eprintln!("chaos: {}", out.lines().last().unwrap_or_default());
                    return Ok(());
                }
                Err(error) if Instant::now() < until => {
                    eprintln!("chaos: replay of {group} not possible yet ({error:#}); retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn dead_lettered(&self) -> anyhow::Result<i64> {
        let positions = services::group_positions(&self.args.stack, "chaos-dlq-count", &self.names.dlq).await?;
        Ok(positions.iter().map(|p| p.high - p.low).sum())
    }

    async fn verify(&self, range_ms: (i64, i64)) -> anyhow::Result<(bool, String)> {
        let rfc3339 = |ms: i64| -> anyhow::Result<String> {
            Ok(time::OffsetDateTime::from_unix_timestamp(ms / 1000)?.format(&time::format_description::well_known::Rfc3339)?)
        };
        let (from, to) = (rfc3339(range_ms.0)?, rfc3339(range_ms.1)?);
        let postgres_url = self.args.stack.postgres_url_of(&self.names.database);
        let codes = BILLABLE_CODES.join(",");
        let out = process::command(&self.args.bin_dir, "bxbctl")
            .args(["verify", "--from", &from, "--to", &to, "--postgres-url", &postgres_url, "--billable-codes", &codes])
            .args(["--clickhouse-url", &self.args.stack.clickhouse_url, "--clickhouse-database", &self.names.database])
            .output()
            .await
            .context("running bxbctl verify")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(last) = stdout.lines().last() else {
            bail!("bxbctl verify printed nothing: {}", String::from_utf8_lossy(&out.stderr));
        };
        Ok((out.status.success(), last.to_owned()))
    }
}

async fn report_progress(progress: Arc<Progress>, offered: usize) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        eprintln!(
            "chaos: {}/{offered} events accepted, {} attempts, {} answered 'not now'",
            progress.accepted_events.load(Ordering::Relaxed),
            progress.attempts.load(Ordering::Relaxed),
            progress.unavailable.load(Ordering::Relaxed)
        );
    }
}
