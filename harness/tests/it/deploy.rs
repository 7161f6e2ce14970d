//! The Kubernetes manifests under deploy/k8s/ validate against the Kubernetes schemas
//! (`kubernetes-validate` from PyPI, strict: unknown fields fail; its bundled schemas need no
//! cluster and no network). `make test` installs it (scripts/ensure-kubernetes-validate.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validate(files: &[PathBuf]) -> (i32, String) {
    let bin = repo_root().join("tools/kubernetes-validate/.venv/bin/kubernetes-validate");
    let out =
        Command::new(&bin).arg("--strict").args(files).output().unwrap_or_else(|e| {
            panic!("cannot run {} ({e}); run scripts/ensure-kubernetes-validate.sh", bin.display())
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn manifests() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_kubernetes_manifest_validates_against_the_schemas() {
    let files = manifests();
    assert!(!files.is_empty());
    let (code, text) = validate(&files);
    assert_eq!(code, 0, "{text}");
    // Every document was checked (an empty or unparsed one would not say "passed").
    for kind in ["configmap/", "persistentvolumeclaim/", "job/certctl-loadtest-shards", "job/certctl-loadtest-merge"] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{text}");
    }
}

#[test]
fn the_validator_rejects_a_broken_job() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo_root().join("deploy/k8s/loadtest-shards.yaml")).unwrap();
    // `completions` must be an integer.
    std::fs::write(&bad, text.replace("completions: 4", "completions: four")).unwrap();
    let (code, out) = validate(&[bad]);
    assert_ne!(code, 0, "a broken manifest must fail:\n{out}");
}

#[test]
fn the_shards_are_an_indexed_job_whose_scenario_config_map_matches_the_tree() {
    let text = std::fs::read_to_string(repo_root().join("deploy/k8s/loadtest-shards.yaml")).unwrap();
    assert!(text.contains("completionMode: Indexed"));
    assert!(text.contains("--shard \"$((JOB_COMPLETION_INDEX + 1))/$SHARDS\""));
    assert!(text.contains("--start-at \"$START_AT\""));
    // The ConfigMap carries scenarios/agent_storm.toml verbatim (indented under its key).
    let tree = std::fs::read_to_string(repo_root().join("scenarios/agent_storm.toml")).unwrap();
    let start = text.find("  agent_storm.toml: |\n").expect("ConfigMap key") + "  agent_storm.toml: |\n".len();
    let block: Vec<&str> = text[start..].lines().take_while(|l| l.is_empty() || l.starts_with("    ")).collect();
    let embedded: Vec<&str> = block.iter().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect();
    assert_eq!(embedded.join("\n").trim_end(), tree.trim_end(), "ConfigMap drifted from scenarios/agent_storm.toml");
}
