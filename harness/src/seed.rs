//! Fixtures: apply `seeds/*.sql` in lexical order on one connection.
//!
//! Fleet sizes reach the SQL as session settings (`SET certctl.certs = '…'`,
//! `SET certctl.agents = '…'`), read with `current_setting(…, true)` so the same files also run
//! under psql (`PGOPTIONS='-c certctl.certs=…'`). Each file is sent as one simple-protocol batch
//! (`raw_sql`): the files are plain SQL, not prepared statements.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::Connection;

use crate::scenario::template::Fleet;

/// Problems seeding.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The seeds directory or a file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A fixture a scenario names does not exist.
    #[error("fixture {0} not found in the seeds directory")]
    Missing(String),
    /// The database refused.
    #[error("seeding {file}: {source}")]
    Db {
        /// The file being applied.
        file: String,
        /// The cause.
        source: sqlx::Error,
    },
}

/// What seeding did, for summary.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedReport {
    /// Files applied, in order.
    pub files: Vec<String>,
    /// Fleet certificates asked for.
    pub certs: u64,
    /// Fleet agents asked for.
    pub agents: u64,
    /// Wall time of the seeding (summed when fixtures are applied before several scenarios).
    pub seconds: f64,
}

/// The `*.sql` files of `dir`, sorted by name.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SeedError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SeedError::Read { path: dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> =
        rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sql")).collect();
    files.sort();
    Ok(files)
}

/// Applies `files` (all of `dir` when `only` is `None`) with the fleet sizes.
pub async fn apply(
    database_url: &str,
    dir: &Path,
    only: Option<&[String]>,
    fleet: Fleet,
) -> Result<SeedReport, SeedError> {
    let mut files = list(dir)?;
    if let Some(only) = only {
        for want in only {
            if !files.iter().any(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == *want)) {
                return Err(SeedError::Missing(want.clone()));
            }
        }
        files.retain(|f| f.file_name().is_some_and(|n| only.iter().any(|w| n.to_string_lossy() == *w)));
    }
    let t = Instant::now();
    let db = |file: &str| {
        let file = file.to_string();
        move |source| SeedError::Db { file, source }
    };
    let mut conn = sqlx::PgConnection::connect(database_url).await.map_err(db("(connect)"))?;
    // Values are integers formatted by us, so building the SET text is safe; SET cannot take
    // bind parameters.
    let set = format!("SET certctl.certs = '{}'; SET certctl.agents = '{}';", fleet.certs, fleet.agents);
    sqlx::raw_sql(sqlx::AssertSqlSafe(set)).execute(&mut conn).await.map_err(db("(settings)"))?;
    let mut names = Vec::new();
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let sql = std::fs::read_to_string(f).map_err(|source| SeedError::Read { path: f.clone(), source })?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.map_err(db(&name))?;
        names.push(name);
    }
    let _ = conn.close().await;
    Ok(SeedReport { files: names, certs: fleet.certs, agents: fleet.agents, seconds: secs(t.elapsed()) })
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
