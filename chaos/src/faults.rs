//! The faults: when they happen (random moments of the load, from the seed) and the broker
//! outage, during which the gateway must answer `503` in time and report not ready, then recover
//! by itself once the broker is back.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bxb_harness::ConsumerKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;

use crate::consumers::Instance;
use crate::load::Gateway;
use crate::report::FaultRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill(ConsumerKind),
    BrokerRestart,
}

/// `kills` kills of each consumer and one broker restart at random moments between 5 % and 90 %
/// of the load, in time order.
pub fn schedule(rng: &mut StdRng, kills: usize, load: Duration) -> Vec<(Duration, Fault)> {
    let mut faults: Vec<Fault> = ConsumerKind::ALL.into_iter().flat_map(|k| std::iter::repeat_n(Fault::Kill(k), kills)).collect();
    faults.push(Fault::BrokerRestart);
    let mut timed: Vec<(Duration, Fault)> = faults.into_iter().map(|f| (load.mul_f64(rng.random_range(0.05..0.9)), f)).collect();
    timed.sort_by_key(|(at, _)| *at);
    timed
}

/// What the broker outage showed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Outage {
    pub stop_seconds: f64,
    /// Status of a request sent right after the broker stopped, and how long it took.
    pub answer_status: Option<u16>,
    pub answer_ms: Option<u64>,
    /// How long after the stop `/readyz` stopped answering 200.
    pub not_ready_after_ms: Option<u64>,
    pub down_seconds: f64,
    pub start_seconds: f64,
    /// From the broker's start until the gateway's `/readyz` answered 200 again.
    pub recovered_after_ms: Option<u64>,
    /// The outage request, resent after the restart, was accepted.
    pub probe_accepted_after: bool,
    pub answer_limit_ms: u64,
}

impl Outage {
    /// The conditions: a 503 within the limit, not ready, recovery, the probe accepted.
    pub fn passed(&self) -> bool {
        self.answer_status == Some(503)
            && self.answer_ms.is_some_and(|ms| ms <= self.answer_limit_ms)
            && self.not_ready_after_ms.is_some()
            && self.recovered_after_ms.is_some()
            && self.probe_accepted_after
    }
}

async fn shell(command: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status =
        tokio::process::Command::new("sh").arg("-c").arg(command).status().await.with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Kills `instance` with `kill -9` at each moment (from `load_started`), restarting it after a
/// random pause of 0.2–2 s; returns it running.
pub async fn kill_lane(
    mut instance: Instance,
    moments: Vec<Duration>,
    load_started: Instant,
    seed: u64,
) -> anyhow::Result<(Instance, Vec<FaultRecord>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut records = Vec::with_capacity(moments.len());
    for planned_at in moments {
        tokio::time::sleep(planned_at.saturating_sub(load_started.elapsed())).await;
        let at_s = load_started.elapsed().as_secs_f64();
        instance.kill().await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
        let back_after_s = instance.start().await?.as_secs_f64();
        let fault = Fault::Kill(instance.kind);
        eprintln!("chaos: {fault:?} at {at_s:.1} s, ready again after {back_after_s:.1} s");
        records.push(FaultRecord { fault, planned_at_s: planned_at.as_secs_f64(), at_s, back_after_s });
    }
    Ok((instance, records))
}

/// Shell commands that stop and start the broker, each returning once it is done.
pub struct BrokerCommands {
    pub stop: String,
    pub start: String,
}

/// The broker restart at its moment.
pub async fn broker_lane(
    gateway: &Gateway,
    broker: &BrokerCommands,
    probe: String,
    answer_limit: Duration,
    planned_at: Duration,
    load_started: Instant,
) -> anyhow::Result<(Outage, FaultRecord)> {
    tokio::time::sleep(planned_at.saturating_sub(load_started.elapsed())).await;
    let at_s = load_started.elapsed().as_secs_f64();
    let outage = broker_restart(gateway, broker, probe, answer_limit).await?;
    let back_after_s = outage.recovered_after_ms.unwrap_or(0) as f64 / 1000.0;
    eprintln!("chaos: broker restart at {at_s:.1} s, gateway ready again {back_after_s:.1} s after the start");
    Ok((outage, FaultRecord { fault: Fault::BrokerRestart, planned_at_s: planned_at.as_secs_f64(), at_s, back_after_s }))
}

/// Stops the broker, probes the gateway while it is down, starts it again and waits for the
/// gateway to recover. `probe` is a one-event batch of organization 0; it counts as accepted
/// only with a `202`, so it is part of what the stores must hold once accepted.
pub async fn broker_restart(gateway: &Gateway, broker: &BrokerCommands, probe: String, answer_limit: Duration) -> anyhow::Result<Outage> {
    let mut outage = Outage { answer_limit_ms: answer_limit.as_millis() as u64, ..Default::default() };
    outage.stop_seconds = shell(&broker.stop).await?;
    let down = Instant::now();
    let answer = async {
        let started = Instant::now();
        let status = gateway.post("/v1/events/batch", 0, probe.clone()).await.ok().map(|r| r.status());
        (status, started.elapsed())
    };
    let not_ready = async {
        while down.elapsed() < Duration::from_secs(30) {
            if !gateway.ready().await {
                return Some(down.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    };
    let ((status, took), not_ready_after) = tokio::join!(answer, not_ready);
    outage.answer_status = status.map(|s| s.as_u16());
    outage.answer_ms = status.map(|_| took.as_millis() as u64);
    outage.not_ready_after_ms = not_ready_after.map(|d| d.as_millis() as u64);
    let accepted_while_down = status == Some(StatusCode::ACCEPTED);
    outage.down_seconds = down.elapsed().as_secs_f64();
    outage.start_seconds = shell(&broker.start).await?;
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(120) {
        if gateway.ready().await {
            outage.recovered_after_ms = Some(back.elapsed().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Resend the outage request until accepted, as its client would.
    let resend_until = Instant::now() + Duration::from_secs(60);
    outage.probe_accepted_after = accepted_while_down;
    while !outage.probe_accepted_after && Instant::now() < resend_until {
        match gateway.post("/v1/events/batch", 0, probe.clone()).await {
            Ok(r) if r.status() == StatusCode::ACCEPTED => outage.probe_accepted_after = true,
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Ok(outage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_is_scheduled_once_within_the_load() {
        let load = Duration::from_secs(50);
        let faults = schedule(&mut StdRng::seed_from_u64(9), 3, load);
        assert_eq!(faults.len(), 7);
        assert_eq!(faults.iter().filter(|(_, f)| *f == Fault::Kill(ConsumerKind::ClickHouse)).count(), 3);
        assert_eq!(faults.iter().filter(|(_, f)| *f == Fault::Kill(ConsumerKind::Postgres)).count(), 3);
        assert_eq!(faults.iter().filter(|(_, f)| *f == Fault::BrokerRestart).count(), 1);
        assert!(faults.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(faults.iter().all(|(at, _)| *at >= load.mul_f64(0.05) && *at < load.mul_f64(0.9)));
    }

    #[test]
    fn an_outage_passes_only_with_a_timely_503_and_a_recovery() {
        let good = Outage {
            answer_status: Some(503),
            answer_ms: Some(10_200),
            not_ready_after_ms: Some(4_000),
            recovered_after_ms: Some(3_000),
            probe_accepted_after: true,
            answer_limit_ms: 15_000,
            ..Default::default()
        };
        assert!(good.passed());
        assert!(!Outage { answer_ms: Some(15_001), ..good.clone() }.passed());
        assert!(!Outage { answer_status: Some(202), ..good.clone() }.passed());
        assert!(!Outage { not_ready_after_ms: None, ..good.clone() }.passed());
        assert!(!Outage { recovered_after_ms: None, ..good.clone() }.passed());
        assert!(!Outage { probe_accepted_after: false, ..good }.passed());
    }
}
