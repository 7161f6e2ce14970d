//! Notifications: list, get, mark read, requeue (dead-letter recovery).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::extract::{NOTIFICATION_STATUSES, NotificationStatus, Page, Paged, require_one_of};
use crate::AppState;

const COLS: &str = "id, type, certificate_id, channel_id, channel, recipient, subject, message, status, retry_count, \
     next_retry_at, last_error, sent_at, created_at, updated_at";

/// A notification event.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Notification {
    /// Id.
    pub id: String,
    /// Event type, e.g. `expiration_warning`.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    /// Certificate concerned.
    pub certificate_id: Option<String>,
    /// Channel id (null once the channel is deleted).
    pub channel_id: Option<String>,
    /// webhook, email or log.
    pub channel: String,
    /// Recipient.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub message: String,
    /// pending, sent, failed, dead or read.
    pub status: String,
    /// Failed attempts.
    pub retry_count: i32,
    /// Next retry.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Last failure, in full.
    pub last_error: Option<String>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/v1/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
    /// pending, sent, failed, dead or read.
    #[param(value_type = Option<NotificationStatus>, inline)]
    pub status: Option<String>,
    /// Certificate id.
    pub certificate_id: Option<String>,
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &NotificationQuery) {
    for (col, val) in [("status", &q.status), ("certificate_id", &q.certificate_id)] {
        if let Some(v) = val {
            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
}

/// Lists notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(NotificationQuery),
    responses((status = 200, description = "a page of notifications", body = Paged<Notification>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> Result<ApiJson<Paged<Notification>>, ApiError> {
    let page = Page::from_query(q.page, q.per_page)?;
    if let Some(s) = &q.status {
        require_one_of("status", s, NOTIFICATION_STATUSES)?;
    }
    let mut count = QueryBuilder::new("SELECT count(*) FROM notification_events WHERE true");
    push_filters(&mut count, &q);
    let total: i64 = count.build_query_scalar().fetch_one(&state.pool).await?;
    let mut qb = QueryBuilder::new(format!("SELECT {COLS} FROM notification_events WHERE true"));
    push_filters(&mut qb, &q);
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.per_page)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<Notification>().fetch_all(&state.pool).await?;
    Ok(ApiJson(Paged::new(rows, total, page)))
}

/// Path of one notification.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NotificationPath {
    /// Notification id.
    pub id: String,
}

/// One notification.
#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "notifications", params(NotificationPath),
    responses((status = 200, description = "the notification", body = Notification), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<NotificationPath>,
) -> Result<ApiJson<Notification>, ApiError> {
    sqlx::query_as::<_, Notification>(sql!("SELECT {COLS} FROM notification_events WHERE id = $1"))
        .bind(&p.id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("notification", &p.id))
}

/// Marks a notification read.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", params(NotificationPath),
    responses((status = 200, description = "marked read", body = Notification), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn mark_read(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<NotificationPath>,
) -> Result<ApiJson<Notification>, ApiError> {
    sqlx::query_as::<_, Notification>(sql!(
        "UPDATE notification_events SET status = 'read', updated_at = now() WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(&p.id)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("notification", &p.id))
}

/// Answer of requeue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    /// Always `requeued`.
    pub status: String,
}

/// Puts a failed or dead notification back in the queue, atomically: status `pending`,
/// `retry_count` 0, `next_retry_at` and `last_error` cleared, in one UPDATE.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/requeue", tag = "notifications", params(NotificationPath),
    responses((status = 200, description = "requeued", body = Requeued), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "not failed or dead", body = ErrorBody)))]
pub async fn requeue(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<NotificationPath>,
) -> Result<ApiJson<Requeued>, ApiError> {
    let done: Option<String> = sqlx::query_scalar(
        "UPDATE notification_events
            SET status = 'pending', retry_count = 0, next_retry_at = NULL, last_error = NULL, updated_at = now()
          WHERE id = $1 AND status IN ('failed', 'dead')
          RETURNING id",
    )
    .bind(&p.id)
    .fetch_optional(&state.pool)
    .await?;
    if done.is_some() {
        return Ok(ApiJson(Requeued { status: "requeued".into() }));
    }
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM notification_events WHERE id = $1")
        .bind(&p.id)
        .fetch_optional(&state.pool)
        .await?;
    Err(match status {
        Some(s) => ApiError::Conflict(format!("only failed or dead notifications can be requeued (this one is {s})")),
        None => ApiError::not_found("notification", &p.id),
    })
}

/// The notification routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(mark_read))
        .routes(routes!(requeue))
}
