//! `GET /api/v1/stats/summary`: live counts for dashboards (indexed GROUP BYs, one round trip).

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::AppState;

/// The summary.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    /// All managed certificates.
    pub total_certificates: i64,
    /// Certificate count per status (every status present, zero included).
    pub certificates_by_status: BTreeMap<String, i64>,
    /// Certificates Active/Expiring that expire within 30 days.
    pub expiring_soon: i64,
    /// Agents not retired.
    pub total_agents: i64,
    /// Agents online.
    pub agents_online: i64,
    /// Jobs waiting to run.
    pub jobs_pending: i64,
    /// Jobs that failed.
    pub jobs_failed: i64,
    /// Notifications that exhausted their retries.
    pub notifications_dead: i64,
}

#[derive(sqlx::FromRow)]
struct Counts {
    by_status: sqlx::types::Json<BTreeMap<String, i64>>,
    expiring_soon: i64,
    total_agents: i64,
    agents_online: i64,
    jobs_pending: i64,
    jobs_failed: i64,
    notifications_dead: i64,
}

/// Counts by certificate status, agents online, jobs pending, dead notifications.
#[utoipa::path(get, path = "/api/v1/stats/summary", tag = "stats",
    responses((status = 200, description = "the summary", body = Summary)))]
pub async fn summary(State(state): State<AppState>, _caller: Caller) -> Result<ApiJson<Summary>, ApiError> {
    let c = sqlx::query_as::<_, Counts>(
        "SELECT
            (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
               FROM (SELECT status, count(*) AS n FROM managed_certificates GROUP BY status) s) AS by_status,
            (SELECT count(*) FROM managed_certificates
              WHERE status IN ('Active', 'Expiring') AND expires_at < now() + interval '30 days') AS expiring_soon,
            (SELECT count(*) FROM agents WHERE retired_at IS NULL) AS total_agents,
            (SELECT count(*) FROM agents WHERE status = 'Online' AND retired_at IS NULL) AS agents_online,
            (SELECT count(*) FROM jobs WHERE status = 'Pending') AS jobs_pending,
            (SELECT count(*) FROM jobs WHERE status = 'Failed') AS jobs_failed,
            (SELECT count(*) FROM notification_events WHERE status = 'dead') AS notifications_dead",
    )
    .fetch_one(&state.pool)
    .await?;
    let mut by_status: BTreeMap<String, i64> =
        super::extract::CERTIFICATE_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    by_status.extend(c.by_status.0);
    Ok(ApiJson(Summary {
        total_certificates: by_status.values().sum(),
        certificates_by_status: by_status,
        expiring_soon: c.expiring_soon,
        total_agents: c.total_agents,
        agents_online: c.agents_online,
        jobs_pending: c.jobs_pending,
        jobs_failed: c.jobs_failed,
        notifications_dead: c.notifications_dead,
    }))
}

/// The stats routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(summary))
}
