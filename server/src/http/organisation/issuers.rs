//! Issuers: `/api/v1/issuers`. Creating, changing and deleting an issuer is admin-only: an
//! issuer decides who signs the fleet's certificates.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{IdPath, ListQuery, choose_id, delete_row, get_row, insert_error, list_rows, require_validity_days};
use crate::AppState;
use crate::http::audit::created;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::extract::{Paged, require_text};

const TABLE: &str = "issuers";
const COLS: &str = "id, name, type, config, enabled, validity_days, created_at, updated_at";

/// An issuer.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Issuer {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Type, e.g. `GenericCA` (the local CA).
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub issuer_type: String,
    /// Type-specific settings.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Whether it issues.
    pub enabled: bool,
    /// Default validity in days.
    pub validity_days: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Body of create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIssuer {
    /// Optional client-chosen id (default `iss-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Type, e.g. `GenericCA`.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub issuer_type: String,
    /// Type-specific settings (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Whether it issues (default true).
    pub enabled: Option<bool>,
    /// Default validity in days (default 90, 1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    pub validity_days: Option<i32>,
}

/// Body of update (absent = unchanged).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIssuer {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Type-specific settings (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Whether it issues.
    pub enabled: Option<bool>,
    /// Default validity in days (1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    pub validity_days: Option<i32>,
}

fn check_config(config: &Option<Value>) -> Result<(), ApiError> {
    match config {
        Some(c) if !c.is_object() => Err(ApiError::BadRequest("config must be a JSON object".into())),
        _ => Ok(()),
    }
}

/// Lists issuers.
#[utoipa::path(get, path = "/api/v1/issuers", tag = "issuers", params(ListQuery),
    responses((status = 200, description = "a page of issuers", body = Paged<Issuer>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Paged<Issuer>>, ApiError> {
    list_rows(&state.pool, TABLE, COLS, &q).await.map(ApiJson)
}

/// Creates an issuer (admin).
#[utoipa::path(post, path = "/api/v1/issuers", tag = "issuers", request_body = CreateIssuer,
    responses((status = 201, description = "created", body = Issuer), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 403, description = "not an admin key", body = ErrorBody), (status = 409, description = "duplicate name or id", body = ErrorBody),
              (status = 422, description = "validity_days out of range", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _c: Caller,
    ApiJson(b): ApiJson<CreateIssuer>,
) -> Result<Response, ApiError> {
    require_text("name", &b.name)?;
    require_text("type", &b.issuer_type)?;
    require_validity_days(b.validity_days)?;
    check_config(&b.config)?;
    let id = choose_id("iss", &b.id)?;
    let row = sqlx::query_as::<_, Issuer>(sql!(
        "INSERT INTO issuers (id, name, type, config, enabled, validity_days)
         VALUES ($1, $2, $3, COALESCE($4, '{{}}'::jsonb), COALESCE($5, true), COALESCE($6, 90))
         RETURNING {COLS}"
    ))
    .bind(&id)
    .bind(&b.name)
    .bind(&b.issuer_type)
    .bind(&b.config)
    .bind(b.enabled)
    .bind(b.validity_days)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| insert_error("issuer", &id, e))?;
    Ok(created(&id, row))
}

/// One issuer.
#[utoipa::path(get, path = "/api/v1/issuers/{id}", tag = "issuers", params(IdPath),
    responses((status = 200, description = "the issuer", body = Issuer), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<ApiJson<Issuer>, ApiError> {
    get_row(&state.pool, TABLE, COLS, "issuer", &p.id).await.map(ApiJson)
}

/// Updates an issuer (admin).
#[utoipa::path(put, path = "/api/v1/issuers/{id}", tag = "issuers", params(IdPath), request_body = UpdateIssuer,
    responses((status = 200, description = "updated", body = Issuer), (status = 403, description = "not an admin key", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody), (status = 409, description = "duplicate name", body = ErrorBody),
              (status = 422, description = "validity_days out of range", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
    ApiJson(b): ApiJson<UpdateIssuer>,
) -> Result<ApiJson<Issuer>, ApiError> {
    if let Some(n) = &b.name {
        require_text("name", n)?;
    }
    require_validity_days(b.validity_days)?;
    check_config(&b.config)?;
    sqlx::query_as::<_, Issuer>(sql!(
        "UPDATE issuers SET name = COALESCE($2, name), config = COALESCE($3, config), enabled = COALESCE($4, enabled),
                validity_days = COALESCE($5, validity_days), updated_at = now()
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .bind(&b.name)
    .bind(&b.config)
    .bind(b.enabled)
    .bind(b.validity_days)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("issuer", &p.id))
}

/// Deletes an issuer (admin; 409 while certificates, profiles or versions reference it).
#[utoipa::path(delete, path = "/api/v1/issuers/{id}", tag = "issuers", params(IdPath),
    responses((status = 204, description = "deleted"), (status = 403, description = "not an admin key", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody), (status = 409, description = "still referenced", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    delete_row(&state.pool, TABLE, "issuer", &p.id).await.map(|_| StatusCode::NO_CONTENT)
}

/// The issuer routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}
