//! The one API error type and the JSON error envelope every failure is rendered as:
//! `{"error": "<status text>", "message": "<detail>", "request_id": "<id>"}`.
//!
//! Handlers return `Result<_, ApiError>`; database errors map through [`ApiError::from`] so a
//! named unique constraint becomes 409 and a foreign-key violation 422 (never a 500).
//! Extractor rejections go through [`ApiJson`], [`ApiQuery`] and [`ApiPath`], so a malformed body
//! or query string gets the same envelope.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::request_id;

/// An API failure with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or unknown credential.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with the current state (duplicate name, wrong status).
    #[error("{0}")]
    Conflict(String),
    /// 410: the resource is gone (retired agent).
    #[error("{0}")]
    Gone(String),
    /// 413: body too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but refers to something that does not exist or is invalid.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: rate limited; the value is the `Retry-After` in seconds.
    #[error("rate limit exceeded, retry after {0} s")]
    TooManyRequests(u64),
    /// 503: a dependency is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON error envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// HTTP status text, e.g. `Not Found`.
    pub error: String,
    /// What went wrong.
    pub message: String,
    /// The request's `X-Request-ID`.
    pub request_id: String,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Shorthand for a 404 naming the resource. A hostile id of many kilobytes is cut short in
    /// the message so the error body stays small.
    pub fn not_found(kind: &str, id: &str) -> Self {
        ApiError::NotFound(format!("{kind} '{}' not found", shorten(id)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
            request_id: request_id::current().unwrap_or_default(),
        };
        let mut resp = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"certctl\""));
            }
            ApiError::TooManyRequests(secs) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let constraint = db.constraint().unwrap_or("").to_string();
            // 23505 unique_violation, 23503 foreign_key_violation, 23514 check_violation,
            // 22P02 invalid_text_representation, 22001 string too long, 22003 out of range,
            // 22021 a byte PostgreSQL text cannot hold (NUL in a path or query parameter).
            match db.code().as_deref() {
                Some("23505") => return ApiError::Conflict(conflict_message(&constraint)),
                Some("23503") => return ApiError::Unprocessable(fk_message(&constraint)),
                Some("23514") => return ApiError::Unprocessable(format!("value rejected by {constraint}")),
                // Class 22 (data exception): the input cannot be stored as given. The message is
                // ours, not PostgreSQL's, so no database wording or internals reach the client.
                Some(code) if code.starts_with("22") => return ApiError::BadRequest(data_exception_message(code)),
                // 40001 serialization_failure, 40P01 deadlock_detected: transient, the client
                // may simply retry.
                Some("40001" | "40P01") => {
                    return ApiError::Unavailable("concurrent update conflict; retry the request".into());
                }
                _ => {}
            }
        }
        // The database went away under the request (restart, killed connection): a 503 says
        // "retry", which is true, where a 500 would claim a bug.
        if crate::db::is_connection_error(&e) {
            return ApiError::Unavailable("database connection lost; retry the request".into());
        }
        match e {
            sqlx::Error::RowNotFound => ApiError::NotFound("not found".into()),
            sqlx::Error::PoolTimedOut => ApiError::Unavailable(
                "no database connection within the acquire timeout (pool exhausted or database unreachable)".into(),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Longest id echoed back in an error message, in characters.
const ECHO_MAX_CHARS: usize = 128;

/// `id` itself, or its first [`ECHO_MAX_CHARS`] characters followed by `…`.
pub fn shorten(id: &str) -> String {
    match id.char_indices().nth(ECHO_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_string(),
    }
}

/// A client-facing message for a PostgreSQL data exception (SQLSTATE class 22).
fn data_exception_message(code: &str) -> String {
    match code {
        "22021" | "22P05" => "text must not contain NUL (\\u0000) characters".into(),
        "22001" => "a value is too long".into(),
        "22003" => "a number is out of range".into(),
        "22007" | "22008" => "a date or time is out of range".into(),
        "22P02" => "a value has an invalid format".into(),
        _ => format!("a value cannot be stored (SQLSTATE {code})"),
    }
}

/// `managed_certificates_name_key` → "a certificate with this name already exists".
fn conflict_message(constraint: &str) -> String {
    let (table, column) = split_constraint(constraint, "_key");
    match column.as_str() {
        "" => format!("duplicate value violates {constraint}"),
        col => format!("a {} with this {} already exists", singular(&table), col.replace('_', " ")),
    }
}

/// `managed_certificates_owner_id_fkey` → "owner_id refers to an owner that does not exist".
fn fk_message(constraint: &str) -> String {
    let (_, column) = split_constraint(constraint, "_fkey");
    if column.is_empty() {
        return format!("a referenced record does not exist ({constraint})");
    }
    let target = column.trim_end_matches("_id").replace('_', " ");
    format!("{column} refers to a {target} that does not exist")
}

fn split_constraint(constraint: &str, suffix: &str) -> (String, String) {
    const TABLES: &[&str] = &[
        "managed_certificates",
        "certificate_versions",
        "certificate_revocations",
        "certificate_profiles",
        "certificate_target_mappings",
        "renewal_policies",
        "deployment_targets",
        "notification_channels",
        "notification_events",
        "acme_accounts",
        "acme_orders",
        "acme_authorizations",
        "acme_challenges",
        "issuers",
        "owners",
        "teams",
        "agents",
        "jobs",
    ];
    let Some(body) = constraint.strip_suffix(suffix) else { return (String::new(), String::new()) };
    for t in TABLES {
        if let Some(rest) = body.strip_prefix(t).and_then(|r| r.strip_prefix('_')) {
            return (t.to_string(), rest.to_string());
        }
    }
    (String::new(), String::new())
}

fn singular(table: &str) -> String {
    match table {
        "managed_certificates" => "certificate".into(),
        "renewal_policies" => "renewal policy".into(),
        "certificate_profiles" => "profile".into(),
        t => t.trim_end_matches('s').replace('_', " "),
    }
}

/// `Json<T>` whose rejections are rendered as the error envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType("expected Content-Type: application/json".into()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `application/json` or any `application/*+json`, parameters (`; charset=utf-8`) ignored —
/// the same media types axum's `Json` accepts.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Maps a failure to read the body: over `CERTCTL_MAX_BODY_SIZE` is a 413, anything else a 400.
pub fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("request body too large".into())
    } else {
        ApiError::BadRequest(format!("unreadable request body: {}", e.body_text()))
    }
}

/// Parses a JSON body into `T`, with the envelope on failure. Strings (values or keys) holding
/// U+0000 are refused up front: PostgreSQL `text` and `jsonb` cannot store NUL, so letting one
/// through would only fail later inside a statement (or, for jsonb, as a 500).
///
/// Every string in the body must be within its field's length limit ([`super::limits`]), or it is
/// a 400 naming the field.
///
/// Every request body of this API is a JSON object; serde would otherwise also build a struct
/// from a JSON array of its fields in order (`[null, null]`), so anything else is refused here.
/// `null` passes through for [`super::extract::OptionalJson`], which parses into `Option<T>`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'n') | None => {}
        Some(_) => return Err(ApiError::BadRequest("the request body must be a JSON object".into())),
    }
    // JSON can carry NUL only as the escape `\u0000`; the full scan runs only when that
    // sequence occurs at all, so ordinary bodies pay one memchr-like pass.
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && holds_nul(&value)
    {
        return Err(ApiError::BadRequest("text must not contain NUL (\\u0000) characters".into()));
    }
    // Text length limits (super::limits): a body of at most TEXT_MAX bytes cannot hold a string
    // over any limit, so small bodies (heartbeats, status reports) skip the extra parse.
    if bytes.len() > super::limits::TEXT_MAX
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        super::limits::check_body(&value)?;
    }
    Json::<T>::from_bytes(bytes).map(|Json(v)| v).map_err(json_rejection)
}

/// Whether any string or object key in `v` contains U+0000.
fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
        JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!("invalid request body: {}", e.body_text())),
        JsonRejection::BytesRejection(e) => body_rejection(e),
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `Query<T>` whose rejections are rendered as the error envelope.
///
/// An empty value (`?page=`) is not treated as absent: `page=` is not a number and `status=` is
/// not a status, so both are a 400 like any other malformed parameter (no silent default).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// `Path<T>` whose rejections are rendered as the error envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// Router fallback: unknown paths get a 404 envelope.
pub async fn not_found_fallback() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Method fallback: known path, wrong method.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_map_to_readable_messages() {
        assert_eq!(conflict_message("managed_certificates_name_key"), "a certificate with this name already exists");
        assert_eq!(fk_message("managed_certificates_owner_id_fkey"), "owner_id refers to a owner that does not exist");
        assert_eq!(conflict_message("teams_name_key"), "a team with this name already exists");
    }
}
