//! Anti-replay nonces (RFC 8555 §6.5), stored in PostgreSQL so that a nonce issued by one
//! replica is accepted by any other, exactly once.
//!
//! Issuing is one `INSERT`; redeeming is one `DELETE … RETURNING`, which is atomic, so two
//! concurrent requests with the same nonce cannot both succeed.

use std::time::Duration;

use rand::RngCore;
use sqlx::PgPool;

use super::jws::b64e;

/// Creates a nonce valid for `ttl` and returns it (128 random bits, base64url).
pub async fn issue(pool: &PgPool, ttl: Duration) -> Result<String, sqlx::Error> {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let nonce = b64e(&raw);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    sqlx::query(
        "INSERT INTO acme_nonces (nonce, expires_at) VALUES ($1, now() + make_interval(secs => $2::float8 / 1000))",
    )
    .bind(&nonce)
    .bind(ttl_ms as f64)
    .execute(pool)
    .await?;
    Ok(nonce)
}

/// Redeems a nonce atomically (primary-key delete); says whether it had not expired.
pub const CONSUME_SQL: &str = "DELETE FROM acme_nonces WHERE nonce = $1 RETURNING (expires_at > now())::int";

/// Redeems `nonce`: true when it existed, had not expired and had not been used.
pub async fn consume(pool: &PgPool, nonce: &str) -> Result<bool, sqlx::Error> {
    // Nonces we issue are 22 base64url characters; anything else cannot be ours.
    if nonce.is_empty() || nonce.len() > 64 {
        return Ok(false);
    }
    let row: Option<(i32,)> = sqlx::query_as(CONSUME_SQL).bind(nonce).fetch_optional(pool).await?;
    Ok(matches!(row, Some((1,))))
}
