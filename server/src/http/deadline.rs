//! The request deadline: every request is answered within `CERTCTL_REQUEST_TIMEOUT`.
//!
//! During a database stall (a frozen disk or VM: SIGSTOP of PostgreSQL) connections stay open
//! and nothing answers, so neither TCP nor the database's own timeouts end a waiting request.
//! This layer does: past the deadline the handler's future is dropped (an open transaction is
//! rolled back when its connection returns to the pool) and the client gets a 503 — the JSON
//! error envelope, or an RFC 8555 problem document under `/acme/`.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::AppState;

/// Middleware: runs the rest of the stack under `CERTCTL_REQUEST_TIMEOUT`.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    let acme = req.uri().path().starts_with("/acme/");
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => timed_out(limit, acme),
    }
}

fn timed_out(limit: Duration, acme: bool) -> Response {
    let detail = format!("the request did not complete within {limit:?} (is the database reachable?)");
    tracing::warn!(?limit, "request timed out");
    if acme {
        crate::acme::problem::Problem::new(crate::acme::problem::ProblemKind::ServerInternal, detail)
            .with_status(axum::http::StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    } else {
        ApiError::Unavailable(detail).into_response()
    }
}
