//! `ab` against in-process targets whose service time is known by construction (external mode,
//! `--a-url`/`--b-url`), and once embedded through the real server.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support;

/// `certctl-loadtest ab --a-url A --b-url B` on a 230/s one-label scenario: 8 rounds (up to 14
/// while a verdict is inconclusive) of 2-s trials after 1 s of warm-up, fixed seed, one goose
/// run at a time. 230/s, not 200/s: at 200/s every due time is a whole 5 ms after time zero,
/// so every request of a trial meets tokio's 1-ms timer tick at the same phase, and a trial's
/// p50 jumped by up to 1 ms with that phase (3.0 or 3.9 ms for one 2.0-ms target). At
/// 4.35 ms spacing the phases spread evenly within every trial.
async fn ab(a: &str, b: &str, root: &Path, extra: &[&str]) -> (certctl_loadtest::Outcome, Value) {
    let sdir = root.join("scenarios");
    support::scenario(&sdir, "svc", "/ok", 230.0, 5.0, None, "");
    let out = root.join("ab");
    let mut args: Vec<String> = ["certctl-loadtest", "ab", "--a-url", a, "--b-url", b, "--scenario", "svc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (k, v) in [("--scenarios-dir", &sdir), ("--seeds-dir", &sdir), ("--out", &out)] {
        args.extend([k.to_string(), v.to_str().unwrap().to_string()]);
    }
    let fixed = ["--rounds", "8", "--max-rounds", "14", "--trial-s", "2", "--warmup-s", "1", "--seed", "7", "--quiet"];
    args.extend(fixed.iter().chain(extra).map(|s| s.to_string()));
    let o = {
        let _g = support::lock().await;
        certctl_loadtest::run_args(args).await
    };
    let j = support::read_json(&out.join("ab.json"));
    support::validate("ab.schema.json", &j);
    (o, j)
}

/// Minimum effects for these short trials on a shared machine (the wiring is under test, not
/// this machine's calibration): p95 ±25 %, p99 ±50 %.
const LOOSE: [&str; 4] = ["--min-effect-p95", "0.25", "--min-effect-p99", "0.5"];

fn verdict<'a>(j: &'a Value, metric: &str) -> &'a str {
    let c = j["comparisons"].as_array().unwrap().iter().find(|c| c["label"] == "get" && c["metric"] == metric);
    c.unwrap_or_else(|| panic!("no get {metric} in {}", j["comparisons"]))["verdict"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_service_time_on_both_sides_is_no_change_on_every_metric() {
    let root = tempfile::tempdir().unwrap();
    let a = support::service_time_target(Duration::from_micros(2000), None);
    let b = support::service_time_target(Duration::from_micros(2000), None);
    let (o, j) = ab(&a, &b, root.path(), &LOOSE).await;
    assert_eq!(o.code, 0, "{}", o.message);
    for m in ["p50", "p95", "p99", "error_rate"] {
        assert_eq!(verdict(&j, m), "no_change", "{m}: {}", j["comparisons"]);
    }
    // The rounds ran in the seeded random order, and it is recorded.
    let orders: Vec<Vec<String>> = j["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .collect();
    let want: Vec<Vec<String>> = certctl_loadtest::ab::round_orders(7, orders.len())
        .iter()
        .map(|o| o.iter().map(|&i| certctl_loadtest::ab::SIDES[i].to_string()).collect())
        .collect();
    assert_eq!(orders, want);
    assert!(orders.iter().any(|o| o[0] == "a") && orders.iter().any(|o| o[0] == "b"), "{orders:?}");
    assert_eq!(j["seed"], 7);
    // Every trial left its histograms; the report and the chart exist.
    let out = root.path().join("ab");
    for r in j["rounds"].as_array().unwrap() {
        for side in ["a", "b"] {
            assert!(out.join(r[side]["hlog"].as_str().unwrap()).is_file());
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## A/B comparison") && report.contains("| get | p99 |"), "{report}");
    assert!(out.join("svc-ab.png").is_file() && out.join("svc-ab.svg").is_file());
    // report.html: self-contained, the A/B section with its table and the ratio chart inline.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"ab\"") && html.contains("<svg"), "no A/B section or inline chart");
    assert!(html.contains(">p99<") && html.contains(">no change<"), "table rows missing");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_time_of_2_4_ms_against_2_0_ms_is_a_regressed_p50() {
    let root = tempfile::tempdir().unwrap();
    let a = support::service_time_target(Duration::from_micros(2000), None);
    let b = support::service_time_target(Duration::from_micros(2400), None);
    let mut extra = LOOSE.to_vec();
    extra.extend(["--min-effect-p50", "0.05"]);
    let (o, j) = ab(&a, &b, root.path(), &extra).await;
    assert_eq!(verdict(&j, "p50"), "regressed", "{}", j["comparisons"]);
    assert_eq!(o.code, 1, "{}", o.message);
    assert!(o.message.contains("REGRESSED") && o.message.contains("get p50"), "{}", o.message);
    let p50 = j["comparisons"].as_array().unwrap().iter().find(|c| c["metric"] == "p50").unwrap();
    let r = p50["median_ratio"].as_f64().unwrap();
    // 2.4 / 2.0 on the service time, diluted by the request overhead.
    assert!((1.03..=1.3).contains(&r), "median ratio {r}");
    assert_eq!(j["outcome"]["exit_code"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rare_50_ms_stall_on_b_is_a_regressed_p99_but_not_p50() {
    let root = tempfile::tempdir().unwrap();
    let a = support::service_time_target(Duration::from_micros(2000), None);
    // Every 40th request (2.5 %) 50 ms longer: above the 99th percentile, far below the 50th.
    let b = support::service_time_target(Duration::from_micros(2000), Some((40, Duration::from_millis(50))));
    let (o, j) = ab(&a, &b, root.path(), &LOOSE).await;
    assert_eq!(verdict(&j, "p99"), "regressed", "{}", j["comparisons"]);
    assert_eq!(verdict(&j, "p50"), "no_change", "{}", j["comparisons"]);
    assert_eq!(o.code, 1, "{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_both_sides_start_every_trial_from_the_same_database() {
    let Ok(bin) = certctl_loadtest::embedded::find_server_bin(None) else {
        eprintln!("skipped: certctl-server binary not built");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("ab");
    let bin = bin.to_str().unwrap();
    let args = [
        "certctl-loadtest",
        "ab",
        "--a-bin",
        bin,
        "--b-bin",
        bin,
        "--b-env",
        "CERTCTL_LOG_LEVEL=error",
        "--scenario",
        "agent_storm",
        "--agents",
        "300",
        "--certs",
        "300",
        "--rate",
        "50",
        "--rounds",
        "6",
        "--trial-s",
        "1",
        "--warmup-s",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = {
        let _g = support::lock().await;
        certctl_loadtest::run_args(args).await
    };
    assert!(o.code == 0 || o.code == 1, "{}", o.message);
    let j = support::read_json(&out.join("ab.json"));
    support::validate("ab.schema.json", &j);
    assert_eq!(j["mode"], "embedded");
    assert_eq!(j["sides"]["b"]["env"]["CERTCTL_LOG_LEVEL"], "error");
    // Seeded once, then every trial on a fresh clone of the template: one fingerprint for all
    // twelve trials of both sides.
    let fps: Vec<&str> = j["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| [r["a"]["db_fingerprint"].as_str().unwrap(), r["b"]["db_fingerprint"].as_str().unwrap()])
        .collect();
    assert_eq!(fps.len(), 12);
    assert!(fps.iter().all(|f| *f == fps[0]), "{fps:?}");
    assert_eq!(j["databases_equal"], true);
    assert!(j["rounds"][0]["a"]["requests"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_fraction_is_taken_of_the_ceiling_measured_on_a_first() {
    let root = tempfile::tempdir().unwrap();
    // 20 workers × 50 ms: exactly 400 requests/s on both sides.
    let a = crate::ceiling::fixed_capacity(20, Duration::from_millis(50)).await;
    let b = crate::ceiling::fixed_capacity(20, Duration::from_millis(50)).await;
    let sdir = root.path().join("scenarios");
    let p99 = "[[thresholds]]\nset = \"target\"\nlabel = \"get\"\nmetric = \"p99\"\nmax = 150\n";
    support::scenario(&sdir, "cap", "/ok", 50.0, 5.0, None, p99);
    let out = root.path().join("ab");
    let args = [
        "certctl-loadtest",
        "ab",
        "--a-url",
        &a,
        "--b-url",
        &b,
        "--scenario",
        "cap",
        "--rate-fraction",
        "0.5",
        "--rounds",
        "6",
        "--trial-s",
        "2",
        "--warmup-s",
        "1",
        "--quiet",
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--seeds-dir",
        sdir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = {
        let _g = support::lock().await;
        certctl_loadtest::run_args(args).await
    };
    assert!(o.code == 0 || o.code == 1, "{}", o.message);
    let j = support::read_json(&out.join("ab.json"));
    support::validate("ab.schema.json", &j);
    let r = &j["rate"];
    assert_eq!(r["source"], "ceiling_fraction");
    let ceiling = r["ceiling_rate"].as_f64().unwrap();
    assert!((360.0..=440.0).contains(&ceiling), "ceiling {ceiling}/s of a 400/s server");
    assert!((r["offered_rate"].as_f64().unwrap() - 0.5 * ceiling).abs() < 1e-6, "{r}");
    assert!(out.join("ceiling/ceiling.json").is_file());
    // Every trial ran at that rate: about 2 s × ceiling/2 requests measured.
    let n = j["rounds"][0]["a"]["requests"].as_f64().unwrap();
    assert!((n - ceiling).abs() < 0.1 * ceiling, "{n} requests");
}
