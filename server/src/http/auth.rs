//! Authentication, authorisation and per-caller rate limiting for `/api/v1`.
//!
//! [`middleware`] runs after routing (it is a route layer), so it knows the matched route:
//! 1. `CERTCTL_AUTH_TYPE=none`: every caller is the admin `anonymous`.
//! 2. Otherwise the `Authorization: Bearer <token>` is hashed with SHA-256 and compared, in
//!    constant time, with every configured API key's hash (keys are never kept in clear).
//! 3. On the agent routes ([`Access::Agent`], `/api/v1/agents/{id}/…`) a token that is not an API key may be that
//!    agent's own credential: `hex(sha256(token))` is compared in constant time with
//!    `agents.credential_hash` of the agent named in the path (one primary-key lookup). The
//!    load harness seeds agents with exactly that hash, so nothing else may be assumed. The same
//!    lookup returns whether the agent is retired: a retired agent gets 410 on every agent route,
//!    and so does an API key acting on a retired agent's routes.
//! 4. The caller is then rate limited by its identity (key name, or `agent:<id>` plus a prefix
//!    of the presented credential's hash), not by IP: the limiter runs after authentication so
//!    one noisy key cannot starve the others.
//!
//! The heartbeat (the hottest route) is the one exception to step 3: on the routes of
//! [`SELF_VERIFYING_AGENT_ROUTES`] the credential is not looked up here but handed to the handler
//! as an [`AgentClaim`], whose single UPDATE both verifies it and records the call (see
//! `agents::heartbeat`, which also answers 410 for a retired agent). A claim is not a [`Principal`]: the [`Caller`] extractor refuses it, so
//! no other handler can mistake an unverified credential for an authenticated caller. Its rate
//! limit bucket is keyed by the claimed id *and* the credential hash, so somebody who knows an
//! agent's id but not its credential cannot use up that agent's budget.
//!
//! 5. The route's role from [`super::access::ROUTES`] is enforced here, before any handler runs
//!    (admin-only routes, agent routes): handlers never check roles themselves. A heartbeat
//!    claim is authorized by its handler's statement (it matches only that agent's credential).
//! 6. A token that matches nothing counts against the client address
//!    ([`super::auth_failures`]); an address over that limit gets 429 before the agent lookup
//!    (the heartbeat handler records the failures its statement finds).
//!
//! Handlers read the result with the [`Caller`] extractor (the audit actor).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::access::{self, Access};
use super::auth_failures;
use super::error::ApiError;
use crate::AppState;
use crate::config::{AuthType, Config};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A configured API key (or `anonymous` when authentication is off).
    Key {
        /// The key's name from `CERTCTL_API_KEYS_NAMED` (`legacy-N` for `CERTCTL_AUTH_SECRET`).
        name: Arc<str>,
        /// Whether the key may use admin-only routes.
        admin: bool,
    },
    /// An agent, authenticated by the credential it was given at registration.
    Agent {
        /// The agent's id.
        id: String,
    },
}

impl Principal {
    /// The audit actor: the key name, or `agent:<id>`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Key { name, .. } => name.to_string(),
            Principal::Agent { id } => format!("agent:{id}"),
        }
    }

    /// The audit `actor_type`.
    pub fn actor_type(&self) -> &'static str {
        match self {
            Principal::Key { name, .. } if &**name == ANONYMOUS => "anonymous",
            Principal::Key { .. } => "api_key",
            Principal::Agent { .. } => "agent",
        }
    }
}

/// The rate-limit bucket of an API key: one per key name.
fn key_rate_key(name: &str) -> String {
    format!("key:{name}")
}

/// The rate-limit bucket of an agent credential: the agent id plus the first 16 hex digits of
/// the credential's hash (one bucket per real agent, whatever route it calls; a wrong
/// credential lands in a bucket of its own, never in the agent's).
fn agent_rate_key(id: &str, credential_hash: &str) -> String {
    format!("agent:{id}:{}", &credential_hash[..credential_hash.len().min(16)])
}

/// The principal of every request when `CERTCTL_AUTH_TYPE=none`.
pub const ANONYMOUS: &str = "anonymous";

struct KeyEntry {
    name: Arc<str>,
    hash: [u8; 32],
    admin: bool,
}

/// The configured API keys, held only as SHA-256 hashes.
pub struct KeyRing {
    entries: Vec<KeyEntry>,
    open: bool,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print hashes: they are as good as the keys for an offline guesser.
        f.debug_struct("KeyRing").field("keys", &self.entries.len()).field("open", &self.open).finish()
    }
}

impl KeyRing {
    /// Hashes the keys of `config` (validated at startup, so parsing cannot fail here; a
    /// failure would leave the ring empty and every request 401 — fail closed).
    pub fn from_config(config: &Config) -> Self {
        let entries = config
            .api_keys()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, key, admin)| KeyEntry {
                name: name.into(),
                hash: Sha256::digest(key.as_bytes()).into(),
                admin,
            })
            .collect();
        KeyRing { entries, open: config.auth_type == AuthType::None }
    }

    /// Whether authentication is off.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The API key `token` is, if any. Every entry is compared (in constant time each), so the
    /// time taken does not say which key, if any, matched.
    fn find(&self, token: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            let eq: bool = e.hash.ct_eq(&hash).into();
            if eq && found.is_none() {
                found = Some(Principal::Key { name: e.name.clone(), admin: e.admin });
            }
        }
        found
    }
}

/// Per-caller token buckets (`governor`), keyed by [`Principal`] identity.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    /// `CERTCTL_RATE_LIMIT_*`; `None` when disabled.
    pub fn from_config(config: &Config) -> Option<Self> {
        if !config.rate_limit_enabled {
            return None;
        }
        let rps = NonZeroU32::new(config.rate_limit_rps)?;
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(rps);
        let quota = Quota::per_second(rps).allow_burst(burst);
        Some(RateLimits { limiter: DefaultKeyedRateLimiter::keyed(quota), checks: AtomicU64::new(0) })
    }

    /// Admits one request of the caller with bucket `key`, or answers 429 with the wait in
    /// whole seconds.
    fn check(&self, key: &str) -> Result<(), ApiError> {
        // Forget idle buckets now and then so the key map does not grow without bound
        // (agents come and go).
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::TooManyRequests(secs.max(1)))
            }
        }
    }
}

/// Route layer: authenticates, rate limits, and stores the [`Principal`] (or, on a
/// self-verifying route, the [`AgentClaim`]) as an extension.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let access = match parts.extensions.get::<MatchedPath>() {
        Some(route) => access::required(&parts.method, route.as_str()),
        None => Access::Admin,
    };
    let (identity, rate_key) = match authenticate(&state, &mut parts, access).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Identity::Caller(principal) = &identity
        && let Err(e) = authorize(access, principal)
    {
        return e.into_response();
    }
    if let Some(limits) = &state.api.rate_limits
        && let Err(e) = limits.check(&rate_key)
    {
        return e.into_response();
    }
    match identity {
        Identity::Caller(principal) => {
            parts.extensions.insert(principal);
        }
        Identity::Claim(claim) => {
            parts.extensions.insert(claim);
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// What authentication established.
enum Identity {
    /// An authenticated caller.
    Caller(Principal),
    /// An agent credential the route's handler verifies itself.
    Claim(AgentClaim),
}

/// The caller and its rate-limit bucket. An agent credential is looked up only on
/// [`Access::Agent`] routes; a presented token that matches nothing counts against the client
/// address ([`super::auth_failures`]), and an address over that limit is refused before the
/// lookup.
async fn authenticate(state: &AppState, parts: &mut Parts, access: Access) -> Result<(Identity, String), ApiError> {
    let agent_route = if access == Access::Agent { agent_route_id(parts).await } else { None };
    let (principal, key) = if state.api.keys.is_open() {
        (Principal::Key { name: ANONYMOUS.into(), admin: true }, key_rate_key(ANONYMOUS))
    } else {
        let token = bearer_token(parts)?;
        match state.api.keys.find(&token) {
            Some(p) => {
                // `find` only answers keys, whose actor is the key name.
                let key = key_rate_key(&p.actor());
                (p, key)
            }
            None => return authenticate_agent(state, parts, agent_route, &token).await,
        }
    };
    // An API key acting on a retired agent's routes gets the same 410 as the agent itself: a
    // retired agent is gone for every agent route (CSR, job status, work, heartbeat, …), decided
    // here once instead of in each handler.
    if let Some((id, _)) = &agent_route
        && agent_is_retired(state, id).await?
    {
        return Err(retired(id));
    }
    Ok((Identity::Caller(principal), key))
}

/// A token that is not an API key: on an agent route it may be that agent's own credential.
async fn authenticate_agent(
    state: &AppState,
    parts: &Parts,
    agent_route: Option<(String, bool)>,
    token: &str,
) -> Result<(Identity, String), ApiError> {
    let failures = state.api.auth_failures.as_ref();
    let client = failures.map(|_| auth_failures::client_key(parts));
    if let (Some(f), Some(c)) = (failures, &client) {
        f.check(c)?;
    }
    if let Some((agent_id, self_verifying)) = agent_route {
        let hash = credential_hash(token);
        let key = agent_rate_key(&agent_id, &hash);
        if self_verifying {
            let claim = AgentClaim { id: agent_id, credential_hash: hash, client };
            return Ok((Identity::Claim(claim), key));
        }
        // The one lookup that checks the credential also says whether the agent is retired,
        // so the retired check costs the credential path nothing.
        match agent_credential(state, &agent_id, &hash).await? {
            Some(AgentCredential { retired: true }) => return Err(retired(&agent_id)),
            Some(AgentCredential { retired: false }) => {
                return Ok((Identity::Caller(Principal::Agent { id: agent_id }), key));
            }
            None => {}
        }
    }
    if let (Some(f), Some(c)) = (failures, &client) {
        f.record(c)?;
    }
    Err(invalid_credential())
}

/// The role check, the only one: `access` is the route's entry in [`super::access::ROUTES`].
/// An agent principal exists only on [`Access::Agent`] routes and only for the agent in the
/// path (authentication compared the credential with that agent's), so it needs no id check.
fn authorize(access: Access, principal: &Principal) -> Result<(), ApiError> {
    match (access, principal) {
        (Access::Public | Access::AnyKey, Principal::Key { .. }) => Ok(()),
        (_, Principal::Key { admin: true, .. }) => Ok(()),
        (Access::Agent, Principal::Agent { .. }) => Ok(()),
        (Access::Admin, Principal::Key { admin: false, .. }) => {
            Err(ApiError::Forbidden("this route requires an admin API key".into()))
        }
        (Access::Agent, Principal::Key { admin: false, .. }) => {
            Err(ApiError::Forbidden("agent endpoints need the agent's credential or an admin key".into()))
        }
        (_, Principal::Agent { .. }) => {
            Err(ApiError::Forbidden("an agent credential is valid only on its agent's routes".into()))
        }
    }
}

fn invalid_credential() -> ApiError {
    ApiError::Unauthorized("invalid API key or agent credential".into())
}

/// The answer of every agent route of a retired agent (`DELETE /api/v1/agents/{id}`).
fn retired(agent_id: &str) -> ApiError {
    ApiError::Gone(format!("agent '{}' is retired", super::error::shorten(agent_id)))
}

fn bearer_token(parts: &Parts) -> Result<String, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <key>".into()))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized("expected Authorization: Bearer <key>".into()));
    }
    Ok(token.to_string())
}

/// Agent routes whose handler verifies the agent credential in the same statement that does
/// the route's work, so the auth layer does not look it up first (module docs).
pub const SELF_VERIFYING_AGENT_ROUTES: &[&str] = &["/api/v1/agents/{id}/heartbeat"];

/// The agent id of an agent-scoped route (`/api/v1/agents/{id}/<something>`), where an agent
/// credential is acceptable, and whether the route verifies it itself. `GET /agents/{id}` itself
/// and everything else are API-key only.
async fn agent_route_id(parts: &mut Parts) -> Option<(String, bool)> {
    let route = parts.extensions.get::<MatchedPath>()?.as_str();
    if !route.starts_with("/api/v1/agents/{id}/") {
        return None;
    }
    let self_verifying = SELF_VERIFYING_AGENT_ROUTES.contains(&route);
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params.iter().find(|(k, _)| *k == "id").map(|(_, v)| (v.to_string(), self_verifying))
}

/// An agent credential presented on a [`SELF_VERIFYING_AGENT_ROUTES`] route, *not yet
/// verified*: the handler's statement compares [`AgentClaim::credential_hash`] with the stored
/// hash and acts only on a match. Read it with the [`AgentAuth`] extractor.
#[derive(Debug, Clone)]
pub struct AgentClaim {
    /// The agent id named in the path.
    pub id: String,
    /// `hex(sha256(token))` of the presented token (lower case, as [`credential_hash`]).
    pub credential_hash: String,
    /// The client address key of the failed-authentication limiter (when it is on): the
    /// handler records a failure there when its statement finds the credential wrong.
    pub client: Option<String>,
}

impl AgentClaim {
    /// Whether the claim's hash equals `stored_hex` (either case), in constant time.
    pub fn matches(&self, stored_hex: &str) -> bool {
        hash_matches(stored_hex, &self.credential_hash)
    }
}

/// Who is calling a self-verifying agent route: an authenticated caller (an API key), or an
/// agent credential the handler must verify.
#[derive(Debug, Clone)]
pub enum AgentAuth {
    /// An API key (its role was checked by the auth layer).
    Caller(Caller),
    /// An agent credential for the agent in the path, to be verified by the handler.
    Claim(AgentClaim),
}

impl<S: Send + Sync> FromRequestParts<S> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claim) = parts.extensions.get::<AgentClaim>() {
            return Ok(AgentAuth::Claim(claim.clone()));
        }
        Caller::from_request_parts(parts, _state).await.map(AgentAuth::Caller)
    }
}

/// The agent-credential lookup: one primary-key read, which also says whether the agent is
/// retired.
pub const AGENT_CREDENTIAL_SQL: &str = "SELECT credential_hash, retired_at IS NOT NULL FROM agents WHERE id = $1";

/// An agent credential that matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AgentCredential {
    /// The agent was retired (`DELETE /api/v1/agents/{id}`).
    retired: bool,
}

/// `Some` when `hash` (`hex(sha256(token))`) `== agents.credential_hash` (constant time).
async fn agent_credential(state: &AppState, agent_id: &str, hash: &str) -> Result<Option<AgentCredential>, ApiError> {
    // A read: retrying it on a fresh connection after the pooled one died is always safe.
    let stored: Option<(String, bool)> =
        crate::db::retry_idempotent(|| sqlx::query_as(AGENT_CREDENTIAL_SQL).bind(agent_id).fetch_optional(&state.pool))
            .await?;
    Ok(stored.filter(|(stored, _)| hash_matches(stored, hash)).map(|(_, retired)| AgentCredential { retired }))
}

/// Whether agent `agent_id` exists and is retired (unknown agents are left to the handler's 404).
async fn agent_is_retired(state: &AppState, agent_id: &str) -> Result<bool, ApiError> {
    let retired: Option<bool> = sqlx::query_scalar("SELECT retired_at IS NOT NULL FROM agents WHERE id = $1")
        .bind(agent_id)
        .fetch_optional(&state.pool)
        .await?;
    Ok(retired == Some(true))
}

/// Whether `token` hashes to `stored_hex` (lower- or upper-case hex), in constant time.
pub fn credential_matches(stored_hex: &str, token: &str) -> bool {
    hash_matches(stored_hex, &credential_hash(token))
}

/// Whether the lower-case hex digest `ours` equals `stored_hex` (either case), in constant time.
fn hash_matches(stored_hex: &str, ours: &str) -> bool {
    let theirs = stored_hex.to_ascii_lowercase();
    ours.as_bytes().ct_eq(theirs.as_bytes()).into()
}

/// The stored form of an agent credential: lower-case hex SHA-256 of its UTF-8 bytes.
pub fn credential_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated caller of a request (set by [`middleware`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Unauthorized("not authenticated".into()))
    }
}

impl Caller {
    /// The audit actor name.
    pub fn actor(&self) -> String {
        self.0.actor()
    }
}

/// What `/api/v1/auth/info` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthInfo {
    /// `api-key` or `none`.
    pub auth_type: String,
    /// Whether `/api/v1` requires `Authorization: Bearer <key>`.
    pub required: bool,
}

/// How to authenticate (unauthenticated).
#[utoipa::path(get, path = "/api/v1/auth/info", tag = "auth", security(()),
    responses((status = 200, description = "authentication mode", body = AuthInfo)))]
pub async fn auth_info(State(state): State<AppState>) -> Json<AuthInfo> {
    let open = state.api.keys.is_open();
    Json(AuthInfo { auth_type: if open { "none" } else { "api-key" }.into(), required: !open })
}

/// Unauthenticated auth routes.
pub fn public_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(auth_info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_found_by_hash_with_their_name_and_admin_flag() {
        use crate::config::ConfigOutcome;
        let Ok(ConfigOutcome::Run(config)) = Config::parse_from_args([
            "x",
            "--database-url",
            "postgres://h/db",
            "--api-keys-named",
            "ops:k-ops:admin,ci:k-ci",
            "--auth-secret",
            "k-legacy",
        ]) else {
            panic!("config parses")
        };
        let ring = KeyRing::from_config(&config);
        assert!(!ring.is_open());
        assert_eq!(ring.find("k-ops"), Some(Principal::Key { name: "ops".into(), admin: true }));
        assert_eq!(ring.find("k-ci"), Some(Principal::Key { name: "ci".into(), admin: false }));
        assert_eq!(ring.find("k-legacy"), Some(Principal::Key { name: "legacy-1".into(), admin: true }));
        assert_eq!(ring.find("k-op"), None);
        assert_eq!(ring.find(""), None);
        assert!(!format!("{ring:?}").contains("k-ops"), "Debug never shows keys");
    }

    #[test]
    fn agent_credentials_match_the_harness_hash_form() {
        // encode(sha256(convert_to('tok','UTF8')),'hex') in PostgreSQL.
        let stored = "aaf5f6d4e4e2a1c8a8e4b45f4ef0ba1ef6e51b8b6a0c52b7d6c1ac3cbd8e2e4e";
        assert!(!credential_matches(stored, "tok"));
        assert!(credential_matches(&credential_hash("tok"), "tok"));
        assert!(credential_matches(&credential_hash("tok").to_ascii_uppercase(), "tok"));
        assert!(!credential_matches("", "tok"));
    }
}
