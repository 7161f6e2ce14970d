//! Teams: `/api/v1/teams`.

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

const TABLE: &str = "teams";
const COLS: &str = "id, name, description, created_at, updated_at";

/// A team.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Team {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Body of create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Optional client-chosen id (default `t-<uuid>`).
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
}

/// Body of update (absent = unchanged).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// Lists teams.
#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", params(ListQuery),
    responses((status = 200, description = "a page of teams", body = Paged<Team>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Paged<Team>>, ApiError> {
    list_rows(&state.pool, TABLE, COLS, &q).await.map(ApiJson)
}

/// Creates a team.
#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = CreateTeam,
    responses((status = 201, description = "created", body = Team), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 409, description = "duplicate name or id", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _c: Caller,
    ApiJson(b): ApiJson<CreateTeam>,
) -> Result<Response, ApiError> {
    require_text("name", &b.name)?;
    let id = choose_id("t", &b.id)?;
    let row = sqlx::query_as::<_, Team>(sql!(
        "INSERT INTO teams (id, name, description) VALUES ($1, $2, COALESCE($3, '')) RETURNING {COLS}"
    ))
    .bind(&id)
    .bind(&b.name)
    .bind(&b.description)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| insert_error("team", &id, e))?;
    Ok(created(&id, row))
}

/// One team.
#[utoipa::path(get, path = "/api/v1/teams/{id}", tag = "teams", params(IdPath),
    responses((status = 200, description = "the team", body = Team), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<ApiJson<Team>, ApiError> {
    get_row(&state.pool, TABLE, COLS, "team", &p.id).await.map(ApiJson)
}

/// Updates a team.
#[utoipa::path(put, path = "/api/v1/teams/{id}", tag = "teams", params(IdPath), request_body = UpdateTeam,
    responses((status = 200, description = "updated", body = Team), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "duplicate name", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
    ApiJson(b): ApiJson<UpdateTeam>,
) -> Result<ApiJson<Team>, ApiError> {
    if let Some(n) = &b.name {
        require_text("name", n)?;
    }
    sqlx::query_as::<_, Team>(sql!(
        "UPDATE teams SET name = COALESCE($2, name), description = COALESCE($3, description), updated_at = now()
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .bind(&b.name)
    .bind(&b.description)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("team", &p.id))
}

/// Deletes a team (409 while owners or certificates reference it).
#[utoipa::path(delete, path = "/api/v1/teams/{id}", tag = "teams", params(IdPath),
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "still referenced", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    delete_row(&state.pool, TABLE, "team", &p.id).await.map(|_| StatusCode::NO_CONTENT)
}

/// The team routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}
