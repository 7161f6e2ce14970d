//! The open-model schedule and coordinated-omission-free latency.

use std::time::Duration;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_per_second_schedule_over_5_s_issues_1000_requests() {
    let out = support::reference_run().await;
    let s = support::summary(&out);
    let l = &s["scenarios"][0]["labels"][0];
    let count = l["count"].as_u64().unwrap();
    assert!((999..=1001).contains(&count), "count {count}");
    assert_eq!(l["planned"], 1000);
    assert_eq!(l["dropped_starts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_corrected_p99_not_hidden_by_service_time() {
    let root = tempfile::tempdir().unwrap();
    // The target stalls for 1 s, 2 s after the first request. Four users serve 200 req/s: the
    // four requests in flight wait out the stall, the ~200 slots due meanwhile start late.
    let (url, _st) = support::target(Some((Duration::from_secs(2), Duration::from_secs(1)))).await;
    let sdir = root.path().join("scenarios");
    support::scenario(&sdir, "stall", "/ok", 200.0, 5.0, Some(4), "");
    let out = root.path().join("run");
    let o = support::run(&url, &sdir, "stall", &out).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let s = support::summary(&out);
    let l = &s["scenarios"][0]["labels"][0];
    let corrected_p99 = l["corrected"]["p99"].as_f64().unwrap();
    let service_p99 = l["service"]["p99"].as_f64().unwrap();
    assert!(corrected_p99 >= 900.0, "corrected p99 {corrected_p99} ms");
    assert!(service_p99 < 250.0, "service p99 {service_p99} ms");
    // The late starts are counted, and the report shows both latencies.
    assert!(l["late_starts"].as_u64().unwrap() > 100, "{}", l["late_starts"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("{:.2} ms", corrected_p99)), "corrected p99 missing from report");
    assert!(report.contains(&format!("{:.2} ms", service_p99)), "service p99 missing from report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_model_runs_each_user_through_the_sequence_then_pauses() {
    let root = tempfile::tempdir().unwrap();
    let (url, _st) = support::target(None).await;
    let sdir = root.path().join("scenarios");
    support::closed_scenario(&sdir, "closed", 4, 100, 2.0);
    let out = root.path().join("run");
    let o = support::run(&url, &sdir, "closed", &out).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let s = support::summary(&out);
    let sc = &s["scenarios"][0];
    assert_eq!(sc["model"], "closed");
    let first = sc["labels"][0]["count"].as_u64().unwrap();
    let second = sc["labels"][1]["count"].as_u64().unwrap();
    // Every iteration sends both requests, in order; at most one per user is cut by the deadline.
    assert!(first >= 8, "{first}");
    assert!(first - second <= 4, "{first} vs {second}");
    assert_eq!(sc["labels"][0]["planned"], 0);
    assert!(sc["labels"][0]["target_rate"].is_null());
}
