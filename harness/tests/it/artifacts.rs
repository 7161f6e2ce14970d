//! The run directory: summary.json against its schema, hlogs against the summary, charts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_json_validates_against_the_committed_schema() {
    let out = support::reference_run().await;
    let schema_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let instance = support::summary(&out);
    let errors: Vec<String> =
        validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And a summary that breaks the schema is caught (the test can fail).
    let mut broken = instance.clone();
    broken["scenarios"][0]["labels"][0]["count"] = serde_json::json!("many");
    assert!(!validator.is_valid(&broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hlog_reads_back_to_the_percentiles_in_summary_json() {
    let out = support::reference_run().await;
    let s = support::summary(&out);
    let sc = &s["scenarios"][0];
    let bytes = std::fs::read(out.join(sc["hlog"].as_str().unwrap())).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("#[StartTime: ") && text.contains("#[BaseTime: "));
    assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""));
    let mut merged: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut de = Deserializer::new();
    use base64::Engine as _;
    for entry in IntervalLogIterator::new(&bytes) {
        let LogEntry::Interval(iv) = entry.unwrap() else { continue };
        let raw = base64::engine::general_purpose::STANDARD.decode(iv.encoded_histogram()).unwrap();
        let h: Histogram<u64> = de.deserialize(&mut raw.as_slice()).unwrap();
        let tag = iv.tag().unwrap().as_str().to_string();
        merged.entry(tag).or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()).add(&h).unwrap();
    }
    let l = &sc["labels"][0];
    for (tag, key) in [("get", "corrected"), ("get.service", "service")] {
        let h = &merged[tag];
        assert_eq!(h.len(), l["count"].as_u64().unwrap());
        for (q, p) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (0.999, "p999")] {
            let from_log = h.value_at_quantile(q) as f64 / 1000.0;
            assert_eq!(from_log, l[key][p].as_f64().unwrap(), "{tag} {p}");
        }
        assert_eq!(h.max() as f64 / 1000.0, l[key]["max"].as_f64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_leaves_report_junit_and_charts_and_report_re_renders_them() {
    let out = support::reference_run().await;
    for f in [
        "report.md",
        "junit.xml",
        "steady-spectrum.png",
        "steady-spectrum.svg",
        "steady-timeline.png",
        "steady-timeline.svg",
    ] {
        let m = std::fs::metadata(out.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
        assert!(m.len() > 0, "{f} empty");
    }
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 2, "one test case per threshold");
    assert!(junit.contains("project target missed"));
    std::fs::remove_file(out.join("report.md")).unwrap();
    let o = certctl_loadtest::run_args(["certctl-loadtest", "report", out.to_str().unwrap()]).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| scenario | label | p50 | p95 | p99 | error rate |"));
    assert!(report.contains("| steady | get |"));
}
