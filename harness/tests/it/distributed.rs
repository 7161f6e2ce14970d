//! Synchronized shards (`run --start-at`): two generator processes started 3 s apart share one
//! schedule zero, and `merge` lines their seconds up into one generator's schedule.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use certctl_loadtest::metrics::hlog;

use crate::support;

/// Rate and length of the test schedule: slots every 200 ms, so a request ends well inside
/// the second it is due in.
const RATE: u64 = 5;
const SECS: u64 = 4;

fn loadtest(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_certctl-loadtest"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(c: std::process::Child) -> Output {
    c.wait_with_output().unwrap()
}

fn counts(summary: &serde_json::Value) -> Vec<u64> {
    summary["scenarios"][0]["labels"][0]["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|iv| iv["count"].as_u64().unwrap())
        .collect()
}

/// Every interval of `label` in `path`, added into one histogram.
fn whole(path: &Path, label: &str) -> hdrhistogram::Histogram<u64> {
    let logged = hlog::read(path).unwrap();
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for iv in &logged[label] {
        h.add(&iv.histogram).unwrap();
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_started_3_s_apart_with_one_start_at_merge_into_one_generators_seconds() {
    let (url, _st) = support::target(None).await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("scenarios");
    support::scenario(&dir, "sync", "/ok", RATE as f64, SECS as f64, None, "");
    let at = SystemTime::now() + Duration::from_secs(8);
    let at_text = certctl_loadtest::clock::rfc3339(at);
    let out = |i: u32| root.path().join(format!("shard-{i}"));
    let args = |i: u32| -> Vec<String> {
        [
            "run",
            "--target",
            &url,
            "--scenarios-dir",
            dir.to_str().unwrap(),
            "--seeds-dir",
            dir.to_str().unwrap(),
            "--scenario",
            "sync",
            "--quiet",
            "--shard",
            &format!("{i}/2"),
            "--start-at",
            &at_text,
            "--out",
            out(i).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a1 = args(1);
    let first = loadtest(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a2 = args(2);
    let second = loadtest(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    let (o1, o2) = tokio::task::spawn_blocking(move || (finished(first), finished(second))).await.unwrap();
    for o in [&o1, &o2] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (s1, s2) = (support::summary(&out(1)), support::summary(&out(2)));
    for s in [&s1, &s2] {
        assert_eq!(s["start"]["at"], at_text.as_str());
        support::validate_summary(s);
    }

    let merged = root.path().join("merged");
    let o = certctl_loadtest::run_args([
        "certctl-loadtest",
        "merge",
        out(1).to_str().unwrap(),
        out(2).to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.code, 0, "{}", o.message);
    let m = support::summary(&merged);
    support::validate_summary(&m);
    assert_eq!(m["start"]["at"], at_text.as_str());
    // One generator's schedule at RATE/s for SECS s: RATE slots due in every second.
    assert_eq!(counts(&m), vec![RATE; SECS as usize], "merged seconds");
    // Each shard's seconds hold its interleaved slots, and they add up second by second.
    let (c1, c2) = (counts(&s1), counts(&s2));
    assert_eq!(c1, [3, 2, 3, 2], "shard 1 takes the even slots");
    assert_eq!(c2, [2, 3, 2, 3], "shard 2 takes the odd slots");
    let sums: Vec<u64> = c1.iter().zip(&c2).map(|(a, b)| a + b).collect();
    assert_eq!(counts(&m), sums);
    // The merged histogram is the whole recording: both shards' intervals added.
    let mut both = whole(&out(1).join("sync.hlog"), "get");
    both.add(whole(&out(2).join("sync.hlog"), "get")).unwrap();
    let merged_h = whole(&merged.join("sync.hlog"), "get");
    assert_eq!(merged_h.len(), RATE * SECS);
    assert_eq!(merged_h, both);
    assert_eq!(m["scenarios"][0]["labels"][0]["count"].as_u64(), Some(RATE * SECS));

    // A shard with another declared start does not belong to this load: refused.
    let mut other = certctl_loadtest::report::summary::read(&out(2)).unwrap();
    if let Some(st) = other.start.as_mut() {
        st.at = certctl_loadtest::clock::rfc3339(at + Duration::from_secs(1));
    }
    certctl_loadtest::report::summary::write(&out(2), &other).unwrap();
    let o = certctl_loadtest::run_args([
        "certctl-loadtest",
        "merge",
        out(1).to_str().unwrap(),
        out(2).to_str().unwrap(),
        "--out",
        root.path().join("refused").to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.code, 2, "{}", o.message);
    assert!(o.message.contains("share one --start-at") && !o.message.contains('\n'), "{}", o.message);
}

#[test]
fn a_start_at_in_the_past_exits_2_with_one_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("scenarios");
    support::scenario(&dir, "sync", "/ok", 1.0, 1.0, None, "");
    for when in [["--start-at", "2020-01-01T00:00:00Z"], ["--start-in", "0"]] {
        let o = finished(loadtest(&[
            "run",
            "--target",
            "http://127.0.0.1:9",
            "--scenarios-dir",
            dir.to_str().unwrap(),
            when[0],
            when[1],
        ]));
        assert_eq!(o.status.code(), Some(2), "{when:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("not in the future"), "{err}");
    }
}
