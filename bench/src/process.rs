//! The binaries under test as processes: started with the same `BXB_*` variables `./dev/up`
//! uses (but their own port, topic, group and database), probed for readiness, measured for
//! peak memory, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// One running binary.
pub struct Running {
    pub name: String,
    pub port: u16,
    child: Child,
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A command for `bin_dir/binary` without the `BXB_*` and `OTEL_*` variables of this process: a
/// binary under test gets exactly the settings
/// its caller passes, never the dev stack's (e.g. `BXB_POSTGRES_URL` from `.dev/env` would make
/// a gateway read API keys from a database that may not even be migrated).
pub fn command(bin_dir: &Path, binary: &str) -> Command {
    let mut command = Command::new(bin_dir.join(binary));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("BXB_") || key.starts_with("OTEL_")) {
        command.env_remove(key);
    }
    command
}

/// Starts `bin_dir/binary` with `env` on a free port, logging to `log_dir/<label>.log`, and waits
/// until its `/readyz` answers 200.
pub async fn start(bin_dir: &Path, binary: &str, label: &str, env: &[(String, String)], log_dir: &Path) -> anyhow::Result<Running> {
    let port = free_port()?;
    let log_path: PathBuf = log_dir.join(format!("{label}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = command(bin_dir, binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BXB_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BXB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin_dir.join(binary).display()))?;
    let mut running = Running { name: label.to_owned(), port, child };
    running.wait_ready(Duration::from_secs(60), &log_path).await?;
    Ok(running)
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_ready(&mut self, timeout: Duration, log_path: &Path) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited during start-up ({status}); log: {}", self.name, log_path.display());
            }
            if Instant::now() >= deadline {
                bail!("{} not ready after {timeout:?}; log: {}", self.name, log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Prometheus text of its `/metrics`.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        reqwest::get(&url).await.ok()?.text().await.ok()
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_bytes(self.pid()?)
    }

    /// SIGTERM, then up to 30 s for a clean stop, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_ok() {
                return Ok(());
            }
        }
        self.child.kill().await?;
        Ok(())
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes; 0 when unknown.
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

/// `VmHWM` of `/proc/<pid>/status`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system, every thread) the process used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` + `stime` (fields 14 and 15) in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux).
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// The sum over every label set of the samples named exactly `name` in Prometheus text.
pub fn metric_total(text: &str, name: &str) -> f64 {
    metric_total_where(text, name, "")
}

/// Like [`metric_total`], only the samples whose line contains `label` (e.g. `route="/x"`).
pub fn metric_total_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains(label))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') { rest.rsplit_once('}')?.1 } else if rest.starts_with(' ') { rest } else { return None };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Runs a binary to completion (e.g. `gateway api-key create`) and returns its stdout.
pub async fn output(bin_dir: &Path, binary: &str, args: &[&str], env: &[(String, String)]) -> anyhow::Result<String> {
    let out = command(bin_dir, binary)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BXB_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {binary}"))?;
    if !out.status.success() {
        bail!("{binary} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tgateway\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51_200 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_is_user_plus_system() {
        let stat = "4242 (consumer (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat), Some(12.9));
        assert_eq!(parse_cpu_seconds("4242 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn metric_totals_sum_label_sets_and_skip_longer_names() {
        let text = "# TYPE w summary\nw_sum{sink=\"a\",outcome=\"ok\"} 1.5\nw_sum{sink=\"a\",outcome=\"retry\"} 0.5\nw_sum_extra 9\nw_count 4\n";
        assert_eq!(metric_total(text, "w_sum"), 2.0);
        assert_eq!(metric_total(text, "w_count"), 4.0);
        assert_eq!(metric_total(text, "missing"), 0.0);
        assert_eq!(metric_total_where(text, "w_sum", "outcome=\"ok\""), 1.5);
    }

    #[test]
    fn binaries_under_test_do_not_inherit_the_dev_stacks_settings() {
        std::env::set_var("BXB_PROCESS_TEST_INHERITED", "x");
        let command = command(Path::new("/nonexistent"), "gateway");
        let removed: Vec<_> = command.as_std().get_envs().filter(|(_, value)| value.is_none()).map(|(key, _)| key.to_owned()).collect();
        assert!(removed.iter().any(|k| k == "BXB_PROCESS_TEST_INHERITED"), "{removed:?}");
        assert!(removed.iter().all(|k| k.to_string_lossy().starts_with("BXB_") || k.to_string_lossy().starts_with("OTEL_")));
    }

    #[test]
    fn this_process_has_a_peak() {
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
