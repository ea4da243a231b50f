//! The gateway under test: its API keys (made with its own `api-key create`), its settings,
//! and a client that posts to it.

use std::path::Path;

use uuid::Uuid;

use crate::error::Result;
use crate::stack::StackArgs;
use crate::{http, process};

/// An API key of a gateway's key file and its organization.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub organization_id: Uuid,
    pub key: String,
}

/// Creates one key for each of `count` new organizations in `file` with `gateway api-key create`.
pub async fn create_api_keys(bin_dir: &Path, file: &Path, count: usize) -> Result<Vec<ApiKey>> {
    let file_arg = file.display().to_string();
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let organization_id = Uuid::new_v4();
        let org = organization_id.to_string();
        let key = process::output(bin_dir, "gateway", &["api-key", "create", "--organization-id", &org, "--file", &file_arg], &[]).await?;
        keys.push(ApiKey { organization_id, key: key.trim().to_owned() });
    }
    Ok(keys)
}

/// A gateway's settings for a run: the stack's services, the run's topic and key file; its
/// other settings (rate limit, timeouts) are its defaults unless the caller adds to them.
pub fn gateway_env(stack: &StackArgs, topic: &str, key_file: &Path) -> Vec<(String, String)> {
    vec![
        ("BXB_KAFKA_BROKERS".into(), stack.kafka_brokers.clone()),
        ("BXB_SCHEMA_REGISTRY_URL".into(), stack.registry_url.clone()),
        ("BXB_EVENTS_TOPIC".into(), topic.into()),
        ("BXB_API_KEYS_FILE".into(), key_file.display().to_string()),
    ]
}

/// A running gateway as its clients see it.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    pub client: reqwest::Client,
    pub base_url: String,
}

impl GatewayClient {
    /// The gateway on `127.0.0.1:port`, through `client` ([`crate::http::client`]).
    pub fn new(client: reqwest::Client, port: u16) -> Self {
        Self { client, base_url: http::local_url(port) }
    }

    /// Posts a JSON `body` to `path` with `api_key`.
    pub async fn post(&self, path: &str, api_key: &str, body: String) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    }

    /// Posts like [`Self::post`]; whether the answer was `202` (every event accepted).
    pub async fn accepted(&self, path: &str, api_key: &str, body: String) -> bool {
        matches!(self.post(path, api_key, body).await, Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED)
    }

    /// Whether its `/readyz` answers 200 (within 2 s).
    pub async fn ready(&self) -> bool {
        http::ready(&self.client, &self.base_url).await
    }
}
