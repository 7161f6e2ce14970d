//! Renewal policies: `/api/v1/renewal-policies`.

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

const TABLE: &str = "renewal_policies";
const COLS: &str = "id, name, renewal_window_days, auto_renew, max_retries, retry_interval_seconds, alert_thresholds_days, \
     created_at, updated_at";

/// A renewal policy.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct RenewalPolicy {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Renewal starts this many days before expiry.
    pub renewal_window_days: i32,
    /// Renew automatically.
    pub auto_renew: bool,
    /// Retries of a failed renewal.
    pub max_retries: i32,
    /// Seconds between retries.
    pub retry_interval_seconds: i32,
    /// Days before expiry at which to alert.
    pub alert_thresholds_days: Vec<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Body of create (absent fields take the schema defaults: 30 days, auto, 3 retries, 1 h,
/// alerts at 30/14/7/0 days).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// Optional client-chosen id (default `rp-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Renewal window in days (>= 0).
    #[schema(minimum = 0)]
    pub renewal_window_days: Option<i32>,
    /// Renew automatically.
    pub auto_renew: Option<bool>,
    /// Retries (>= 0).
    #[schema(minimum = 0)]
    pub max_retries: Option<i32>,
    /// Seconds between retries (>= 0).
    #[schema(minimum = 0)]
    pub retry_interval_seconds: Option<i32>,
    /// Alert thresholds in days.
    pub alert_thresholds_days: Option<Vec<i32>>,
}

/// Body of update (absent = unchanged).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Renewal window in days (>= 0).
    #[schema(minimum = 0)]
    pub renewal_window_days: Option<i32>,
    /// Renew automatically.
    pub auto_renew: Option<bool>,
    /// Retries (>= 0).
    #[schema(minimum = 0)]
    pub max_retries: Option<i32>,
    /// Seconds between retries (>= 0).
    #[schema(minimum = 0)]
    pub retry_interval_seconds: Option<i32>,
    /// Alert thresholds in days.
    pub alert_thresholds_days: Option<Vec<i32>>,
}

/// Lists renewal policies.
#[utoipa::path(get, path = "/api/v1/renewal-policies", tag = "renewal-policies", params(ListQuery),
    responses((status = 200, description = "a page of policies", body = Paged<RenewalPolicy>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Paged<RenewalPolicy>>, ApiError> {
    list_rows(&state.pool, TABLE, COLS, &q).await.map(ApiJson)
}

/// Creates a renewal policy (negative numbers → 422 by the table's CHECKs).
#[utoipa::path(post, path = "/api/v1/renewal-policies", tag = "renewal-policies", request_body = CreatePolicy,
    responses((status = 201, description = "created", body = RenewalPolicy), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 409, description = "duplicate name or id", body = ErrorBody), (status = 422, description = "value out of range", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _c: Caller,
    ApiJson(b): ApiJson<CreatePolicy>,
) -> Result<Response, ApiError> {
    require_text("name", &b.name)?;
    let id = choose_id("rp", &b.id)?;
    let row = sqlx::query_as::<_, RenewalPolicy>(sql!(
        "INSERT INTO renewal_policies (id, name, renewal_window_days, auto_renew, max_retries, retry_interval_seconds,
                                       alert_thresholds_days)
         VALUES ($1, $2, COALESCE($3, 30), COALESCE($4, true), COALESCE($5, 3), COALESCE($6, 3600),
                 COALESCE($7, '{{30,14,7,0}}'::int[]))
         RETURNING {COLS}"
    ))
    .bind(&id)
    .bind(&b.name)
    .bind(b.renewal_window_days)
    .bind(b.auto_renew)
    .bind(b.max_retries)
    .bind(b.retry_interval_seconds)
    .bind(&b.alert_thresholds_days)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| insert_error("renewal policy", &id, e))?;
    Ok(created(&id, row))
}

/// One renewal policy.
#[utoipa::path(get, path = "/api/v1/renewal-policies/{id}", tag = "renewal-policies", params(IdPath),
    responses((status = 200, description = "the policy", body = RenewalPolicy), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<ApiJson<RenewalPolicy>, ApiError> {
    get_row(&state.pool, TABLE, COLS, "renewal policy", &p.id).await.map(ApiJson)
}

/// Updates a renewal policy.
#[utoipa::path(put, path = "/api/v1/renewal-policies/{id}", tag = "renewal-policies", params(IdPath), request_body = UpdatePolicy,
    responses((status = 200, description = "updated", body = RenewalPolicy), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "duplicate name", body = ErrorBody), (status = 422, description = "value out of range", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
    ApiJson(b): ApiJson<UpdatePolicy>,
) -> Result<ApiJson<RenewalPolicy>, ApiError> {
    if let Some(n) = &b.name {
        require_text("name", n)?;
    }
    sqlx::query_as::<_, RenewalPolicy>(sql!(
        "UPDATE renewal_policies SET name = COALESCE($2, name),
                renewal_window_days = COALESCE($3, renewal_window_days), auto_renew = COALESCE($4, auto_renew),
                max_retries = COALESCE($5, max_retries), retry_interval_seconds = COALESCE($6, retry_interval_seconds),
                alert_thresholds_days = COALESCE($7, alert_thresholds_days), updated_at = now()
          WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .bind(&b.name)
    .bind(b.renewal_window_days)
    .bind(b.auto_renew)
    .bind(b.max_retries)
    .bind(b.retry_interval_seconds)
    .bind(&b.alert_thresholds_days)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("renewal policy", &p.id))
}

/// Deletes a renewal policy (409 while certificates or profiles reference it).
#[utoipa::path(delete, path = "/api/v1/renewal-policies/{id}", tag = "renewal-policies", params(IdPath),
    responses((status = 204, description = "deleted"), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "still referenced", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _c: Caller,
    ApiPath(p): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    delete_row(&state.pool, TABLE, "renewal policy", &p.id).await.map(|_| StatusCode::NO_CONTENT)
}

/// The renewal-policy routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}
