//! Faults under load, end to end: the shipped fault scenarios against a throw-away PostgreSQL
//! and real `certctl-server` processes (small fleets, smoke profile).

use std::path::Path;

use serde_json::Value;

use crate::support;

/// Runs a shipped fault scenario in embedded mode; `None` when the server binary is not built.
async fn run_fault(out: &Path, args: &[&str]) -> Option<(certctl_loadtest::Outcome, Value)> {
    let mut all = vec!["--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = support::run_embedded(&all).await?;
    let s = support::summary(out);
    support::validate_summary(&s);
    Some((o, s))
}

/// The exit code the thresholds decide: 1 when a seed threshold failed or a fault check did,
/// else 0 (2 is a run that could not be carried out: never expected here).
fn assert_exit_code_follows_the_thresholds(o: &certctl_loadtest::Outcome, s: &Value) {
    let seed_failed = s["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|sc| sc["thresholds"].as_array().unwrap().iter())
        .any(|t| t["set"] == "seed" && t["verdict"] == "fail");
    let fault_failed = s["scenarios"][0]["faults"]["invariants"].as_array().unwrap().iter().any(|i| i["held"] == false);
    assert_eq!(o.code, s["verdict"]["exit_code"].as_i64().unwrap() as i32, "{}", o.message);
    assert_eq!(o.code, i32::from(seed_failed || fault_failed), "{}", o.message);
}

fn invariants_held(f: &Value) {
    let names: Vec<&str> = f["invariants"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "renewals_end_once",
            "one_version_per_job",
            "no_running_job_with_a_dead_owner",
            "notifications_delivered",
            "audit_rows_of_acknowledged_requests"
        ]
    );
    for i in f["invariants"].as_array().unwrap() {
        assert_eq!(i["held"], true, "{i}");
    }
    let a = &f["accounting"];
    assert_eq!(a["unaccounted"], 0, "{a}");
    let n = |k: &str| a[k].as_u64().unwrap();
    assert_eq!(n("planned"), n("issued") + n("dropped"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_storm_through_a_database_restart_errs_only_inside_the_restart_window_and_recovers_within_2_s() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let Some((o, s)) = run_fault(&out, &["--scenario", "faults_db_restart", "--agents", "500"]).await else { return };
    assert_exit_code_follows_the_thresholds(&o, &s);
    let f = &s["scenarios"][0]["faults"];
    let x = &f["faults"][0];
    assert_eq!(x["kind"], "db_restart");
    let (started, ended) = (x["started_s"].as_f64().unwrap(), x["ended_s"].as_f64().unwrap());
    assert!((5.0..5.5).contains(&started) && ended >= started, "{x}");
    let recovery = x["recovery_s"].as_f64().expect("recovered");
    assert!(recovery <= 2.0, "{x}");
    // Errors only inside the window: none before the restart, none after the recovery second.
    assert_eq!(f["errors_outside"], 0, "{f}");
    if let Some(w) = x["error_window"].as_array() {
        let (first, last) = (w[0].as_f64().unwrap(), w[1].as_f64().unwrap());
        assert!(first >= started && last <= ended + recovery + 1.0, "{x}");
    }
    invariants_held(f);
    // The audit probe wrote through the restart and its acknowledged writes have their rows.
    let audit = &f["invariants"][4]["detail"];
    assert!(!audit.as_str().unwrap().starts_with("0 audit-probe"), "{audit}");
    for file in [
        "report.md",
        "junit.xml",
        "faults_db_restart.hlog",
        "faults_db_restart-timeline.png",
        "faults_db_restart-timeline.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Faults") && report.contains("| faults_db_restart | db_restart | 5.0"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_s_database_stall_shows_in_corrected_p99_health_answers_during_it_and_recovery_is_within_2_s() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let Some((o, s)) = run_fault(&out, &["--scenario", "faults_db_stall", "--agents", "500"]).await else { return };
    assert_exit_code_follows_the_thresholds(&o, &s);
    let sc = &s["scenarios"][0];
    let x = &sc["faults"]["faults"][0];
    assert_eq!(x["kind"], "db_stall");
    assert!(x["detail"].as_str().unwrap().contains("/health mid-stall: 200 in"), "{x}");
    let stalled = x["ended_s"].as_f64().unwrap() - x["started_s"].as_f64().unwrap();
    assert!(stalled >= 3.0, "{x}");
    // Heartbeats due at the stall's start waited it out: the corrected p99 of the worst second
    // holds most of the stall, while service time (from the actual start) cannot show it all.
    let worst =
        sc["labels"][0]["intervals"].as_array().unwrap().iter().map(|i| i["p99"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(worst >= 2000.0, "worst per-second p99 {worst} ms");
    assert!(sc["labels"][0]["corrected"]["p99"].as_f64().unwrap() >= 1000.0);
    let recovery = x["recovery_s"].as_f64().expect("recovered");
    assert!(recovery <= 2.0, "{x}");
    invariants_held(&sc["faults"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sigkilled_mid_wave_has_its_renewals_reclaimed_and_every_one_completed_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let args = ["--scenario", "faults_replica_kill", "--replicas", "3", "--certs", "5000"];
    let Some((o, s)) = run_fault(&out, &args).await else { return };
    assert_exit_code_follows_the_thresholds(&o, &s);
    let sc = &s["scenarios"][0];
    let x = &sc["faults"]["faults"][0];
    assert_eq!(x["kind"], "server_kill");
    assert!(x["detail"].as_str().unwrap().contains("SIGKILL"), "{x}");
    let r = &x["reclaim"];
    let (jobs, reclaim_s, bound) =
        (r["jobs"].as_u64().unwrap(), r["reclaim_s"].as_f64(), r["bound_s"].as_f64().unwrap());
    assert!(jobs > 0, "the killed replica held no claimed job: {x}");
    let reclaim_s = reclaim_s.expect("reclaimed");
    assert!(reclaim_s <= bound, "{r}");
    // Every enqueued renewal ended Completed with exactly one version, some after a reclaim.
    let st = &sc["scheduler_throughput"];
    assert_eq!((&st["completed"], &st["failed"]), (&st["enqueued"], &serde_json::json!(0)), "{st}");
    invariants_held(&sc["faults"]);
    let renewals = sc["faults"]["invariants"][0]["detail"].as_str().unwrap();
    assert!(
        renewals.contains("still open 0") && renewals.contains("without exactly one certificate version 0"),
        "{renewals}"
    );
    assert!(!renewals.contains("retried) 0"), "no job ran twice, so none was reclaimed: {renewals}");
    for i in s["replicas"]["invariants"].as_array().unwrap() {
        assert_eq!(i["held"], true, "{i}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("{jobs} jobs in {reclaim_s:.2} s")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_an_external_target_cannot_suffer_are_refused_with_one_line_and_exit_2() {
    for (fault, why) in
        [("db_restart@1", "cannot cause db_restart"), ("db_kill_connections@1", "without --database-url")]
    {
        let o = certctl_loadtest::run_args([
            "certctl-loadtest",
            "run",
            "--target",
            "http://127.0.0.1:9",
            "--scenario",
            "agent_storm",
            "--fault",
            fault,
        ])
        .await;
        assert_eq!(o.code, 2, "{}", o.message);
        assert!(o.message.contains(why) && !o.message.contains('\n'), "{}", o.message);
    }
    let o = certctl_loadtest::run_args([
        "certctl-loadtest",
        "run",
        "--target",
        "http://127.0.0.1:9",
        "--scenario",
        "agent_storm",
        "--fault",
        "db_stall@3",
    ])
    .await;
    assert_eq!(o.code, 2, "{}", o.message);
    assert!(o.message.contains("db_stall needs duration_s"), "{}", o.message);
}
