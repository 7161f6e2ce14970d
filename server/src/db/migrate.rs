//! The migration runner: sqlx's migrator over the embedded `migrations/` directory.
//!
//! What the contract asks and how this meets it:
//! - a ledger of applied migrations: `_sqlx_migrations` (version, checksum, success);
//! - concurrent migrators serialise: sqlx takes a Postgres advisory lock before touching the
//!   ledger, so N replicas booting at once apply each migration once;
//! - a changed applied migration is refused (`VersionMismatch`), as is a half-applied one (`Dirty`).
//!
//! The migrator runs on a dedicated connection that is closed afterwards, never through the pool:
//! on failure sqlx returns without unlocking, and a pooled connection would keep holding the
//! session-level advisory lock and block every other replica's boot.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Connection, PgConnection};

/// The embedded migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A migration failure, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Could not connect.
    #[error("cannot connect to run migrations: {0}")]
    Connect(sqlx::Error),
    /// An applied migration's file changed since it was applied.
    #[error(
        "migration {0} was changed after it was applied (checksum differs from the ledger); \
         restore the original file and add a new migration instead"
    )]
    Changed(i64),
    /// A migration failed part-way earlier.
    #[error("migration {0} is marked dirty (it failed part-way); repair the database by hand")]
    Dirty(i64),
    /// The database has a migration this binary does not know.
    #[error("the database has migration {0}, which this binary does not know (is it older than the database?)")]
    Unknown(i64),
    /// Anything else.
    #[error("migration failed: {0}")]
    Other(MigrateError),
}

impl From<MigrateError> for MigrationError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::VersionMismatch(v) => MigrationError::Changed(v),
            MigrateError::Dirty(v) => MigrationError::Dirty(v),
            MigrateError::VersionMissing(v) => MigrationError::Unknown(v),
            other => MigrationError::Other(other),
        }
    }
}

/// Applies `migrator` to the database at `url` on a dedicated connection.
pub async fn run_with(migrator: &Migrator, url: &str) -> Result<(), MigrationError> {
    let mut conn = PgConnection::connect(url).await.map_err(MigrationError::Connect)?;
    let result = migrator.run(&mut conn).await;
    // Closing the session releases the advisory lock even when `run` failed and skipped its unlock.
    let _ = conn.close().await;
    result.map_err(MigrationError::from)
}

/// Applies the embedded migrations.
pub async fn run(url: &str) -> Result<(), MigrationError> {
    run_with(&MIGRATOR, url).await
}
