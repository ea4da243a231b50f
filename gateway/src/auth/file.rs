//! The API key file: a JSON document for `./dev/up` and small deployments, managed with
//! `gateway api-key create|revoke|list` and re-read by the gateway on every refresh.
//!
//! ```json
//! {
//!   "keys": [
//!     {
//!       "key_id": "key_3f9a0c1d2e4b5a69",
//!       "organization_id": "0b6f3c1e-8a53-4c1b-9d55-2f1f4f0c8e11",
//!       "key_sha256": "<64 hex digits: SHA-256 of the key>",
//!       "created_at": "2026-11-23T10:00:00Z",
//!       "revoked_at": null
//!     }
//!   ]
//! }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use bxb_api_key::{KeyRecord, NewKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<KeyFileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFileEntry {
    pub key_id: String,
    pub organization_id: Uuid,
    /// Lowercase hex of the SHA-256 digest of the key.
    pub key_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// What can go wrong with the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read or written.
    #[error("API key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not a key file.
    #[error("API key file {path} is malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    /// `revoke` named a key id the file does not hold.
    #[error("API key file {path} holds no key with id {key_id}")]
    UnknownKeyId { path: PathBuf, key_id: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_owned(), source }
}

impl KeyFile {
    /// Reads the file; a missing file is an error (the gateway must not start without keys).
    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let file: KeyFile =
            serde_json::from_str(&text).map_err(|e| KeyFileError::Malformed { path: path.to_owned(), message: e.to_string() })?;
        for entry in &file.keys {
            bxb_api_key::digest_from_hex(&entry.key_sha256).ok_or_else(|| KeyFileError::Malformed {
                path: path.to_owned(),
                message: format!("key {}: key_sha256 must be 64 hex digits", entry.key_id),
            })?;
        }
        Ok(file)
    }

    fn read_or_default(path: &Path) -> Result<Self, KeyFileError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::read(path),
        }
    }

    /// Writes the whole file to a temporary sibling and renames it over the original, so a
    /// gateway reading concurrently sees either the old or the new file, never half of one.
    fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let mut text = serde_json::to_string_pretty(self).expect("a key file serialises");
        text.push('\n');
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp).map_err(io_error(&tmp))?;
        out.write_all(text.as_bytes()).and_then(|()| out.sync_all()).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_error(path))
    }

    /// The keys as the store holds them.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys
            .iter()
            .filter_map(|entry| {
                Some(KeyRecord {
                    key_id: entry.key_id.clone(),
                    organization_id: entry.organization_id,
                    key_sha256: bxb_api_key::digest_from_hex(&entry.key_sha256)?,
                    revoked: entry.revoked_at.is_some(),
                })
            })
            .collect()
    }
}

/// A key just created: the plaintext is shown once and stored nowhere.
#[derive(Debug)]
pub struct CreatedKey {
    pub key_id: String,
    pub key: String,
}

/// Generates a key for `organization_id` and appends its digest to the file (created if missing).
pub fn create_key(path: &Path, organization_id: Uuid) -> Result<CreatedKey, KeyFileError> {
    let mut file = KeyFile::read_or_default(path)?;
    let NewKey { key_id, key, key_sha256 } = NewKey::generate();
    file.keys.push(KeyFileEntry {
        key_id: key_id.clone(),
        organization_id,
        key_sha256: bxb_api_key::digest_to_hex(&key_sha256),
        created_at: OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"),
        revoked_at: None,
    });
    file.write(path)?;
    Ok(CreatedKey { key_id, key })
}

/// Marks a key revoked (idempotent); the gateway refuses it after its next refresh.
pub fn revoke_key(path: &Path, key_id: &str) -> Result<(), KeyFileError> {
    let mut file = KeyFile::read(path)?;
    let entry = file
        .keys
        .iter_mut()
        .find(|entry| entry.key_id == key_id)
        .ok_or_else(|| KeyFileError::UnknownKeyId { path: path.to_owned(), key_id: key_id.to_owned() })?;
    if entry.revoked_at.is_none() {
        entry.revoked_at = Some(OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond"));
        file.write(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("bxb-gateway-{name}-{}-{}.json", std::process::id(), rand::random::<u32>()))
    }

    #[test]
    fn create_appends_digests_and_revoke_marks_them() {
        let path = temp_path("keys");
        let org = Uuid::new_v4();
        let first = create_key(&path, org).unwrap();
        let second = create_key(&path, org).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&first.key) && !text.contains(&second.key), "plaintext keys are never stored");
        let records = KeyFile::read(&path).unwrap().records();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key_sha256, bxb_api_key::digest(&first.key));
        assert_eq!((records[1].organization_id, records[1].revoked), (org, false));

        revoke_key(&path, &first.key_id).unwrap();
        revoke_key(&path, &first.key_id).unwrap();
        let records = KeyFile::read(&path).unwrap().records();
        assert_eq!((records[0].revoked, records[1].revoked), (true, false));
        assert!(matches!(revoke_key(&path, "key_nope"), Err(KeyFileError::UnknownKeyId { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn malformed_files_are_refused_with_their_path() {
        let path = temp_path("bad");
        std::fs::write(&path, r#"{"keys":[{"key_id":"k","organization_id":"00000000-0000-0000-0000-000000000000","key_sha256":"zz","created_at":"2026-01-01T00:00:00Z"}]}"#).unwrap();
        let error = KeyFile::read(&path).unwrap_err();
        assert!(matches!(error, KeyFileError::Malformed { .. }), "{error}");
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(KeyFile::read(&path), Err(KeyFileError::Malformed { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(KeyFile::read(&path), Err(KeyFileError::Io { .. })));
    }
}
