//! The signed-request extractor: turns a POST body into a verified [`Signed`] request.
//!
//! Order of checks (RFC 8555 §6.2–§6.5): content type `application/jose+json` → bounded body →
//! JWS syntax and algorithm → `url` equals the request URL (§6.4, else `unauthorized`) →
//! nonce redeemed exactly once (§6.5, else `badNonce`) → key: embedded `jwk`, or `kid` naming a
//! valid account of this profile (else `accountDoesNotExist`) → signature. Handlers then say
//! which of `jwk`/`kid` they accept with [`Signed::account`] or [`Signed::require_jwk`].

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};

use super::account::{self, Account};
use super::jws::{self, Jwk, Jws};
use super::problem::{Problem, ProblemKind};
use super::{Ctx, JOSE_JSON, id_from_url, nonce};
use crate::AppState;

/// Largest JWS body accepted (a CSR with a 4096-bit key and 100 SANs fits easily).
pub const MAX_JWS_BODY: usize = 64 * 1024;

/// A verified ACME POST.
#[derive(Debug)]
pub struct Signed {
    /// Where the request is.
    pub ctx: Ctx,
    /// The verified JWS.
    pub jws: Jws,
    /// The account, when the request was signed with `kid`.
    pub account: Option<Account>,
    /// The key that verified the signature.
    pub key: Jwk,
}

impl Signed {
    /// The account of a `kid`-signed request; `malformed` for a `jwk`-signed one (RFC 8555 §6.2:
    /// every request except new-account and revoke-by-certificate-key uses `kid`).
    pub fn account(&self) -> Result<&Account, Problem> {
        self.account.as_ref().ok_or_else(|| Problem::malformed("this request must be signed with 'kid', not 'jwk'"))
    }

    /// Refuses a `kid`-signed request (new-account needs the `jwk`).
    pub fn require_jwk(&self) -> Result<&Jwk, Problem> {
        match (&self.account, &self.jws.header.jwk) {
            (None, Some(k)) => Ok(k),
            _ => Err(Problem::malformed("this request must be signed with 'jwk', not 'kid'")),
        }
    }

    /// The payload as JSON, `None` for POST-as-GET.
    pub fn payload(&self) -> Result<Option<serde_json::Value>, Problem> {
        self.jws.payload_json()
    }

    /// Requires POST-as-GET (empty payload, RFC 8555 §6.3).
    pub fn require_post_as_get(&self) -> Result<(), Problem> {
        if self.jws.payload.is_empty() {
            Ok(())
        } else {
            Err(Problem::malformed("expected POST-as-GET (empty payload)"))
        }
    }
}

impl FromRequest<AppState> for Signed {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Problem> {
        let (mut parts, body) = req.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, state).await?;
        let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if ct.split(';').next().map(str::trim) != Some(JOSE_JSON) {
            return Err(Problem::malformed(format!("Content-Type must be {JOSE_JSON}"))
                .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = axum::body::to_bytes(body, MAX_JWS_BODY).await.map_err(|_| {
            Problem::malformed(format!("request body larger than {MAX_JWS_BODY} bytes"))
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?;
        let jws = jws::parse(&bytes)?;
        verify(state, ctx, jws).await
    }
}

/// Checks url, nonce, key and signature of a parsed JWS for the request at `ctx`.
pub async fn verify(state: &AppState, ctx: Ctx, jws: Jws) -> Result<Signed, Problem> {
    if jws.header.url != ctx.url {
        return Err(Problem::unauthorized(format!(
            "JWS url '{}' does not match the request URL '{}'",
            jws.header.url, ctx.url
        )));
    }
    let nonce = jws.header.nonce.as_deref().ok_or_else(|| Problem::new(ProblemKind::BadNonce, "JWS has no nonce"))?;
    if !nonce::consume(&state.pool, nonce).await? {
        return Err(Problem::new(ProblemKind::BadNonce, "nonce is unknown, expired or already used"));
    }
    let (key, account) = match (&jws.header.jwk, &jws.header.kid) {
        (Some(jwk), _) => (jwk.clone(), None),
        (None, Some(kid)) => {
            let id = id_from_url(kid, "account")
                .ok_or_else(|| Problem::new(ProblemKind::AccountDoesNotExist, "kid is not an account URL"))?;
            let acct = account::load(&state.pool, id)
                .await?
                .filter(|a| a.profile_id == ctx.profile.id)
                .ok_or_else(|| Problem::new(ProblemKind::AccountDoesNotExist, format!("no account '{id}'")))?;
            if acct.status != "valid" {
                return Err(Problem::account_not_valid(&acct.status));
            }
            (acct.jwk.clone(), Some(acct))
        }
        (None, None) => return Err(Problem::malformed("JWS has neither jwk nor kid")),
    };
    jws.verify_with(&key)?;
    Ok(Signed { ctx, jws, account, key })
}
