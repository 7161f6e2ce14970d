//! `trend`: run directories ordered by time, one series per scenario × label × metric,
//! change points by E-Divisive means, trend.json valid against its schema, report.html.

use std::path::{Path, PathBuf};

use crate::support;

/// Writes `n` run directories whose summaries are the reference run's, with p99 of `get` set
/// by `p99(i)`; commits are unknown to git, so they are ordered by their `started_at`.
async fn synthetic_runs(root: &Path, n: usize, p99: impl Fn(usize) -> f64) -> Vec<PathBuf> {
    let reference = support::reference_run().await;
    let base = support::summary(&reference);
    (0..n)
        .map(|i| {
            let mut s = base.clone();
            s["commit"] = format!("{:012x}", 0xabc000 + i).into();
            s["started_at"] = format!("2026-11-{:02}T10:00:00Z", i + 1).into();
            let l = &mut s["scenarios"][0]["labels"][0];
            l["corrected"]["p99"] = p99(i).into();
            // p50 wobbles but never shifts.
            l["corrected"]["p50"] = (2.0 + [0.1, -0.1, 0.05, -0.05][i % 4]).into();
            let dir = root.join(format!("run-{i:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&s).unwrap()).unwrap();
            dir
        })
        .collect()
}

async fn trend(dirs: &[PathBuf], out: &Path) -> (certctl_loadtest::Outcome, serde_json::Value) {
    let mut args = vec!["certctl-loadtest".to_string(), "trend".into()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    let o = certctl_loadtest::run_args(args).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("trend.json")).unwrap()).unwrap();
    support::validate("trend.schema.json", &t);
    (o, t)
}

fn series<'a>(t: &'a serde_json::Value, label: &str, metric: &str) -> &'a serde_json::Value {
    t["series"].as_array().unwrap().iter().find(|s| s["label"] == label && s["metric"] == metric).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_in_p99_is_flagged_at_the_first_run_after_it_and_noise_is_not() {
    let root = tempfile::tempdir().unwrap();
    let noise = [0.4, -0.3, 0.1, -0.5, 0.2, 0.0, 0.3, -0.2, 0.5, -0.4, 0.1, -0.1];
    let mut dirs = synthetic_runs(root.path(), 12, |i| if i < 7 { 10.0 } else { 16.0 } + noise[i]).await;
    // Given in any order: trend orders them by time.
    dirs.reverse();
    let out = root.path().join("trend");
    let (_, t) = trend(&dirs, &out).await;
    assert_eq!(t["runs"].as_array().unwrap().len(), 12);
    assert_eq!(t["runs"][0]["time_source"], "started_at");
    assert!(t["runs"][0]["dir"].as_str().unwrap().ends_with("run-00"));
    let p99 = series(&t, "get", "p99");
    let cps = p99["change_points"].as_array().unwrap();
    assert_eq!(cps.len(), 1, "{cps:?}");
    assert_eq!(cps[0]["run"], 7);
    assert_eq!(cps[0]["commit"], format!("{:012x}", 0xabc000 + 7));
    assert_eq!(cps[0]["direction"], "up");
    assert!(series(&t, "get", "p50")["change_points"].as_array().unwrap().is_empty());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"scenario-steady\""));
    assert!(html.contains("1 change point(s)"));
    assert!(out.join("trend-steady.svg").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_run_in_a_noisy_history_is_not_a_shift() {
    let root = tempfile::tempdir().unwrap();
    let noise = [0.4, -0.3, 0.1, -0.5, 0.2, 0.0, 0.3, -0.2, 0.5, -0.4, 0.1, -0.1];
    let dirs = synthetic_runs(root.path(), 12, |i| if i == 6 { 40.0 } else { 10.0 + noise[i] }).await;
    let (_, t) = trend(&dirs, &root.path().join("trend")).await;
    assert!(series(&t, "get", "p99")["change_points"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trend_reads_the_committed_baselines() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/baselines");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("trend");
    let (o, t) = trend(&dirs, &out).await;
    assert!(o.message.contains("runs"));
    assert!(!t["runs"].as_array().unwrap().is_empty());
    assert!(t["series"].as_array().unwrap().iter().any(|s| s["metric"] == "p99"));
    assert!(out.join("report.html").is_file());
    // The committed ceiling searches (one directory, a subdirectory per scenario) are one run,
    // with each scenario's confirmed ceiling as a series of its own.
    assert!(t["runs"].as_array().unwrap().iter().any(|r| r["profile"] == "ceiling"), "{}", t["runs"]);
    for sc in ["agent_storm", "api", "agent_fleet", "acme_enrollment"] {
        let s = t["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["scenario"] == sc && s["metric"] == "ceiling_rate")
            .unwrap_or_else(|| panic!("no ceiling_rate series for {sc}"));
        assert_eq!(s["unit"], "per_s");
        assert!(s["points"][0]["value"].as_f64().unwrap() > 0.0, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trend_without_any_run_directory_exits_2() {
    let root = tempfile::tempdir().unwrap();
    let o = certctl_loadtest::run_args([
        "certctl-loadtest",
        "trend",
        root.path().to_str().unwrap(),
        "--out",
        root.path().join("t").to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.code, 2);
    assert!(o.message.contains("summary.json"), "{}", o.message);
}
