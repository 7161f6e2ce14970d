//! Encryption of stored private keys (CA keys, server-generated leaf keys) with AES-256-GCM.
//!
//! The key is SHA-256 of `CERTCTL_CONFIG_ENCRYPTION_KEY` (the secret is operator-chosen text,
//! so it is hashed to exactly 32 bytes). Stored form: `enc:v1:` + base64(nonce ‖ ciphertext ‖
//! tag), with a fresh random 96-bit nonce per value. The `v1` tag leaves room for a later KDF
//! change without guessing the format of old rows.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Prefix of an encrypted value.
pub const PREFIX: &str = "enc:v1:";

/// Why a stored secret could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The value is encrypted but no key is configured.
    #[error("stored key is encrypted but CERTCTL_CONFIG_ENCRYPTION_KEY is not set")]
    NoKey,
    /// Wrong key, or the value was tampered with / truncated.
    #[error("cannot decrypt stored key (wrong CERTCTL_CONFIG_ENCRYPTION_KEY or corrupted value)")]
    Decrypt,
}

fn aead_key(secret: &str) -> Result<LessSafeKey, CryptoError> {
    let digest = Sha256::digest(secret.as_bytes());
    let unbound = UnboundKey::new(&AES_256_GCM, &digest).map_err(|_| CryptoError::Decrypt)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext` under `secret`; returns the `enc:v1:` form.
pub fn encrypt(secret: &str, plaintext: &str) -> Result<String, CryptoError> {
    let key = aead_key(secret)?;
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let mut buf = plaintext.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(PREFIX.as_bytes()), &mut buf)
        .map_err(|_| CryptoError::Decrypt)?;
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&buf);
    Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
}

/// Decrypts an `enc:v1:` value; a value without the prefix is returned unchanged (plaintext
/// rows written before a key was configured keep working).
pub fn decrypt(secret: Option<&str>, stored: &str) -> Result<String, CryptoError> {
    let Some(body) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_string()) };
    let secret = secret.ok_or(CryptoError::NoKey)?;
    let raw = STANDARD.decode(body).map_err(|_| CryptoError::Decrypt)?;
    if raw.len() < NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = sealed.to_vec();
    let plain = aead_key(secret)?
        .open_in_place(nonce, Aad::from(PREFIX.as_bytes()), &mut buf)
        .map_err(|_| CryptoError::Decrypt)?;
    String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)
}

/// Encrypts when a secret is configured, else returns the plaintext: `(stored, encrypted)`.
pub fn seal_optional(secret: Option<&str>, plaintext: &str) -> Result<(String, bool), CryptoError> {
    match secret {
        Some(s) => Ok((encrypt(s, plaintext)?, true)),
        None => Ok((plaintext.to_string(), false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_a_wrong_key_is_refused() {
        let sealed = encrypt("s3cret", "-----BEGIN PRIVATE KEY-----").expect("seal");
        assert!(sealed.starts_with(PREFIX));
        assert_eq!(decrypt(Some("s3cret"), &sealed).expect("open"), "-----BEGIN PRIVATE KEY-----");
        assert!(matches!(decrypt(Some("other"), &sealed), Err(CryptoError::Decrypt)));
        assert!(matches!(decrypt(None, &sealed), Err(CryptoError::NoKey)));
        assert_eq!(decrypt(None, "plain").expect("plain"), "plain");
        // Fresh nonce per value.
        assert_ne!(sealed, encrypt("s3cret", "-----BEGIN PRIVATE KEY-----").expect("seal"));
    }
}
