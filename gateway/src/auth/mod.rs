//! Who is calling: the API key of a request mapped to its organization. The key format (make,
//! hash, match) is `bxb_api_key`'s; this module holds the sources and the in-memory index.
//!
//! Keys come from a JSON file and/or the PostgreSQL `api_keys` table. Both are loaded into an
//! in-memory index that is swapped whole on every refresh, so a request only takes a read lock
//! long enough to clone an `Arc`. A source that fails to refresh keeps its last good keys: a
//! broken file or a database blip must not lock every client out.

pub mod file;
pub mod postgres;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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
                None => bucket.push(IndexedKey {
                    digest: record.key_sha256,
                    organization_id: record.organization_id,
                    revoked: record.revoked,
                }),
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
#[derive(Debug, Default)]
pub struct KeyStore {
    index: RwLock<Arc<KeyIndex>>,
}

impl KeyStore {
    /// The organization of the request's key, or why there is none. The key itself is never
    /// logged or echoed.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Uuid, GatewayError> {
        let presented = presented_key(headers).ok_or(GatewayError::MissingApiKey)?;
        let digest = bxb_api_key::digest(presented);
        let index = self.index.read().expect("key index lock").clone();
        match index.find(&digest) {
            Some(k) if k.revoked => Err(GatewayError::RevokedApiKey),
            Some(k) => Ok(k.organization_id),
            None => Err(GatewayError::InvalidApiKey),
        }
    }

    fn replace(&self, records: &[&[KeyRecord]]) {
        let index = Arc::new(KeyIndex::build(records.iter().flat_map(|r| r.iter())));
        metrics::gauge!("bxb_gateway_api_keys").set(index.active as f64);
        *self.index.write().expect("key index lock") = index;
    }

    #[cfg(test)]
    fn from_records(records: &[KeyRecord]) -> Self {
        let store = Self::default();
        store.replace(&[records]);
        store
    }
}

/// `Authorization: Bearer <key>` (scheme case-insensitive), else `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
        .filter(|key| !key.is_empty())
}

/// The configured key sources and their last good keys.
pub struct KeySources {
    file: Option<(PathBuf, Vec<KeyRecord>)>,
    postgres: Option<(PgPool, Option<Vec<KeyRecord>>)>,
    refresh: Duration,
}

impl KeySources {
    /// Loads the key file (which must be readable now) and prepares the PostgreSQL pool (which
    /// may come up later; keys from it are served once it has been read).
    pub fn open(args: &AuthArgs) -> anyhow::Result<Self> {
        let file = match &args.api_keys_file {
            Some(path) => Some((path.clone(), file::KeyFile::read(path)?.records())),
            None => None,
        };
        let postgres = match &args.postgres_url {
            Some(url) => Some((postgres::pool(url).map_err(|e| anyhow::anyhow!("BXB_POSTGRES_URL: {e}"))?, None)),
            None => None,
        };
        Ok(Self { file, postgres, refresh: Duration::from_millis(args.refresh_ms) })
    }

    /// Re-reads every source once; true when every source has been read at least once.
    async fn refresh(&mut self, store: &KeyStore) -> bool {
        if let Some((path, records)) = &mut self.file {
            match file::KeyFile::read(path) {
                Ok(file) => *records = file.records(),
                Err(e) => tracing::error!(error = %e, "API key file refresh failed; keeping the last good keys"),
            }
        }
        if let Some((pool, records)) = &mut self.postgres {
            match postgres::load(pool).await {
                Ok(loaded) => *records = Some(loaded),
                Err(e) => tracing::error!(error = %e, "API key table refresh failed; keeping the last good keys"),
            }
        }
        let from_file = self.file.as_ref().map(|(_, r)| r.as_slice()).unwrap_or_default();
        let from_table = self.postgres.as_ref().and_then(|(_, r)| r.as_deref()).unwrap_or_default();
        store.replace(&[from_file, from_table]);
        self.postgres.as_ref().is_none_or(|(_, r)| r.is_some())
    }

    /// Refreshes `store` now and then every interval until `shutdown`; flips `ready` once every
    /// source has been read.
    pub async fn keep_fresh(mut self, store: Arc<KeyStore>, ready: Arc<AtomicBool>, shutdown: CancellationToken) {
        loop {
            if self.refresh(&store).await {
                ready.store(true, Ordering::Relaxed);
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
        let store = KeyStore::default();
        store.replace(&[&[record("bxb_k", org, false)], &[record("bxb_k", org, true)]]);
        assert_eq!(store.authenticate(&headers(&[("x-api-key", "bxb_k")])).unwrap_err().code(), "revoked_api_key");
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
