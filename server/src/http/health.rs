//! Liveness, readiness and version: unauthenticated.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::AppState;

/// How long `/ready` waits for the database.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `/health`, `/ready`, `/api/v1/version`.
pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready)).route("/api/v1/version", get(version))
}

/// Process is up.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "alive")))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "healthy"}))
}

/// 200 when the database answers within 2 s, else 503.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, description = "database reachable"), (status = 503, description = "database unreachable")))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let check = async {
        let mut conn = state.pool.acquire().await?;
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut *conn).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(_)) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(e)) => Err(ApiError::Unavailable(format!("database unavailable: {e}"))),
        Err(_) => Err(ApiError::Unavailable("database did not answer within 2 s".into())),
    }
}

/// Build information.
#[utoipa::path(get, path = "/api/v1/version", tag = "health", responses((status = 200, description = "version")))]
pub async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "name": "certctl-server",
        "api": "v1",
        "instance_id": &*state.instance_id,
    }))
}
