//! The two consumers as processes the run kills (`SIGKILL`, no chance to flush or commit),
//! restarts, and stops cleanly for the replay. Every incarnation logs to its own file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bxb_harness::process::{self, Running};
use bxb_harness::ConsumerKind;

/// One consumer: how to start it, and the process running now.
pub struct Instance {
    pub kind: ConsumerKind,
    env: Vec<(String, String)>,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    running: Option<Running>,
    incarnations: usize,
    pub kills: usize,
    /// Highest `VmHWM` of any incarnation, read before it stopped.
    pub peak_rss_bytes: u64,
}

impl Instance {
    pub fn new(kind: ConsumerKind, env: Vec<(String, String)>, bin_dir: PathBuf, log_dir: PathBuf) -> Self {
        Self { kind, env, bin_dir, log_dir, running: None, incarnations: 0, kills: 0, peak_rss_bytes: 0 }
    }

    /// Starts a new incarnation and waits for its `/readyz`; returns how long that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.incarnations += 1;
        let label = format!("{}-{}", self.kind.binary(), self.incarnations);
        let running = process::start(&self.bin_dir, self.kind.binary(), &label, &self.env, &self.log_dir)
            .await
            .with_context(|| format!("starting {label}"))?;
        self.running = Some(running);
        Ok(started.elapsed())
    }

    fn record_peak(&mut self) {
        if let Some(rss) = self.running.as_ref().and_then(Running::peak_rss_bytes) {
            self.peak_rss_bytes = self.peak_rss_bytes.max(rss);
        }
    }

    /// `kill -9`: whatever it had fetched, batched or half-written is abandoned.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.record_peak();
        self.running.take().context("not running")?.kill().await?;
        self.kills += 1;
        Ok(())
    }

    /// `SIGTERM`: the consumer writes and commits what it holds and leaves its group.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.record_peak();
        if let Some(running) = self.running.take() {
            running.stop().await?;
        }
        Ok(())
    }
}
