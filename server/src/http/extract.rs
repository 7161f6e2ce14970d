//! Request plumbing shared by the resource modules: offset pagination, an optional JSON body,
//! id generation and small validation helpers. Every failure here is a 4xx [`ApiError`], so a
//! hostile query string or body never reaches the database.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, body_rejection, parse_json};

/// Default `per_page` of every list.
pub const DEFAULT_PER_PAGE: i64 = 50;
/// Largest accepted `per_page` (contract §3: out of range is a 400, never a silent clamp).
pub const MAX_PER_PAGE: i64 = 500;

/// Largest accepted `page`: the largest for which the SQL `OFFSET` `(page - 1) * per_page`
/// still fits in a BIGINT at the largest `per_page`. Documented as the parameter's maximum, so
/// the OpenAPI document and the 400 agree.
pub const MAX_PAGE: i64 = i64::MAX / MAX_PER_PAGE + 1;

/// A validated offset page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: i64,
    /// Rows per page, 1..=500.
    pub per_page: i64,
}

impl Page {
    /// Validates `page` (>= 1) and `per_page` (1..=500); both default when absent.
    pub fn from_query(page: Option<i64>, per_page: Option<i64>) -> Result<Self, ApiError> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page < 1 {
            return Err(ApiError::BadRequest(format!("page must be >= 1, got {page}")));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::BadRequest(format!("per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")));
        }
        // The OFFSET must fit in a BIGINT; a page that far out is a client bug, not an empty page.
        if page > MAX_PAGE || (page - 1).checked_mul(per_page).is_none() {
            return Err(ApiError::BadRequest(format!("page must be at most {MAX_PAGE}, got {page}")));
        }
        Ok(Page { page, per_page })
    }

    /// The SQL `OFFSET` (checked not to overflow at construction).
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }
}

/// The list envelope: `{"data": [...], "total": N, "page": P, "per_page": PP}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paged<T> {
    /// The rows of this page (`[]`, never null).
    pub data: Vec<T>,
    /// Rows matching the filters, over all pages.
    pub total: i64,
    /// This page's number.
    pub page: i64,
    /// Page size.
    pub per_page: i64,
}

impl<T> Paged<T> {
    /// Wraps one page of rows.
    pub fn new(data: Vec<T>, total: i64, page: Page) -> Self {
        Paged { data, total, page: page.page, per_page: page.per_page }
    }
}

/// A JSON body that may be absent (empty body → `None`). Used where the contract says the
/// body is optional (heartbeat, renew); a present but malformed body is still a 400.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        // `null` is "no body" too: the OpenAPI document declares these bodies nullable, and a
        // client serialising an absent options object sends exactly that.
        parse_json::<Option<T>>(&bytes).map(OptionalJson)
    }
}

/// Middleware for `/api/…`: a percent-encoded NUL (`%00`) in the path or query string is a 400
/// before authentication, auditing or any handler runs. PostgreSQL `text` cannot hold U+0000,
/// so such a value could only fail deeper down — and a NUL in an audited path id used to make
/// the whole audit batch unwritable. Only `%00` can produce a NUL: a raw NUL byte is not a
/// valid URI character, so hyper refuses it before this point.
pub async fn reject_nul(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0');
    if uri.path().starts_with("/api/") && (has_nul(uri.path()) || uri.query().is_some_and(has_nul)) {
        return ApiError::BadRequest("the path and query string must not contain NUL (%00)".into()).into_response();
    }
    next.run(req).await
}

/// A new application-generated id, `<prefix>-<uuid v4>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// The characters `str::trim` strips (Unicode `White_Space`), as inclusive ranges. Text fields
/// document "not blank" as the pattern `[^<these>]` (one character outside the set), spelled
/// out because a regex `\S` disagrees with Rust at U+0085 and U+FEFF;
/// `text_pattern_matches_trim` keeps the set, `trim` and the schemas' literal in step.
pub const WHITESPACE: &[(char, char)] = &[
    ('\t', '\r'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2028}'),
    ('\u{2029}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// 400 unless `value` has visible content and is at most 255 characters.
pub fn require_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{field} must not be empty")));
    }
    if value.chars().count() > 255 {
        return Err(ApiError::BadRequest(format!("{field} must be at most 255 characters")));
    }
    Ok(())
}

/// 400 unless a client-chosen id is 1–128 of `[A-Za-z0-9._-]` (ids appear in URLs).
pub fn require_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(ApiError::BadRequest(format!("{field} must be 1-128 characters of [A-Za-z0-9._-]"))) }
}

/// 400 unless `value` is one of `allowed` (status and type vocabularies).
pub fn require_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{field} must be one of {}, got '{value}'", allowed.join(", "))))
    }
}

/// Maps a foreign-key violation raised by a DELETE to 409 (the row is still referenced);
/// other errors keep their usual mapping. On INSERT/UPDATE the same SQLSTATE means "unknown
/// reference" (422), which is why this is chosen at the call site.
pub fn delete_error(kind: &str, e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("23503")
    {
        return ApiError::Conflict(format!("{kind} is still referenced and cannot be deleted"));
    }
    ApiError::from(e)
}

/// Certificate statuses (contract §3).
pub const CERTIFICATE_STATUSES: &[&str] =
    &["Pending", "Active", "Expiring", "Expired", "RenewalInProgress", "Failed", "Revoked", "Archived"];
/// Job statuses.
pub const JOB_STATUSES: &[&str] =
    &["Pending", "AwaitingCSR", "AwaitingApproval", "Running", "Completed", "Failed", "Cancelled"];
/// Job types.
pub const JOB_TYPES: &[&str] = &["Issuance", "Renewal", "Deployment"];
/// Notification statuses.
pub const NOTIFICATION_STATUSES: &[&str] = &["pending", "sent", "failed", "dead", "read"];
/// Agent statuses.
pub const AGENT_STATUSES: &[&str] = &["Online", "Offline", "Degraded"];

// The vocabularies above as OpenAPI enums, so the document (and clients generated from it)
// name the accepted values of each `status`/`type` filter and field. The handlers keep
// validating against the constants; `vocabulary_enums_match_the_constants` keeps the two equal.

/// A certificate status (see [`CERTIFICATE_STATUSES`]).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
pub enum CertificateStatus {
    /// Created, not issued yet.
    Pending,
    /// Issued and valid.
    Active,
    /// Inside its renewal window.
    Expiring,
    /// Past `expires_at`.
    Expired,
    /// A renewal job is open.
    RenewalInProgress,
    /// Issuance or renewal failed.
    Failed,
    /// Revoked.
    Revoked,
    /// Archived (deleted through the API).
    Archived,
}

/// A job status (see [`JOB_STATUSES`]).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
pub enum JobStatus {
    /// Waiting for a worker.
    Pending,
    /// Waiting for the agent's CSR.
    AwaitingCSR,
    /// Waiting for approval.
    AwaitingApproval,
    /// Being worked on.
    Running,
    /// Done.
    Completed,
    /// Gave up.
    Failed,
    /// Cancelled.
    Cancelled,
}

/// A job type (see [`JOB_TYPES`]).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
pub enum JobType {
    /// First issuance.
    Issuance,
    /// Renewal.
    Renewal,
    /// Deployment to a target.
    Deployment,
}

/// A notification status (see [`NOTIFICATION_STATUSES`]).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum NotificationStatus {
    /// Not sent yet.
    Pending,
    /// Delivered.
    Sent,
    /// Failed, retry scheduled.
    Failed,
    /// Gave up after the last retry.
    Dead,
    /// Marked read.
    Read,
}

/// An agent status (see [`AGENT_STATUSES`]).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
pub enum AgentStatus {
    /// Heartbeating.
    Online,
    /// Heartbeat stale.
    Offline,
    /// Reporting problems.
    Degraded,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enum_values<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap_or_default();
        schema["enum"]
            .as_array()
            .map(|v| v.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn vocabulary_enums_match_the_constants() {
        assert_eq!(enum_values::<CertificateStatus>(), CERTIFICATE_STATUSES);
        assert_eq!(enum_values::<JobStatus>(), JOB_STATUSES);
        assert_eq!(enum_values::<JobType>(), JOB_TYPES);
        assert_eq!(enum_values::<NotificationStatus>(), NOTIFICATION_STATUSES);
        assert_eq!(enum_values::<AgentStatus>(), AGENT_STATUSES);
    }

    #[test]
    fn pages_out_of_range_are_refused_not_clamped() {
        assert_eq!(Page::from_query(None, None).ok(), Some(Page { page: 1, per_page: 50 }));
        assert!(Page::from_query(Some(0), None).is_err());
        assert!(Page::from_query(Some(-3), None).is_err());
        assert!(Page::from_query(None, Some(0)).is_err());
        assert!(Page::from_query(None, Some(501)).is_err());
        assert!(Page::from_query(Some(i64::MAX), Some(500)).is_err());
        assert!(Page::from_query(Some(MAX_PAGE), Some(500)).is_ok());
        // The literal in the list queries' `#[param(maximum = …)]`.
        assert_eq!(MAX_PAGE, 18_446_744_073_709_552);
        assert!(Page::from_query(Some(MAX_PAGE + 1), Some(1)).is_err());
        assert_eq!(Page::from_query(Some(3), Some(10)).map(|p| p.offset()).ok(), Some(20));
    }

    #[test]
    fn text_pattern_matches_trim() {
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            let listed = WHITESPACE.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
            assert_eq!(listed, c.is_whitespace(), "U+{:04X}", c as u32);
        }
        // The literal in the text fields' `#[schema(pattern = …)]`, rebuilt from the set.
        let class: String = WHITESPACE
            .iter()
            .map(|(lo, hi)| {
                let esc = |c: char| match c {
                    '\t' => r"\t".to_string(),
                    '\n' => r"\n".to_string(),
                    '\u{b}' => r"\u000b".to_string(),
                    '\u{c}' => r"\f".to_string(),
                    '\r' => r"\r".to_string(),
                    ' ' => " ".to_string(),
                    c => format!("\\u{:04x}", c as u32),
                };
                if lo == hi {
                    esc(*lo)
                } else if *lo == '\t' {
                    // \t..\r is spelled out one by one: \t \n \u000b \f \r.
                    ['\t', '\n', '\u{b}', '\u{c}', '\r'].into_iter().map(esc).collect()
                } else {
                    format!("{}-{}", esc(*lo), esc(*hi))
                }
            })
            .collect();
        let schema =
            serde_json::to_value(<super::super::organisation::teams::CreateTeam as utoipa::PartialSchema>::schema())
                .unwrap_or_default();
        assert_eq!(schema["properties"]["name"]["pattern"].as_str(), Some(format!("[^{class}]").as_str()));
    }

    #[test]
    fn client_ids_are_url_safe() {
        assert!(require_id("id", "mc-abc_1.2").is_ok());
        assert!(require_id("id", "a/b").is_err());
        assert!(require_id("id", "").is_err());
    }
}
