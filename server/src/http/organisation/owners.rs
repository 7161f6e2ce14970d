//! Owners: `/api/v1/owners`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{IdPath, ListQuery, choose_id, delete_row, get_row, insert_error, list_rows};
use crate::AppState;
use crate::http::audit::created;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::http::extract::{Paged, require_text};

const TABLE: &str = "owners";
const COLS: &str = "id, name, email, team_id, created_at, updated_at";

/// An owner.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Owner {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Team.
    pub team_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Body of create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOwner {
    /// Optional client-chosen id (default `o-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Team.
    pub team_id: Option<String>,
}

/// Body of update (absent = unchanged).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOwner {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Team.
    pub team_id: Option<String>,
}

/// Lists owners.
#[utoipa::path(get, path = "/api/v1/owners", tag = "owners", params(ListQuery),
    responses((status = 200, description = "a page of owners", body = Paged<Owner>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Paged<Owner>>, ApiError> {
    list_rows(&state.pool, TABLE, COLS, &q).await.map(ApiJson)
}

/// Creates an owner.
#[utoipa::path(post, path = "/api/v1/owners", tag = "owners", request_body = CreateOwner,
    responses((status = 201, description = "created", body = Owner), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 409, description = "duplicate name or id", body = ErrorBody), (status = 422, description = "unknown team", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _c: Caller,
    ApiJson(b): ApiJson<CreateOwner>,
) -> Result<Response, ApiError> {
    require_text("name", &b.name)?;
    let id = choose_id("o", &b.id)?;
    let row = sqlx::query_as::<_, Owner>(sql!(
        "INSERT INTO owners (id, name, email, team_id) VALUES ($1, $2, COALESCE($3, ''), $4) RETURNING {COLS}"
    ))
    .bind(&id)
    .bind(&b.name)
    .bind(&b.email)
    .bind(&b.team_id)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| insert_error("owner", &id, e))?;
    Ok(created(&id, row))
}

/// One owner.
#[utoipa::path(get, path = "/api/v1/owners/{id}", tag = "owners", params(IdPath),
    responses((status = 200, description = "the owner", body = Owner), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<ApiJson<Owner>, ApiError> {
    get_row(&state.pool, TABLE, COLS, "owner", &p.id).await.map(ApiJson)
}

/// Updates an owner.
#[utoipa::path(put, path = "/api/v1/owners/{id}", tag = "owners", params(IdPath), request_body = UpdateOwner,
    responses((status = 200, description = "updated", body = Owner), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "duplicate name", body = ErrorBody), (status = 422, description = "unknown team", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
    ApiJson(b): ApiJson<UpdateOwner>,
) -> Result<ApiJson<Owner>, ApiError> {
    if let Some(n) = &b.name {
        require_text("name", n)?;
    }
    sqlx::query_as::<_, Owner>(sql!(
        "UPDATE owners SET name = COALESCE($2, name), email = COALESCE($3, email), team_id = COALESCE($4, team_id),
                updated_at = now()
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .bind(&b.name)
    .bind(&b.email)
    .bind(&b.team_id)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("owner", &p.id))
}

/// Deletes an owner (409 while certificates or profiles reference it).
#[utoipa::path(delete, path = "/api/v1/owners/{id}", tag = "owners", params(IdPath),
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "still referenced", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    delete_row(&state.pool, TABLE, "owner", &p.id).await.map(|_| StatusCode::NO_CONTENT)
}

/// The owner routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}
