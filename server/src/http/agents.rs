//! Agents: registration, listing, retirement, and the agent-facing endpoints (heartbeat, work
//! poll, CSR submission, job status).
//!
//! Registration returns the agent's credential exactly once; only `hex(sha256(credential))` is
//! stored (see [`super::auth`]). The agent-facing endpoints accept that credential for the
//! agent's own id only, or an admin key.
//!
//! The heartbeat is the hottest route (a fleet of N agents sends N/30 per second): it is one
//! UPDATE by primary key that also verifies the agent's credential (the auth layer hands it over
//! as an [`AgentClaim`] instead of looking it up first); the 401/404/410 distinction is only
//! looked up when that UPDATE touched nothing. A heartbeat leaves an audit row only when the
//! inventory it reports changed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::{NotAudited, created};
use super::auth::{AgentAuth, AgentClaim, Caller, Principal, credential_hash};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::extract::{
    AGENT_STATUSES, AgentStatus, JOB_STATUSES, JobStatus, OptionalJson, Page, Paged, new_id, require_id,
    require_one_of, require_text,
};
use super::jobs::{JOB_COLS, Job};
use crate::AppState;

const AGENT_COLS: &str = "id, name, hostname, status, os, architecture, ip_address, version, last_heartbeat_at, \
     registered_at, retired_at, retired_reason, created_at, updated_at";

/// Jobs handed out per work poll and branch.
const WORK_BATCH: i64 = 50;

/// An agent (its credential hash is never shown).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Agent {
    /// Id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Host name.
    pub hostname: String,
    /// Online, Offline or Degraded.
    pub status: String,
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub architecture: String,
    /// Address.
    pub ip_address: String,
    /// Agent version.
    pub version: String,
    /// Last heartbeat.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Registered.
    pub registered_at: DateTime<Utc>,
    /// Retired (heartbeats then answer 410).
    pub retired_at: Option<DateTime<Utc>>,
    /// Why it was retired.
    pub retired_reason: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/v1/agents`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
    /// Online, Offline or Degraded.
    #[param(value_type = Option<AgentStatus>, inline)]
    pub status: Option<String>,
    /// `true`: only retired agents; `false`: only active ones; absent: all.
    pub retired: Option<bool>,
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &AgentQuery) {
    if let Some(s) = &q.status {
        qb.push(" AND status = ").push_bind(s.clone());
    }
    match q.retired {
        Some(true) => qb.push(" AND retired_at IS NOT NULL"),
        Some(false) => qb.push(" AND retired_at IS NULL"),
        None => qb,
    };
}

/// Lists agents in registration order (paginated in SQL).
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(AgentQuery),
    responses((status = 200, description = "a page of agents", body = Paged<Agent>), (status = 400, description = "bad query", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<AgentQuery>,
) -> Result<ApiJson<Paged<Agent>>, ApiError> {
    let page = Page::from_query(q.page, q.per_page)?;
    if let Some(s) = &q.status {
        require_one_of("status", s, AGENT_STATUSES)?;
    }
    let mut count = QueryBuilder::new("SELECT count(*) FROM agents WHERE true");
    push_filters(&mut count, &q);
    let total: i64 = count.build_query_scalar().fetch_one(&state.pool).await?;
    let mut qb = QueryBuilder::new(format!("SELECT {AGENT_COLS} FROM agents WHERE true"));
    push_filters(&mut qb, &q);
    qb.push(" ORDER BY created_at ASC, id ASC LIMIT ")
        .push_bind(page.per_page)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows = qb.build_query_as::<Agent>().fetch_all(&state.pool).await?;
    Ok(ApiJson(Paged::new(rows, total, page)))
}

/// Body of `POST /api/v1/agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// Optional client-chosen id (default `agent-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Host name.
    pub hostname: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// Address.
    pub ip_address: Option<String>,
    /// Agent version.
    pub version: Option<String>,
}

/// Answer of registration: the agent plus its credential, shown this once only.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredAgent {
    /// The agent.
    #[serde(flatten)]
    pub agent: Agent,
    /// Bearer credential for this agent's own endpoints. Not retrievable later.
    pub credential: String,
}

/// Registers an agent and returns its credential once.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = RegisterAgent,
    responses((status = 201, description = "registered; the credential is shown only now", body = RegisteredAgent),
              (status = 400, description = "malformed body", body = ErrorBody), (status = 409, description = "duplicate name or id", body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<RegisterAgent>,
) -> Result<Response, ApiError> {
    require_text("name", &body.name)?;
    let id = match &body.id {
        Some(id) => {
            require_id("id", id)?;
            id.clone()
        }
        None => new_id("agent"),
    };
    // 256 random bits: guessing is hopeless, so a fast hash (SHA-256) is the right storage form.
    let credential = format!("cca_{}", hex::encode(rand::random::<[u8; 32]>()));
    let agent = sqlx::query_as::<_, Agent>(sql!(
        "INSERT INTO agents (id, name, hostname, os, architecture, ip_address, version, credential_hash)
         VALUES ($1, $2, COALESCE($3, ''), COALESCE($4, ''), COALESCE($5, ''), COALESCE($6, ''), COALESCE($7, ''), $8)
         RETURNING {AGENT_COLS}"
    ))
    .bind(&id)
    .bind(&body.name)
    .bind(&body.hostname)
    .bind(&body.os)
    .bind(&body.architecture)
    .bind(&body.ip_address)
    .bind(&body.version)
    .bind(credential_hash(&credential))
    .fetch_one(&state.pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("agents_pkey") => {
            ApiError::Conflict(format!("an agent with id '{id}' already exists"))
        }
        _ => ApiError::from(e),
    })?;
    let id = agent.id.clone();
    Ok(created(&id, RegisteredAgent { agent, credential }))
}

/// Path of one agent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentPath {
    /// Agent id.
    pub id: String,
}

/// One agent.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(AgentPath),
    responses((status = 200, description = "the agent", body = Agent), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<AgentPath>,
) -> Result<ApiJson<Agent>, ApiError> {
    sqlx::query_as::<_, Agent>(sql!("SELECT {AGENT_COLS} FROM agents WHERE id = $1"))
        .bind(&p.id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("agent", &p.id))
}

/// Query of retire.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetireQuery {
    /// Why the agent is retired.
    pub reason: Option<String>,
}

/// Retires the agent (the row stays for history; its heartbeats then answer 410). Idempotent.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", params(AgentPath, RetireQuery),
    responses((status = 200, description = "retired", body = Agent), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn retire(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<AgentPath>,
    ApiQuery(q): ApiQuery<RetireQuery>,
) -> Result<ApiJson<Agent>, ApiError> {
    sqlx::query_as::<_, Agent>(sql!(
        "UPDATE agents SET retired_at = COALESCE(retired_at, now()), retired_reason = COALESCE($2, retired_reason),
                           status = 'Offline', updated_at = now()
          WHERE id = $1 RETURNING {AGENT_COLS}"
    ))
    .bind(&p.id)
    .bind(&q.reason)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("agent", &p.id))
}

/// Body of a heartbeat (optional; unknown fields are ignored so newer agents keep working).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// Agent version.
    pub version: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// Address.
    pub ip_address: Option<String>,
}

/// Answer of a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatRecorded {
    /// Always `heartbeat_recorded`.
    pub status: String,
}

/// Why a heartbeat's UPDATE touched no row: 401 for an agent credential that is not this
/// agent's (or an unknown agent, as the auth layer answers), 404 for an unknown agent named by an
/// API key, 410 for a retired agent. One primary-key read, on this failure path only.
async fn why_no_heartbeat(pool: &sqlx::PgPool, id: &str, claim: Option<&AgentClaim>) -> ApiError {
    let row: Result<Option<(String, bool)>, _> =
        sqlx::query_as("SELECT credential_hash, retired_at IS NOT NULL FROM agents WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await;
    let unauthorized = || ApiError::Unauthorized("invalid API key or agent credential".into());
    match row {
        Err(e) => ApiError::from(e),
        Ok(None) if claim.is_some() => unauthorized(),
        Ok(None) => ApiError::not_found("agent", id),
        Ok(Some((stored, _))) if claim.is_some_and(|c| !c.matches(&stored)) => unauthorized(),
        Ok(Some((_, true))) => ApiError::Gone(format!("agent '{id}' is retired")),
        Ok(Some((_, false))) => ApiError::Conflict(format!("agent '{id}' changed concurrently")),
    }
}

/// The heartbeat: one UPDATE by primary key (`agents_pkey`) that also verifies an agent
/// credential (`$7`, the presented token's hash; NULL when an API key already authenticated the
/// caller) and refuses a retired agent, so the hot path is one statement and one round trip.
/// The optional fields keep their old values when absent. It returns whether the reported
/// inventory (version, hostname, os, architecture, ip_address) changed — the only part of a
/// heartbeat the audit trail records (`docs/operator/audit.md`). `before` reads the row as of the
/// statement's snapshot, the UPDATE writes the new values.
///
/// The credential comparison in SQL compares SHA-256 digests, as the auth layer does: its timing
/// could at most tell a prefix of the digest of the guess, which says nothing about a credential
/// of 256 random bits. Every failure is decided in Rust, in constant time, by [`why_no_heartbeat`].
pub const HEARTBEAT_SQL: &str = "WITH before AS (SELECT version, hostname, os, architecture, ip_address FROM agents WHERE id = $1)
UPDATE agents SET last_heartbeat_at = now(), status = 'Online', updated_at = now(),
        version = COALESCE($2, version), hostname = COALESCE($3, hostname), os = COALESCE($4, os),
        architecture = COALESCE($5, architecture), ip_address = COALESCE($6, ip_address)
  WHERE id = $1 AND retired_at IS NULL AND ($7::text IS NULL OR lower(credential_hash) = $7)
  RETURNING (SELECT (b.version, b.hostname, b.os, b.architecture, b.ip_address)
                    IS DISTINCT FROM (agents.version, agents.hostname, agents.os, agents.architecture, agents.ip_address)
               FROM before b)";

/// Records a heartbeat: one UPDATE by primary key that also verifies the agent's credential.
#[utoipa::path(post, path = "/api/v1/agents/{id}/heartbeat", tag = "agents", params(AgentPath),
    request_body(content = Option<Heartbeat>, description = "optional"),
    responses((status = 200, description = "recorded", body = HeartbeatRecorded), (status = 403, description = "another agent's credential or a non-admin key", body = ErrorBody),
              (status = 404, description = "unknown agent", body = ErrorBody), (status = 410, description = "retired agent", body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: AgentAuth,
    ApiPath(p): ApiPath<AgentPath>,
    OptionalJson(body): OptionalJson<Heartbeat>,
) -> Result<Response, ApiError> {
    let claim = match &auth {
        // The auth layer checked the key's role for this agent route.
        AgentAuth::Caller(_) => None,
        AgentAuth::Claim(claim) => Some(claim),
    };
    let hb = body.unwrap_or_default();
    // Idempotent (it sets the same columns to the same values, `now()` aside), so a heartbeat
    // whose pooled connection died under it is retried once on a fresh one.
    let changed: Option<Option<bool>> = crate::db::retry_idempotent(|| {
        sqlx::query_scalar(HEARTBEAT_SQL)
            .bind(&p.id)
            .bind(&hb.version)
            .bind(&hb.hostname)
            .bind(&hb.os)
            .bind(&hb.architecture)
            .bind(&hb.ip_address)
            .bind(claim.map(|c| c.credential_hash.as_str()))
            .fetch_optional(&state.pool)
    })
    .await?;
    let mut resp = match changed {
        Some(changed) => {
            let mut resp = ApiJson(HeartbeatRecorded { status: "heartbeat_recorded".into() }).into_response();
            if changed != Some(true) {
                resp.extensions_mut().insert(NotAudited);
            }
            resp
        }
        None => {
            let err = why_no_heartbeat(&state.pool, &p.id, claim).await;
            if matches!(err, ApiError::Unauthorized(_)) {
                // Not authenticated: like every 401 of the auth layer, no audit row; the wrong
                // credential counts against the client address as the auth layer's would.
                if let (Some(f), Some(c)) = (state.api.auth_failures.as_ref(), claim.and_then(|c| c.client.as_ref())) {
                    f.record(c)?;
                }
                return Err(err);
            }
            err.into_response()
        }
    };
    if claim.is_some() {
        // The statement verified the credential: the audit layer learns the actor from here.
        resp.extensions_mut().insert(Principal::Agent { id: p.id.clone() });
    }
    Ok(resp)
}

/// One unit of work for an agent: the job plus what it needs to act on it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct WorkItem {
    /// Job id.
    pub id: String,
    /// Issuance, Renewal or Deployment.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub job_type: String,
    /// Certificate id.
    pub certificate_id: String,
    /// Job status (Running for claimed deployments, AwaitingCSR for CSR requests).
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The certificate's common name (for the CSR).
    pub common_name: String,
    /// The certificate's SANs (for the CSR).
    pub sans: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// Answer of a work poll.
#[derive(Debug, Serialize, ToSchema)]
pub struct Work {
    /// The jobs.
    pub jobs: Vec<WorkItem>,
    /// `jobs.len()`.
    pub count: usize,
}

/// The work poll, one statement: whether the agent exists and is active (`agent`), the claim of
/// its pending deployments (`claimed`: `Running`, `claimed_by`) and the issuance/renewal jobs
/// awaiting its CSR (`csr`). `FOR UPDATE … SKIP LOCKED` sits inside each branch (a UNION cannot
/// carry it); it keeps two concurrent polls (or the job processor) from handing out the same job.
/// Both branches act only for an active agent. The answer has one row per job, or a single row
/// with NULL job columns when there is no work, and no row at all for an unknown agent; `kind`
/// orders claimed deployments before CSR work, as two separate statements did.
pub const WORK_SQL: &str = "WITH agent AS (SELECT retired_at IS NULL AS active FROM agents WHERE id = $1),
claimed AS (
    UPDATE jobs j
       SET status = 'Running', started_at = now(), claimed_by = 'agent:' || $1, attempts = j.attempts + 1,
           updated_at = now()
      FROM managed_certificates c
     WHERE c.id = j.certificate_id
       AND (SELECT active FROM agent)
       AND j.id IN (SELECT id FROM jobs
                     WHERE agent_id = $1 AND type = 'Deployment' AND status = 'Pending' AND scheduled_at <= now()
                     ORDER BY scheduled_at, id
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
    RETURNING 0 AS kind, j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at),
csr AS (
    SELECT 1 AS kind, j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at
      FROM jobs j JOIN managed_certificates c ON c.id = j.certificate_id
     WHERE (SELECT active FROM agent)
       AND j.agent_id = $1 AND j.type IN ('Issuance', 'Renewal') AND j.status = 'AwaitingCSR'
     ORDER BY j.created_at, j.id
     LIMIT $2
     FOR UPDATE OF j SKIP LOCKED)
SELECT a.active, w.id, w.type, w.certificate_id, w.status, w.attempts, w.common_name, w.sans, w.created_at
  FROM agent a
  LEFT JOIN (SELECT * FROM claimed UNION ALL SELECT * FROM csr) w ON true
 ORDER BY w.kind, w.created_at, w.id";

/// One row of [`WORK_SQL`]: the agent's state, and a job unless there is no work.
#[derive(sqlx::FromRow)]
struct WorkRow {
    active: bool,
    id: Option<String>,
    #[sqlx(rename = "type")]
    job_type: Option<String>,
    certificate_id: Option<String>,
    status: Option<String>,
    attempts: Option<i32>,
    common_name: Option<String>,
    sans: Option<Vec<String>>,
    created_at: Option<DateTime<Utc>>,
}

impl WorkRow {
    /// The job of the row; `None` for the no-work row (every job column NULL together).
    fn into_item(self) -> Option<WorkItem> {
        Some(WorkItem {
            id: self.id?,
            job_type: self.job_type?,
            certificate_id: self.certificate_id?,
            status: self.status?,
            attempts: self.attempts?,
            common_name: self.common_name?,
            sans: self.sans.unwrap_or_default(),
            created_at: self.created_at?,
        })
    }
}

/// Hands the agent its work ([`WORK_SQL`], one statement and one round trip): pending
/// deployments are claimed, and issuance/renewal jobs awaiting this agent's CSR are listed.
#[utoipa::path(get, path = "/api/v1/agents/{id}/work", tag = "agents", params(AgentPath),
    responses((status = 200, description = "the agent's work", body = Work), (status = 403, description = "not this agent", body = ErrorBody),
              (status = 404, description = "unknown agent", body = ErrorBody), (status = 410, description = "retired agent", body = ErrorBody)))]
pub async fn work(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<AgentPath>,
) -> Result<ApiJson<Work>, ApiError> {
    let rows = sqlx::query_as::<_, WorkRow>(WORK_SQL).bind(&p.id).bind(WORK_BATCH).fetch_all(&state.pool).await?;
    match rows.first() {
        None => return Err(ApiError::not_found("agent", &p.id)),
        Some(r) if !r.active => return Err(ApiError::Gone(format!("agent '{}' is retired", p.id))),
        Some(_) => {}
    }
    let jobs: Vec<WorkItem> = rows.into_iter().filter_map(WorkRow::into_item).collect();
    let count = jobs.len();
    Ok(ApiJson(Work { jobs, count }))
}

/// Body of a CSR submission.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CsrSubmission {
    /// PKCS#10 CSR, PEM.
    #[schema(pattern = "-----BEGIN CERTIFICATE REQUEST-----")]
    pub csr_pem: String,
    /// The certificate whose job awaits this CSR.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub certificate_id: String,
}

/// Answer of a CSR submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsrAccepted {
    /// Always `csr_accepted`.
    pub status: String,
    /// The job the CSR completed.
    pub job_id: String,
}

/// Submits the CSR for the agent's job awaiting one; signing happens in `crate::issuance`.
#[utoipa::path(post, path = "/api/v1/agents/{id}/csr", tag = "agents", params(AgentPath), request_body = CsrSubmission,
    responses((status = 202, description = "accepted", body = CsrAccepted), (status = 400, description = "malformed body or CSR", body = ErrorBody),
              (status = 403, description = "not this agent", body = ErrorBody), (status = 404, description = "no such certificate or job", body = ErrorBody),
              (status = 409, description = "no job awaiting a CSR", body = ErrorBody)))]
pub async fn submit_csr(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<AgentPath>,
    ApiJson(body): ApiJson<CsrSubmission>,
) -> Result<Response, ApiError> {
    require_text("certificate_id", &body.certificate_id)?;
    if !body.csr_pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err(ApiError::BadRequest("csr_pem must be a PEM 'CERTIFICATE REQUEST'".into()));
    }
    let job_id = crate::issuance::complete_job_with_csr(&state, &p.id, &body.certificate_id, &body.csr_pem).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(CsrAccepted { status: "csr_accepted".into(), job_id })).into_response())
}

/// Path of an agent's job.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentJobPath {
    /// Agent id.
    pub id: String,
    /// Job id.
    pub job_id: String,
}

/// Body of a job status report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobStatusReport {
    /// A job status: Pending, AwaitingCSR, AwaitingApproval, Running, Completed, Failed or Cancelled.
    #[schema(value_type = JobStatus, inline)]
    pub status: String,
    /// Failure detail (`message` accepted too).
    #[serde(alias = "message")]
    pub error: Option<String>,
}

/// Reports the status of one of the agent's own jobs. Only the changes the job model
/// ([`crate::jobs::TRANSITIONS`]) lets an agent make are accepted; anything else, including any
/// change to a finished job, is a 409.
#[utoipa::path(post, path = "/api/v1/agents/{id}/jobs/{job_id}/status", tag = "agents", params(AgentJobPath), request_body = JobStatusReport,
    responses((status = 200, description = "updated", body = Job), (status = 400, description = "not a job status", body = ErrorBody),
              (status = 403, description = "not this agent", body = ErrorBody), (status = 404, description = "not a job of this agent", body = ErrorBody),
              (status = 409, description = "job already finished, or a change the job model does not allow an agent (e.g. completing an AwaitingCSR job without its CSR)", body = ErrorBody),
              (status = 410, description = "retired agent", body = ErrorBody)))]
pub async fn job_status(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<AgentJobPath>,
    ApiJson(body): ApiJson<JobStatusReport>,
) -> Result<ApiJson<Job>, ApiError> {
    require_one_of("status", &body.status, JOB_STATUSES)?;
    let mut tx = state.pool.begin().await?;
    // Lock the job, then decide from its current status: the check and the write see one state.
    let current: Option<(String, String)> =
        sqlx::query_as("SELECT type, status FROM jobs WHERE id = $1 AND agent_id = $2 FOR UPDATE")
            .bind(&p.job_id)
            .bind(&p.id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((job_type, from)) = current else {
        return Err(ApiError::NotFound(format!(
            "job '{}' not found for agent '{}'",
            super::error::shorten(&p.job_id),
            super::error::shorten(&p.id)
        )));
    };
    crate::jobs::check_agent_report(&job_type, &from, &body.status).map_err(|r| ApiError::Conflict(r.to_string()))?;
    if job_type != "Deployment" && body.status == "Failed" {
        // A signing job the agent gives up on fails like any other (attempts, retry, the
        // certificate's `Failed` status and the `issuance_failed` event when none are left).
        tx.rollback().await?;
        let error = body.error.as_deref().unwrap_or("the agent reported the job failed");
        crate::scheduler::jobs::fail_job(&state, &p.job_id, error, chrono::Utc::now()).await?;
        return sqlx::query_as::<_, Job>(sql!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(&p.job_id)
            .fetch_one(&state.pool)
            .await
            .map(ApiJson)
            .map_err(ApiError::from);
    }
    let job = sqlx::query_as::<_, Job>(sql!(
        "UPDATE jobs SET status = $3, last_error = COALESCE($4, last_error), updated_at = now(),
                started_at = CASE WHEN $3 = 'Running' THEN COALESCE(started_at, now()) ELSE started_at END,
                completed_at = CASE WHEN $3 IN ('Completed', 'Failed', 'Cancelled') THEN now() ELSE completed_at END
          WHERE id = $2 AND agent_id = $1
          RETURNING {JOB_COLS}"
    ))
    .bind(&p.id)
    .bind(&p.job_id)
    .bind(&body.status)
    .bind(&body.error)
    .fetch_one(&mut *tx)
    .await?;
    if job.job_type == "Deployment" && job.status == "Completed" {
        sqlx::query("UPDATE managed_certificates SET last_deployed_at = now(), updated_at = now() WHERE id = $1")
            .bind(&job.certificate_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ApiJson(job))
}

/// The agent routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(get_one, retire))
        .routes(routes!(heartbeat))
        .routes(routes!(work))
        .routes(routes!(submit_csr))
        .routes(routes!(job_status))
}
