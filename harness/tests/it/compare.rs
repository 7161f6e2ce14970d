//! The regression gate end to end (the verdict logic on synthetic histograms is unit-tested in
//! `gate.rs`): a run compared with itself is within noise and exits 0, and writes compare.json.

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_compared_with_itself_is_within_noise() {
    let out = support::reference_run().await;
    let dir = out.to_str().unwrap();
    let o = certctl_loadtest::run_args(["certctl-loadtest", "compare", dir, dir]).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let verdicts: Vec<&str> = c["results"].as_array().unwrap().iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts.len(), 4);
    assert!(verdicts.iter().all(|v| *v == "within_noise" || *v == "insufficient_data"), "{verdicts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_baseline_records_the_gate_in_summary_json() {
    let base = support::reference_run().await;
    let root = tempfile::tempdir().unwrap();
    let (url, _st) = support::target(None).await;
    // Same scenario as the reference run (same name and label), against a fresh target.
    let sdir = root.path().join("scenarios");
    support::scenario(&sdir, "steady", "/ok", 200.0, 5.0, None, "");
    let out = root.path().join("run");
    let o = support::run_with(&url, &sdir, "steady", &out, &["--baseline", base.to_str().unwrap()]).await;
    let s = support::summary(&out);
    let c = &s["comparison"];
    assert_eq!(c["results"].as_array().unwrap().len(), 4);
    assert_eq!(s["verdict"]["gate_passed"], !c["regressed"].as_bool().unwrap());
    assert_eq!(o.code, if c["regressed"].as_bool().unwrap() { 1 } else { 0 }, "{}", o.message);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Regression gate"));
}
