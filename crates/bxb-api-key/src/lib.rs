//! The API key format of bxb: how keys are made, hashed for storage and matched.
//!
//! ```text
//! create (gateway api-key, operator tooling): NewKey::generate ──▶ key shown once, (key_id, organization, digest) stored
//! every request (gateway auth):               presented key ──digest──▶ digests_match against the stored KeyRecords
//! ```
//!
//! A key is `bxb_` followed by 32 random bytes in unpadded base64url (47 characters). Only its
//! SHA-256 digest is ever stored. A fast hash is right here, unlike for passwords: a key carries
//! 256 bits of entropy, so a stolen digest cannot be brute-forced however cheap each guess is,
//! while a slow password hash (bcrypt, Argon2) would cost milliseconds of CPU on every request.
//!
//! The crate does no I/O: where records are kept (the gateway's key file, the PostgreSQL
//! `api_keys` table) is up to its users, so a tool that manages keys needs no part of the gateway.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The prefix of every key, so leaked keys are easy to recognise in code and logs scanners.
pub const KEY_PREFIX: &str = "bxb_";

/// The SHA-256 digest of a key.
pub type KeyDigest = [u8; 32];

/// A known key: who it belongs to and whether it still works. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub organization_id: Uuid,
    pub key_sha256: KeyDigest,
    pub revoked: bool,
}

/// The digest of `key`, as it is stored and looked up.
pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two digests, so response timing reveals nothing about how much
/// of a stored digest a guess matched.
pub fn digests_match(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.ct_eq(b).into()
}

/// A new random key (from the thread-local CSPRNG, seeded by the operating system).
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A new key id: public, it names the key in files, tables and revocations.
pub fn generate_key_id() -> String {
    format!("key_{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// The text form of a digest (the key file's `key_sha256`): 64 lowercase hex digits.
pub fn digest_to_hex(digest: &KeyDigest) -> String {
    hex::encode(digest)
}

/// A digest from its text form; `None` unless exactly 64 hex digits.
pub fn digest_from_hex(text: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// A key just made, with everything to store about it. The plaintext `key` is for showing once;
/// only `key_id` and `key_sha256` are kept.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    pub key_id: String,
    pub key: String,
    pub key_sha256: KeyDigest,
}

impl NewKey {
    pub fn generate() -> Self {
        let key = generate_key();
        Self { key_id: generate_key_id(), key_sha256: digest(&key), key }
    }
}

/// Never prints the key, so a logged `NewKey` leaks nothing.
impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey").field("key_id", &self.key_id).field("key", &"<redacted>").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_url_safe() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert!(a[KEY_PREFIX.len()..].bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert!(generate_key_id().starts_with("key_"));
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(hex::encode(digest("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(digests_match(&digest("abc"), &digest("abc")));
        assert!(!digests_match(&digest("abc"), &digest("abd")));
    }

    #[test]
    fn digests_round_trip_through_their_text_form() {
        let d = digest("abc");
        assert_eq!(digest_from_hex(&digest_to_hex(&d)), Some(d));
        for bad in ["", "zz", &"a".repeat(63), &"a".repeat(66)] {
            assert_eq!(digest_from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_new_key_matches_its_digest_and_never_shows_in_debug() {
        let new = NewKey::generate();
        assert!(digests_match(&digest(&new.key), &new.key_sha256));
        assert!(new.key.starts_with(KEY_PREFIX) && new.key_id.starts_with("key_"));
        let shown = format!("{new:?}");
        assert!(shown.contains(&new.key_id) && !shown.contains(&new.key), "{shown}");
    }
}
