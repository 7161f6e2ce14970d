//! Request plumbing shared by the resource modules: offset pagination, an optional JSON body,
//! id generation and small validation helpers. Every failure here is a 4xx [`ApiError`], so a
//! hostile query string or body never reaches the database.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Default `per_page` of every list.
pub const DEFAULT_PER_PAGE: i64 = 50;
/// Largest accepted `per_page` (contract §3: out of range is a 400, never a silent clamp).
pub const MAX_PER_PAGE: i64 = 500;

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
        if (page - 1).checked_mul(per_page).is_none() {
            return Err(ApiError::BadRequest(format!("page {page} is out of range")));
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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body too large".into())
            } else {
                ApiError::BadRequest(format!("unreadable request body: {}", e.body_text()))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJson(Some(v)))
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
    }
}

/// A new application-generated id, `<prefix>-<uuid v4>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_out_of_range_are_refused_not_clamped() {
        assert_eq!(Page::from_query(None, None).ok(), Some(Page { page: 1, per_page: 50 }));
        assert!(Page::from_query(Some(0), None).is_err());
        assert!(Page::from_query(Some(-3), None).is_err());
        assert!(Page::from_query(None, Some(0)).is_err());
        assert!(Page::from_query(None, Some(501)).is_err());
        assert!(Page::from_query(Some(i64::MAX), Some(500)).is_err());
        assert_eq!(Page::from_query(Some(3), Some(10)).map(|p| p.offset()).ok(), Some(20));
    }

    #[test]
    fn client_ids_are_url_safe() {
        assert!(require_id("id", "mc-abc_1.2").is_ok());
        assert!(require_id("id", "a/b").is_err());
        assert!(require_id("id", "").is_err());
    }
}
