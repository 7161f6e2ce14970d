//! `GET /.well-known/pki/crl/{issuer_id}`: the issuer's latest signed CRL (DER,
//! `application/pkix-crl`), unauthenticated so relying parties can fetch it (RFC 5280 §4.2.1.13).
//! An unknown issuer gets the 404 envelope; the first fetch before the CRL loop has run signs one.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::{ApiError, ApiPath};
use crate::AppState;

/// Routes under `/.well-known/pki`.
pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/pki/crl/{issuer_id}", get(crl))
}

async fn crl(State(state): State<AppState>, ApiPath(issuer_id): ApiPath<String>) -> Result<Response, ApiError> {
    let der = crate::issuance::current_crl(&state, &issuer_id).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl"), (header::CACHE_CONTROL, "max-age=300")], der).into_response())
}
