//! Fleet renewal measurements end to end (embedded PostgreSQL + the real `certctl-server`):
//! the 1-Hz renewal rate during a bulk-renew load, and the scheduler-throughput scenario.

use std::path::Path;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_renewal_rate_is_recorded_with_a_positive_rate_while_bulk_renew_runs() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(
        sdir.join("renewals.toml"),
        r#"
name = "renewals"
description = "a short bulk-renew load over a small fleet"
fixtures = ["01_bulk_renewal_certs.sql"]
[load]
model = "open"
duration_s = 5
[[requests]]
label = "bulk_renew"
method = "POST"
path = "/api/v1/certificates/bulk-renew"
auth = "api_key"
body = '{"certificate_ids": {cert_batch}}'
batch = 100
rate = 5
expect = [200]
[[db_metrics]]
name = "fleet_renewals_per_s"
counter_sql = "SELECT count(*) FROM certificate_versions WHERE certificate_id LIKE 'loadtest-bulk-%'"
[fleet_renewal]
counter_sql = "SELECT count(*) FROM certificate_versions WHERE certificate_id LIKE 'loadtest-bulk-%'"
window_s = 3
[[thresholds]]
set = "target"
label = "_scenario"
metric = "fleet_renewal_rate"
min = 1
[profiles.smoke]
"#,
    )
    .unwrap();
    let out = root.path().join("run");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--certs",
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
    support::validate_summary(&s);
    let f = &s["scenarios"][0]["fleet_renewal"];
    assert_eq!(f["status"], "measured");
    assert_eq!(f["window_s"], 3);
    let versions = f["versions"].as_u64().unwrap();
    assert!(versions > 0, "no renewals measured: {f}");
    assert!(f["peak_window_avg_per_s"].as_f64().unwrap() > 0.0);
    assert!(f["avg_per_s"].as_f64().unwrap() > 0.0);
    let series = f["series"].as_array().unwrap();
    assert!(series.len() >= 4, "about one reading a second over 5 s: {series:?}");
    assert_eq!(series.last().unwrap()["versions"].as_u64(), Some(versions));
    let t = &s["scenarios"][0]["thresholds"][0];
    assert_eq!(t["metric"], "fleet_renewal_rate");
    assert_eq!(t["op"], ">=");
    assert_eq!(t["verdict"], "pass");
    assert!(out.join("renewals-fleet-renewal.png").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Fleet renewal"));
    // The database-derived rate is listed below the resources table, which stays whole: the
    // line right after its only row ends the table.
    let table = report.split("## Resources").nth(1).unwrap();
    let rows: Vec<&str> =
        table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 3, "header, rule and one scenario row: {rows:?}");
    assert!(table.contains("- renewals: fleet_renewals_per_s = "), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_renewal_scenario_renews_a_small_fleet_and_counts_every_job() {
    let root = tempfile::tempdir().unwrap();
    // The shipped scenario, plus the agent fleet's work fixture: its undelivered Deployment
    // jobs (agents' work, left behind by an agent_fleet scenario in a full run) must not hold
    // the quiesce step up.
    let sdir = root.path().join("scenarios");
    std::fs::create_dir_all(&sdir).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fleet_renewal.toml")).unwrap();
    let line = r#"fixtures = ["01_bulk_renewal_certs.sql"]"#;
    assert!(shipped.contains(line));
    let with_agent_work = shipped
        .replace(line, r#"fixtures = ["01_bulk_renewal_certs.sql", "02_agent_fleet.sql", "03_agent_fleet_work.sql"]"#);
    std::fs::write(sdir.join("fleet_renewal.toml"), with_agent_work).unwrap();
    let out = root.path().join("run");
    let Some(o) = support::run_embedded(&[
        "--scenarios-dir",
        sdir.to_str().unwrap(),
        "--scenario",
        "fleet_renewal",
        "--certs",
        "300",
        "--agents",
        "20",
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
    let sc = &s["scenarios"][0];
    assert_eq!(sc["model"], "drain");
    let t = &sc["scheduler_throughput"];
    assert_eq!(t["status"], "measured", "{t}");
    assert_eq!(t["selected"], 300);
    assert_eq!(t["matched"], 300);
    assert_eq!(t["enqueued"], 300);
    assert_eq!(t["completed"], 300);
    assert_eq!(t["failed"], 0);
    assert!(t["seconds"].as_f64().unwrap() > 0.0);
    assert!(t["certs_per_s"].as_f64().unwrap() > 0.0);
    let series = t["series"].as_array().unwrap();
    let per_s: f64 = series.iter().map(|p| p["per_s"].as_f64().unwrap()).sum();
    assert_eq!(per_s, 300.0, "every completion lands in one second of the series");
    assert_eq!(series.last().unwrap()["versions"], 300);
    // The one call is a label like any request.
    assert_eq!(sc["labels"][0]["label"], "bulk_renew_fleet");
    assert_eq!(sc["labels"][0]["count"], 1);
    let verdicts: Vec<(&str, &str)> = sc["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["metric"].as_str().unwrap(), t["verdict"].as_str().unwrap()))
        .collect();
    assert!(verdicts.contains(&("scheduler_not_completed", "pass")), "{verdicts:?}");
    assert!(verdicts.contains(&("scheduler_failed", "pass")), "{verdicts:?}");
    assert!(verdicts.iter().any(|(m, _)| *m == "scheduler_certs_per_s"), "{verdicts:?}");
    assert!(out.join("fleet_renewal-scheduler-throughput.png").is_file());
}
