//! Authentication, authorisation and per-caller rate limiting for `/api/v1`.
//!
//! [`middleware`] runs after routing (it is a route layer), so it knows the matched route:
//! 1. `CERTCTL_AUTH_TYPE=none`: every caller is the admin `anonymous`.
//! 2. Otherwise the `Authorization: Bearer <token>` is hashed with SHA-256 and compared, in
//!    constant time, with every configured API key's hash (keys are never kept in clear).
//! 3. On the agent routes ([`Access::Agent`], `/api/v1/agents/{id}/…`) a token that is not an API key may be that
//!    agent's own credential: `hex(sha256(token))` is compared in constant time with
//!    `agents.credential_hash` of the agent named in the path (one primary-key lookup). The
//!    load harness seeds agents with exactly that hash, so nothing else may be assumed.
//! 4. The caller is then rate limited by its identity (key name, or `agent:<id>`), not by IP:
//!    the limiter runs after authentication so one noisy key cannot starve the others.
//!
//! 5. The route's role from [`super::access::ROUTES`] is enforced here, before any handler runs
//!    (admin-only routes, agent routes): handlers never check roles themselves.
//! 6. A token that matches nothing counts against the client address
//!    ([`super::auth_failures`]); an address over that limit gets 429 before the agent lookup.
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

    /// The rate-limit bucket: one per key name, one per agent.
    fn rate_key(&self) -> String {
        match self {
            Principal::Key { name, .. } => format!("key:{name}"),
            Principal::Agent { id } => format!("agent:{id}"),
        }
    }
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

    /// Admits one request of `principal`, or answers 429 with the wait in whole seconds.
    fn check(&self, principal: &Principal) -> Result<(), ApiError> {
        // Forget idle buckets now and then so the key map does not grow without bound
        // (agents come and go).
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(&principal.rate_key()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::TooManyRequests(secs.max(1)))
            }
        }
    }
}

/// Route layer: authenticates, enforces the route's role ([`super::access`]), rate limits,
/// and stores the [`Principal`] as an extension.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let access = match parts.extensions.get::<MatchedPath>() {
        Some(route) => access::required(&parts.method, route.as_str()),
        None => Access::Admin,
    };
    let principal = match authenticate(&state, &mut parts, access).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = authorize(access, &principal) {
        return e.into_response();
    }
    if let Some(limits) = &state.api.rate_limits
        && let Err(e) = limits.check(&principal)
    {
        return e.into_response();
    }
    parts.extensions.insert(principal);
    next.run(Request::from_parts(parts, body)).await
}

/// Who the caller is. An agent credential is looked up only on [`Access::Agent`] routes; a
/// presented token that matches nothing counts against the client address
/// ([`super::auth_failures`]), and an address over that limit is refused before the lookup.
async fn authenticate(state: &AppState, parts: &mut Parts, access: Access) -> Result<Principal, ApiError> {
    if state.api.keys.is_open() {
        return Ok(Principal::Key { name: ANONYMOUS.into(), admin: true });
    }
    let token = bearer_token(parts)?;
    if let Some(p) = state.api.keys.find(&token) {
        return Ok(p);
    }
    let failures = state.api.auth_failures.as_ref();
    let client = failures.map(|_| auth_failures::client_key(parts));
    if let (Some(f), Some(c)) = (failures, &client) {
        f.check(c)?;
    }
    if access == Access::Agent
        && let Some(agent_id) = agent_route_id(parts).await
        && agent_credential_matches(state, &agent_id, &token).await?
    {
        return Ok(Principal::Agent { id: agent_id });
    }
    if let (Some(f), Some(c)) = (failures, &client) {
        f.record(c)?;
    }
    Err(ApiError::Unauthorized("invalid API key or agent credential".into()))
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

/// The `{id}` of an [`Access::Agent`] route, whose credential the token may be.
async fn agent_route_id(parts: &mut Parts) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params.iter().find(|(k, _)| *k == "id").map(|(_, v)| v.to_string())
}

/// The agent-credential lookup: one primary-key read.
pub const AGENT_CREDENTIAL_SQL: &str = "SELECT credential_hash FROM agents WHERE id = $1";

/// `hex(sha256(token)) == agents.credential_hash`, compared in constant time.
async fn agent_credential_matches(state: &AppState, agent_id: &str, token: &str) -> Result<bool, ApiError> {
    let stored: Option<String> =
        sqlx::query_scalar(AGENT_CREDENTIAL_SQL).bind(agent_id).fetch_optional(&state.pool).await?;
    let Some(stored) = stored else { return Ok(false) };
    Ok(credential_matches(&stored, token))
}

/// Whether `token` hashes to `stored_hex` (lower- or upper-case hex), in constant time.
pub fn credential_matches(stored_hex: &str, token: &str) -> bool {
    let ours = credential_hash(token);
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
