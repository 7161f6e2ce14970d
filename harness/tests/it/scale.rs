//! Scale beyond one machine: `--shard I/N` slices of the load and `merge` of their run
//! directories (histograms added, percentiles read from the sum).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use certctl_loadtest::metrics::{Outcome, Recorder, hlog};
use certctl_loadtest::report::{label_summary, summary};
use certctl_loadtest::scenario::Shard;
use certctl_loadtest::scenario::engine::ScheduleCounts;

use crate::support;

async fn merge(runs: &[&Path], out: &Path) -> certctl_loadtest::Outcome {
    let mut args: Vec<String> = vec!["certctl-loadtest".into(), "merge".into()];
    args.extend(runs.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    certctl_loadtest::run_args(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_merge_into_one_run_whose_counts_are_their_sum() {
    let root = tempfile::tempdir().unwrap();
    let (url, st) = support::target(None).await;
    let sdir = root.path().join("scenarios");
    support::scenario(
        &sdir,
        "sharded",
        "/ok",
        100.0,
        3.0,
        None,
        "[[thresholds]]\nset = \"seed\"\nlabel = \"get\"\nmetric = \"error_rate\"\nmax = 0.01\n",
    );
    let (a, b, m) = (root.path().join("s1"), root.path().join("s2"), root.path().join("merged"));
    for (dir, shard) in [(&a, "1/2"), (&b, "2/2")] {
        let o = support::run_with(&url, &sdir, "sharded", dir, &["--shard", shard]).await;
        assert_eq!(o.code, 0, "{}", o.message);
    }
    let (sa, sb) = (support::summary(&a), support::summary(&b));
    assert_eq!(sa["shard"], serde_json::json!({"index": 1, "count": 2}));
    assert_eq!(sb["shard"], serde_json::json!({"index": 2, "count": 2}));
    support::validate_summary(&sa);
    let la = &sa["scenarios"][0]["labels"][0];
    let lb = &sb["scenarios"][0]["labels"][0];
    // Each shard offers half the rate; together they plan the one-generator schedule (300 slots).
    assert_eq!(la["target_rate"].as_f64(), Some(50.0));
    assert_eq!(la["planned"].as_u64().unwrap() + lb["planned"].as_u64().unwrap(), 300);

    let o = merge(&[&a, &b], &m).await;
    assert_eq!(o.code, 0, "{}", o.message);
    let sm = support::summary(&m);
    support::validate_summary(&sm);
    let lm = &sm["scenarios"][0]["labels"][0];
    let n = |l: &serde_json::Value, k: &str| l[k].as_u64().unwrap();
    assert_eq!(n(lm, "count"), n(la, "count") + n(lb, "count"));
    assert_eq!(n(lm, "count"), st.served.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(n(lm, "planned"), 300);
    assert_eq!(n(lm, "dropped_starts"), n(la, "dropped_starts") + n(lb, "dropped_starts"));
    assert_eq!(lm["target_rate"].as_f64(), Some(100.0));
    assert_eq!(sm["merged_from"].as_array().map(Vec::len), Some(2));
    assert!(sm.get("shard").is_none());
    for f in ["report.md", "junit.xml", "sharded.hlog", "sharded-spectrum.png", "sharded-timeline.svg"] {
        assert!(m.join(f).is_file(), "{f} missing from the merged run");
    }
    let report = std::fs::read_to_string(m.join("report.md")).unwrap();
    assert!(report.contains("merged from 2 runs") && report.contains("shard 2/2"), "{report}");
    // The merged hlog holds every request of both shards.
    let logged = hlog::read(&m.join("sharded.hlog")).unwrap();
    assert_eq!(hlog::merged(&logged["get"]).len(), n(lm, "count"));

    // The same shard twice would double-count its slots: refused with one line.
    let o = merge(&[&a, &a], &root.path().join("dup")).await;
    assert_eq!(o.code, 2, "{}", o.message);
    assert!(o.message.contains("appears twice") && !o.message.contains('\n'), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_histograms_split_over_two_shards_equals_the_whole_recording_exactly() {
    // A fixed sample set: latencies from 50 µs to ~3 s, completions over 6 seconds.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let samples: Vec<(u64, u64)> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let latency_us = 50 + (x % 1000) * (x % 3000) + (x >> 40) % 97;
            let end_ms = (x >> 20) % 6000;
            (latency_us, end_ms)
        })
        .collect();
    let labels = vec!["get".to_string()];
    let t0 = Instant::now() + Duration::from_secs(10);
    let (whole, s1, s2) = (Recorder::new(&labels), Recorder::new(&labels), Recorder::new(&labels));
    for r in [&whole, &s1, &s2] {
        r.set_t0(t0);
    }
    for (i, (lat, end)) in samples.iter().enumerate() {
        let ended = t0 + Duration::from_millis(*end);
        let intended = ended - Duration::from_micros(*lat);
        let outcome = if i % 97 == 0 { Outcome::Status(503) } else { Outcome::Ok(200) };
        whole.record(0, intended, intended, ended, outcome, false);
        let shard = if i % 2 == 0 { &s1 } else { &s2 };
        shard.record(0, intended, intended, ended, outcome, false);
    }

    // Three run directories shaped like real ones (the reference run's summary as a template).
    let template = summary::read(&support::reference_run().await).unwrap();
    let root = tempfile::tempdir().unwrap();
    let write_run = |dir: &Path, rec: &Recorder, shard: Option<Shard>| {
        std::fs::create_dir_all(dir).unwrap();
        let stats = rec.snapshot();
        let mut s = template.clone();
        s.shard = shard;
        let sc = &mut s.scenarios[0];
        sc.labels = vec![label_summary(&stats[0], ScheduleCounts::default(), None, sc.duration_s)];
        hlog::write(&dir.join(&sc.hlog), SystemTime::now(), "test", &stats).unwrap();
        summary::write(dir, &s).unwrap();
    };
    let (dw, d1, d2, dm) =
        (root.path().join("whole"), root.path().join("s1"), root.path().join("s2"), root.path().join("merged"));
    write_run(&dw, &whole, None);
    write_run(&d1, &s1, Some(Shard { index: 1, count: 2 }));
    write_run(&d2, &s2, Some(Shard { index: 2, count: 2 }));

    let o = merge(&[&d1, &d2], &dm).await;
    assert!(o.code == 0 || o.code == 1, "{}", o.message);
    let w = summary::read(&dw).unwrap();
    let m = summary::read(&dm).unwrap();
    let (lw, lm) = (&w.scenarios[0].labels[0], &m.scenarios[0].labels[0]);
    assert_eq!(lm.count, 5000);
    assert_eq!(lm.count, lw.count);
    assert_eq!(lm.corrected, lw.corrected, "p50/p90/p95/p99/p99.9/max/mean of the sum = the whole recording");
    assert_eq!(lm.service, lw.service);
    assert_eq!(lm.errors, lw.errors);
    assert_eq!(lm.intervals, lw.intervals, "per-second intervals aligned by index");

    // And the histograms themselves, read back from the hlogs.
    let hw = hlog::read(&dw.join(&w.scenarios[0].hlog)).unwrap();
    let hm = hlog::read(&dm.join(&m.scenarios[0].hlog)).unwrap();
    let (a, b) = (hlog::merged(&hw["get"]), hlog::merged(&hm["get"]));
    assert_eq!(a.len(), b.len());
    for q in [0.5, 0.95, 0.99, 0.999] {
        assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q), "q {q}");
    }
    assert_eq!(a.max(), b.max());
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_shard_exits_2_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    let sdir = root.path().join("scenarios");
    support::scenario(&sdir, "never", "/ok", 10.0, 1.0, None, "");
    for bad in ["0/2", "3/2", "x/y", "2", "1/0"] {
        let o =
            support::run_with("http://127.0.0.1:9", &sdir, "never", &root.path().join("o"), &["--shard", bad]).await;
        assert_eq!(o.code, 2, "{bad}: {}", o.message);
        assert!(o.message.contains("--shard") && !o.message.contains('\n'), "{bad}: {}", o.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_different_profiles_are_not_merged() {
    let base = support::reference_run().await;
    let root = tempfile::tempdir().unwrap();
    let other = root.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut s = summary::read(&base).unwrap();
    s.profile = "ci".into();
    summary::write(&other, &s).unwrap();
    let o = merge(&[&base, &other], &root.path().join("m")).await;
    assert_eq!(o.code, 2, "{}", o.message);
    assert!(o.message.contains("profile") && !o.message.contains('\n'), "{}", o.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violated_multi_replica_invariant_fails_the_run_with_one_line() {
    let mut s = summary::read(&support::reference_run().await).unwrap();
    assert_eq!(certctl_loadtest::verdict(&s).exit_code, 0);
    s.replicas = Some(summary::Replicas {
        count: 2,
        invariants: vec![summary::Invariant {
            name: "job_processed_once".into(),
            held: false,
            detail: "job ids with two versions: 1".into(),
        }],
        balancer: None,
        served_requests: Vec::new(),
    });
    let v = certctl_loadtest::verdict(&s);
    assert_eq!(v.exit_code, 1);
    assert!(v.reason.contains("job_processed_once") && !v.reason.contains('\n'), "{}", v.reason);
    support::validate_summary(&serde_json::to_value(&s).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_that_completed_nothing_makes_the_run_exit_2_with_one_line() {
    let mut s = summary::read(&support::reference_run().await).unwrap();
    assert_eq!(certctl_loadtest::verdict(&s).exit_code, 0);
    let label = s.scenarios[0].labels[0].label.clone();
    s.scenarios[0].labels[0].count = 0;
    let v = certctl_loadtest::verdict(&s);
    assert_eq!(v.exit_code, 2, "{}", v.reason);
    assert!(v.reason.contains(&label) && v.reason.contains("completed no requests"), "{}", v.reason);
    assert!(!v.reason.contains('\n'), "{}", v.reason);
}
