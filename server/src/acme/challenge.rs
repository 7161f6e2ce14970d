//! Challenges (RFC 8555 §7.5.1, §8): the client says "ready", the server validates in a
//! spawned task (status `processing`), then updates challenge → authorization → order.
//!
//! `http-01` (§8.3) fetches `http://{name}:{CERTCTL_ACME_HTTP01_PORT}/.well-known/acme-challenge/{token}`
//! with the shared client in [`super::AcmeState::http01`] (resolve overrides from
//! `CERTCTL_ACME_RESOLVE`, bounded redirects and timeouts) and compares the body with the key
//! authorization `token.thumbprint` (§8.1). `dns-01` (§8.4) asks `CERTCTL_ACME_DNS_RESOLVER`
//! (or the system's resolver) for the TXT records of `_acme-challenge.{name}` ([`super::dns`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::jws::b64e;
use super::problem::{AcmePath, Problem, ProblemKind};
use super::request::Signed;
use super::{Ctx, check_limit, ts};
use crate::AppState;

/// Largest http-01 response body read (RFC 8555 §8.3 responses are ~90 bytes).
const MAX_HTTP01_BODY: usize = 8 * 1024;

/// A challenge row.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Challenge id.
    pub id: String,
    /// Its authorization.
    pub authorization_id: String,
    /// `http-01`, `dns-01`, `tls-alpn-01`.
    pub kind: String,
    /// The token (RFC 8555 §8.1: ≥128 bits of entropy, base64url).
    pub token: String,
    /// Status.
    pub status: String,
    /// When it became valid.
    pub validated_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<Value>,
}

type ChallengeRow = (String, String, String, String, String, Option<DateTime<Utc>>, Option<Value>);

fn from_row(r: ChallengeRow) -> Challenge {
    Challenge { id: r.0, authorization_id: r.1, kind: r.2, token: r.3, status: r.4, validated_at: r.5, error: r.6 }
}

/// A fresh challenge token: 256 random bits, base64url.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    b64e(&raw)
}

/// The challenges of authorization `authz_id`.
pub async fn load_for_authz(pool: &PgPool, authz_id: &str) -> Result<Vec<Challenge>, sqlx::Error> {
    let rows: Vec<ChallengeRow> = sqlx::query_as(
        "SELECT id, authorization_id, type, token, status, validated_at, error FROM acme_challenges
          WHERE authorization_id = $1 ORDER BY type",
    )
    .bind(authz_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The challenge object (RFC 8555 §7.1.5).
pub fn to_json(ctx: &Ctx, c: &Challenge) -> Value {
    let mut v = json!({ "type": c.kind, "url": ctx.url_of("challenge", &c.id), "status": c.status, "token": c.token });
    if let Some(t) = c.validated_at {
        v["validated"] = json!(ts(t));
    }
    if let Some(e) = &c.error {
        v["error"] = e.clone();
    }
    v
}

/// POST `challenge/{id}`: POST-as-GET returns it; `{}` asks the server to validate
/// (RFC 8555 §7.5.1). The response links the authorization with `rel="up"`.
pub async fn respond(
    State(state): State<AppState>,
    AcmePath(params): AcmePath,
    signed: Signed,
) -> Result<Response, Problem> {
    let acct = signed.account()?.clone();
    let id = params.get("id").map(String::as_str).unwrap_or("");
    let row: Option<(ChallengeRow, String, String, String)> = sqlx::query_as::<
        _,
        (String, String, String, String, String, Option<DateTime<Utc>>, Option<Value>, String, String, String),
    >(
        "SELECT c.id, c.authorization_id, c.type, c.token, c.status, c.validated_at, c.error,
                a.account_id, a.identifier_value, a.order_id
           FROM acme_challenges c JOIN acme_authorizations a ON a.id = c.authorization_id
          WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .map(|r| ((r.0, r.1, r.2, r.3, r.4, r.5, r.6), r.7, r.8, r.9));
    let (crow, _owner, identifier, order_id) =
        row.filter(|r| r.1 == acct.id).ok_or_else(|| Problem::not_found(format!("no challenge '{id}'")))?;
    let mut chal = from_row(crow);
    if let Some(p) = signed.payload()? {
        if !p.is_object() {
            return Err(Problem::malformed("a challenge response is the empty object {}"));
        }
        // Validate only while the authorization is still pending: once a sibling challenge
        // succeeded (or the authorization expired or was deactivated) there is nothing to prove.
        let authz_pending = chal.status == "pending"
            && sqlx::query_scalar::<_, String>("SELECT status FROM acme_authorizations WHERE id = $1")
                .bind(&chal.authorization_id)
                .fetch_optional(&state.pool)
                .await?
                .is_some_and(|s| s == "pending");
        if authz_pending {
            check_limit(state.acme.limiters.challenges.as_ref(), &acct.id, "challenge responses").await?;
            let claimed = sqlx::query(
                "UPDATE acme_challenges SET status = 'processing', updated_at = now() WHERE id = $1 AND status = 'pending'",
            )
            .bind(&chal.id)
            .execute(&state.pool)
            .await?;
            if claimed.rows_affected() == 1 {
                chal.status = "processing".into();
                let key_auth = format!("{}.{}", chal.token, acct.jwk.thumbprint());
                let st = state.clone();
                let c = chal.clone();
                tokio::spawn(async move {
                    let outcome = validate(&st, &c, &identifier, &key_auth).await;
                    if let Err(e) = record(&st.pool, &c, &order_id, outcome).await {
                        tracing::error!(error = %e, challenge = %c.id, "recording the ACME validation failed");
                    }
                });
            }
        }
    }
    let mut resp = axum::Json(to_json(&signed.ctx, &chal)).into_response();
    let up = format!("<{}>;rel=\"up\"", signed.ctx.url_of("authz", &chal.authorization_id));
    if let Ok(v) = HeaderValue::from_str(&up) {
        resp.headers_mut().append(header::LINK, v);
    }
    Ok(resp)
}

/// Validates challenge `c` for `identifier`; `Err` is the problem stored on the challenge.
async fn validate(state: &AppState, c: &Challenge, identifier: &str, key_auth: &str) -> Result<(), Problem> {
    match c.kind.as_str() {
        "http-01" => {
            let url =
                format!("http://{identifier}:{}/.well-known/acme-challenge/{}", state.config.acme_http01_port, c.token);
            // Two attempts: a client's standalone server may still be binding.
            let mut last = Problem::new(ProblemKind::Connection, "not attempted");
            for attempt in 0..2 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                match fetch_http01(&state.acme.http01, &url, key_auth).await {
                    Ok(()) => return Ok(()),
                    Err(p) => last = p,
                }
            }
            Err(last)
        }
        "dns-01" => {
            // RFC 8555 §8.4: a TXT record at _acme-challenge.{name} holding
            // base64url(SHA-256(key authorization)).
            use sha2::Digest;
            let expected = b64e(&sha2::Sha256::digest(key_auth.as_bytes()));
            let server = super::dns::resolver(state.config.acme_dns_resolver.as_deref())
                .map_err(|e| Problem::new(ProblemKind::Dns, e.to_string()))?;
            let name = format!("_acme-challenge.{identifier}");
            let mut last = Problem::new(ProblemKind::Dns, "not attempted");
            for attempt in 0..2 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                match super::dns::lookup_txt(server, &name).await {
                    Ok(records) if records.iter().any(|r| r.trim() == expected) => return Ok(()),
                    Ok(records) => {
                        last = Problem::new(
                            ProblemKind::IncorrectResponse,
                            format!("no TXT record at {name} matches the key authorization ({} found)", records.len()),
                        )
                    }
                    Err(e) => last = Problem::new(ProblemKind::Dns, format!("{name}: {e}")),
                }
            }
            Err(last)
        }
        other => Err(Problem::malformed(format!("challenge type {other} is not supported"))),
    }
}

async fn fetch_http01(client: &reqwest::Client, url: &str, key_auth: &str) -> Result<(), Problem> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| Problem::new(ProblemKind::Connection, format!("fetching {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Problem::unauthorized(format!("{url} answered {}", resp.status())));
    }
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| Problem::new(ProblemKind::Connection, format!("reading {url}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_HTTP01_BODY {
            return Err(Problem::new(
                ProblemKind::IncorrectResponse,
                format!("{url} answered more than {MAX_HTTP01_BODY} bytes"),
            ));
        }
    }
    // RFC 8555 §8.3: trailing whitespace is ignored.
    let got = String::from_utf8_lossy(&body);
    if got.trim_end() == key_auth {
        Ok(())
    } else {
        Err(Problem::new(ProblemKind::IncorrectResponse, format!("{url} did not answer the key authorization")))
    }
}

/// Stores a validation outcome: challenge → authorization → order, in one transaction
/// (RFC 8555 §7.1.6 status transitions).
async fn record(pool: &PgPool, c: &Challenge, order_id: &str, outcome: Result<(), Problem>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    match outcome {
        Ok(()) => {
            sqlx::query(
                "UPDATE acme_challenges SET status = 'valid', validated_at = now(), error = NULL, updated_at = now()
                  WHERE id = $1",
            )
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE acme_authorizations SET status = 'valid', updated_at = now() WHERE id = $1 AND status = 'pending'",
            )
            .bind(&c.authorization_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE acme_orders o SET status = 'ready', updated_at = now()
                  WHERE o.id = $1 AND o.status = 'pending'
                    AND NOT EXISTS (SELECT 1 FROM acme_authorizations a WHERE a.order_id = o.id AND a.status <> 'valid')",
            )
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        }
        Err(p) => {
            tracing::info!(challenge = %c.id, problem = %p, "ACME challenge failed");
            sqlx::query("UPDATE acme_challenges SET status = 'invalid', error = $2, updated_at = now() WHERE id = $1")
                .bind(&c.id)
                .bind(p.to_json())
                .execute(&mut *tx)
                .await?;
            let authz = sqlx::query(
                "UPDATE acme_authorizations SET status = 'invalid', updated_at = now() WHERE id = $1 AND status = 'pending'",
            )
            .bind(&c.authorization_id)
            .execute(&mut *tx)
            .await?;
            // Only a failure that invalidated a pending authorization sinks the order; a redundant
            // challenge failing after a sibling succeeded changes nothing else (RFC 8555 §7.1.6).
            if authz.rows_affected() == 1 {
                sqlx::query(
                    "UPDATE acme_orders SET status = 'invalid', error = $2, updated_at = now()
                      WHERE id = $1 AND status IN ('pending', 'ready')",
                )
                .bind(order_id)
                .bind(p.to_json())
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await
}
