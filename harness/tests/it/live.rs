//! `--metrics-listen`: a real Prometheus (Debian's `prometheus`, on a loopback port with a
//! temporary config) scrapes the harness's live metrics and — found through the harness's
//! `/targets` service discovery — the embedded server's `/metrics` during a short run; the
//! test then asks Prometheus's HTTP API for both.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const KEY: &str = "loadtest-live-metrics-test-key";

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The scrape config the docs show (docs/operator/scale.md), with this test's ports.
fn config(harness: u16) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: certctl-loadtest
    static_configs:
      - targets: ["127.0.0.1:{harness}"]
  - job_name: certctl-server
    authorization:
      credentials: {KEY}
    http_sd_configs:
      - url: http://127.0.0.1:{harness}/targets
        refresh_interval: 1s
"#
    )
}

async fn query(prom: u16, q: &str) -> Vec<serde_json::Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{prom}/api/v1/query"), &[("query", q)]).unwrap();
    let v: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn scenario(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("watched.toml"),
        r#"
name = "watched"
description = "a short open-model run that Prometheus watches"
fixtures = ["02_agent_fleet.sql"]
[load]
model = "open"
duration_s = 8
[[requests]]
label = "ready"
method = "GET"
path = "/ready"
expect = [200]
rate = 40
[profiles.smoke]
"#,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_harness_and_the_server_while_a_run_runs() {
    if !support::ensure_tool("prometheus") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (harness, prom) = (support::free_port(), support::free_port());
    let cfg = root.path().join("prometheus.yml");
    std::fs::write(&cfg, config(harness)).unwrap();
    let log = std::fs::File::create(root.path().join("prometheus.log")).unwrap();
    let _p = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", root.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{prom}/-/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let sdir = root.path().join("scenarios");
    scenario(&sdir);
    let out = root.path().join("run");
    let listen = format!("127.0.0.1:{harness}");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--agents",
        "100",
        "--api-key",
        KEY,
        "--metrics-listen",
        &listen,
        "--out",
        out.to_str().unwrap(),
    ])
    .await
    else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.message);

    // The run is over and its targets are gone: ask for the last value each series had.
    let requests =
        query(prom, r#"max_over_time(certctl_loadtest_requests_total{scenario="watched",label="ready"}[10m])"#).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let n: f64 = requests[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(n > 0.0, "harness request counter {n}");
    let buckets = query(
        prom,
        r#"max_over_time(certctl_loadtest_request_duration_seconds_bucket{scenario="watched",le="+Inf"}[10m])"#,
    )
    .await;
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    let offered = query(prom, "max_over_time(certctl_loadtest_offered_rate_requests_per_second[10m])").await;
    assert_eq!(offered[0]["value"][1], "40");
    let server = query(prom, "max_over_time(certctl_http_request_duration_seconds_count[10m])").await;
    assert!(!server.is_empty(), "no server HTTP histogram scraped");
    assert!(server.iter().all(|s| s["metric"]["job"] == "certctl-server"));
    let cpu = query(prom, "max_over_time(certctl_loadtest_generator_cpu_seconds_total[10m])").await;
    assert!(!cpu.is_empty());
}
