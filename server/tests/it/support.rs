#![allow(dead_code)] // helpers used by some test modules only
//! Test support: one throw-away PostgreSQL cluster per test binary, a fresh database per test,
//! and `spawn_app` that serves the real router on port 0.
//!
//! With `DATABASE_URL` set, tests create their databases on that server instead.

use std::sync::OnceLock;

use certctl_pg_embedded::{Cluster, ClusterOptions, create_database};
use certctl_server::config::{Config, ConfigOutcome};
use certctl_server::{AppState, RunningServer};
use sqlx::PgPool;

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// URL of a maintenance database on the shared server.
pub fn admin_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    let cluster = CLUSTER.get_or_init(|| Cluster::start(&ClusterOptions::default()).map_err(|e| e.to_string()));
    match cluster {
        Ok(c) => c.url("postgres"),
        Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
    }
}

/// A fresh, empty database; returns its URL.
pub async fn fresh_database_url() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    create_database(&admin_url(), &name).await.expect("create test database")
}

/// A fresh database with every migration applied (and the demo seed if `seed`).
pub async fn migrated_database(seed: bool) -> (String, PgPool) {
    let url = fresh_database_url().await;
    certctl_server::db::migrate::run(&url).await.expect("migrate");
    let pool = certctl_server::db::connect(&url, 10).await.expect("pool");
    if seed {
        certctl_server::db::demo_seed(&pool).await.expect("seed");
    }
    (url, pool)
}

/// Test API keys: `admin` (admin) and `reader` (not admin).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// Non-admin key.
pub const USER_KEY: &str = "test-user-key-0123456789";

/// A configuration for `url` with test keys and `extra` flags.
pub fn test_config(url: &str, extra: &[&str]) -> Config {
    let keys = format!("admin:{ADMIN_KEY}:admin,reader:{USER_KEY}");
    let mut args = vec![
        "certctl-server",
        "--database-url",
        url,
        "--api-keys-named",
        &keys,
        "--server-port",
        "0",
        "--demo-seed",
        "true",
        "--log-format",
        "pretty",
    ];
    args.extend_from_slice(extra);
    match Config::parse_from_args(args) {
        Ok(ConfigOutcome::Run(c)) => *c,
        other => panic!("test config did not parse: {other:?}"),
    }
}

/// Starts the real server on 127.0.0.1:0 against a fresh, migrated, seeded database.
pub async fn spawn_app(extra: &[&str]) -> TestApp {
    let url = fresh_database_url().await;
    spawn_app_on(&url, extra).await
}

/// Starts the real server on 127.0.0.1:0 against the database at `url`.
pub async fn spawn_app_on(url: &str, extra: &[&str]) -> TestApp {
    let config = test_config(url, extra);
    let state = AppState::build(config).await.expect("build state");
    let pool = state.pool.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = certctl_server::serve(listener, state).await.expect("serve");
    let base = format!("http://{}", server.addr);
    TestApp { base, pool, url: url.to_string(), client: reqwest::Client::new(), server: Some(server) }
}

/// A running test server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A pool on the app's database, for assertions.
    pub pool: PgPool,
    /// The database URL.
    pub url: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The server handle.
    pub server: Option<RunningServer>,
}

impl TestApp {
    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET with the admin key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(ADMIN_KEY).send().await.expect("request")
    }

    /// POST JSON with the admin key.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(ADMIN_KEY).json(body).send().await.expect("request")
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("shutdown");
        }
    }
}
