//! HTTP to the binaries under test (127.0.0.1 only): one way to build a client, one readiness
//! probe.

use std::time::Duration;

use crate::error::{Error, Result};

/// A client whose requests give up after `timeout`, keeping up to `idle_per_host` connections
/// open for reuse (as many as the load keeps in flight, so it does not reconnect).
pub fn client(timeout: Duration, idle_per_host: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(idle_per_host).build().map_err(Error::HttpClient)
}

/// `http://127.0.0.1:<port>`: where a binary under test listens.
pub fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Whether `<base_url>/readyz` answers 200 within 2 s.
pub async fn ready(client: &reqwest::Client, base_url: &str) -> bool {
    let request = client.get(format!("{base_url}/readyz")).timeout(Duration::from_secs(2));
    matches!(request.send().await, Ok(r) if r.status().is_success())
}
