//! The organisation resources: teams, owners, renewal policies, certificate profiles and
//! issuers — plain CRUD under `/api/v1`, one module each. Deleting a row that something still
//! references is a 409 (the foreign key says so, see [`super::extract::delete_error`]);
//! creating or updating one that references an unknown row is a 422.

pub mod issuers;
pub mod owners;
pub mod policies;
pub mod profiles;
pub mod teams;

use serde::Deserialize;
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::extract::{Page, Paged, new_id, require_id};
use crate::AppState;

/// Paging of the organisation lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number (1).
    #[param(minimum = 1, maximum = 18446744073709552.0)]
    pub page: Option<i64>,
    /// Page size (50, max 500).
    #[param(minimum = 1, maximum = 500)]
    pub per_page: Option<i64>,
}

/// Path of one organisation row.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// Id.
    pub id: String,
}

/// One page of `table` in creation order. `table` and `cols` are compile-time constants.
async fn list_rows<T>(pool: &PgPool, table: &str, cols: &str, q: &ListQuery) -> Result<Paged<T>, ApiError>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    let page = Page::from_query(q.page, q.per_page)?;
    let total: i64 = sqlx::query_scalar(sql!("SELECT count(*) FROM {table}")).fetch_one(pool).await?;
    let rows = sqlx::query_as::<_, T>(sql!("SELECT {cols} FROM {table} ORDER BY created_at, id LIMIT $1 OFFSET $2"))
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(pool)
        .await?;
    Ok(Paged::new(rows, total, page))
}

/// One row of `table` by id, or 404 naming `kind`.
async fn get_row<T>(pool: &PgPool, table: &str, cols: &str, kind: &str, id: &str) -> Result<T, ApiError>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as::<_, T>(sql!("SELECT {cols} FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ApiError::not_found(kind, id))
}

/// Deletes one row of `table`: 404 when absent, 409 when still referenced.
async fn delete_row(pool: &PgPool, table: &str, kind: &str, id: &str) -> Result<(), ApiError> {
    let n = sqlx::query(sql!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(pool)
        .await
        .map_err(|e| super::extract::delete_error(kind, e))?
        .rows_affected();
    if n == 0 { Err(ApiError::not_found(kind, id)) } else { Ok(()) }
}

/// The id for a new row: the client's (checked) or `<prefix>-<uuid>`.
fn choose_id(prefix: &str, given: &Option<String>) -> Result<String, ApiError> {
    match given {
        Some(id) => {
            require_id("id", id)?;
            Ok(id.clone())
        }
        None => Ok(new_id(prefix)),
    }
}

/// 422 unless a `validity_days` (when given) is between 1 and
/// [`crate::issuance::MAX_VALIDITY_DAYS`]: no leaf can outlive its CA anyway, and an absurd value
/// (2147483647) used to overflow the date arithmetic of the next issuance.
fn require_validity_days(days: Option<i32>) -> Result<(), ApiError> {
    match days {
        Some(d) if !(1..=crate::issuance::MAX_VALIDITY_DAYS).contains(&d) => Err(ApiError::Unprocessable(format!(
            "validity_days must be between 1 and {}, got {d}",
            crate::issuance::MAX_VALIDITY_DAYS
        ))),
        _ => Ok(()),
    }
}

/// Maps an INSERT failure: a primary-key clash is a 409 naming the id; the rest as usual.
fn insert_error(kind: &str, id: &str, e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint().is_some_and(|c| c.ends_with("_pkey"))
    {
        return ApiError::Conflict(format!("a {kind} with id '{id}' already exists"));
    }
    ApiError::from(e)
}

/// All organisation routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(teams::router())
        .merge(owners::router())
        .merge(policies::router())
        .merge(profiles::router())
        .merge(issuers::router())
}
