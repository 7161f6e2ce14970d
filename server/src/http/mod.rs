//! The HTTP layer: routing, middleware and one module per resource.
//!
//! Request flow: `request_id` middleware (assigns the id, opens the span) → tracing →
//! body limit → route handler (auth extractors, then DB) → `ApiError` envelope on failure.

pub mod error;
pub mod health;
pub mod pki;
pub mod request_id;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware;
use tower_http::trace::TraceLayer;

use crate::AppState;

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_size;
    Router::new()
        .merge(health::router())
        .merge(pki::router())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
            let id = req.extensions().get::<request_id::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), route, request_id = %id)
        }))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}
