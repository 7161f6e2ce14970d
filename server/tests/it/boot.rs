//! Booting the server: health, readiness (also after the database goes away), version, request
//! ids, configuration errors, concurrent boots of real processes, graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use certctl_pg_embedded::{Cluster, ClusterOptions, free_port};

use crate::support::{ADMIN_KEY, fresh_database_url, spawn_app, spawn_app_on};

const BIN: &str = env!("CARGO_BIN_EXE_certctl-server");

#[tokio::test]
async fn health_ready_and_version_answer() {
    let app = spawn_app(&[]).await;
    let r = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["status"], "healthy");
    let r = app.client.get(app.url("/ready")).send().await.expect("ready");
    assert_eq!(r.status(), 200);
    let r = app.client.get(app.url("/api/v1/version")).send().await.expect("version");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    app.stop().await;
}

#[tokio::test]
async fn ready_turns_503_when_the_database_goes_away() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default()))
        .await
        .expect("join")
        .expect("own cluster");
    let url = certctl_pg_embedded::create_database(&cluster.url("postgres"), "app").await.expect("db");
    let app = spawn_app_on(&url, &[]).await;
    assert_eq!(app.client.get(app.url("/ready")).send().await.expect("ready").status(), 200);
    app.pool.close().await;
    tokio::task::spawn_blocking(move || cluster.stop()).await.expect("join").expect("stop");
    let r = app.client.get(app.url("/ready")).timeout(Duration::from_secs(10)).send().await.expect("ready");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("envelope");
    assert_eq!(body["error"], "Service Unavailable");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    // Liveness does not depend on the database.
    assert_eq!(app.client.get(app.url("/health")).send().await.expect("health").status(), 200);
}

#[tokio::test]
async fn a_sane_request_id_is_kept_and_an_insane_one_replaced() {
    let app = spawn_app(&[]).await;
    let r = app.client.get(app.url("/health")).header("x-request-id", "abc-123").send().await.expect("req");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.client.get(app.url("/health")).header("x-request-id", "bad id!").send().await.expect("req");
    let id = r.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert_ne!(id, "bad id!");
    assert_eq!(id.len(), 36, "a UUID replaces it");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_get_the_json_envelope() {
    let app = spawn_app(&[]).await;
    let r = app.client.get(app.url("/no/such/thing")).bearer_auth(ADMIN_KEY).send().await.expect("req");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "Not Found");
    assert!(body["message"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn the_pool_size_setting_is_really_applied() {
    let app = spawn_app(&["--database-max-conns", "7"]).await;
    let server = app.server.as_ref().expect("server");
    assert_eq!(server.state.pool.options().get_max_connections(), 7);
    app.stop().await;
}

#[test]
fn bad_configuration_exits_non_zero_with_one_line_naming_the_variable() {
    let out = Command::new(BIN)
        .env_clear()
        .env("CERTCTL_DATABASE_URL", "postgres://127.0.0.1:1/x")
        .env("CERTCTL_AUTH_TYPE", "none")
        .env("CERTCTL_JOB_PROCESSOR_INTERVAL", "soon")
        .output()
        .expect("run binary");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("CERTCTL_JOB_PROCESSOR_INTERVAL"), "{err}");

    let out = Command::new(BIN).env_clear().output().expect("run binary");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CERTCTL_DATABASE_URL"));
}

#[test]
fn help_documents_every_setting_with_its_variable() {
    let out = Command::new(BIN).arg("--help").output().expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.sample")).expect(".env.sample");
    use clap::CommandFactory;
    for arg in certctl_server::Config::command().get_arguments() {
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(help.contains(&*env), "--help lacks {env}");
            assert!(sample.contains(&*env), ".env.sample lacks {env}");
        }
    }
}

#[tokio::test]
async fn four_processes_booting_at_once_on_a_fresh_database_all_become_ready() {
    let url = fresh_database_url().await;
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..4 {
        let port = free_port().expect("port");
        ports.push(port);
        let child = Command::new(BIN)
            .env("CERTCTL_DATABASE_URL", &url)
            .env("CERTCTL_SERVER_PORT", port.to_string())
            .env("CERTCTL_AUTH_TYPE", "none")
            .env("CERTCTL_DEMO_SEED", "true")
            .env("CERTCTL_INSTANCE_ID", format!("boot-{i}"))
            .env("CERTCTL_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        children.push(child);
    }
    let client = reqwest::Client::new();
    for port in &ports {
        let mut ready = false;
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/ready")).send().await
                && r.status() == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "replica on port {port} never became ready");
    }
    let pool = certctl_server::db::connect(&url, 2).await.expect("pool");
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("ledger");
    let expected = certctl_server::db::migrate::MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count();
    assert_eq!(rows as usize, expected, "each migration recorded once");
    assert_eq!(rows, distinct);
    let teams: i64 = sqlx::query_scalar("SELECT count(*) FROM teams").fetch_one(&pool).await.expect("teams");
    assert_eq!(teams, 1, "the demo seed ran idempotently");

    // SIGTERM: every replica shuts down gracefully with exit 0.
    for child in &children {
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
    for mut child in children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
    }
}

#[test]
fn a_throw_away_cluster_is_removed_on_drop_and_on_panic() {
    let cluster = Cluster::start(&ClusterOptions::default()).expect("cluster");
    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").exists());
    drop(cluster);
    assert!(!dir.exists(), "dropped cluster leaves no files");

    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let cluster = Cluster::start(&ClusterOptions::default()).expect("cluster");
        tx.send(cluster.dir().to_path_buf()).expect("send");
        panic!("deliberate panic while holding a cluster");
    });
    assert!(handle.join().is_err());
    let dir = rx.recv().expect("dir");
    assert!(!dir.exists(), "a panic unwinding past the cluster removes it");
}

/// Starts `certctl-dev` and returns it with its cluster directory once the server is ready.
async fn start_dev() -> (std::process::Child, std::path::PathBuf, u16) {
    use std::io::{BufRead, BufReader};
    let port = free_port().expect("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_certctl-dev"))
        .env("CERTCTL_SERVER_PORT", port.to_string())
        .env("CERTCTL_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn certctl-dev");
    let stderr = child.stderr.take().expect("stderr");
    let dir = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let dir = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("certctl-dev: cluster directory ").map(std::path::PathBuf::from))
            .expect("cluster directory line");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        dir
    })
    .await
    .expect("join");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/ready")).send().await
            && r.status() == 200
        {
            return (child, dir, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("certctl-dev never became ready");
}

async fn gone_within(dir: &std::path::Path, secs: u64) -> bool {
    for _ in 0..secs * 10 {
        if !dir.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn ctrl_c_stops_the_dev_server_and_removes_its_cluster() {
    let (mut child, dir, _) = start_dev().await;
    assert!(dir.join("data/PG_VERSION").exists());
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill").success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "Ctrl-C is a clean exit, got {status}");
    assert!(gone_within(&dir, 5).await, "cluster directory {dir:?} left behind after Ctrl-C");
}

#[tokio::test]
async fn a_killed_owner_still_gets_its_cluster_removed_by_the_watchdog() {
    let (mut child, dir, _) = start_dev().await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(gone_within(&dir, 15).await, "watchdog did not remove {dir:?} after SIGKILL");
}
