//! Certificate profiles: `/api/v1/profiles`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{IdPath, ListQuery, choose_id, delete_row, get_row, insert_error, list_rows, require_validity_days};
use crate::AppState;
use crate::http::audit::created;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::extract::{Paged, require_one_of, require_text};

const TABLE: &str = "certificate_profiles";
const COLS: &str = "id, name, description, issuer_id, allowed_key_algorithms, default_key_algorithm, validity_days, \
     extended_key_usages, max_sans, acme_enabled, acme_auth_mode, acme_owner_id, acme_team_id, acme_renewal_policy_id, \
     created_at, updated_at";

const AUTH_MODES: &[&str] = &["challenge", "trust_authenticated"];

/// A certificate profile.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Profile {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Issuer that signs under this profile.
    pub issuer_id: Option<String>,
    /// Key algorithms accepted.
    pub allowed_key_algorithms: Vec<String>,
    /// Key algorithm for server-side key generation.
    pub default_key_algorithm: String,
    /// Validity in days.
    pub validity_days: i32,
    /// Extended key usages.
    pub extended_key_usages: Vec<String>,
    /// Largest SAN count.
    pub max_sans: i32,
    /// Served over ACME.
    pub acme_enabled: bool,
    /// `challenge` or `trust_authenticated`.
    pub acme_auth_mode: String,
    /// Owner of ACME-issued certificates.
    pub acme_owner_id: Option<String>,
    /// Team of ACME-issued certificates.
    pub acme_team_id: Option<String>,
    /// Renewal policy of ACME-issued certificates.
    pub acme_renewal_policy_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Body of create: absent fields take the schema defaults.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    /// Optional client-chosen id (default `prof-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Key algorithms accepted.
    pub allowed_key_algorithms: Option<Vec<String>>,
    /// Default key algorithm.
    pub default_key_algorithm: Option<String>,
    /// Validity in days (1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    pub validity_days: Option<i32>,
    /// Extended key usages.
    pub extended_key_usages: Option<Vec<String>>,
    /// Largest SAN count (> 0).
    #[schema(minimum = 1)]
    pub max_sans: Option<i32>,
    /// Served over ACME.
    pub acme_enabled: Option<bool>,
    /// `challenge` or `trust_authenticated`.
    #[schema(pattern = "^(challenge|trust_authenticated)$")]
    pub acme_auth_mode: Option<String>,
    /// Owner of ACME-issued certificates.
    pub acme_owner_id: Option<String>,
    /// Team of ACME-issued certificates.
    pub acme_team_id: Option<String>,
    /// Renewal policy of ACME-issued certificates.
    pub acme_renewal_policy_id: Option<String>,
}

/// Body of update: absent fields stay unchanged; the id cannot be changed (an `id` field is an
/// unknown field, so a 400).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Key algorithms accepted.
    pub allowed_key_algorithms: Option<Vec<String>>,
    /// Default key algorithm.
    pub default_key_algorithm: Option<String>,
    /// Validity in days (1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    pub validity_days: Option<i32>,
    /// Extended key usages.
    pub extended_key_usages: Option<Vec<String>>,
    /// Largest SAN count (> 0).
    #[schema(minimum = 1)]
    pub max_sans: Option<i32>,
    /// Served over ACME.
    pub acme_enabled: Option<bool>,
    /// `challenge` or `trust_authenticated`.
    #[schema(pattern = "^(challenge|trust_authenticated)$")]
    pub acme_auth_mode: Option<String>,
    /// Owner of ACME-issued certificates.
    pub acme_owner_id: Option<String>,
    /// Team of ACME-issued certificates.
    pub acme_team_id: Option<String>,
    /// Renewal policy of ACME-issued certificates.
    pub acme_renewal_policy_id: Option<String>,
}

/// The checks create and update share.
fn validate(name: Option<&str>, acme_auth_mode: Option<&str>) -> Result<(), ApiError> {
    if let Some(n) = name {
        require_text("name", n)?;
    }
    if let Some(m) = acme_auth_mode {
        require_one_of("acme_auth_mode", m, AUTH_MODES)?;
    }
    Ok(())
}

/// Lists profiles.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", params(ListQuery),
    responses((status = 200, description = "a page of profiles", body = Paged<Profile>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Paged<Profile>>, ApiError> {
    list_rows(&state.pool, TABLE, COLS, &q).await.map(ApiJson)
}

/// Creates a profile.
#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", request_body = CreateProfile,
    responses((status = 201, description = "created", body = Profile), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 409, description = "duplicate name or id", body = ErrorBody), (status = 422, description = "unknown reference or validity_days out of range", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _c: Caller,
    ApiJson(b): ApiJson<CreateProfile>,
) -> Result<Response, ApiError> {
    validate(Some(&b.name), b.acme_auth_mode.as_deref())?;
    require_validity_days(b.validity_days)?;
    let name = b.name.clone();
    let id = choose_id("prof", &b.id)?;
    let row = sqlx::query_as::<_, Profile>(sql!(
        "INSERT INTO certificate_profiles (id, name, description, issuer_id, allowed_key_algorithms, default_key_algorithm,
                                           validity_days, extended_key_usages, max_sans, acme_enabled, acme_auth_mode,
                                           acme_owner_id, acme_team_id, acme_renewal_policy_id)
         VALUES ($1, $2, COALESCE($3, ''), $4, COALESCE($5, '{{ECDSA-P256,RSA-2048}}'::text[]), COALESCE($6, 'ECDSA-P256'),
                 COALESCE($7, 90), COALESCE($8, '{{serverAuth}}'::text[]), COALESCE($9, 100), COALESCE($10, false),
                 COALESCE($11, 'challenge'), $12, $13, $14)
         RETURNING {COLS}"
    ))
    .bind(&id)
    .bind(&name)
    .bind(&b.description)
    .bind(&b.issuer_id)
    .bind(&b.allowed_key_algorithms)
    .bind(&b.default_key_algorithm)
    .bind(b.validity_days)
    .bind(&b.extended_key_usages)
    .bind(b.max_sans)
    .bind(b.acme_enabled)
    .bind(&b.acme_auth_mode)
    .bind(&b.acme_owner_id)
    .bind(&b.acme_team_id)
    .bind(&b.acme_renewal_policy_id)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| insert_error("profile", &id, e))?;
    Ok(created(&id, row))
}

/// One profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles", params(IdPath),
    responses((status = 200, description = "the profile", body = Profile), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<ApiJson<Profile>, ApiError> {
    get_row(&state.pool, TABLE, COLS, "profile", &p.id).await.map(ApiJson)
}

/// Updates a profile.
#[utoipa::path(put, path = "/api/v1/profiles/{id}", tag = "profiles", params(IdPath), request_body = UpdateProfile,
    responses((status = 200, description = "updated", body = Profile), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody), (status = 409, description = "duplicate name", body = ErrorBody),
              (status = 422, description = "unknown reference or validity_days out of range", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
    ApiJson(b): ApiJson<UpdateProfile>,
) -> Result<ApiJson<Profile>, ApiError> {
    validate(b.name.as_deref(), b.acme_auth_mode.as_deref())?;
    require_validity_days(b.validity_days)?;
    sqlx::query_as::<_, Profile>(sql!(
        "UPDATE certificate_profiles SET name = COALESCE($2, name), description = COALESCE($3, description),
                issuer_id = COALESCE($4, issuer_id), allowed_key_algorithms = COALESCE($5, allowed_key_algorithms),
                default_key_algorithm = COALESCE($6, default_key_algorithm), validity_days = COALESCE($7, validity_days),
                extended_key_usages = COALESCE($8, extended_key_usages), max_sans = COALESCE($9, max_sans),
                acme_enabled = COALESCE($10, acme_enabled), acme_auth_mode = COALESCE($11, acme_auth_mode),
                acme_owner_id = COALESCE($12, acme_owner_id), acme_team_id = COALESCE($13, acme_team_id),
                acme_renewal_policy_id = COALESCE($14, acme_renewal_policy_id), updated_at = now()
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .bind(&b.name)
    .bind(&b.description)
    .bind(&b.issuer_id)
    .bind(&b.allowed_key_algorithms)
    .bind(&b.default_key_algorithm)
    .bind(b.validity_days)
    .bind(&b.extended_key_usages)
    .bind(b.max_sans)
    .bind(b.acme_enabled)
    .bind(&b.acme_auth_mode)
    .bind(&b.acme_owner_id)
    .bind(&b.acme_team_id)
    .bind(&b.acme_renewal_policy_id)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("profile", &p.id))
}

/// Deletes a profile (409 while certificates or ACME accounts reference it).
#[utoipa::path(delete, path = "/api/v1/profiles/{id}", tag = "profiles", params(IdPath),
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "still referenced", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    delete_row(&state.pool, TABLE, "profile", &p.id).await.map(|_| StatusCode::NO_CONTENT)
}

/// The profile routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}
