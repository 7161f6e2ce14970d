//! Strong ETags on the hot list reads (contract §3).
//!
//! For `GET`/`HEAD` of [`HOT_READS`] with a 2xx answer, the body is hashed (SHA-256, quoted
//! hex) into an `ETag`; a matching `If-None-Match` turns the answer into `304 Not Modified`
//! without a body. Polling dashboards then cost the server the query but not the transfer.
//! Bodies over [`MAX_TAGGED_BODY`] pass through untagged (hashing large pages buys little),
//! and errors are never tagged.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Routes that carry an ETag.
pub const HOT_READS: &[&str] = &["/api/v1/certificates", "/api/v1/agents", "/api/v1/jobs", "/api/v1/audit"];

/// Largest body that gets a tag.
pub const MAX_TAGGED_BODY: usize = 64 * 1024;

/// Route layer: tags hot reads and answers conditional requests.
pub async fn middleware(req: Request, next: Next) -> Response {
    let hot = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.extensions().get::<MatchedPath>().is_some_and(|m| HOT_READS.contains(&m.as_str()));
    if !hot {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let resp = next.run(req).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The handlers serialise into memory anyway, so collecting the body costs no extra I/O.
    let bytes = match to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(format!("buffering response body: {e}")).into_response(),
    };
    if bytes.len() > MAX_TAGGED_BODY {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let tag = format!("\"{}\"", hex::encode(Sha256::digest(&bytes)));
    let Ok(tag_value) = HeaderValue::from_str(&tag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.insert(header::ETAG, tag_value.clone());
    if if_none_match.as_deref().is_some_and(|inm| matches_tag(inm, &tag)) {
        let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
        not_modified.headers_mut().insert(header::ETAG, tag_value);
        return not_modified;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// RFC 9110 §13.1.2: `If-None-Match` uses weak comparison and may list several tags or `*`.
fn matches_tag(if_none_match: &str, tag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == tag)
}

#[cfg(test)]
mod tests {
    use super::matches_tag;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        assert!(matches_tag("\"a\"", "\"a\""));
        assert!(matches_tag("\"x\", W/\"a\"", "\"a\""));
        assert!(matches_tag("*", "\"a\""));
        assert!(!matches_tag("\"b\"", "\"a\""));
    }
}
