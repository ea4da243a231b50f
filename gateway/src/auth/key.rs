//! API keys: how they are made, hashed and matched.
//!
//! A key is `bxb_` followed by 32 random bytes in unpadded base64url (47 characters). Only its
//! SHA-256 digest is ever stored. A fast hash is right here, unlike for passwords: a key carries
//! 256 bits of entropy, so a stolen digest cannot be brute-forced however cheap each guess is,
//! while a slow password hash (bcrypt, Argon2) would cost milliseconds of CPU on every request.

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
}
