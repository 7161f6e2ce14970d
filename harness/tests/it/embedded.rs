//! Embedded mode end to end: throw-away PostgreSQL, a real `certctl-server` process (built by
//! `cargo build --workspace` / `cargo test --workspace`), fixtures, sampling, teardown.

use crate::support;

fn scenario(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("probe.toml"),
        r#"
name = "probe"
description = "health and readiness of the embedded server"
fixtures = ["02_agent_fleet.sql"]
[load]
model = "open"
duration_s = 2
[[requests]]
label = "ready"
method = "GET"
path = "/ready"
expect = [200]
rate = 50
[[thresholds]]
set = "seed"
label = "ready"
metric = "error_rate"
max = 0.01
[profiles.smoke]
"#,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_starts_seeds_measures_and_tears_everything_down() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    scenario(&sdir);
    let out = root.path().join("run");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--agents",
        "300",
        "--out",
        out.to_str().unwrap(),
    ])
    .await
    else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.message);
    let s = support::summary(&out);
    assert_eq!(s["mode"], "embedded");
    assert!(s["postgres"]["version"].as_str().unwrap().contains("PostgreSQL"));
    assert!(s["postgres"]["durability"].as_str().unwrap().starts_with("fast"));
    assert_eq!(s["seeding"]["agents"], 300);
    assert_eq!(s["server_settings"]["CERTCTL_KEYGEN_MODE"], "server");
    let sc = &s["scenarios"][0];
    assert!(sc["resources"]["peaks"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(sc["resources"]["peaks"]["db_connections"].as_i64().unwrap() > 0);
    assert!(
        sc["pg_stat_statements"]["status"].as_str().unwrap().starts_with("available")
            || sc["pg_stat_statements"]["status"].as_str().unwrap().starts_with("unavailable")
    );
    assert!(out.join("server.log").is_file());
    assert!(out.join("probe-resources.png").is_file());
    // Torn down: the server no longer answers.
    let target = s["target"].as_str().unwrap();
    let gone = reqwest::Client::new().get(format!("{target}/health")).send().await;
    assert!(gone.is_err(), "server still answering at {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_server_binary_exits_2_and_says_how_to_build_it() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    scenario(&sdir);
    let o = certctl_loadtest::run_args([
        "certctl-loadtest",
        "run",
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--server-bin",
        "/nonexistent/certctl-server",
        "--out",
        root.path().join("run").to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.code, 2);
    assert!(o.message.contains("cargo build --workspace"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_load_and_hold_the_multi_replica_invariants() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    std::fs::create_dir_all(&sdir).unwrap();
    // Bulk renewals of a small fleet: jobs the two replicas' processors race to claim.
    std::fs::write(
        sdir.join("renew.toml"),
        r#"
name = "renew"
description = "bulk renewals spread over two replicas"
fixtures = ["01_bulk_renewal_certs.sql"]
[load]
model = "open"
duration_s = 4
[[requests]]
label = "bulk_renew"
method = "POST"
path = "/api/v1/certificates/bulk-renew"
auth = "api_key"
body = '{"certificate_ids": {cert_batch}}'
batch = 10
rate = 4
expect = [200]
check_json_field = "total_matched"
[[thresholds]]
set = "seed"
label = "bulk_renew"
metric = "error_rate"
max = 0.01
[profiles.smoke]
"#,
    )
    .unwrap();
    let out = root.path().join("run");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--certs",
        "200",
        "--replicas",
        "2",
        "--balancer",
        "round-robin",
        "--out",
        out.to_str().unwrap(),
    ])
    .await
    else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.message);
    let s = support::summary(&out);
    assert_eq!(s["replicas"]["count"], 2);
    let inv = s["replicas"]["invariants"].as_array().unwrap();
    let names: Vec<&str> = inv.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["job_processed_once", "renewed_once_per_job", "replicas_share_the_limiter", "shared_rate_limit_exact"]
    );
    for i in inv {
        eprintln!("{}: {}", i["name"], i["detail"]);
        assert_eq!(i["held"], true, "{}: {}", i["name"], i["detail"]);
    }
    assert!(inv[3]["detail"].as_str().unwrap().contains("admitted 5,"), "{}", inv[3]["detail"]);
    assert!(s["replicas"]["balancer"].as_str().unwrap().starts_with("round-robin in the harness"));
    let served = s["replicas"]["served_requests"].as_array().unwrap();
    assert!(served.len() == 2 && served.iter().all(|n| n.as_u64().unwrap() > 0), "{served:?}");
    assert!(out.join("server.log").is_file() && out.join("server-2.log").is_file());
    assert_eq!(s["server_settings"]["CERTCTL_RATELIMIT_BACKEND"], "postgres");
    support::validate_summary(&s);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("held `shared_rate_limit_exact`"), "{report}");
    // Both servers were torn down.
    let targets: Vec<&str> = s["target"].as_str().unwrap().split(", ").collect();
    assert_eq!(targets.len(), 2, "{targets:?}");
    for url in targets {
        assert!(reqwest::Client::new().get(format!("{url}/health")).send().await.is_err(), "{url} still up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_hold_the_invariants_and_every_replica_serves() {
    if certctl_loadtest::balancer::find_haproxy().is_none() {
        eprintln!("skipped: haproxy is not installed (scripts/ensure-haproxy.sh)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    std::fs::create_dir_all(&sdir).unwrap();
    // Renewal jobs for the replicas' processors to race over, and reads that haproxy spreads.
    std::fs::write(
        sdir.join("spread.toml"),
        r#"
name = "spread"
description = "bulk renewals and reads through haproxy"
fixtures = ["01_bulk_renewal_certs.sql"]
[load]
model = "open"
duration_s = 4
[[requests]]
label = "bulk_renew"
method = "POST"
path = "/api/v1/certificates/bulk-renew"
auth = "api_key"
body = '{"certificate_ids": {cert_batch}}'
batch = 10
rate = 4
expect = [200]
check_json_field = "total_matched"
[[requests]]
label = "health"
method = "GET"
path = "/health"
rate = 30
expect = [200]
[[thresholds]]
set = "seed"
label = "health"
metric = "error_rate"
max = 0.01
[profiles.smoke]
"#,
    )
    .unwrap();
    let out = root.path().join("run");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--certs",
        "200",
        "--replicas",
        "3",
        "--balancer",
        "haproxy",
        "--out",
        out.to_str().unwrap(),
    ])
    .await
    else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.message);
    let s = support::summary(&out);
    support::validate_summary(&s);
    let r = &s["replicas"];
    assert_eq!(r["count"], 3);
    for i in r["invariants"].as_array().unwrap() {
        assert_eq!(i["held"], true, "{}: {}", i["name"], i["detail"]);
    }
    let balancer = r["balancer"].as_str().unwrap();
    assert!(balancer.starts_with("HAProxy version") && balancer.contains("roundrobin over 3 servers"), "{balancer}");
    // The load went to haproxy's one address, and every replica answered part of it.
    let target = s["target"].as_str().unwrap();
    assert!(!target.contains(", ") && balancer.contains(target), "{target} / {balancer}");
    let served: Vec<u64> = r["served_requests"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(served.len(), 3);
    assert!(served.iter().all(|n| *n > 10), "requests per replica: {served:?}");
    let cfg = std::fs::read_to_string(out.join("haproxy.cfg")).unwrap();
    assert!(cfg.contains("http-check send meth GET uri /ready"), "{cfg}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("HAProxy version"), "the report names the balancing");
    // haproxy was stopped with the servers.
    assert!(reqwest::Client::new().get(format!("{target}/health")).send().await.is_err(), "{target} still up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_replica_memory_limiters_break_the_shared_rate_limit_invariant() {
    // Two servers on one database, each with its own in-memory limiter: the HTTP probe must
    // see each admit the account's key-change budget, 2 × 5, and call the invariant broken.
    let Ok(server_bin) = certctl_loadtest::embedded::find_server_bin(None) else {
        eprintln!("skipped: no certctl-server binary");
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let opts = certctl_loadtest::embedded::EmbeddedOptions {
        server_bin: server_bin.clone(),
        durability: certctl_pg_embedded::Durability::Fast,
        log_dir: logs.path().to_path_buf(),
        api_key: "loadtest-probe-test".into(),
        ready_timeout: std::time::Duration::from_secs(120),
        replicas: 1,
        fault_settings: false,
        extra_env: Vec::new(),
    };
    let env = {
        let _g = support::lock().await;
        certctl_loadtest::embedded::Embedded::start(&opts, || false).await.unwrap()
    };
    assert_ne!(env.server_env.get("CERTCTL_RATELIMIT_BACKEND").map(String::as_str), Some("postgres"));
    let port = certctl_pg_embedded::free_port().unwrap();
    let mut second = std::process::Command::new(&server_bin);
    for (k, v) in certctl_loadtest::embedded::SERVER_DEFAULTS {
        second.env(k, v);
    }
    let mut second = second
        .env("CERTCTL_DATABASE_URL", &env.database_url)
        .env("CERTCTL_SERVER_HOST", "127.0.0.1")
        .env("CERTCTL_SERVER_PORT", port.to_string())
        .env("CERTCTL_RATELIMIT_BACKEND", "memory")
        .env("CERTCTL_API_KEYS_NAMED", "loadtest:loadtest-probe-test:admin")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let second_url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..600 {
        if client.get(format!("{second_url}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&env.database_url).await.unwrap();
    let urls = vec![env.base_url.clone(), second_url];
    let from = certctl_loadtest::replicas::db_now(&pool).await.unwrap();
    let r = certctl_loadtest::replicas::check(
        &pool,
        from,
        certctl_loadtest::replicas::Topology {
            instance_ids: &[],
            pids: &[],
            replica_urls: &urls,
            probe_urls: &urls,
            balancer: "test",
            api_key: None,
        },
    )
    .await
    .unwrap();
    let _ = second.kill();
    let _ = second.wait();
    assert!(ready, "the second server never became ready");
    let inv = r.invariants.iter().find(|i| i.name == "shared_rate_limit_exact").unwrap();
    assert!(!inv.held, "{}", inv.detail);
    assert!(inv.detail.contains("admitted 10,"), "{}", inv.detail);
    drop(env);
}
