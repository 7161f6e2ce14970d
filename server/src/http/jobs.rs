//! Jobs: `GET /api/v1/jobs`, `GET /api/v1/jobs/{id}`, `POST /api/v1/jobs/{id}/cancel`.
//!
//! Jobs are created by renew / bulk-renew (and the scheduler) and run by the job processor or
//! an agent; the API only reads and cancels them.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::certificates::OPEN_JOB_STATUSES_SQL;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::extract::{JOB_STATUSES, JOB_TYPES, JobStatus, JobType, Page, Paged, require_one_of};
use crate::AppState;

/// Columns of a job as the API shows it.
pub const JOB_COLS: &str = "id, type, certificate_id, agent_id, status, attempts, max_attempts, last_error, scheduled_at, \
     started_at, completed_at, claimed_by, created_at, updated_at";

/// A job.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Issuance, Renewal or Deployment.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub job_type: String,
    /// The certificate it works on.
    pub certificate_id: String,
    /// The agent it is assigned to.
    pub agent_id: Option<String>,
    /// Pending, AwaitingCSR, AwaitingApproval, Running, Completed, Failed or Cancelled.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Last failure.
    pub last_error: Option<String>,
    /// Not before.
    pub scheduled_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Replica or agent that claimed it.
    pub claimed_by: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
    /// Exact status.
    #[param(value_type = Option<JobStatus>, inline)]
    pub status: Option<String>,
    /// Exact type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<JobType>, inline)]
    pub job_type: Option<String>,
    /// Certificate id.
    pub certificate_id: Option<String>,
    /// Agent id.
    pub agent_id: Option<String>,
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &JobQuery) {
    for (col, val) in
        [("status", &q.status), ("type", &q.job_type), ("certificate_id", &q.certificate_id), ("agent_id", &q.agent_id)]
    {
        if let Some(v) = val {
            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
}

/// Lists jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, description = "a page of jobs", body = Paged<Job>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<ApiJson<Paged<Job>>, ApiError> {
    let page = Page::from_query(q.page, q.per_page)?;
    if let Some(s) = &q.status {
        require_one_of("status", s, JOB_STATUSES)?;
    }
    if let Some(t) = &q.job_type {
        require_one_of("type", t, JOB_TYPES)?;
    }
    let mut count = QueryBuilder::new("SELECT count(*) FROM jobs WHERE true");
    push_filters(&mut count, &q);
    let total: i64 = count.build_query_scalar().fetch_one(&state.pool).await?;
    let mut qb = QueryBuilder::new(format!("SELECT {JOB_COLS} FROM jobs WHERE true"));
    push_filters(&mut qb, &q);
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.per_page)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<Job>().fetch_all(&state.pool).await?;
    Ok(ApiJson(Paged::new(rows, total, page)))
}

/// Path of one job.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// Job id.
    pub id: String,
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(JobPath),
    responses((status = 200, description = "the job", body = Job), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<JobPath>,
) -> Result<ApiJson<Job>, ApiError> {
    sqlx::query_as::<_, Job>(sql!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
        .bind(&p.id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("job", &p.id))
}

/// Cancels an open job. A cancelled renewal puts its certificate back to the status its
/// expiry implies, so a later renew does not need `force`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(JobPath),
    responses((status = 200, description = "cancelled", body = Job), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "already finished", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(p): ApiPath<JobPath>,
) -> Result<ApiJson<Job>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let job = sqlx::query_as::<_, Job>(sql!(
        "UPDATE jobs SET status = 'Cancelled', completed_at = now(), updated_at = now(),
                last_error = COALESCE(last_error, 'cancelled by ' || $2)
          WHERE id = $1 AND status IN {OPEN_JOB_STATUSES_SQL}
          RETURNING {JOB_COLS}"
    ))
    .bind(&p.id)
    .bind(caller.actor())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job) = job else {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1").bind(&p.id).fetch_optional(&mut *tx).await?;
        return Err(match status {
            Some(s) => ApiError::Conflict(format!("job is already {s}")),
            None => ApiError::not_found("job", &p.id),
        });
    };
    if job.job_type != "Deployment" {
        sqlx::query(
            "UPDATE managed_certificates
                SET status = CASE WHEN expires_at IS NULL THEN 'Pending'
                                  WHEN expires_at <= now() THEN 'Expired' ELSE 'Active' END,
                    updated_at = now()
              WHERE id = $1 AND status = 'RenewalInProgress'",
        )
        .bind(&job.certificate_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(ApiJson(job))
}

/// The job routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get_one)).routes(routes!(cancel))
}
