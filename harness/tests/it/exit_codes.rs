//! Exit codes: 0 all held, 1 a threshold failed, 2 the run could not be carried out.

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_run_exits_0() {
    let out = support::reference_run().await;
    let s = support::summary(&out);
    assert_eq!(s["verdict"]["exit_code"], 0);
    // The missed project target is reported but does not fail the run.
    assert_eq!(s["verdict"]["targets_held"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_seed_threshold_exits_1() {
    let root = tempfile::tempdir().unwrap();
    let (url, _st) = support::target(None).await;
    let sdir = root.path().join("scenarios");
    support::scenario(
        &sdir,
        "failing",
        "/fail",
        50.0,
        2.0,
        None,
        "[[thresholds]]\nset = \"seed\"\nlabel = \"get\"\nmetric = \"error_rate\"\nmax = 0.01\n",
    );
    let out = root.path().join("run");
    let o = support::run(&url, &sdir, "failing", &out).await;
    assert_eq!(o.code, 1, "{}", o.message);
    assert!(o.message.contains("seed threshold failed"), "{}", o.message);
    let s = support::summary(&out);
    assert_eq!(s["scenarios"][0]["labels"][0]["errors"]["status_5xx"], s["scenarios"][0]["labels"][0]["count"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_exits_2() {
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let sdir = root.path().join("scenarios");
    support::scenario(&sdir, "nowhere", "/ok", 10.0, 1.0, None, "");
    let o = support::run(&format!("http://127.0.0.1:{port}"), &sdir, "nowhere", &root.path().join("run")).await;
    assert_eq!(o.code, 2, "{}", o.message);
    assert!(o.message.contains("unreachable"), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scenario_exits_2_before_anything_starts() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    support::scenario(&sdir, "real", "/ok", 10.0, 1.0, None, "");
    let o = support::run("http://127.0.0.1:9", &sdir, "imaginary", &root.path().join("run")).await;
    assert_eq!(o.code, 2);
    assert!(o.message.contains("unknown scenario"), "{}", o.message);
}
