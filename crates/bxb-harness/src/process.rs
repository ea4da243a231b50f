//! The binaries under test as processes: started with the same `BXB_*` variables `./dev/up`
//! uses (but their own port, topic, group and database), probed for readiness, stopped with
//! `SIGTERM` or killed with `SIGKILL`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::{http, measure};

/// How long a binary may take from its start to a `200` on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a binary may take to stop cleanly after `SIGTERM` before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One running binary; dropping it kills the process.
pub struct Running {
    /// The label it was started with (its log is `<label>.log`).
    pub name: String,
    /// Where it listens on 127.0.0.1: API, `/readyz` and `/metrics`.
    pub port: u16,
    child: Child,
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::FreePort)?;
    Ok(listener.local_addr().map_err(Error::FreePort)?.port())
}

/// A command for `bin_dir/binary` without the `BXB_*` and `OTEL_*` variables of this process: a
/// binary under test gets exactly the settings its caller passes, never the dev stack's (e.g.
/// `BXB_POSTGRES_URL` from `.dev/env` would make a gateway read API keys from a database that
/// may not even be migrated).
pub fn command(bin_dir: &Path, binary: &str) -> Command {
    let mut command = Command::new(bin_dir.join(binary));
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("BXB_") || key.starts_with("OTEL_")) {
        command.env_remove(key);
    }
    command
}

/// Starts `bin_dir/binary` with `env` on a free port, logging to `log_dir/<label>.log`, and waits
/// until its `/readyz` answers 200.
pub async fn start(bin_dir: &Path, binary: &str, label: &str, env: &[(String, String)], log_dir: &Path) -> Result<Running> {
    let port = free_port()?;
    let log_path = log_dir.join(format!("{label}.log"));
    let file_error = |source| Error::File { path: log_path.clone(), source };
    let log = std::fs::File::create(&log_path).map_err(file_error)?;
    let child = command(bin_dir, binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BXB_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BXB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(file_error)?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn { path: bin_dir.join(binary), source })?;
    let mut running = Running { name: label.to_owned(), port, child };
    running.wait_ready(&log_path).await?;
    Ok(running)
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_ready(&mut self, log_path: &Path) -> Result<()> {
        let (client, url) = (http::client(Duration::from_secs(2), 1)?, http::local_url(self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if http::ready(&client, &url).await {
                return Ok(());
            }
            let exited = self.child.try_wait().map_err(|source| Error::Signal { what: "waiting for", name: self.name.clone(), source })?;
            if let Some(status) = exited {
                return Err(Error::ExitedDuringStartUp { name: self.name.clone(), status, log: log_path.to_owned() });
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady { name: self.name.clone(), timeout: READY_TIMEOUT, log: log_path.to_owned() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Prometheus text of its `/metrics`; `None` if it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let client = http::client(Duration::from_secs(10), 1).ok()?;
        client.get(format!("{}/metrics", http::local_url(self.port))).send().await.ok()?.text().await.ok()
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        measure::peak_rss_bytes(self.pid()?)
    }

    /// CPU time (user + system) it used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        measure::cpu_seconds(self.pid()?)
    }

    /// `SIGTERM`, then up to 30 s for a clean stop (a consumer writes and commits what it holds,
    /// a gateway drains its requests), then `SIGKILL`.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_ok() {
                return Ok(());
            }
        }
        self.kill().await
    }

    /// `SIGKILL` at once: whatever it had fetched, batched or half-written is abandoned. Returns
    /// once the process is reaped.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await.map_err(|source| Error::Signal { what: "killing", name: self.name.clone(), source })
    }
}

/// Runs a binary to completion (e.g. `gateway api-key create`) and returns its stdout.
pub async fn output(bin_dir: &Path, binary: &str, args: &[&str], env: &[(String, String)]) -> Result<String> {
    let out = command(bin_dir, binary)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("BXB_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Error::Spawn { path: bin_dir.join(binary), source })?;
    if !out.status.success() {
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        return Err(Error::CommandFailed { binary: binary.to_owned(), args, stderr: String::from_utf8_lossy(&out.stderr).into_owned() });
    }
    String::from_utf8(out.stdout).map_err(|_| Error::NotUtf8 { binary: binary.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_under_test_do_not_inherit_the_dev_stacks_settings() {
        std::env::set_var("BXB_PROCESS_TEST_INHERITED", "x");
        let command = command(Path::new("/nonexistent"), "gateway");
        let removed: Vec<_> = command.as_std().get_envs().filter(|(_, value)| value.is_none()).map(|(key, _)| key.to_owned()).collect();
        assert!(removed.iter().any(|k| k == "BXB_PROCESS_TEST_INHERITED"), "{removed:?}");
        assert!(removed.iter().all(|k| k.to_string_lossy().starts_with("BXB_") || k.to_string_lossy().starts_with("OTEL_")));
    }

    #[tokio::test]
    async fn a_binary_that_fails_is_reported_with_its_stderr() {
        let error = output(Path::new("/bin"), "sh", &["-c", "echo nope >&2; exit 3"], &[]).await.unwrap_err();
        assert!(matches!(&error, Error::CommandFailed { stderr, .. } if stderr.trim() == "nope"), "{error:?}");
        assert_eq!(output(Path::new("/bin"), "sh", &["-c", "echo ok"], &[]).await.unwrap(), "ok\n");
    }

    #[tokio::test]
    async fn a_binary_that_exits_during_start_up_is_reported_with_its_log() {
        let dir = std::env::temp_dir().join(format!("bxb-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = start(Path::new("/bin"), "false", "exits", &[], &dir).await.err().expect("false never gets ready");
        assert!(matches!(&error, Error::ExitedDuringStartUp { name, .. } if name == "exits"), "{error:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
