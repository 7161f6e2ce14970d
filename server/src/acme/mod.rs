//! ACME server (RFC 8555) with renewal information (ARI, RFC 9773).
//!
//! ## Layout
//! - [`problem`]: problem documents (`application/problem+json`).
//! - [`jws`]: flattened JWS parsing and verification, JWK thumbprints.
//! - [`nonce`]: PostgreSQL-backed single-use nonces.
//! - [`request`]: the signed-request extractor (JWS → nonce → url → key → signature).
//! - [`account`]: new-account, account update/deactivation, key-change.
//! - [`order`]: new-order, order, authz, finalize, certificate download, revocation.
//! - [`challenge`]: challenge responses, http-01 and dns-01 validation.
//! - [`dns`]: a minimal TXT lookup for dns-01.
//! - [`ari`]: `renewal-info` (RFC 9773).
//!
//! ## Data flow
//! Every route exists twice: under `/acme/profile/{profile}/` and under `/acme/` for
//! `CERTCTL_ACME_DEFAULT_PROFILE`. A request resolves its [`Ctx`] (profile, absolute base URL)
//! from the path and the `Host` header (or `CERTCTL_EXTERNAL_URL`); POSTs are verified by
//! [`request::Signed`]; handlers read and write the `acme_*` tables; finalize calls
//! [`crate::issuance::sign_csr`] and stores a managed certificate. The [`middleware`] adds a fresh
//! `Replay-Nonce` and `Link: <directory>;rel="index"` to responses (RFC 8555 §6.5, §7.1).
//! No API key is involved: ACME authenticates by JWS.

pub mod account;
pub mod ari;
pub mod challenge;
pub mod dns;
pub mod jws;
pub mod nonce;
pub mod order;
pub mod problem;
pub mod request;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, any, get, on, post};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::AppState;
use crate::ratelimit::{self, Limit, Limiter, LimiterError};
use problem::Problem;

/// How long a profile row is cached: the directory and nonce endpoints are hot (load
/// scenario `acme_burst`) and must not read the profile on every request.
const PROFILE_CACHE_TTL: Duration = Duration::from_secs(5);

/// Lifetime of orders and authorizations (RFC 8555 §7.1.3 `expires`).
pub const ORDER_LIFETIME_DAYS: i64 = 7;

/// Content type of ACME requests (RFC 8555 §6.2).
pub const JOSE_JSON: &str = "application/jose+json";

/// The rate limits of the ACME server (contract §5).
#[derive(Debug, Clone)]
pub struct AcmeLimiters {
    /// New orders per account per hour (100).
    pub orders: Arc<dyn Limiter>,
    /// Key changes per account per hour (5).
    pub key_changes: Arc<dyn Limiter>,
    /// Challenge responses per account per hour (60).
    pub challenges: Arc<dyn Limiter>,
    /// Pending (not yet finalized, unexpired) orders per account at once (5), a count query.
    pub max_pending_orders: i64,
}

impl AcmeLimiters {
    /// The contract's limits on the configured backend (`CERTCTL_RATELIMIT_BACKEND`): with
    /// `postgres`, every replica draws on one budget per account.
    pub fn build(config: &crate::Config, pool: &PgPool) -> Self {
        let hour = Duration::from_secs(3600);
        let b = config.ratelimit_backend;
        AcmeLimiters {
            orders: ratelimit::build(b, pool, "acme-orders", Limit { max: 100, window: hour }),
            key_changes: ratelimit::build(b, pool, "acme-key-changes", Limit { max: 5, window: hour }),
            challenges: ratelimit::build(b, pool, "acme-challenges", Limit { max: 60, window: hour }),
            max_pending_orders: 5,
        }
    }
}

/// Admits one call through `limiter` for `key`, or answers `rateLimited` with `Retry-After`.
/// A failing backend fails closed: 503 `serverInternal` with `Retry-After`.
pub async fn check_limit(limiter: &dyn Limiter, key: &str, what: &str) -> Result<(), Problem> {
    match limiter.allow(key, Utc::now()).await {
        Ok(()) => Ok(()),
        Err(LimiterError::Limited(l)) => Err(Problem::rate_limited(
            format!("too many {what}: at most {} per {} s", limiter.limit().max, limiter.limit().window.as_secs()),
            l.retry_after.as_secs().max(1),
        )),
        Err(LimiterError::Backend(e)) => {
            // Fail closed (docs/operator/rate-limit-scope.md): a limiter outage must not
            // silently lift the limits; the client retries.
            tracing::warn!(error = %e, "ACME rate limiter backend failed; refusing");
            let mut p = Problem::new(problem::ProblemKind::ServerInternal, "rate limiter unavailable, retry later")
                .with_status(StatusCode::SERVICE_UNAVAILABLE);
            p.retry_after = Some(5);
            Err(p)
        }
    }
}

/// A certificate profile as ACME sees it.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile id.
    pub id: String,
    /// Issuer that signs certificates of this profile.
    pub issuer_id: Option<String>,
    /// Allowed key algorithms, e.g. `ECDSA-P256`, `RSA-2048`, `Ed25519`.
    pub allowed_key_algorithms: Vec<String>,
    /// Maximum number of names in one certificate.
    pub max_sans: i32,
    /// `trust_authenticated`: authorizations are valid without a challenge.
    pub trust_authenticated: bool,
    /// Owner of ACME-issued managed certificates.
    pub acme_owner_id: Option<String>,
    /// Team of ACME-issued managed certificates.
    pub acme_team_id: Option<String>,
    /// Renewal policy of ACME-issued managed certificates.
    pub acme_renewal_policy_id: Option<String>,
}

/// A cached profile lookup (`None`: no such ACME-enabled profile) and when it was read.
type CachedProfile = (Instant, Option<Arc<Profile>>);

/// ACME-specific shared state (a field of [`AppState`]).
#[derive(Debug)]
pub struct AcmeState {
    profiles: Mutex<HashMap<String, CachedProfile>>,
    /// HTTP client for http-01 validation: `CERTCTL_ACME_RESOLVE` overrides, limited redirects,
    /// timeouts, no proxy.
    pub http01: reqwest::Client,
    /// The rate limiters.
    pub limiters: AcmeLimiters,
    /// Issues the `Replay-Nonce`s (stored in groups, see [`nonce`]).
    pub nonces: nonce::NonceIssuer,
}

impl AcmeState {
    /// Builds the ACME state for `config` with `limiters` and the nonce issuer `nonces`.
    pub fn new(
        config: &crate::Config,
        limiters: AcmeLimiters,
        nonces: nonce::NonceIssuer,
    ) -> Result<Self, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // RFC 8555 §8.3: the server follows redirects; bound them.
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("certctl-acme/", env!("CARGO_PKG_VERSION")));
        for (name, ip) in config.resolve_overrides() {
            // The port of the override is ignored by reqwest; the URL carries it.
            b = b.resolve(&name, std::net::SocketAddr::new(ip, 0));
        }
        Ok(AcmeState { profiles: Mutex::new(HashMap::new()), http01: b.build()?, limiters, nonces })
    }

    /// The ACME-enabled profile `id`, cached for a few seconds.
    pub async fn profile(&self, pool: &PgPool, id: &str) -> Result<Option<Arc<Profile>>, Problem> {
        if let Ok(cache) = self.profiles.lock()
            && let Some((at, p)) = cache.get(id)
            && at.elapsed() < PROFILE_CACHE_TTL
        {
            return Ok(p.clone());
        }
        let p = load_profile(pool, id).await?.map(Arc::new);
        if let Ok(mut cache) = self.profiles.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(id.to_string(), (Instant::now(), p.clone()));
        }
        Ok(p)
    }
}

type ProfileRow = (String, Option<String>, Vec<String>, i32, String, Option<String>, Option<String>, Option<String>);

async fn load_profile(pool: &PgPool, id: &str) -> Result<Option<Profile>, sqlx::Error> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT id, issuer_id, allowed_key_algorithms, max_sans, acme_auth_mode, acme_owner_id, acme_team_id,
                acme_renewal_policy_id
           FROM certificate_profiles WHERE id = $1 AND acme_enabled",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Profile {
        id: r.0,
        issuer_id: r.1,
        allowed_key_algorithms: r.2,
        max_sans: r.3,
        trust_authenticated: r.4 == "trust_authenticated",
        acme_owner_id: r.5,
        acme_team_id: r.6,
        acme_renewal_policy_id: r.7,
    }))
}

/// Where a request is: its profile and the absolute URLs of its resources.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The profile the request addresses.
    pub profile: Arc<Profile>,
    /// `scheme://host[:port]` (or `CERTCTL_EXTERNAL_URL`), no trailing slash.
    pub base: String,
    /// `{base}/acme/profile/{id}` or `{base}/acme` (default profile): resource URL prefix.
    pub prefix: String,
    /// The absolute URL of this request (what the JWS `url` must equal, RFC 8555 §6.4).
    pub url: String,
}

impl Ctx {
    /// Absolute URL of a resource under this profile, e.g. `url_of("order", id)`.
    pub fn url_of(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}/{id}", self.prefix)
    }

    /// Absolute URL of an endpoint under this profile, e.g. `endpoint("new-order")`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// The base URL: `CERTCTL_EXTERNAL_URL`, else the request's `Host` (https when TLS is on).
pub fn base_url(config: &crate::Config, headers: &HeaderMap) -> String {
    if let Some(u) = &config.external_url {
        return u.trim_end_matches('/').to_string();
    }
    let scheme = if config.server_tls_cert_path.is_some() { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// `(profile id, path prefix)` of an `/acme/...` path: `/acme/profile/{id}/...` or the default.
fn split_path<'a>(path: &'a str, default_profile: &'a str) -> (&'a str, String) {
    if let Some(rest) = path.strip_prefix("/acme/profile/") {
        let id = rest.split('/').next().unwrap_or("");
        (id, format!("/acme/profile/{id}"))
    } else {
        (default_profile, "/acme".to_string())
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let base = base_url(&state.config, &parts.headers);
        let path = parts.uri.path();
        let (profile_id, prefix) = split_path(path, &state.config.acme_default_profile);
        let profile = state
            .acme
            .profile(&state.pool, profile_id)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no ACME-enabled profile '{profile_id}'")))?;
        Ok(Ctx { profile, url: format!("{base}{path}"), prefix: format!("{base}{prefix}"), base })
    }
}

/// Adds `Link: <directory>;rel="index"` to every ACME response, and a fresh `Replay-Nonce` plus
/// `Cache-Control: no-store` to every response to a POST and to every error, GET errors included
/// (RFC 8555 §6.5: the server SHOULD provide a nonce in error responses, so a client can retry at
/// once; an error must not be cached). Successful GETs (`directory`, `renewal-info`) stay cheap
/// and cacheable: they carry no nonce; `new-nonce` sets its own.
pub async fn middleware(State(state): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let base = base_url(&state.config, req.headers());
    let (_, prefix) = split_path(req.uri().path(), &state.config.acme_default_profile);
    let directory = format!("<{base}{prefix}/directory>;rel=\"index\"");
    let is_post = req.method() == Method::POST;
    let mut resp = next.run(req).await;
    let fresh = is_post || resp.status().is_client_error() || resp.status().is_server_error();
    if fresh && !resp.headers().contains_key("replay-nonce") {
        match state.acme.nonces.issue().await {
            Ok(n) => {
                if let Ok(v) = HeaderValue::from_str(&n) {
                    resp.headers_mut().insert("replay-nonce", v);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not issue an ACME nonce"),
        }
    }
    if let Ok(v) = HeaderValue::from_str(&directory) {
        resp.headers_mut().append(header::LINK, v);
    }
    if fresh {
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// GET `directory` (RFC 8555 §7.1.1, RFC 9773 §3 `renewalInfo`).
async fn directory(ctx: Ctx) -> Response {
    let body = json!({
        "newNonce": ctx.endpoint("new-nonce"),
        "newAccount": ctx.endpoint("new-account"),
        "newOrder": ctx.endpoint("new-order"),
        "revokeCert": ctx.endpoint("revoke-cert"),
        "keyChange": ctx.endpoint("key-change"),
        "renewalInfo": ctx.endpoint("renewal-info"),
        "meta": {
            "externalAccountRequired": false,
            "profiles": { ctx.profile.id.clone(): format!("certctl certificate profile {}", ctx.profile.id) },
        },
    });
    axum::Json(body).into_response()
}

/// HEAD (200) / GET (204) `new-nonce` (RFC 8555 §7.2).
async fn new_nonce(State(state): State<AppState>, method: Method, _ctx: Ctx) -> Result<Response, Problem> {
    let n = state.acme.nonces.issue().await?;
    let status = if method == Method::HEAD { StatusCode::OK } else { StatusCode::NO_CONTENT };
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert("replay-nonce", HeaderValue::from_str(&n).map_err(Problem::internal)?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Wrong method on an ACME resource (e.g. GET on a POST-as-GET resource, RFC 8555 §6.3):
/// 405 as a problem document. Set per route so the REST API's JSON fallback does not apply.
async fn method_not_allowed() -> Problem {
    Problem::malformed("method not allowed; ACME resources are fetched with POST-as-GET")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Any other path under `/acme`: a 404 problem document (not the REST envelope), with the
/// nonce, `Link` and `Cache-Control` every ACME error carries.
async fn unknown_resource() -> Problem {
    Problem::not_found("no such ACME resource")
}

/// The ACME router: every endpoint under `/acme/profile/{profile}/` and under `/acme/`.
/// Merged into the application router outside any API-key layer (contract §3).
pub fn router(state: AppState) -> Router<AppState> {
    let mut r = Router::new();
    for p in ["/acme/profile/{profile}", "/acme"] {
        r = r
            .route(&format!("{p}/directory"), get(directory).fallback(method_not_allowed))
            .route(
                &format!("{p}/new-nonce"),
                on(MethodFilter::GET.or(MethodFilter::HEAD), new_nonce).fallback(method_not_allowed),
            )
            .route(&format!("{p}/new-account"), post(account::new_account).fallback(method_not_allowed))
            .route(&format!("{p}/account/{{id}}"), post(account::update_account).fallback(method_not_allowed))
            .route(&format!("{p}/account/{{id}}/orders"), post(account::list_orders).fallback(method_not_allowed))
            .route(&format!("{p}/key-change"), post(account::key_change).fallback(method_not_allowed))
            .route(&format!("{p}/new-order"), post(order::new_order).fallback(method_not_allowed))
            .route(&format!("{p}/order/{{id}}"), post(order::get_order).fallback(method_not_allowed))
            .route(&format!("{p}/order/{{id}}/finalize"), post(order::finalize).fallback(method_not_allowed))
            .route(&format!("{p}/authz/{{id}}"), post(order::authz).fallback(method_not_allowed))
            .route(&format!("{p}/challenge/{{id}}"), post(challenge::respond).fallback(method_not_allowed))
            .route(&format!("{p}/cert/{{id}}"), post(order::certificate).fallback(method_not_allowed))
            .route(&format!("{p}/revoke-cert"), post(order::revoke).fallback(method_not_allowed))
            .route(&format!("{p}/renewal-info/{{cert_id}}"), get(ari::renewal_info).fallback(method_not_allowed));
    }
    r.route("/acme", any(unknown_resource))
        .route("/acme/", any(unknown_resource))
        .route("/acme/{*rest}", any(unknown_resource))
        .layer(axum::middleware::from_fn_with_state(state, middleware))
}

/// How long an order that ended without a certificate stays readable after its expiry before
/// GC deletes it: long enough for a client polling it to see the final `invalid` status.
pub const EXPIRED_ORDER_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// What one [`gc`] pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Expired nonces deleted.
    pub nonces: u64,
    /// Pending/ready orders past `expires_at` marked `invalid` (RFC 8555 §7.1.6).
    pub orders_expired: u64,
    /// Pending authorizations past `expires_at` marked `expired` (RFC 8555 §7.1.6).
    pub authorizations_expired: u64,
    /// Orders that ended without a certificate and expired more than
    /// [`EXPIRED_ORDER_RETENTION`] ago, deleted with their authorizations and challenges.
    pub orders_deleted: u64,
}

/// Garbage-collects ACME state as of `now` (the scheduler's ACME GC loop, contract §6). Safe on
/// every replica at once: each statement is set-based and idempotent.
/// - expired nonces are deleted;
/// - pending authorizations and pending/ready orders past their expiry are marked `expired` /
///   `invalid` (kept, so a client polling them sees the final status);
/// - orders that never became `valid` are deleted [`EXPIRED_ORDER_RETENTION`] after expiring
///   (their authorizations and challenges go with them by `ON DELETE CASCADE`), so abandoned
///   orders do not pile up. Valid orders stay: they link certificates to accounts.
pub async fn gc(pool: &PgPool, now: DateTime<Utc>) -> Result<GcReport, sqlx::Error> {
    let nonces = sqlx::query("DELETE FROM acme_nonces WHERE expires_at <= $1").bind(now).execute(pool).await?;
    let authz = sqlx::query(
        "UPDATE acme_authorizations SET status = 'expired', updated_at = $1 WHERE status = 'pending' AND expires_at <= $1",
    )
    .bind(now)
    .execute(pool)
    .await?;
    let expired = sqlx::query(
        "UPDATE acme_orders SET status = 'invalid', updated_at = $1, \
                error = COALESCE(error, jsonb_build_object('type', 'urn:ietf:params:acme:error:malformed', \
                                                           'detail', 'order expired before it was finalized')) \
          WHERE status IN ('pending', 'ready') AND expires_at <= $1",
    )
    .bind(now)
    .execute(pool)
    .await?;
    let deleted = sqlx::query("DELETE FROM acme_orders WHERE status = 'invalid' AND expires_at <= $1")
        .bind(now - EXPIRED_ORDER_RETENTION)
        .execute(pool)
        .await?;
    Ok(GcReport {
        nonces: nonces.rows_affected(),
        orders_expired: expired.rows_affected(),
        authorizations_expired: authz.rows_affected(),
        orders_deleted: deleted.rows_affected(),
    })
}

/// Records an ACME state change in `audit_events` through the batched writer (off the request
/// path). The actor is `acme:<account id>` (or `acme:certificate-key` for revocation signed by
/// the certificate's key), actor type `acme_account`.
pub async fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    details: serde_json::Value,
) {
    state
        .audit
        .record(crate::audit::AuditEvent {
            actor: format!("acme:{actor}"),
            actor_type: "acme_account".into(),
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            details,
            request_id: crate::http::request_id::current().unwrap_or_default(),
            created_at: Utc::now(),
        })
        .await;
}

/// A new application id with `prefix` (`acct-`, `ord-`, …).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The trailing id of a resource URL `…/{kind}/{id}`.
pub fn id_from_url<'a>(url: &'a str, kind: &str) -> Option<&'a str> {
    let marker = format!("/{kind}/");
    let i = url.rfind(&marker)?;
    let id = &url[i + marker.len()..];
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// RFC 3339 timestamp as ACME writes them.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_profile_and_prefix() {
        assert_eq!(split_path("/acme/profile/p1/new-order", "d"), ("p1", "/acme/profile/p1".to_string()));
        assert_eq!(split_path("/acme/new-order", "d"), ("d", "/acme".to_string()));
        assert_eq!(id_from_url("http://h/acme/account/acct-1", "account"), Some("acct-1"));
        assert_eq!(id_from_url("http://h/acme/account/", "account"), None);
    }
}
