//! Prometheus metrics over HTTP: `/metrics` and `/api/v1/metrics/prometheus`, and the route
//! layer that times every request by matched route and status.
//!
//! Table gauges (certificates by status, agents, pending jobs, dead notifications) come from a
//! [`GaugeCache`] refreshed at most every [`GAUGE_TTL`]: a scrape every second from several
//! Prometheus servers costs at most one set of (indexed) count queries per TTL, not per scrape.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use crate::AppState;

/// How long a gauge snapshot is served before it is recomputed.
pub const GAUGE_TTL: Duration = Duration::from_secs(10);

/// Counts read from the tables.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct Gauges {
    /// All managed certificates.
    pub certificates_total: i64,
    /// Status `Active`.
    pub certificates_active: i64,
    /// Active or Expiring and expiring within 30 days.
    pub certificates_expiring_soon: i64,
    /// Status `Expired`.
    pub certificates_expired: i64,
    /// Status `Revoked`.
    pub certificates_revoked: i64,
    /// Agents not retired.
    pub agents_total: i64,
    /// Agents `Online` and not retired.
    pub agents_online: i64,
    /// Jobs `Pending`.
    pub jobs_pending: i64,
    /// Notifications `dead`.
    pub notifications_dead: i64,
}

/// The cached snapshot; a tokio mutex so concurrent scrapes wait for one refresh instead of
/// each running the queries.
#[derive(Debug, Default)]
pub struct GaugeCache {
    inner: tokio::sync::Mutex<Option<(Instant, Gauges)>>,
}

impl GaugeCache {
    /// The snapshot, recomputed when older than [`GAUGE_TTL`].
    pub async fn get(&self, pool: &sqlx::PgPool) -> Result<Gauges, sqlx::Error> {
        let mut guard = self.inner.lock().await;
        if let Some((at, g)) = *guard
            && at.elapsed() < GAUGE_TTL
        {
            return Ok(g);
        }
        let g = query_gauges(pool).await?;
        *guard = Some((Instant::now(), g));
        Ok(g)
    }
}

/// One round trip; the status counts use `idx_managed_certificates_status`,
/// `idx_agents_status_heartbeat`, `idx_jobs_status_scheduled_at` and
/// `idx_notification_events_status_created`.
async fn query_gauges(pool: &sqlx::PgPool) -> Result<Gauges, sqlx::Error> {
    sqlx::query_as::<_, Gauges>(
        "SELECT
            (SELECT count(*) FROM managed_certificates) AS certificates_total,
            (SELECT count(*) FROM managed_certificates WHERE status = 'Active') AS certificates_active,
            (SELECT count(*) FROM managed_certificates
              WHERE status IN ('Active', 'Expiring') AND expires_at < now() + interval '30 days') AS certificates_expiring_soon,
            (SELECT count(*) FROM managed_certificates WHERE status = 'Expired') AS certificates_expired,
            (SELECT count(*) FROM managed_certificates WHERE status = 'Revoked') AS certificates_revoked,
            (SELECT count(*) FROM agents WHERE retired_at IS NULL) AS agents_total,
            (SELECT count(*) FROM agents WHERE status = 'Online' AND retired_at IS NULL) AS agents_online,
            (SELECT count(*) FROM jobs WHERE status = 'Pending') AS jobs_pending,
            (SELECT count(*) FROM notification_events WHERE status = 'dead') AS notifications_dead",
    )
    .fetch_one(pool)
    .await
}

/// Route layer: records every matched request's duration by method, route and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // Clones without allocating: a standard method is a tag, a matched path an `Arc<str>`.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    state.metrics.record_http(method.as_str(), route, resp.status().as_u16(), started.elapsed());
    resp
}

async fn render(state: &AppState) -> Result<Response, ApiError> {
    let g = state.api.gauges.get(&state.pool).await?;
    let mut out = String::new();
    let gauges: [(&str, &str, i64); 9] = [
        ("certctl_certificate_total", "Managed certificates.", g.certificates_total),
        ("certctl_certificate_active", "Certificates in status Active.", g.certificates_active),
        (
            "certctl_certificate_expiring_soon",
            "Active or Expiring certificates expiring within 30 days.",
            g.certificates_expiring_soon,
        ),
        ("certctl_certificate_expired", "Certificates in status Expired.", g.certificates_expired),
        ("certctl_certificate_revoked", "Certificates in status Revoked.", g.certificates_revoked),
        ("certctl_agent_total", "Registered agents (not retired).", g.agents_total),
        ("certctl_agent_online", "Agents online.", g.agents_online),
        ("certctl_job_pending", "Jobs waiting to run.", g.jobs_pending),
        ("certctl_notification_dead_total", "Notifications that exhausted their retries.", g.notifications_dead),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    out.push_str(&state.metrics.render());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

/// Prometheus text (unauthenticated when `CERTCTL_METRICS_PUBLIC=true`).
#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    render(&state).await
}

/// The same text at the reference's compatibility path.
#[utoipa::path(get, path = "/api/v1/metrics/prometheus", tag = "metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    render(&state).await
}

/// The metrics routes (the caller decides whether they sit behind authentication).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics)).routes(routes!(prometheus))
}
