//! `GET /.well-known/pki/crl/{issuer_id}`: the issuer's latest signed CRL (DER,
//! `application/pkix-crl`), unauthenticated so relying parties can fetch it (RFC 5280 §4.2.1.13).
//! An unknown issuer (or one that is not the local CA) gets the 404 envelope; the first fetch before the CRL loop has run signs one.

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
    let der = match crate::issuance::current_crl(&state, &issuer_id).await {
        Ok(der) => der,
        // An issuer that is not the local CA publishes no CRL here: nothing at this URL.
        Err(crate::issuance::IssuanceError::NotAllowed(m)) => return Err(ApiError::NotFound(m)),
        Err(e) => return Err(e.into()),
    };
    // A revocation reaches the stored CRL within CERTCTL_CRL_REFRESH_INTERVAL; caches may keep
    // a copy about that long, so a fetched CRL is at most about twice that stale.
    let refresh = state.config.crl_refresh_interval;
    let max_age = (refresh.as_secs() + u64::from(refresh.subsec_nanos() > 0)).max(1);
    let cache = format!("max-age={max_age}");
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl".to_string()), (header::CACHE_CONTROL, cache)], der)
        .into_response())
}
