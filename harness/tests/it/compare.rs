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
