//! Helpers: the axum target, scenario files, and a serialised `run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::{Mutex, OnceCell};

/// How the target behaves.
#[derive(Debug, Default)]
pub struct TargetState {
    /// When the first `/ok` request arrived.
    first: std::sync::Mutex<Option<Instant>>,
    /// Stall window (offset from the first request, length), if any.
    pub stall: Option<(Duration, Duration)>,
    /// Requests served on `/ok`.
    pub served: AtomicU64,
}

async fn ok(State(st): State<Arc<TargetState>>) -> (StatusCode, &'static str) {
    st.served.fetch_add(1, Ordering::Relaxed);
    let first = {
        let mut f = st.first.lock().unwrap_or_else(|e| e.into_inner());
        *f.get_or_insert_with(Instant::now)
    };
    if let Some((at, len)) = st.stall {
        let (from, to) = (first + at, first + at + len);
        let now = Instant::now();
        // Every request arriving during the window waits until its end: a one-second stall.
        if now >= from && now < to {
            tokio::time::sleep_until(to.into()).await;
        }
    }
    (StatusCode::OK, r#"{"ok": true}"#)
}

/// Starts the target on 127.0.0.1:0; returns its base URL and state.
pub async fn target(stall: Option<(Duration, Duration)>) -> (String, Arc<TargetState>) {
    let st = Arc::new(TargetState { stall, ..TargetState::default() });
    let app = Router::new()
        .route("/health", get(|| async { r#"{"status":"healthy"}"# }))
        .route("/ok", get(ok))
        .route("/fail", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), st)
}

/// A scenario file: one open-model label on `path` at `rate` for `secs`, with optional users
/// and thresholds (TOML fragments).
pub fn scenario(dir: &Path, name: &str, path: &str, rate: f64, secs: f64, users: Option<usize>, thresholds: &str) {
    let users = users.map(|u| format!("users = {u}\n")).unwrap_or_default();
    let text = format!(
        r#"
name = "{name}"
description = "test scenario"
[load]
model = "open"
duration_s = {secs}
[[requests]]
label = "get"
method = "GET"
path = "{path}"
expect = [200]
rate = {rate}
check_json_field = "ok"
{thresholds}
[profiles.smoke]
duration_s = {secs}
{users}"#
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

static LOCK: Mutex<()> = Mutex::const_new(());

/// Serialises goose runs (goose keeps process-wide state).
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.lock().await
}

/// Runs `certctl-loadtest run` against `url` with scenario `name` from `dir`, writing to `out`.
pub async fn run(url: &str, dir: &Path, name: &str, out: &Path) -> certctl_loadtest::Outcome {
    run_with(url, dir, name, out, &[]).await
}

/// [`run`] with extra arguments.
pub async fn run_with(url: &str, dir: &Path, name: &str, out: &Path, extra: &[&str]) -> certctl_loadtest::Outcome {
    let _g = LOCK.lock().await;
    let mut args: Vec<String> = [
        "certctl-loadtest",
        "run",
        "--target",
        url,
        "--scenarios-dir",
        dir.to_str().unwrap_or_default(),
        "--seeds-dir",
        dir.to_str().unwrap_or_default(),
        "--scenario",
        name,
        "--out",
        out.to_str().unwrap_or_default(),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    certctl_loadtest::run_args(args).await
}

/// A closed-model scenario: `users` users run GET /ok then GET /health, pausing `pause_ms`.
pub fn closed_scenario(dir: &Path, name: &str, users: usize, pause_ms: u64, secs: f64) {
    let text = format!(
        r#"
name = "{name}"
description = "closed test scenario"
[load]
model = "closed"
duration_s = {secs}
users = {users}
pause_ms = {pause_ms}
[[requests]]
label = "first"
method = "GET"
path = "/ok"
expect = [200]
check_json_field = "ok"
[[requests]]
label = "second"
method = "GET"
path = "/health"
expect = [200]
[[thresholds]]
set = "seed"
label = "second"
metric = "error_rate"
max = 0
[profiles.smoke]
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

/// Asserts that `instance` is valid against the committed summary schema.
pub fn validate_summary(instance: &serde_json::Value) {
    validate("summary.schema.json", instance);
}

/// Asserts that `instance` is valid against the committed schema `harness/schema/<file>`.
pub fn validate(file: &str, instance: &serde_json::Value) {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(file);
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A target on 127.0.0.1:0 whose `/ok` takes `service` per request, and with `stall` =
/// `(every, extra)` every `every`-th request `extra` longer. It runs on its own two-thread
/// runtime, so the generator's runtime does not delay its answers. (The runtime's timer wheel
/// has 1-ms steps: a sleep of `d` ends at the first step after `d`, so each request takes `d`
/// plus a uniform 0–1 ms, the same on both sides; a difference of service times stays, on
/// average, that difference.)
pub fn service_time_target(service: Duration, stall: Option<(u64, Duration)>) -> String {
    let n = Arc::new(AtomicU64::new(0));
    let serve = move |State(n): State<Arc<AtomicU64>>| async move {
        let i = n.fetch_add(1, Ordering::Relaxed) + 1;
        let d = match stall {
            Some((every, extra)) if i.is_multiple_of(every) => service + extra,
            _ => service,
        };
        // A thread sleep, not tokio's timer: the timer wheel rounds every sleep up to its next
        // millisecond tick, which made 2.0 and 2.4 ms nearly the same service time.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
        r#"{"ok": true}"#
    };
    let app = Router::new()
        .route("/health", get(|| async { r#"{"status":"healthy"}"# }))
        .route("/ok", get(serve))
        .with_state(n);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// An embedded-mode run (throw-away PostgreSQL + the real `certctl-server`) with the project's
/// fixtures: `run --seeds-dir seeds/ --quiet` followed by `args`, one embedded run at a time.
/// `None` when the server binary is not built (only `cargo test -p certctl-loadtest` skips it).
pub async fn run_embedded(args: &[&str]) -> Option<certctl_loadtest::Outcome> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let mut all = vec!["certctl-loadtest", "run", "--seeds-dir", seeds.to_str().unwrap(), "--quiet"];
    all.extend_from_slice(args);
    let o = {
        let _g = lock().await;
        certctl_loadtest::run_args(all).await
    };
    if o.message.contains("certctl-server binary not found") {
        eprintln!("skipped: {}", o.message);
        return None;
    }
    Some(o)
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Reads a run's summary.json as JSON.
pub fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// The reference run: 200 req/s for 5 s against a healthy target, made once and shared.
pub async fn reference_run() -> PathBuf {
    static RUN: OnceCell<PathBuf> = OnceCell::const_new();
    RUN.get_or_init(|| async {
        // Shared by the tests of one process, so it outlives each of them: kept under cargo's
        // per-target temporary directory rather than leaked into /tmp. nextest runs every test
        // in its own process, so the directory is per process (a shared one was deleted by one
        // test while another read it); those of processes that have exited are removed here.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("loadtest-reference-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let root = tmp.join(format!("loadtest-reference-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (url, _st) = target(None).await;
        let sdir = root.join("scenarios");
        scenario(
            &sdir,
            "steady",
            "/ok",
            200.0,
            5.0,
            None,
            "[[thresholds]]\nset = \"seed\"\nlabel = \"get\"\nmetric = \"p99\"\nmax = 10000\n\
             [[thresholds]]\nset = \"target\"\nlabel = \"get\"\nmetric = \"p99\"\nmax = 0.001\n",
        );
        let out = root.join("run");
        let o = run(&url, &sdir, "steady", &out).await;
        assert_eq!(o.code, 0, "{}", o.message);
        out
    })
    .await
    .clone()
}

/// Whether the external program `bin` (chromium, prometheus) is here; when it is not, tries
/// once to install it with `scripts/ensure-report-tools.sh` (Debian packages, as root).
/// `false` only when it cannot be installed: the caller skips with that message.
pub fn ensure_tool(bin: &str) -> bool {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let present = || std::process::Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if present() {
        return true;
    }
    INSTALL.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-report-tools.sh");
        let st = std::process::Command::new("bash").arg(script).status();
        eprintln!("scripts/ensure-report-tools.sh: {st:?}");
    });
    if present() {
        return true;
    }
    eprintln!(
        "skipped: {bin} is not installed and could not be installed (run scripts/ensure-report-tools.sh as root)"
    );
    false
}

/// A free loopback port (bound and released; the caller binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
