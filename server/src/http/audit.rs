//! The audit trail over HTTP: the middleware that records every mutating call, and
//! `GET /api/v1/audit`, `GET /api/v1/audit/{id}`.
//!
//! The middleware runs inside authentication, so it knows the actor. The action and resource
//! are derived from the matched route (`POST /api/v1/certificates/{id}/renew` →
//! `certificates.renew` on `certificates/<id>`); a create handler names the id it made with an
//! [`AuditResource`] response extension. Rows are handed to [`crate::audit::AuditSink`], which
//! writes them in batches off the request path.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Principal};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::extract::{Page, Paged};
use super::request_id::RequestId;
use crate::AppState;
use crate::audit::AuditEvent;

/// Response extension: the id of the resource a handler created (for the audit row).
#[derive(Debug, Clone)]
pub struct AuditResource(pub String);

/// Response extension: the call changed nothing the audit trail records, so no row is written.
/// Only a heartbeat that refreshed liveness (and reported the inventory it already had) sets it:
/// liveness is kept in `agents.last_heartbeat_at`, and a row per heartbeat would make the audit
/// trail mostly noise (what it is for: `docs/operator/audit.md`).
#[derive(Debug, Clone, Copy)]
pub struct NotAudited;

/// Route layer: records one audit row per mutating call that passed authentication (the actor
/// comes from the request, or — on a self-verifying route, where the handler authenticated the
/// caller — from the response), unless the handler marked the answer [`NotAudited`].
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let principal = req.extensions().get::<Principal>().cloned();
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let path_id = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(params) => params.iter().find(|(k, _)| *k == "id").map(|(_, v)| v.to_string()),
        Err(_) => None,
    };
    let created_at = Utc::now();
    let resp = next.run(Request::from_parts(parts, body)).await;
    if resp.extensions().get::<NotAudited>().is_some() {
        return resp;
    }
    let Some(principal) = principal.or_else(|| resp.extensions().get::<Principal>().cloned()) else { return resp };
    let (resource_type, action) = describe(&method, &route);
    let resource_id = resp.extensions().get::<AuditResource>().map(|r| r.0.clone()).or(path_id).unwrap_or_default();
    state
        .audit
        .record(AuditEvent {
            actor: principal.actor(),
            actor_type: principal.actor_type().to_string(),
            action,
            resource_type,
            resource_id,
            details: serde_json::json!({
                "method": method.as_str(),
                "route": route,
                "status": resp.status().as_u16(),
            }),
            request_id,
            created_at,
        })
        .await;
    resp
}

/// `(resource_type, action)` of a mutating route.
fn describe(method: &Method, route: &str) -> (String, String) {
    let rest = route.strip_prefix("/api/v1/").unwrap_or(route);
    let mut words = rest.split('/').filter(|s| !s.is_empty() && !s.starts_with('{'));
    let resource = words.next().unwrap_or("unknown").to_string();
    let verbs: Vec<&str> = words.collect();
    let action = if verbs.is_empty() {
        let verb = match *method {
            Method::POST => "create",
            Method::PUT | Method::PATCH => "update",
            Method::DELETE => "delete",
            _ => "call",
        };
        format!("{resource}.{verb}")
    } else {
        format!("{resource}.{}", verbs.join("."))
    };
    (resource, action)
}

/// One audit row.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct AuditRow {
    /// Row id.
    pub id: String,
    /// Key name, `agent:<id>` or `anonymous`.
    pub actor: String,
    /// `api_key`, `agent` or `anonymous`.
    pub actor_type: String,
    /// e.g. `certificates.create`.
    pub action: String,
    /// e.g. `certificates`.
    pub resource_type: String,
    /// The id acted on.
    pub resource_id: String,
    /// Method, route, status.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// The request's id.
    pub request_id: String,
    /// When the call happened.
    pub created_at: DateTime<Utc>,
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact resource type.
    pub resource_type: Option<String>,
    /// Exact resource id.
    pub resource_id: Option<String>,
}

const AUDIT_COLS: &str = "id, actor, actor_type, action, resource_type, resource_id, details, request_id, created_at";

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &AuditQuery) {
    for (col, val) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("resource_type", &q.resource_type),
        ("resource_id", &q.resource_id),
    ] {
        if let Some(v) = val {
            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
}

/// Lists audit rows, newest first; `total` is the real count under the filters.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "a page of audit rows", body = Paged<AuditRow>),
              (status = 400, description = "bad query", body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<ApiJson<Paged<AuditRow>>, ApiError> {
    let page = Page::from_query(q.page, q.per_page)?;
    let mut count = QueryBuilder::new("SELECT count(*) FROM audit_events WHERE true");
    push_filters(&mut count, &q);
    let total: i64 = count.build_query_scalar().fetch_one(&state.pool).await?;
    let mut qb = QueryBuilder::new(format!("SELECT {AUDIT_COLS} FROM audit_events WHERE true"));
    push_filters(&mut qb, &q);
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.per_page)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<AuditRow>().fetch_all(&state.pool).await?;
    Ok(ApiJson(Paged::new(rows, total, page)))
}

/// One audit row.
#[utoipa::path(get, path = "/api/v1/audit/{id}", tag = "audit", params(("id" = String, Path, description = "audit row id")),
    responses((status = 200, description = "the row", body = AuditRow), (status = 404, description = "no such row", body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<AuditRow>, ApiError> {
    sqlx::query_as::<_, AuditRow>(sql!("SELECT {AUDIT_COLS} FROM audit_events WHERE id = $1"))
        .bind(&id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("audit event", &id))
}

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(get_one))
}

/// A `201 Created` JSON answer that also names the new id for the audit row.
pub fn created<T: Serialize>(id: &str, body: T) -> Response {
    use axum::response::IntoResponse;
    let mut resp = (axum::http::StatusCode::CREATED, axum::Json(body)).into_response();
    resp.extensions_mut().insert(AuditResource(id.to_string()));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_actions() {
        assert_eq!(
            describe(&Method::POST, "/api/v1/certificates"),
            ("certificates".into(), "certificates.create".into())
        );
        assert_eq!(describe(&Method::POST, "/api/v1/certificates/{id}/renew").1, "certificates.renew");
        assert_eq!(describe(&Method::DELETE, "/api/v1/agents/{id}").1, "agents.delete");
        assert_eq!(describe(&Method::POST, "/api/v1/agents/{id}/jobs/{job_id}/status").1, "agents.jobs.status");
    }
}
