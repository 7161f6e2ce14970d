//! Anti-replay nonces (RFC 8555 §6.5), stored in PostgreSQL so that a nonce issued by one
//! replica is accepted by any other, exactly once.
//!
//! Redeeming is one `DELETE … RETURNING`, which is atomic, so two concurrent requests with the
//! same nonce cannot both succeed, whichever replicas they reach.
//!
//! Issuing goes through a [`NonceIssuer`]: requests that want a nonce at the same moment share
//! one multi-row `INSERT … SELECT FROM UNNEST` (group commit). A request gets its nonce only
//! after the INSERT that stored it has committed, so the cross-replica guarantee is exactly the
//! one a per-request INSERT gives; what changes is the statement count under load (`new-nonce`
//! and every ACME POST answer with a fresh nonce). A lone request still costs one INSERT of one
//! row, plus a hand-off to the writer task.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::jws::b64e;
use super::problem::Problem;

/// Nonces stored per INSERT at most.
pub const MAX_BATCH: usize = 256;
/// Writer tasks: while one INSERT is in flight, the next batch gathers behind it, and the other
/// writer can already store it.
const WRITERS: usize = 2;
/// Requests waiting for a writer; past this, issuing waits (backpressure).
const QUEUE: usize = 8_192;

/// The statement that stores a batch: `$1` the nonces, `$2` their lifetime in milliseconds.
pub const ISSUE_SQL: &str = "INSERT INTO acme_nonces (nonce, expires_at)
     SELECT n, now() + make_interval(secs => $2::float8 / 1000) FROM UNNEST($1::text[]) AS t(n)";

/// A fresh nonce: 128 random bits, base64url.
fn fresh() -> String {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    b64e(&raw)
}

struct Waiting {
    nonce: String,
    stored: oneshot::Sender<Result<(), Problem>>,
}

/// Hands out nonces stored in groups (module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct NonceIssuer {
    tx: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// Starts the writer tasks on `pool`; nonces are valid for `ttl`. Needs a tokio runtime.
    pub fn spawn(pool: PgPool, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2) as f64;
        for _ in 0..WRITERS {
            tokio::spawn(writer(pool.clone(), rx.clone(), ttl_ms));
        }
        NonceIssuer { tx }
    }

    /// A new nonce, returned once it is stored (committed) in `acme_nonces`.
    pub async fn issue(&self) -> Result<String, Problem> {
        let nonce = fresh();
        let (stored, done) = oneshot::channel();
        self.tx
            .send(Waiting { nonce: nonce.clone(), stored })
            .await
            .map_err(|_| Problem::internal("the nonce writer has stopped"))?;
        done.await.map_err(|_| Problem::internal("the nonce writer has stopped"))??;
        Ok(nonce)
    }
}

/// One writer: waits for a first request, takes whatever else is already waiting (up to
/// [`MAX_BATCH`]), stores the batch in one statement and answers every request of it.
async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Waiting>>>, ttl_ms: f64) {
    let mut batch: Vec<Waiting> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return; // every issuer is gone: the process is shutting down
            }
        }
        let nonces: Vec<&str> = batch.iter().map(|w| w.nonce.as_str()).collect();
        let outcome =
            sqlx::query(ISSUE_SQL).bind(&nonces).bind(ttl_ms).execute(&pool).await.map(|_| ()).map_err(Problem::from);
        for w in batch.drain(..) {
            let _ = w.stored.send(outcome.clone());
        }
    }
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
