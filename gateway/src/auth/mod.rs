//! Who is calling: the API key of a request mapped to its organization. The key format (make,
//! hash, match) is `bxb_api_key`'s; this module holds the sources and the in-memory index.
//!
//! Keys come from a JSON file and/or the PostgreSQL `api_keys` table. Both are loaded into an
//! in-memory index that is swapped whole on every refresh, so a request only takes a read lock
//! long enough to clone an `Arc`. A source that fails to refresh keeps its last good keys: a
//! broken file or a database blip must not lock every client out. But only for so long
//! (`BXB_API_KEYS_MAX_STALENESS_MS`): keys older than that could let a revoked key in, so then,
//! as before the first load of every source, each request with a key gets 503
//! (`api_keys_unavailable`, never 401: the key may well be valid) and `/readyz` fails.

pub mod file;
pub mod postgres;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use bxb_api_key::{KeyDigest, KeyRecord};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::AuthArgs;
use crate::error::GatewayError;

/// What the index holds per key: enough to answer, nothing secret.
#[derive(Debug, Clone, Copy)]
struct IndexedKey {
    digest: KeyDigest,
    organization_id: Uuid,
    revoked: bool,
}

/// Keys by the first 8 bytes of their digest; the full digest is then compared in constant time.
#[derive(Debug, Default)]
struct KeyIndex {
    by_prefix: HashMap<[u8; 8], Vec<IndexedKey>>,
    active: usize,
    /// The last good read of the source read longest ago; `None` until every source was read.
    loaded_at: Option<Instant>,
}

fn prefix(digest: &KeyDigest) -> [u8; 8] {
    digest[..8].try_into().expect("a digest has 32 bytes")
}

impl KeyIndex {
    fn build<'a>(records: impl IntoIterator<Item = &'a KeyRecord>) -> Self {
        let mut index = Self::default();
        for record in records {
            let bucket = index.by_prefix.entry(prefix(&record.key_sha256)).or_default();
            match bucket.iter_mut().find(|k| k.digest == record.key_sha256) {
                // The same key in both sources: revoked in either means revoked.
                Some(existing) => existing.revoked |= record.revoked,
                None => {
                    bucket.push(IndexedKey { digest: record.key_sha256, organization_id: record.organization_id, revoked: record.revoked })
                }
            }
        }
        index.active = index.by_prefix.values().flatten().filter(|k| !k.revoked).count();
        index
    }

    fn find(&self, digest: &KeyDigest) -> Option<IndexedKey> {
        let candidates = self.by_prefix.get(&prefix(digest))?;
        let mut found = None;
        for candidate in candidates {
            if bxb_api_key::digests_match(&candidate.digest, digest) {
                found = Some(*candidate);
            }
        }
        found
    }
}

/// The in-memory key cache shared by all requests.
#[derive(Debug)]
pub struct KeyStore {
    index: RwLock<Arc<KeyIndex>>,
    max_staleness: Duration,
}

impl KeyStore {
    /// An empty store (every key gets 503 until the first load) whose keys are trusted for
    /// `max_staleness` after their last good load.
    pub fn new(max_staleness: Duration) -> Self {
        Self { index: RwLock::default(), max_staleness }
    }

    /// The organization of the request's key, or why there is none. The key itself is never
    /// logged or echoed.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Uuid, GatewayError> {
        let presented = presented_key(headers).ok_or(GatewayError::MissingApiKey)?;
        let index = self.index.read().expect("key index lock").clone();
        self.check_fresh(&index, Instant::now())?;
        let digest = bxb_api_key::digest(presented);
        match index.find(&digest) {
            Some(k) if k.revoked => Err(GatewayError::RevokedApiKey),
            Some(k) => Ok(k.organization_id),
            None => Err(GatewayError::InvalidApiKey),
        }
    }

    /// Whether the keys may be used at `now`: every source read, the oldest read recent enough.
    fn check_fresh(&self, index: &KeyIndex, now: Instant) -> Result<(), GatewayError> {
        let loaded_at = index.loaded_at.ok_or(GatewayError::ApiKeysUnavailable { stale_for_secs: None })?;
        let age = now.saturating_duration_since(loaded_at);
        if age > self.max_staleness {
            return Err(GatewayError::ApiKeysUnavailable { stale_for_secs: Some(age.as_secs()) });
        }
        Ok(())
    }

    fn is_fresh(&self, now: Instant) -> bool {
        let index = self.index.read().expect("key index lock").clone();
        self.check_fresh(&index, now).is_ok()
    }

    fn replace(&self, records: &[&[KeyRecord]], loaded_at: Option<Instant>) {
        let mut index = KeyIndex::build(records.iter().flat_map(|r| r.iter()));
        index.loaded_at = loaded_at;
        metrics::gauge!("bxb_gateway_api_keys").set(index.active as f64);
        *self.index.write().expect("key index lock") = Arc::new(index);
    }

    #[cfg(test)]
    fn from_records(records: &[KeyRecord]) -> Self {
        let store = Self::new(Duration::from_secs(60));
        store.replace(&[records], Some(Instant::now()));
        store
    }
}

/// `Authorization: Bearer <key>` (scheme case-insensitive), else `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)).filter(|key| !key.is_empty())
}

/// The last good keys of one source and when they were read.
struct Loaded {
    records: Vec<KeyRecord>,
    at: Instant,
}

/// The configured key sources and their last good keys.
pub struct KeySources {
    file: Option<(PathBuf, Loaded)>,
    postgres: Option<(PgPool, Option<Loaded>)>,
    refresh: Duration,
    query_timeout: Duration,
    opened_at: Instant,
}

impl KeySources {
    /// Loads the key file (which must be readable now) and prepares the PostgreSQL pool (which
    /// may come up later; keys from it are served once it has been read).
    pub fn open(args: &AuthArgs) -> anyhow::Result<Self> {
        let opened_at = Instant::now();
        let file = match &args.api_keys_file {
            Some(path) => Some((path.clone(), Loaded { records: file::KeyFile::read(path)?.records(), at: opened_at })),
            None => None,
        };
        let query_timeout = Duration::from_millis(args.query_timeout_ms);
        let postgres = match &args.postgres_url {
            Some(url) => Some((postgres::pool(url, query_timeout).map_err(|e| anyhow::anyhow!("BXB_POSTGRES_URL: {e}"))?, None)),
            None => None,
        };
        Ok(Self { file, postgres, refresh: Duration::from_millis(args.refresh_ms), query_timeout, opened_at })
    }

    /// Re-reads every source once and swaps the store's keys.
    async fn refresh(&mut self, store: &KeyStore) {
        if let Some((path, loaded)) = &mut self.file {
            match file::KeyFile::read(path) {
                Ok(file) => *loaded = Loaded { records: file.records(), at: Instant::now() },
                Err(e) => tracing::error!(error = %e, "API key file refresh failed; keeping the last good keys"),
            }
        }
        if let Some((pool, loaded)) = &mut self.postgres {
            // A query can hang (a lock on the table, a network that drops packets): bounded, so
            // that staleness and readiness keep being updated.
            match tokio::time::timeout(self.query_timeout, postgres::load(pool)).await {
                Ok(Ok(records)) => *loaded = Some(Loaded { records, at: Instant::now() }),
                Ok(Err(e)) => tracing::error!(error = %e, "API key table refresh failed; keeping the last good keys"),
                Err(_) => tracing::error!(
                    timeout_ms = self.query_timeout.as_millis() as u64,
                    "API key table refresh timed out; keeping the last good keys"
                ),
            }
        }
        let from_file = self.file.as_ref().map(|(_, l)| l.records.as_slice()).unwrap_or_default();
        let from_table = self.postgres.as_ref().and_then(|(_, l)| l.as_ref()).map(|l| l.records.as_slice()).unwrap_or_default();
        store.replace(&[from_file, from_table], self.oldest_load());
    }

    /// When the source read longest ago was last read; `None` while a source was never read.
    fn oldest_load(&self) -> Option<Instant> {
        let file = self.file.as_ref().map(|(_, l)| Some(l.at));
        let table = self.postgres.as_ref().map(|(_, l)| l.as_ref().map(|l| l.at));
        let mut oldest: Option<Instant> = None;
        for at in file.into_iter().chain(table) {
            let at = at?;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// Refreshes `store` now and then every interval until `shutdown`; `ready` follows whether
    /// the keys are fresh (every source read, none for longer than the max staleness).
    pub async fn keep_fresh(mut self, store: Arc<KeyStore>, ready: Arc<AtomicBool>, shutdown: CancellationToken) {
        loop {
            self.refresh(&store).await;
            let now = Instant::now();
            let staleness = now.saturating_duration_since(self.oldest_load().unwrap_or(self.opened_at));
            metrics::gauge!("bxb_gateway_api_keys_staleness_seconds").set(staleness.as_secs_f64());
            let fresh = store.is_fresh(now);
            let was_fresh = ready.swap(fresh, Ordering::Relaxed);
            if was_fresh && !fresh {
                tracing::error!(
                    stale_for_ms = staleness.as_millis() as u64,
                    "API keys not refreshed within BXB_API_KEYS_MAX_STALENESS_MS: every request with a key gets 503 until a refresh succeeds"
                );
            } else if fresh && !was_fresh {
                tracing::info!("API keys loaded");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.refresh) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn record(key: &str, org: Uuid, revoked: bool) -> KeyRecord {
        KeyRecord { key_id: format!("id-{key}"), organization_id: org, key_sha256: bxb_api_key::digest(key), revoked }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn keys_map_to_their_organization_or_a_reason() {
        let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
        let store = KeyStore::from_records(&[record("bxb_a", org_a, false), record("bxb_b", org_b, false), record("bxb_old", org_a, true)]);
        assert_eq!(store.authenticate(&headers(&[("authorization", "Bearer bxb_a")])).unwrap(), org_a);
        assert_eq!(store.authenticate(&headers(&[("authorization", "bearer  bxb_b ")])).unwrap(), org_b);
        assert_eq!(store.authenticate(&headers(&[("x-api-key", "bxb_b")])).unwrap(), org_b);
        for (h, code) in [
            (headers(&[]), "missing_api_key"),
            (headers(&[("authorization", "Basic Zm9vOmJhcg==")]), "missing_api_key"),
            (headers(&[("authorization", "Bearer ")]), "missing_api_key"),
            (headers(&[("authorization", "Bearer bxb_c")]), "invalid_api_key"),
            (headers(&[("x-api-key", "bxb_old")]), "revoked_api_key"),
        ] {
            assert_eq!(store.authenticate(&h).unwrap_err().code(), code);
        }
    }

    #[test]
    fn a_key_revoked_in_either_source_is_revoked() {
        let org = Uuid::new_v4();
        let store = KeyStore::new(Duration::from_secs(60));
        store.replace(&[&[record("bxb_k", org, false)], &[record("bxb_k", org, true)]], Some(Instant::now()));
        assert_eq!(store.authenticate(&headers(&[("x-api-key", "bxb_k")])).unwrap_err().code(), "revoked_api_key");
    }

    #[test]
    fn keys_not_loaded_yet_or_older_than_the_max_staleness_are_unavailable() {
        let org = Uuid::new_v4();
        let store = KeyStore::new(Duration::from_secs(60));
        let presented = headers(&[("x-api-key", "bxb_k")]);
        assert_eq!(store.authenticate(&presented).unwrap_err().code(), "api_keys_unavailable", "before the first load");
        assert_eq!(store.authenticate(&headers(&[])).unwrap_err().code(), "missing_api_key", "no key is no key, loaded or not");
        store.replace(&[&[record("bxb_k", org, false)]], None);
        assert_eq!(store.authenticate(&presented).unwrap_err().code(), "api_keys_unavailable", "a source not read yet");

        let loaded_at = Instant::now();
        store.replace(&[&[record("bxb_k", org, false)]], Some(loaded_at));
        assert_eq!(store.authenticate(&presented).unwrap(), org);
        let index = store.index.read().unwrap().clone();
        assert!(store.check_fresh(&index, loaded_at + Duration::from_secs(60)).is_ok());
        let stale = store.check_fresh(&index, loaded_at + Duration::from_secs(61)).unwrap_err();
        assert!(matches!(stale, GatewayError::ApiKeysUnavailable { stale_for_secs: Some(61) }), "{stale:?}");
    }

    #[test]
    fn digests_sharing_a_prefix_are_told_apart() {
        let org = Uuid::new_v4();
        let mut a = record("bxb_x", org, false);
        let mut b = record("bxb_y", Uuid::new_v4(), false);
        a.key_sha256 = [7; 32];
        b.key_sha256 = [7; 32];
        b.key_sha256[31] = 8;
        let index = KeyIndex::build([&a, &b]);
        assert_eq!(index.find(&[7; 32]).unwrap().organization_id, org);
        assert!(index.find(&[7; 32].map(|x| x + 1)).is_none());
        assert_eq!(index.active, 2);
    }
}
