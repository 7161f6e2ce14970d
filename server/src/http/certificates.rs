//! Managed certificates: `/api/v1/certificates…`.
//!
//! Lists paginate in SQL, by offset (`page`/`per_page`, with a whitelisted `sort`) or by keyset
//! (`cursor`/`page_size` over `(created_at, id)`, backed by `idx_managed_certificates_created_at_id`).
//! Renewal never runs here: `renew` and `bulk-renew` enqueue `Renewal` jobs for the scheduler's
//! job processor (or the agent) and mark the certificates `RenewalInProgress`; the partial unique
//! index `jobs_one_open_renewal_per_certificate` makes "one open job per certificate" a database
//! fact even when replicas and the renewal check race.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::created;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::extract::{
    CERTIFICATE_STATUSES, CertificateStatus, MAX_PER_PAGE, OptionalJson, Page, Paged, new_id, require_id,
    require_one_of, require_text,
};
use crate::AppState;

/// Columns of a certificate as the API shows it.
pub const CERT_COLS: &str = "id, name, common_name, sans, environment, owner_id, team_id, issuer_id, renewal_policy_id, \
     certificate_profile_id, agent_id, status, source, expires_at, last_renewal_at, last_deployed_at, revoked_at, \
     revocation_reason, tags, created_at, updated_at";

/// Open (not finished) job statuses, as in `jobs_one_open_renewal_per_certificate`.
pub const OPEN_JOB_STATUSES_SQL: &str = "('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running')";

/// A managed certificate.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Certificate {
    /// Id, e.g. `mc-<uuid>`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Subject common name.
    pub common_name: String,
    /// Subject alternative names.
    pub sans: Vec<String>,
    /// e.g. `production`.
    pub environment: String,
    /// Owner id.
    pub owner_id: String,
    /// Team id.
    pub team_id: String,
    /// Issuer id.
    pub issuer_id: String,
    /// Renewal policy id.
    pub renewal_policy_id: String,
    /// Profile id.
    pub certificate_profile_id: Option<String>,
    /// The agent that deploys it.
    pub agent_id: Option<String>,
    /// Pending, Active, Expiring, Expired, RenewalInProgress, Failed, Revoked or Archived.
    pub status: String,
    /// `API`, `ACME`, …
    pub source: String,
    /// Expiry of the current version.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last successful renewal.
    pub last_renewal_at: Option<DateTime<Utc>>,
    /// Last deployment.
    pub last_deployed_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// Free-form labels (a JSON object).
    #[schema(value_type = Object)]
    pub tags: Value,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Query of `GET /api/v1/certificates`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Offset mode: page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Offset mode: page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
    /// Offset mode: sort column, `-` prefix for descending (name, common_name, status,
    /// environment, expires_at, created_at, updated_at).
    #[param(pattern = "^[-+]?(name|common_name|status|environment|expires_at|created_at|updated_at)$")]
    pub sort: Option<String>,
    /// Keyset mode: the opaque `next_cursor` of the previous page (empty or absent: first page).
    pub cursor: Option<String>,
    /// Keyset mode: page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub page_size: Option<i64>,
    /// Exact status.
    #[param(value_type = Option<CertificateStatus>, inline)]
    pub status: Option<String>,
    /// Exact environment.
    pub environment: Option<String>,
    /// Owner id.
    pub owner_id: Option<String>,
    /// Team id.
    pub team_id: Option<String>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Profile id.
    pub profile_id: Option<String>,
    /// Expiring strictly before (RFC 3339).
    pub expires_before: Option<DateTime<Utc>>,
    /// Expiring strictly after (RFC 3339).
    pub expires_after: Option<DateTime<Utc>>,
}

/// The keyset envelope: `{"data", "next_cursor", "page_size"}` (`next_cursor` null on the last page).
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorPage<T> {
    /// Rows of this page.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; null when there is none.
    pub next_cursor: Option<String>,
    /// Page size.
    pub page_size: i64,
}

const SORTABLE: &[&str] = &["name", "common_name", "status", "environment", "expires_at", "created_at", "updated_at"];

/// Answer of `GET /api/v1/certificates`: an offset page, or a keyset page when `cursor` or
/// `page_size` was given. Untagged, so the JSON is exactly one of the two envelopes and the
/// OpenAPI document says `oneOf` them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CertificateList {
    /// `{"data", "total", "page", "per_page"}`.
    Offset(Paged<Certificate>),
    /// `{"data", "next_cursor", "page_size"}`.
    Keyset(CursorPage<Certificate>),
}

/// `ORDER BY` for `sort`; only whitelisted column names ever reach the SQL text.
fn order_by(sort: Option<&str>) -> Result<String, ApiError> {
    let Some(sort) = sort.filter(|s| !s.is_empty()) else { return Ok("created_at ASC, id ASC".into()) };
    let (dir, name) = match sort.strip_prefix('-') {
        Some(name) => ("DESC", name),
        None => ("ASC", sort.strip_prefix('+').unwrap_or(sort)),
    };
    let col = SORTABLE.iter().find(|c| **c == name).ok_or_else(|| {
        ApiError::BadRequest(format!("sort must be one of {} (optionally prefixed by -)", SORTABLE.join(", ")))
    })?;
    Ok(format!("{col} {dir} NULLS LAST, id {dir}"))
}

/// Opaque keyset cursor: base64url of `<created_at µs>,<id>`.
pub fn encode_cursor(created_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{},{id}", created_at.timestamp_micros()))
}

/// Decodes [`encode_cursor`]; anything else is a 400.
pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = text.split_once(',').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((at, id.to_string()))
}

fn validate_filters(q: &ListQuery) -> Result<(), ApiError> {
    if let Some(s) = &q.status {
        require_one_of("status", s, CERTIFICATE_STATUSES)?;
    }
    Ok(())
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, q: &ListQuery) {
    for (col, val) in [
        ("status", &q.status),
        ("environment", &q.environment),
        ("owner_id", &q.owner_id),
        ("team_id", &q.team_id),
        ("issuer_id", &q.issuer_id),
        ("certificate_profile_id", &q.profile_id),
    ] {
        if let Some(v) = val {
            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(t) = q.expires_before {
        qb.push(" AND expires_at < ").push_bind(t);
    }
    if let Some(t) = q.expires_after {
        qb.push(" AND expires_at > ").push_bind(t);
    }
}

/// Lists certificates: offset pages (`{"data","total","page","per_page"}`) or, with `cursor` /
/// `page_size`, keyset pages (`{"data","next_cursor","page_size"}`).
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(ListQuery),
    responses((status = 200, description = "a page of certificates: offset envelope, or keyset envelope with cursor/page_size", body = CertificateList),
              (status = 400, description = "bad filter, sort, page or cursor; cursor/page_size combined with page/per_page/sort", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<CertificateList>, ApiError> {
    validate_filters(&q)?;
    if q.cursor.is_some() || q.page_size.is_some() {
        if q.page.is_some() || q.per_page.is_some() || q.sort.is_some() {
            return Err(ApiError::BadRequest("cursor/page_size cannot be combined with page, per_page or sort".into()));
        }
        return list_keyset(&state, &q).await.map(|ApiJson(page)| ApiJson(CertificateList::Keyset(page)));
    }
    let page = Page::from_query(q.page, q.per_page)?;
    let order = order_by(q.sort.as_deref())?;
    let mut count = QueryBuilder::new("SELECT count(*) FROM managed_certificates WHERE true");
    push_filters(&mut count, &q);
    let total: i64 = count.build_query_scalar().fetch_one(&state.pool).await?;
    let mut qb = QueryBuilder::new(format!("SELECT {CERT_COLS} FROM managed_certificates WHERE true"));
    push_filters(&mut qb, &q);
    qb.push(format!(" ORDER BY {order} LIMIT ")).push_bind(page.per_page).push(" OFFSET ").push_bind(page.offset());
    let rows = qb.build_query_as::<Certificate>().fetch_all(&state.pool).await?;
    Ok(ApiJson(CertificateList::Offset(Paged::new(rows, total, page))))
}

async fn list_keyset(state: &AppState, q: &ListQuery) -> Result<ApiJson<CursorPage<Certificate>>, ApiError> {
    let page_size = q.page_size.unwrap_or(super::extract::DEFAULT_PER_PAGE);
    if !(1..=MAX_PER_PAGE).contains(&page_size) {
        return Err(ApiError::BadRequest(format!("page_size must be between 1 and {MAX_PER_PAGE}, got {page_size}")));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c)?),
    };
    let mut qb = QueryBuilder::new(format!("SELECT {CERT_COLS} FROM managed_certificates WHERE true"));
    push_filters(&mut qb, q);
    if let Some((at, id)) = after {
        qb.push(" AND (created_at, id) > (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    // One extra row says whether another page exists without a count.
    qb.push(" ORDER BY created_at ASC, id ASC LIMIT ").push_bind(page_size + 1);
    let mut rows = qb.build_query_as::<Certificate>().fetch_all(&state.pool).await?;
    let more = rows.len() as i64 > page_size;
    rows.truncate(page_size as usize);
    let next_cursor = if more { rows.last().map(|c| encode_cursor(c.created_at, &c.id)) } else { None };
    Ok(ApiJson(CursorPage { data: rows, next_cursor, page_size }))
}

/// Body of `POST /api/v1/certificates`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCertificate {
    /// Optional client-chosen id (default `mc-<uuid>`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    pub id: Option<String>,
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: String,
    /// Subject common name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub common_name: String,
    /// Subject alternative names.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Environment (default `production`).
    pub environment: Option<String>,
    /// Owner id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub owner_id: String,
    /// Team id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub team_id: String,
    /// Issuer id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub issuer_id: String,
    /// Renewal policy id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub renewal_policy_id: String,
    /// Profile id (`profile_id` accepted too).
    #[serde(alias = "profile_id")]
    pub certificate_profile_id: Option<String>,
    /// Deploying agent.
    pub agent_id: Option<String>,
    /// Labels (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub tags: Option<Value>,
}

/// 422 naming the offending value unless the common name and every SAN pass the shared name
/// rules ([`crate::issuance::names`]) and, under a profile, their distinct count is within its
/// `max_sans`. An unknown profile is left to the foreign key (422 as well).
async fn check_names(
    pool: &sqlx::PgPool,
    common_name: &str,
    sans: &[String],
    profile_id: Option<&str>,
) -> Result<(), ApiError> {
    let max_sans: Option<i32> = match profile_id {
        Some(id) => {
            sqlx::query_scalar("SELECT max_sans FROM certificate_profiles WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }
        None => None,
    };
    let max = max_sans.map(|m| usize::try_from(m).unwrap_or(0));
    crate::issuance::names::check_all(std::iter::once(common_name).chain(sans.iter().map(String::as_str)), max)
        .map(|_| ())
        .map_err(|e| ApiError::Unprocessable(e.to_string()))
}

fn check_tags(tags: &Option<Value>) -> Result<(), ApiError> {
    match tags {
        Some(t) if !t.is_object() => Err(ApiError::BadRequest("tags must be a JSON object".into())),
        _ => Ok(()),
    }
}

/// Creates a certificate in status `Pending`. Duplicate name → 409; unknown owner, team,
/// issuer, policy, profile or agent → 422.
#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates", request_body = CreateCertificate,
    responses((status = 201, description = "created", body = Certificate),
              (status = 400, description = "malformed body", body = ErrorBody),
              (status = 409, description = "duplicate name", body = ErrorBody),
              (status = 422, description = "unknown reference, an invalid common name or SAN (named in the message), or more names than the profile's max_sans", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<CreateCertificate>,
) -> Result<Response, ApiError> {
    require_text("name", &body.name)?;
    require_text("common_name", &body.common_name)?;
    for (f, v) in [
        ("owner_id", &body.owner_id),
        ("team_id", &body.team_id),
        ("issuer_id", &body.issuer_id),
        ("renewal_policy_id", &body.renewal_policy_id),
    ] {
        require_text(f, v)?;
    }
    check_tags(&body.tags)?;
    check_names(&state.pool, &body.common_name, &body.sans, body.certificate_profile_id.as_deref()).await?;
    let id = match &body.id {
        Some(id) => {
            require_id("id", id)?;
            id.clone()
        }
        None => new_id("mc"),
    };
    let row = sqlx::query_as::<_, Certificate>(sql!(
        "INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id, issuer_id,
                                           renewal_policy_id, certificate_profile_id, agent_id, status, tags)
         VALUES ($1, $2, $3, $4, COALESCE($5, 'production'), $6, $7, $8, $9, $10, $11, 'Pending', COALESCE($12, '{{}}'::jsonb))
         RETURNING {CERT_COLS}"
    ))
    .bind(&id)
    .bind(&body.name)
    .bind(&body.common_name)
    .bind(&body.sans)
    .bind(&body.environment)
    .bind(&body.owner_id)
    .bind(&body.team_id)
    .bind(&body.issuer_id)
    .bind(&body.renewal_policy_id)
    .bind(&body.certificate_profile_id)
    .bind(&body.agent_id)
    .bind(&body.tags)
    .fetch_one(&state.pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("managed_certificates_pkey") => {
            ApiError::Conflict(format!("a certificate with id '{id}' already exists"))
        }
        _ => ApiError::from(e),
    })?;
    let id = row.id.clone();
    Ok(created(&id, row))
}

/// Path of a single certificate.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CertPath {
    /// Certificate id.
    pub id: String,
}

/// Fetches one certificate (404 when unknown).
pub async fn fetch(pool: &sqlx::PgPool, id: &str) -> Result<Certificate, ApiError> {
    sqlx::query_as::<_, Certificate>(sql!("SELECT {CERT_COLS} FROM managed_certificates WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found("certificate", id))
}

/// One certificate.
#[utoipa::path(get, path = "/api/v1/certificates/{id}", tag = "certificates", params(CertPath),
    responses((status = 200, description = "the certificate", body = Certificate), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
) -> Result<ApiJson<Certificate>, ApiError> {
    fetch(&state.pool, &p.id).await.map(ApiJson)
}

/// Body of `PUT /api/v1/certificates/{id}`: the fields to change (absent = unchanged).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCertificate {
    /// Unique name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub name: Option<String>,
    /// Subject common name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub common_name: Option<String>,
    /// Subject alternative names.
    pub sans: Option<Vec<String>>,
    /// Environment.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub environment: Option<String>,
    /// Owner id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub owner_id: Option<String>,
    /// Team id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub team_id: Option<String>,
    /// Issuer id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub issuer_id: Option<String>,
    /// Renewal policy id.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
    )]
    pub renewal_policy_id: Option<String>,
    /// Profile id (`profile_id` accepted too).
    #[serde(alias = "profile_id")]
    pub certificate_profile_id: Option<String>,
    /// Deploying agent.
    pub agent_id: Option<String>,
    /// Labels (a JSON object; replaces the old one).
    #[schema(value_type = Option<Object>)]
    pub tags: Option<Value>,
}

/// Updates the given fields. Status changes go through renew / revoke / archive instead.
#[utoipa::path(put, path = "/api/v1/certificates/{id}", tag = "certificates", params(CertPath), request_body = UpdateCertificate,
    responses((status = 200, description = "updated", body = Certificate), (status = 400, description = "malformed body", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody), (status = 409, description = "duplicate name", body = ErrorBody),
              (status = 422, description = "unknown reference, an invalid common name or SAN (named in the message), or more names than the profile's max_sans", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
    ApiJson(body): ApiJson<UpdateCertificate>,
) -> Result<ApiJson<Certificate>, ApiError> {
    for (f, v) in [
        ("name", &body.name),
        ("common_name", &body.common_name),
        ("environment", &body.environment),
        ("owner_id", &body.owner_id),
        ("team_id", &body.team_id),
        ("issuer_id", &body.issuer_id),
        ("renewal_policy_id", &body.renewal_policy_id),
    ] {
        if let Some(v) = v {
            require_text(f, v)?;
        }
    }
    check_tags(&body.tags)?;
    if body.common_name.is_some() || body.sans.is_some() || body.certificate_profile_id.is_some() {
        // The names and the profile are checked together, as the certificate will have them.
        let current = fetch(&state.pool, &p.id).await?;
        let common_name = body.common_name.as_deref().unwrap_or(&current.common_name);
        let sans = body.sans.as_ref().unwrap_or(&current.sans);
        let profile = body.certificate_profile_id.as_deref().or(current.certificate_profile_id.as_deref());
        check_names(&state.pool, common_name, sans, profile).await?;
    }
    sqlx::query_as::<_, Certificate>(sql!(
        "UPDATE managed_certificates SET
            name = COALESCE($2, name), common_name = COALESCE($3, common_name), sans = COALESCE($4, sans),
            environment = COALESCE($5, environment), owner_id = COALESCE($6, owner_id), team_id = COALESCE($7, team_id),
            issuer_id = COALESCE($8, issuer_id), renewal_policy_id = COALESCE($9, renewal_policy_id),
            certificate_profile_id = COALESCE($10, certificate_profile_id), agent_id = COALESCE($11, agent_id),
            tags = COALESCE($12, tags), updated_at = now()
          WHERE id = $1
          RETURNING {CERT_COLS}"
    ))
    .bind(&p.id)
    .bind(&body.name)
    .bind(&body.common_name)
    .bind(&body.sans)
    .bind(&body.environment)
    .bind(&body.owner_id)
    .bind(&body.team_id)
    .bind(&body.issuer_id)
    .bind(&body.renewal_policy_id)
    .bind(&body.certificate_profile_id)
    .bind(&body.agent_id)
    .bind(&body.tags)
    .fetch_optional(&state.pool)
    .await?
    .map(ApiJson)
    .ok_or_else(|| ApiError::not_found("certificate", &p.id))
}

/// Archives the certificate (the row and its history stay) and cancels its open jobs.
#[utoipa::path(delete, path = "/api/v1/certificates/{id}", tag = "certificates", params(CertPath),
    responses((status = 200, description = "archived", body = Certificate), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
) -> Result<ApiJson<Certificate>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let row = sqlx::query_as::<_, Certificate>(sql!(
        "UPDATE managed_certificates SET status = 'Archived', updated_at = now() WHERE id = $1 RETURNING {CERT_COLS}"
    ))
    .bind(&p.id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("certificate", &p.id))?;
    cancel_open_jobs(&mut tx, &p.id, "certificate archived").await?;
    tx.commit().await?;
    Ok(ApiJson(row))
}

/// Cancels every open job of a certificate.
async fn cancel_open_jobs(tx: &mut sqlx::PgConnection, certificate_id: &str, why: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql!(
        "UPDATE jobs SET status = 'Cancelled', last_error = $2, completed_at = now(), updated_at = now()
          WHERE certificate_id = $1 AND status IN {OPEN_JOB_STATUSES_SQL}"
    ))
    .bind(certificate_id)
    .bind(why)
    .execute(tx)
    .await?
    .rows_affected())
}

/// One issued version (without any private key).
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct CertificateVersion {
    /// Version id.
    pub id: String,
    /// Certificate id.
    pub certificate_id: String,
    /// Issuer id.
    pub issuer_id: String,
    /// Serial number (hex).
    pub serial_number: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the DER (hex).
    pub fingerprint_sha256: String,
    /// Leaf and chain, PEM.
    pub pem_chain: String,
    /// Key algorithm.
    pub key_algorithm: String,
    /// Issuing job.
    pub job_id: Option<String>,
    /// Issued.
    pub created_at: DateTime<Utc>,
}

/// Paging of sub-lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
}

/// The certificate's issued versions, newest first.
#[utoipa::path(get, path = "/api/v1/certificates/{id}/versions", tag = "certificates", params(CertPath, PageQuery),
    responses((status = 200, description = "versions", body = Paged<CertificateVersion>), (status = 404, description = "unknown", body = ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<ApiJson<Paged<CertificateVersion>>, ApiError> {
    let page = Page::from_query(q.page, q.per_page)?;
    fetch(&state.pool, &p.id).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM certificate_versions WHERE certificate_id = $1")
        .bind(&p.id)
        .fetch_one(&state.pool)
        .await?;
    let rows = sqlx::query_as::<_, CertificateVersion>(
        "SELECT id, certificate_id, issuer_id, serial_number, not_before, not_after, fingerprint_sha256, pem_chain,
                key_algorithm, job_id, created_at
           FROM certificate_versions WHERE certificate_id = $1
          ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
    )
    .bind(&p.id)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(Paged::new(rows, total, page)))
}

/// Body of `POST /api/v1/certificates/{id}/renew` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// Renew even when a renewal is already in progress (its open job is cancelled).
    #[serde(default)]
    pub force: bool,
}

/// Query of renew: `?force=true` works as well as the body.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RenewQuery {
    /// Same as the body's `force`.
    pub force: Option<bool>,
}

/// Answer of renew.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewAccepted {
    /// Always `renewal_triggered`.
    pub status: String,
    /// The enqueued job.
    pub job_id: String,
}

/// Enqueues a renewal job and marks the certificate `RenewalInProgress`.
#[utoipa::path(post, path = "/api/v1/certificates/{id}/renew", tag = "certificates", params(CertPath, RenewQuery),
    request_body(content = Option<RenewRequest>, description = "optional"),
    responses((status = 202, description = "renewal enqueued", body = RenewAccepted), (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "already renewing (without force), or archived/revoked", body = ErrorBody)))]
pub async fn renew(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
    ApiQuery(q): ApiQuery<RenewQuery>,
    OptionalJson(body): OptionalJson<RenewRequest>,
) -> Result<Response, ApiError> {
    let force = q.force.unwrap_or(false) || body.is_some_and(|b| b.force);
    let mut tx = state.pool.begin().await?;
    let (status, agent_id): (String, Option<String>) =
        sqlx::query_as("SELECT status, agent_id FROM managed_certificates WHERE id = $1 FOR UPDATE")
            .bind(&p.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("certificate", &p.id))?;
    match status.as_str() {
        "Archived" | "Revoked" => return Err(ApiError::Conflict(format!("cannot renew a {status} certificate"))),
        "RenewalInProgress" if !force => {
            return Err(ApiError::Conflict("a renewal is already in progress (use force to restart it)".into()));
        }
        _ => {}
    }
    if force {
        cancel_open_jobs(&mut tx, &p.id, "superseded by a forced renewal").await?;
    }
    let job_id: Option<String> = sqlx::query_scalar(sql!(
        "INSERT INTO jobs (id, type, certificate_id, agent_id, status)
         VALUES ($1, 'Renewal', $2, $3, 'Pending')
         ON CONFLICT (certificate_id) WHERE type IN ('Issuance', 'Renewal') AND status IN {OPEN_JOB_STATUSES_SQL}
         DO NOTHING
         RETURNING id"
    ))
    .bind(new_id("job"))
    .bind(&p.id)
    .bind(&agent_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(job_id) = job_id else {
        return Err(ApiError::Conflict("an issuance or renewal job is already open for this certificate".into()));
    };
    sqlx::query("UPDATE managed_certificates SET status = 'RenewalInProgress', updated_at = now() WHERE id = $1")
        .bind(&p.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, ApiJson(RenewAccepted { status: "renewal_triggered".into(), job_id })).into_response())
}

/// RFC 5280 §5.3.1 CRLReason names and codes a revocation may carry. 7 is unused by the RFC;
/// `removeFromCRL` (8) is left out on purpose: RFC 5280 §5.3.1 reserves it for delta CRLs (it
/// un-lists a certificate on hold), so it can never be the reason a certificate is revoked.
pub const REVOCATION_REASONS: &[(&str, i32)] = &[
    ("unspecified", 0),
    ("keyCompromise", 1),
    ("cACompromise", 2),
    ("affiliationChanged", 3),
    ("superseded", 4),
    ("cessationOfOperation", 5),
    ("certificateHold", 6),
    ("privilegeWithdrawn", 9),
    ("aACompromise", 10),
];

/// The canonical reason name and code for `reason` (case-insensitive; default `unspecified`).
pub fn revocation_reason(reason: Option<&str>) -> Result<(&'static str, i32), ApiError> {
    let Some(reason) = reason.filter(|r| !r.is_empty()) else { return Ok(("unspecified", 0)) };
    if reason.eq_ignore_ascii_case("removeFromCRL") {
        return Err(ApiError::BadRequest(
            "reason removeFromCRL is reserved for delta CRLs (RFC 5280 §5.3.1) and cannot revoke a certificate".into(),
        ));
    }
    REVOCATION_REASONS.iter().find(|(name, _)| name.eq_ignore_ascii_case(reason)).copied().ok_or_else(|| {
        let names: Vec<&str> = REVOCATION_REASONS.iter().map(|(n, _)| *n).collect();
        ApiError::BadRequest(format!("reason must be one of {}", names.join(", ")))
    })
}

/// Body of revoke.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// RFC 5280 reason name (empty or absent: `unspecified`; matched case-insensitively). The pattern
    /// lists [`REVOCATION_REASONS`]; `revocation_reasons_use_rfc5280_names` keeps them equal.
    #[schema(
        pattern = "^(|unspecified|keyCompromise|cACompromise|affiliationChanged|superseded|cessationOfOperation|certificateHold|privilegeWithdrawn|aACompromise)$"
    )]
    pub reason: Option<String>,
}

/// Answer of revoke.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeResult {
    /// Always `revoked`.
    pub status: String,
    /// The certificate.
    pub certificate_id: String,
    /// The RFC 5280 reason recorded.
    pub reason: String,
    /// Serial of the revoked version, when the certificate had one.
    pub serial_number: Option<String>,
}

/// Revokes the certificate: records the revocation of its current version (when it has one)
/// for the CRL, sets it `Revoked` and cancels its open jobs.
#[utoipa::path(post, path = "/api/v1/certificates/{id}/revoke", tag = "certificates", params(CertPath),
    request_body(content = Option<RevokeRequest>, description = "optional"),
    responses((status = 200, description = "revoked", body = RevokeResult), (status = 400, description = "unknown reason", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody), (status = 409, description = "already revoked or archived", body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(p): ApiPath<CertPath>,
    OptionalJson(body): OptionalJson<RevokeRequest>,
) -> Result<ApiJson<RevokeResult>, ApiError> {
    let (reason, code) = revocation_reason(body.as_ref().and_then(|b| b.reason.as_deref()))?;
    let mut tx = state.pool.begin().await?;
    let status: String = sqlx::query_scalar("SELECT status FROM managed_certificates WHERE id = $1 FOR UPDATE")
        .bind(&p.id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("certificate", &p.id))?;
    if status == "Revoked" || status == "Archived" {
        return Err(ApiError::Conflict(format!("certificate is already {status}")));
    }
    let serial: Option<String> = sqlx::query_scalar(
        "INSERT INTO certificate_revocations (id, certificate_id, issuer_id, serial_number, reason, reason_code)
         SELECT $2, v.certificate_id, v.issuer_id, v.serial_number, $3, $4
           FROM certificate_versions v WHERE v.certificate_id = $1
          ORDER BY v.created_at DESC, v.id DESC LIMIT 1
         ON CONFLICT ON CONSTRAINT certificate_revocations_issuer_serial_key DO NOTHING
         RETURNING serial_number",
    )
    .bind(&p.id)
    .bind(new_id("rev"))
    .bind(reason)
    .bind(code)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE managed_certificates SET status = 'Revoked', revoked_at = now(), revocation_reason = $2, updated_at = now()
          WHERE id = $1",
    )
    .bind(&p.id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    cancel_open_jobs(&mut tx, &p.id, "certificate revoked").await?;
    tx.commit().await?;
    Ok(ApiJson(RevokeResult {
        status: "revoked".into(),
        certificate_id: p.id,
        reason: reason.into(),
        serial_number: serial,
    }))
}

/// Which certificates a bulk operation acts on: every given selector must match (AND).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSelector {
    /// Explicit ids.
    pub certificate_ids: Option<Vec<String>>,
    /// Owner id.
    pub owner_id: Option<String>,
    /// Team id.
    pub team_id: Option<String>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Profile id.
    pub profile_id: Option<String>,
    /// Deploying agent.
    pub agent_id: Option<String>,
}

impl BulkSelector {
    fn ids(&self) -> Option<&Vec<String>> {
        self.certificate_ids.as_ref().filter(|v| !v.is_empty())
    }

    fn validate(&self) -> Result<(), ApiError> {
        let any = self.ids().is_some()
            || [&self.owner_id, &self.team_id, &self.issuer_id, &self.profile_id, &self.agent_id]
                .iter()
                .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
        if any {
            Ok(())
        } else {
            Err(ApiError::BadRequest(
                "give at least one of certificate_ids, owner_id, team_id, issuer_id, profile_id, agent_id".into(),
            ))
        }
    }

    /// `SELECT … FROM managed_certificates WHERE <selectors> FOR UPDATE` into `qb`.
    fn push_matched(&self, qb: &mut QueryBuilder<Postgres>) {
        qb.push("SELECT id, status, agent_id FROM managed_certificates WHERE true");
        if let Some(ids) = self.ids() {
            qb.push(" AND id = ANY(").push_bind(ids.clone()).push(")");
        }
        for (col, val) in [
            ("owner_id", &self.owner_id),
            ("team_id", &self.team_id),
            ("issuer_id", &self.issuer_id),
            ("certificate_profile_id", &self.profile_id),
            ("agent_id", &self.agent_id),
        ] {
            if let Some(v) = val.as_deref().filter(|s| !s.is_empty()) {
                qb.push(format!(" AND {col} = ")).push_bind(v.to_string());
            }
        }
        // Lock in id order so concurrent bulk operations over overlapping sets queue behind
        // each other instead of deadlocking.
        qb.push(" ORDER BY id FOR UPDATE");
    }

    /// Trailing `UNION ALL` arm naming requested ids that matched nothing.
    fn push_missing(&self, qb: &mut QueryBuilder<Postgres>) {
        if let Some(ids) = self.ids() {
            qb.push(" UNION ALL SELECT 'missing', x, NULL, NULL FROM unnest(")
                .push_bind(ids.clone())
                .push("::text[]) AS x WHERE x NOT IN (SELECT id FROM matched)");
        }
    }
}

/// Names of the component schemas whose objects need at least one selector.
pub const SELECTOR_SCHEMAS: &[&str] = &["BulkSelector", "BulkRevokeRequest"];

/// `schema` plus the rule [`BulkSelector::validate`] enforces, which field attributes cannot
/// express: `allOf [schema, anyOf [one branch per selector]]`, where a branch requires its
/// field to be present, non-null and non-empty. Without it the document would call `{}` (or
/// all-null selectors) valid while the server answers 400.
pub fn with_selector_rule(
    schema: utoipa::openapi::RefOr<utoipa::openapi::Schema>,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
    let text = || ObjectBuilder::new().schema_type(Type::String).min_length(Some(1));
    // An empty string inside `certificate_ids` is allowed: it is reported per id as "not found".
    let ids = ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)).min_items(Some(1));
    let mut any =
        AnyOfBuilder::new().item(ObjectBuilder::new().property("certificate_ids", ids).required("certificate_ids"));
    for field in ["owner_id", "team_id", "issuer_id", "profile_id", "agent_id"] {
        any = any.item(ObjectBuilder::new().property(field, text()).required(field));
    }
    AllOfBuilder::new().item(schema).item(any).into()
}

/// One result row of a bulk statement: `(kind, certificate_id, job_id, count)` where kind is
/// `summary`, `enqueued`, `revoked` or `missing`.
type BulkRow = (String, Option<String>, Option<String>, Option<i64>);

/// One enqueued renewal.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedJob {
    /// Certificate id.
    pub certificate_id: String,
    /// Its new job.
    pub job_id: String,
}

/// One certificate that could not be acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkError {
    /// Certificate id.
    pub certificate_id: String,
    /// Why.
    pub error: String,
}

/// Answer of bulk renew.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRenewResult {
    /// Certificates the selectors matched.
    pub total_matched: i64,
    /// Renewal jobs created.
    pub total_enqueued: i64,
    /// Matched but not eligible (Archived, Revoked, Expired, RenewalInProgress, or a job already open).
    pub total_skipped: i64,
    /// Requested ids that do not exist.
    pub total_failed: i64,
    /// The jobs created.
    pub enqueued_jobs: Vec<EnqueuedJob>,
    /// Per-certificate failures.
    pub errors: Vec<BulkError>,
}

/// Enqueues renewal jobs for every eligible matching certificate, set-based in one statement
/// and one transaction, with no cap on the number of matches.
#[utoipa::path(post, path = "/api/v1/certificates/bulk-renew", tag = "certificates", request_body = BulkSelector,
    responses((status = 200, description = "what was enqueued and skipped", body = BulkRenewResult),
              (status = 400, description = "no selector or malformed body", body = ErrorBody)))]
pub async fn bulk_renew(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(sel): ApiJson<BulkSelector>,
) -> Result<ApiJson<BulkRenewResult>, ApiError> {
    sel.validate()?;
    let mut qb = QueryBuilder::new("WITH matched AS (");
    sel.push_matched(&mut qb);
    qb.push(format!(
        "), enqueued AS (
            INSERT INTO jobs (id, type, certificate_id, agent_id, status)
            SELECT 'job-' || gen_random_uuid(), 'Renewal', m.id, m.agent_id, 'Pending'
              FROM matched m
             WHERE m.status NOT IN ('Archived', 'Revoked', 'Expired', 'RenewalInProgress')
            ON CONFLICT (certificate_id) WHERE type IN ('Issuance', 'Renewal') AND status IN {OPEN_JOB_STATUSES_SQL}
            DO NOTHING
            RETURNING id, certificate_id
         ), marked AS (
            UPDATE managed_certificates c SET status = 'RenewalInProgress', updated_at = now()
              FROM enqueued e WHERE c.id = e.certificate_id
            RETURNING c.id
         )
         SELECT 'summary' AS kind, NULL::text AS certificate_id, NULL::text AS job_id,
                (SELECT count(*) FROM matched) AS n
         UNION ALL
         SELECT 'enqueued', certificate_id, id, NULL FROM enqueued"
    ));
    sel.push_missing(&mut qb);
    let mut tx = state.pool.begin().await?;
    let rows: Vec<BulkRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let mut result = BulkRenewResult {
        total_matched: 0,
        total_enqueued: 0,
        total_skipped: 0,
        total_failed: 0,
        enqueued_jobs: Vec::new(),
        errors: Vec::new(),
    };
    for (kind, certificate_id, job_id, n) in rows {
        match (kind.as_str(), certificate_id, job_id) {
            ("summary", _, _) => result.total_matched = n.unwrap_or(0),
            ("enqueued", Some(certificate_id), Some(job_id)) => {
                result.enqueued_jobs.push(EnqueuedJob { certificate_id, job_id })
            }
            ("missing", Some(certificate_id), _) => {
                result.errors.push(BulkError { certificate_id, error: "certificate not found".into() })
            }
            _ => {}
        }
    }
    result.total_enqueued = result.enqueued_jobs.len() as i64;
    result.total_failed = result.errors.len() as i64;
    result.total_skipped = result.total_matched - result.total_enqueued;
    Ok(ApiJson(result))
}

/// Body of bulk revoke.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevokeRequest {
    /// Explicit ids.
    pub certificate_ids: Option<Vec<String>>,
    /// Owner id.
    pub owner_id: Option<String>,
    /// Team id.
    pub team_id: Option<String>,
    /// Issuer id.
    pub issuer_id: Option<String>,
    /// Profile id.
    pub profile_id: Option<String>,
    /// Deploying agent.
    pub agent_id: Option<String>,
    /// RFC 5280 reason name (empty or absent: `unspecified`; matched case-insensitively). The pattern
    /// lists [`REVOCATION_REASONS`]; `revocation_reasons_use_rfc5280_names` keeps them equal.
    #[schema(
        pattern = "^(|unspecified|keyCompromise|cACompromise|affiliationChanged|superseded|cessationOfOperation|certificateHold|privilegeWithdrawn|aACompromise)$"
    )]
    pub reason: Option<String>,
}

/// Answer of bulk revoke.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRevokeResult {
    /// Certificates the selectors matched.
    pub total_matched: i64,
    /// Certificates revoked now.
    pub total_revoked: i64,
    /// Matched but already Revoked or Archived.
    pub total_skipped: i64,
    /// Requested ids that do not exist.
    pub total_failed: i64,
    /// Per-certificate failures.
    pub errors: Vec<BulkError>,
}

/// Revokes every matching certificate that is not already Revoked or Archived (admin only),
/// set-based in one statement.
#[utoipa::path(post, path = "/api/v1/certificates/bulk-revoke", tag = "certificates", request_body = BulkRevokeRequest,
    responses((status = 200, description = "what was revoked", body = BulkRevokeResult),
              (status = 400, description = "no selector, unknown reason or malformed body", body = ErrorBody),
              (status = 403, description = "not an admin key", body = ErrorBody)))]
pub async fn bulk_revoke(
    State(state): State<AppState>,
    _caller: Caller,
    ApiJson(body): ApiJson<BulkRevokeRequest>,
) -> Result<ApiJson<BulkRevokeResult>, ApiError> {
    let (reason, code) = revocation_reason(body.reason.as_deref())?;
    let sel = BulkSelector {
        certificate_ids: body.certificate_ids,
        owner_id: body.owner_id,
        team_id: body.team_id,
        issuer_id: body.issuer_id,
        profile_id: body.profile_id,
        agent_id: body.agent_id,
    };
    sel.validate()?;
    let mut qb = QueryBuilder::new("WITH matched AS (");
    sel.push_matched(&mut qb);
    qb.push(
        "), eligible AS (
            SELECT id FROM matched WHERE status NOT IN ('Revoked', 'Archived')
         ), recorded AS (
            INSERT INTO certificate_revocations (id, certificate_id, issuer_id, serial_number, reason, reason_code)
            SELECT DISTINCT ON (v.certificate_id) 'rev-' || gen_random_uuid(), v.certificate_id, v.issuer_id,
                   v.serial_number, ",
    )
    .push_bind(reason)
    .push(", ")
    .push_bind(code)
    .push(
        " FROM certificate_versions v JOIN eligible e ON e.id = v.certificate_id
             ORDER BY v.certificate_id, v.created_at DESC, v.id DESC
            ON CONFLICT ON CONSTRAINT certificate_revocations_issuer_serial_key DO NOTHING
            RETURNING certificate_id
         ), revoked AS (
            UPDATE managed_certificates c SET status = 'Revoked', revoked_at = now(), revocation_reason = ",
    )
    .push_bind(reason)
    .push(format!(
        ", updated_at = now()
              FROM eligible e WHERE c.id = e.id
            RETURNING c.id
         ), cancelled AS (
            UPDATE jobs SET status = 'Cancelled', last_error = 'certificate revoked', completed_at = now(), updated_at = now()
             WHERE certificate_id IN (SELECT id FROM eligible) AND status IN {OPEN_JOB_STATUSES_SQL}
            RETURNING id
         )
         SELECT 'summary' AS kind, NULL::text AS certificate_id, NULL::text AS job_id,
                (SELECT count(*) FROM matched) AS n
         UNION ALL
         SELECT 'revoked', NULL, NULL, (SELECT count(*) FROM revoked)"
    ));
    sel.push_missing(&mut qb);
    let mut tx = state.pool.begin().await?;
    let rows: Vec<BulkRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let mut out =
        BulkRevokeResult { total_matched: 0, total_revoked: 0, total_skipped: 0, total_failed: 0, errors: Vec::new() };
    for (kind, certificate_id, _, n) in rows {
        match kind.as_str() {
            "summary" => out.total_matched = n.unwrap_or(0),
            "revoked" => out.total_revoked = n.unwrap_or(0),
            "missing" => out.errors.push(BulkError {
                certificate_id: certificate_id.unwrap_or_default(),
                error: "certificate not found".into(),
            }),
            _ => {}
        }
    }
    out.total_failed = out.errors.len() as i64;
    out.total_skipped = out.total_matched - out.total_revoked;
    Ok(ApiJson(out))
}

/// The certificate routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(bulk_renew))
        .routes(routes!(bulk_revoke))
        .routes(routes!(get_one, update, archive))
        .routes(routes!(versions))
        .routes(routes!(renew))
        .routes(routes!(revoke))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let c = encode_cursor(at, "mc-1");
        let (at2, id) = decode_cursor(&c).map_err(|e| e.to_string()).unwrap_or_default();
        assert_eq!((at2, id.as_str()), (at, "mc-1"));
        assert!(decode_cursor("!!!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("nope")).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("12,")).is_err());
    }

    #[test]
    fn sort_accepts_only_whitelisted_columns() {
        assert_eq!(order_by(Some("-expires_at")).ok().as_deref(), Some("expires_at DESC NULLS LAST, id DESC"));
        assert!(order_by(Some("name; DROP TABLE x")).is_err());
        assert!(order_by(Some("-")).is_err());
    }

    #[test]
    fn revocation_reasons_use_rfc5280_names() {
        assert_eq!(revocation_reason(Some("keycompromise")).ok(), Some(("keyCompromise", 1)));
        assert_eq!(revocation_reason(None).ok(), Some(("unspecified", 0)));
        assert!(revocation_reason(Some("bored")).is_err());
        assert!(revocation_reason(Some("removeFromCRL")).is_err(), "reserved for delta CRLs");
        let names: Vec<&str> = REVOCATION_REASONS.iter().map(|(n, _)| *n).collect();
        let schema = serde_json::to_value(<RevokeRequest as utoipa::PartialSchema>::schema()).unwrap_or_default();
        let pattern = schema["properties"]["reason"]["pattern"].as_str().unwrap_or_default().to_string();
        assert_eq!(pattern, format!("^(|{})$", names.join("|")), "the documented pattern lists every reason");
    }
}
