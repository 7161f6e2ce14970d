//! ACME problem documents (RFC 8555 §6.7, RFC 7807): every ACME failure is rendered as
//! `application/problem+json` with an `urn:ietf:params:acme:error:*` type and the status the
//! RFC associates with it. The nonce/`Link` middleware in [`super`] adds `Replay-Nonce` to these
//! responses too, so a client can retry a `badNonce` at once (RFC 8555 §6.5).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The ACME error types this server emits (RFC 8555 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The CSR is unacceptable.
    BadCsr,
    /// The nonce is unknown, expired or already used.
    BadNonce,
    /// The revocation reason is not allowed.
    BadRevocationReason,
    /// The JWS algorithm is not supported.
    BadSignatureAlgorithm,
    /// The request is malformed (also used for 404/405/413 with the matching status).
    Malformed,
    /// The account (kid) does not exist.
    AccountDoesNotExist,
    /// The certificate is already revoked.
    AlreadyRevoked,
    /// The certificate named by `replaces` is already being replaced (RFC 9773 §7.4).
    AlreadyReplaced,
    /// The contact URL is invalid.
    InvalidContact,
    /// The contact scheme is not supported.
    UnsupportedContact,
    /// The order is not in a state that allows the request (finalize before ready).
    OrderNotReady,
    /// Over a rate limit.
    RateLimited,
    /// The server will not issue for this identifier.
    RejectedIdentifier,
    /// The identifier type is not supported.
    UnsupportedIdentifier,
    /// The client lacks authorization.
    Unauthorized,
    /// Challenge validation could not connect to the client's server.
    Connection,
    /// The challenge response was wrong.
    IncorrectResponse,
    /// DNS lookup failed during validation.
    Dns,
    /// A server bug or an unavailable dependency.
    ServerInternal,
}

impl ProblemKind {
    /// The `type` URN's last segment.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::BadCsr => "badCSR",
            ProblemKind::BadNonce => "badNonce",
            ProblemKind::BadRevocationReason => "badRevocationReason",
            ProblemKind::BadSignatureAlgorithm => "badSignatureAlgorithm",
            ProblemKind::Malformed => "malformed",
            ProblemKind::AccountDoesNotExist => "accountDoesNotExist",
            ProblemKind::AlreadyRevoked => "alreadyRevoked",
            ProblemKind::AlreadyReplaced => "alreadyReplaced",
            ProblemKind::InvalidContact => "invalidContact",
            ProblemKind::UnsupportedContact => "unsupportedContact",
            ProblemKind::OrderNotReady => "orderNotReady",
            ProblemKind::RateLimited => "rateLimited",
            ProblemKind::RejectedIdentifier => "rejectedIdentifier",
            ProblemKind::UnsupportedIdentifier => "unsupportedIdentifier",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Connection => "connection",
            ProblemKind::IncorrectResponse => "incorrectResponse",
            ProblemKind::Dns => "dns",
            ProblemKind::ServerInternal => "serverInternal",
        }
    }

    /// The full `urn:ietf:params:acme:error:*` type.
    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    /// The default HTTP status for this type.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::Unauthorized | ProblemKind::OrderNotReady => StatusCode::FORBIDDEN,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::AlreadyReplaced => StatusCode::CONFLICT,
            ProblemKind::ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An ACME failure: a problem document plus the headers it needs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", kind.name())]
pub struct Problem {
    /// The error type.
    pub kind: ProblemKind,
    /// Human-readable detail.
    pub detail: String,
    /// HTTP status (defaults to the kind's).
    pub status: StatusCode,
    /// `Retry-After` in seconds (rate limits).
    pub retry_after: Option<u64>,
    /// `Location` (e.g. the existing account on a key-change conflict).
    pub location: Option<String>,
    /// Supported algorithms, listed on `badSignatureAlgorithm` (RFC 8555 §6.2).
    pub algorithms: Option<Vec<&'static str>>,
}

impl Problem {
    /// A problem of `kind` with `detail` and the kind's status.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            status: kind.status(),
            retry_after: None,
            location: None,
            algorithms: None,
        }
    }

    /// `malformed` (400).
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Malformed, detail)
    }

    /// `unauthorized` (403).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::Unauthorized, detail)
    }

    /// `unauthorized` with 401 for a request from an account that is not `valid` (RFC 8555
    /// §7.3.6: a deactivated account's requests are refused with 401 `unauthorized`).
    pub fn account_not_valid(status: &str) -> Self {
        Self::unauthorized(format!("account is {status}")).with_status(StatusCode::UNAUTHORIZED)
    }

    /// `alreadyReplaced` (409): the certificate named by an order's `replaces` is already
    /// being replaced by another order that is not `invalid` (RFC 9773 §5).
    pub fn already_replaced(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::AlreadyReplaced, detail)
    }

    /// 404 with type `malformed` (RFC 8555 has no "not found" type; Boulder does the same).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::malformed(detail).with_status(StatusCode::NOT_FOUND)
    }

    /// `rateLimited` (429) with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(ProblemKind::RateLimited, detail);
        p.retry_after = Some(retry_after_secs.max(1));
        p
    }

    /// `serverInternal` (500): the detail is logged, not returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "ACME internal error");
        Self::new(ProblemKind::ServerInternal, "internal server error")
    }

    /// Overrides the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The problem as the JSON stored in `acme_challenges.error` / `acme_orders.error`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({ "type": self.kind.urn(), "detail": self.detail, "status": self.status.as_u16() });
        if let Some(algs) = &self.algorithms {
            v["algorithms"] = json!(algs);
        }
        v
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Problem::new(ProblemKind::ServerInternal, "database unavailable, retry later")
                .with_status(StatusCode::SERVICE_UNAVAILABLE),
            other => Problem::internal(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(loc) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(header::LOCATION, loc);
        }
        resp
    }
}

/// The path parameters of an ACME route. A parameter axum cannot decode (not UTF-8, say) is a
/// 400 `malformed` problem document, like every other ACME error, not axum's plain-text
/// rejection.
#[derive(Debug)]
pub struct AcmePath(pub std::collections::HashMap<String, String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AcmePath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| AcmePath(p.0))
            .map_err(|e| Problem::malformed(format!("invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_rfc_statuses_and_urns() {
        assert_eq!(ProblemKind::BadNonce.urn(), "urn:ietf:params:acme:error:badNonce");
        assert_eq!(ProblemKind::BadNonce.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ProblemKind::OrderNotReady.status(), StatusCode::FORBIDDEN);
        assert_eq!(ProblemKind::RateLimited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ProblemKind::BadCsr.urn(), "urn:ietf:params:acme:error:badCSR");
        let p = Problem::rate_limited("x", 0);
        assert_eq!(p.retry_after, Some(1));
    }
}
