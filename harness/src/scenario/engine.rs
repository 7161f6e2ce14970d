//! Goose as the engine: one goose attack per scenario.
//!
//! Data flow: [`run_scenario`] turns a [`ResolvedScenario`] into goose scenarios — in the open
//! model one goose scenario per request label, each with its own pool of users sharing that
//! label's [`Schedule`]; in the closed model one goose scenario whose users run the request
//! sequence then pause. Every goose user runs exactly one long transaction (goose `iterations =
//! 1`) that loops until the schedule is exhausted or the deadline passes, so the attack ends
//! when the load does, not on goose's own clock. Each request goes out through goose
//! (`GooseUser::request`), its outcome is classified here, and the timings go to the
//! [`Recorder`] — the harness's histograms are the judge; goose's own metrics are not used.
//!
//! Cancellation (Ctrl-C) is a shared flag checked before every request.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use goose::config::GooseConfiguration;
use goose::prelude::*;

use super::flows;
use super::schedule::{RateCurve, Schedule};
use super::template::{self, Context, Fleet};
use super::{Auth, Method, Model, RequestDef, ResolvedScenario};
use crate::metrics::{LabelStats, Outcome, Recorder};

/// The ACME problem type counted for `acme_burst` (RFC 8555 §6.7).
pub const ACME_RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// Errors that stop a scenario from running at all.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Goose refused the attack.
    #[error("goose: {0}")]
    Goose(String),
}

/// Where and how to send requests.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8443`.
    pub base_url: String,
    /// With `--replicas N`: every server's base URL; requests go round-robin over them by
    /// sequence number (empty or one entry: everything goes to `base_url`).
    pub base_urls: Vec<String>,
    /// Admin API key for `auth = "api_key"`.
    pub api_key: Option<String>,
    /// Fleet sizes for the templates.
    pub fleet: Fleet,
    /// Tag unique to this run (`{run}`).
    pub run_tag: String,
    /// A start later than this after its due time counts as late.
    pub late_tolerance: Duration,
    /// How long after the schedule's end users may still start overdue slots.
    pub drain: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Set on Ctrl-C.
    pub cancel: Arc<AtomicBool>,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// `--metrics-listen`: live metrics to feed.
    pub live: Option<crate::metrics::live::LiveMetrics>,
    /// `--start-at`: time zero on the wall clock (shards on several machines share it);
    /// `None`: a moment after every user is ready.
    pub start_at: Option<SystemTime>,
    /// Told the load's time zero once it is fixed (a fault trial's injector waits on it).
    pub started: Option<Arc<tokio::sync::watch::Sender<Option<Instant>>>>,
}

/// What one scenario run produced.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    /// Per-label statistics, in the order of the scenario's requests.
    pub labels: Vec<LabelStats>,
    /// Per-label schedule accounting (open model): planned, issued, late, dropped.
    pub schedule: Vec<ScheduleCounts>,
    /// When the scenario's time zero was (wall clock), for the hlog header.
    pub started_at: SystemTime,
    /// Time from time zero to the last request's end.
    pub elapsed: Duration,
    /// Time zero (monotonic), to align other samples with the intervals.
    pub t0: Instant,
    /// Whether Ctrl-C cut it short.
    pub cancelled: bool,
}

/// Schedule accounting of one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleCounts {
    /// Slots planned (0 in the closed model).
    pub planned: u64,
    /// Requests started.
    pub issued: u64,
    /// Starts later than the tolerance.
    pub late: u64,
    /// Slots never started.
    pub dropped: u64,
    /// Started slots due in the measurement window (after a trial's warm-up; all otherwise).
    pub measured: u64,
}

/// State shared by every goose user of a scenario.
struct Shared {
    cfg: EngineConfig,
    requests: Vec<RequestDef>,
    recorder: Arc<Recorder>,
    model: Model,
    /// Open model: the arrival-rate curve of the whole load per request; the schedule takes
    /// this shard's slice of it.
    plan: Vec<RateCurve>,
    /// Requests due before time zero + `warmup` are not judged.
    warmup: Duration,
    /// Which slice of the load this generator runs.
    shard: super::Shard,
    duration: Duration,
    /// Open model: schedule per request, built when the start is released.
    schedules: OnceLock<Vec<Arc<Schedule>>>,
    /// Per-request sequence counters (closed model).
    seqs: Vec<AtomicU64>,
    pause: Duration,
    /// Start barrier: users that have arrived, out of `total_users`.
    arrived: AtomicUsize,
    total_users: usize,
    /// Time zero (monotonic and wall clock), set once every user has arrived.
    start: OnceLock<(Instant, SystemTime)>,
    released: Notify,
    created: Instant,
    /// `cfg.base_url`, parsed once: every request's URL is joined to it.
    base: Option<reqwest::Url>,
}

/// Lead between releasing the users and slot 0, so every user is asleep on its first slot.
const START_LEAD: Duration = Duration::from_millis(100);
/// A user that never arrives (goose stopped launching) must not hold the run forever.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(60);

impl Shared {
    /// Fixes time zero and builds the schedules (once).
    fn release(&self) {
        self.start.get_or_init(|| {
            let (t0, wall) = time_zero(self.cfg.start_at);
            self.recorder.set_t0(t0);
            self.recorder.set_measure_from(t0 + self.warmup);
            let _ = self.schedules.set(
                self.plan
                    .iter()
                    .map(|curve| {
                        let s =
                            Schedule::sharded(t0, curve.clone(), self.cfg.drain, self.cfg.late_tolerance, self.shard);
                        Arc::new(s.with_warmup(self.warmup))
                    })
                    .collect(),
            );
            if let Some(tx) = &self.cfg.started {
                tx.send_replace(Some(t0));
            }
            (t0, wall)
        });
        self.released.notify_waiters();
    }

    /// Waits until every user has arrived (goose launches users one by one, and building each
    /// user's HTTP client takes a while), so the schedule starts with the whole pool ready —
    /// otherwise the ramp-up itself would show up as late starts.
    async fn wait_start(&self) -> Instant {
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 >= self.total_users {
            self.release();
        }
        loop {
            if let Some((t0, _)) = self.start.get() {
                tokio::time::sleep_until((*t0).into()).await;
                return *t0;
            }
            if self.created.elapsed() > BARRIER_TIMEOUT {
                self.release();
                continue;
            }
            let notified = self.released.notified();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    fn t0(&self) -> Option<Instant> {
        self.start.get().map(|s| s.0)
    }
}

/// Time zero, monotonic and wall clock: `start_at` when given (an instant already passed maps
/// into the past, so the late starts show it), else [`START_LEAD`] from now.
fn time_zero(start_at: Option<SystemTime>) -> (Instant, SystemTime) {
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    match start_at {
        Some(at) => match at.duration_since(wall_now) {
            Ok(ahead) => (now + ahead, at),
            Err(e) => (now.checked_sub(e.duration()).unwrap_or(now), at),
        },
        None => (now + START_LEAD, wall_now + START_LEAD),
    }
}

/// Runs one scenario to completion (or Ctrl-C).
pub async fn run_scenario(sc: &ResolvedScenario, cfg: &EngineConfig) -> Result<ScenarioRun, EngineError> {
    let def = &sc.def;
    let labels: Vec<String> = def.requests.iter().map(|r| r.label.clone()).collect();
    let user_counts: Vec<usize> = match def.load.model {
        Model::Open => (0..def.requests.len()).map(|i| sc.open_users(i)).collect(),
        Model::Closed => vec![sc.shard_users().max(1)],
    };
    let total_users: usize = user_counts.iter().sum();
    let live = cfg.live.as_ref().map(|l| l.scenario(sc, cfg.late_tolerance));
    let recorder = Arc::new(Recorder::new(&labels).with_live(live));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        requests: def.requests.clone(),
        recorder: recorder.clone(),
        model: def.load.model,
        plan: (0..def.requests.len()).map(|i| sc.curve(i)).collect(),
        warmup: sc.warmup,
        shard: sc.shard,
        duration: sc.duration,
        schedules: OnceLock::new(),
        seqs: def.requests.iter().map(|_| AtomicU64::new(0)).collect(),
        pause: Duration::from_millis(def.load.pause_ms),
        arrived: AtomicUsize::new(0),
        total_users,
        start: OnceLock::new(),
        released: Notify::new(),
        created: Instant::now(),
        base: reqwest::Url::parse(&cfg.base_url).ok(),
    });
    let attack = build_attack(sc, cfg, &shared, &labels, &user_counts)?;
    let progress = cfg.progress.then(|| spawn_progress(def.name.clone(), shared.clone(), sc.duration));
    let result = attack.execute().await;
    if let Some(p) = progress {
        p.abort();
    }
    result.map_err(|e| EngineError::Goose(format!("{e:?}")))?;
    let (t0, started_at) = shared.start.get().copied().unwrap_or((shared.created, SystemTime::now()));
    let elapsed = Instant::now().saturating_duration_since(t0);
    let schedule = schedule_counts(sc, &shared);
    if let Some(l) = &cfg.live {
        l.finish(&def.name, &labels, &schedule);
    }
    Ok(ScenarioRun {
        labels: recorder.snapshot(),
        schedule,
        started_at,
        elapsed,
        t0,
        cancelled: cfg.cancel.load(Ordering::Relaxed),
    })
}

/// The goose attack: in the open model one goose scenario per scheduled label (its pool of
/// users), in the closed model one goose scenario running the sequence.
///
/// Goose's own metrics pipeline is off (`no_metrics`): the harness records every request into
/// its own HDR histograms, and goose's per-request metric message to its parent (a clone of
/// the request record, sent over a channel and aggregated) was a large share of the
/// generator's CPU per request.
fn build_attack(
    sc: &ResolvedScenario,
    cfg: &EngineConfig,
    shared: &Arc<Shared>,
    labels: &[String],
    user_counts: &[usize],
) -> Result<GooseAttack, EngineError> {
    let goose = |e: goose::GooseError| EngineError::Goose(format!("{e:?}"));
    let mut config = GooseConfiguration::default();
    config.host = Some(cfg.base_url.clone());
    config.users = Some(user_counts.iter().sum());
    config.increase_rate = Some("2000".into());
    config.iterations = Some(1);
    config.quiet = 1;
    config.no_metrics = true;
    config.no_print_metrics = true;
    config.no_error_summary = true;
    config.no_telnet = true;
    config.timeout = Some(format!("{}", cfg.request_timeout.as_secs().max(1)));
    let mut attack = GooseAttack::initialize_with_config(config).map_err(goose)?;
    match sc.def.load.model {
        Model::Open => {
            for (i, users) in user_counts.iter().enumerate() {
                if *users == 0 {
                    // A follow-up: no schedule of its own.
                    continue;
                }
                let st = shared.clone();
                let tx =
                    Transaction::new(Arc::new(move |user: &mut GooseUser| Box::pin(open_loop(user, st.clone(), i))));
                let scenario = Scenario::new(&labels[i])
                    .set_weight(*users)
                    .map_err(goose)?
                    .register_transaction(tx.set_name(&labels[i]));
                attack = attack.register_scenario(scenario);
            }
        }
        Model::Closed => {
            let st = shared.clone();
            let tx = Transaction::new(Arc::new(move |user: &mut GooseUser| Box::pin(closed_loop(user, st.clone()))));
            let name = &sc.def.name;
            attack = attack.register_scenario(Scenario::new(name).register_transaction(tx.set_name(name)));
        }
    }
    Ok(attack)
}

/// Per-label schedule accounting once every user has stopped.
fn schedule_counts(sc: &ResolvedScenario, shared: &Shared) -> Vec<ScheduleCounts> {
    let schedules = shared.schedules.get();
    (0..sc.def.requests.len())
        .map(|i| match (shared.model, schedules.and_then(|s| s.get(i))) {
            (Model::Open, Some(s)) => ScheduleCounts {
                planned: s.total(),
                issued: s.issued(),
                late: s.late(),
                dropped: s.dropped(),
                measured: s.measured_issued(),
            },
            (Model::Open, None) => {
                ScheduleCounts { planned: sc.planned(i), dropped: sc.planned(i), ..Default::default() }
            }
            (Model::Closed, _) => {
                let n = shared.seqs[i].load(Ordering::Relaxed);
                ScheduleCounts { issued: n, measured: n, ..Default::default() }
            }
        })
        .collect()
}

/// Prints `[scenario] 10/15 s  166.8 req/s  errors 0` every 5 s.
fn spawn_progress(name: String, st: Arc<Shared>, total: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let rec = st.recorder.clone();
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = Instant::now();
            let n = rec.total();
            let rate = (n - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-9);
            last = (n, now);
            let elapsed = st.t0().map(|t0| now.saturating_duration_since(t0).as_secs_f64()).unwrap_or(0.0);
            eprintln!(
                "[{name}] {elapsed:>5.0}/{:.0} s  {rate:>8.1} req/s  requests {n}  errors {}",
                total.as_secs_f64(),
                rec.errors()
            );
        }
    })
}

/// Waits until `due`, and not at all when it has passed. tokio's timer rounds every deadline
/// up to its next 1-ms tick, so `sleep_until` of a moment already reached still waits for that
/// tick: in a closed loop without a pause that wait came after every request (64 users on
/// `GET /health` spent more time waiting for the tick than for the server), and a late
/// open-model slot lost up to another millisecond.
async fn sleep_until_due(due: Instant) {
    if due > Instant::now() {
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Open model: take slots from the label's schedule until it is exhausted.
async fn open_loop(user: &mut GooseUser, st: Arc<Shared>, i: usize) -> TransactionResult {
    st.wait_start().await;
    let Some(schedule) = st.schedules.get().and_then(|s| s.get(i)).cloned() else { return Ok(()) };
    while !st.cfg.cancel.load(Ordering::Relaxed) {
        let Some(slot) = schedule.claim(Instant::now()) else { break };
        sleep_until_due(slot.due).await;
        if st.cfg.cancel.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        schedule.started(slot, started);
        fire(user, &st, i, slot.index, slot.due, started).await;
    }
    Ok(())
}

/// Closed model: run the sequence, pause, repeat until the deadline.
async fn closed_loop(user: &mut GooseUser, st: Arc<Shared>) -> TransactionResult {
    let deadline = st.wait_start().await + st.duration;
    while Instant::now() < deadline && !st.cfg.cancel.load(Ordering::Relaxed) {
        for i in 0..st.requests.len() {
            if st.cfg.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            if st.requests[i].follow_up {
                continue;
            }
            // Shards interleave their sequence numbers so their template values (fleet ids,
            // batches) stay disjoint, as one generator's would be.
            let local = st.seqs[i].fetch_add(1, Ordering::Relaxed);
            let seq = local * u64::from(st.shard.count.max(1)) + st.shard.offset();
            // A closed model has no schedule: the intended start is the actual start, so
            // corrected and service time coincide.
            let started = Instant::now();
            fire(user, &st, i, seq, started, started).await;
        }
        sleep_until_due((Instant::now() + st.pause).min(deadline)).await;
    }
    Ok(())
}

/// A request of `path` (relative to the target, or an absolute URL) on the user's own client,
/// with one URL parse. goose's `get_request_builder` resolves the same URL the same way, but
/// parses it three times (as an absolute URL, joined to the host, and again from the string it
/// copies it into).
pub(crate) fn request_builder(
    user: &GooseUser,
    base: Option<&reqwest::Url>,
    m: Method,
    path: &str,
) -> Option<reqwest::RequestBuilder> {
    let url = match base {
        Some(base) => base.join(path).ok()?,
        None => reqwest::Url::parse(path).ok()?,
    };
    let method = match m {
        Method::Get | Method::Client => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Delete => reqwest::Method::DELETE,
    };
    Some(user.client.request(method, url))
}

/// Sends request `i` with sequence `seq` and records it. Never fails: every failure is an
/// outcome to count, not an error to propagate.
async fn fire(user: &mut GooseUser, st: &Shared, i: usize, seq: u64, intended: Instant, started: Instant) {
    let Some(req) = st.requests.get(i) else { return };
    if let Some(flow) = req.flow.as_deref() {
        let ctx =
            flows::FlowCtx { cfg: &st.cfg, base: st.base.as_ref(), requests: &st.requests, recorder: &st.recorder };
        flows::run(flow, user, &ctx, i, seq, intended, started).await;
        return;
    }
    let ctx = Context { seq, run: &st.cfg.run_tag, fleet: st.cfg.fleet, batch: req.batch.unwrap_or(100) };
    let mut path = template::expand(&req.path, &ctx);
    if st.cfg.base_urls.len() > 1 {
        // An absolute URL overrides goose's host, so consecutive requests land on
        // consecutive replicas.
        if let Some(base) = st.cfg.base_urls.get((seq % st.cfg.base_urls.len() as u64) as usize) {
            path = format!("{base}{path}");
        }
    }
    let (outcome, rate_limited) = match request_builder(user, st.base.as_ref(), req.method, &path) {
        None => (Outcome::Transport, false),
        Some(mut rb) => {
            match req.auth {
                Auth::None => {}
                Auth::ApiKey => {
                    if let Some(k) = &st.cfg.api_key {
                        rb = rb.bearer_auth(k);
                    }
                }
                Auth::Agent => rb = rb.bearer_auth(template::agent_token(template::agent_for(seq, st.cfg.fleet))),
            }
            if let Some(body) = &req.body {
                rb = rb.header("content-type", "application/json").body(template::expand(body, &ctx));
            }
            // Sent on the user's own client, not through `GooseUser::request`: with goose's
            // metrics off that call only builds a per-request metric record (URL, names and
            // headers copied into new strings) that nothing reads, a few % of the generator's
            // CPU per request at its closed-loop maximum.
            match rb.send().await {
                Err(_) => (Outcome::Transport, false),
                Ok(resp) => classify(req, resp).await,
            }
        }
    };
    st.recorder.record(i, intended, started, Instant::now(), outcome, rate_limited);
}

/// Classifies a response, reading its body to the end (the latency includes the body).
async fn classify(req: &RequestDef, resp: reqwest::Response) -> (Outcome, bool) {
    let status = resp.status().as_u16();
    let header_ok = req.check_header.as_ref().is_none_or(|h| resp.headers().contains_key(h.as_str()));
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(_) => return (Outcome::Transport, false),
    };
    judge(req, status, header_ok, &content_type, &body)
}

/// Classifies a complete answer (status, whether the checked header was there, content type,
/// body) against what `req` expects; also says whether it was an ACME `rateLimited` 429.
pub(crate) fn judge(
    req: &RequestDef,
    status: u16,
    header_ok: bool,
    content_type: &str,
    body: &[u8],
) -> (Outcome, bool) {
    let rate_limited = status == 429 && is_acme_rate_limited(content_type, body);
    if !req.expect.contains(&status) {
        return (Outcome::Status(status), rate_limited);
    }
    let body_ok = match &req.check_json_field {
        None => true,
        // A check applies to the success answer; an expected 404 (say) carries an error body.
        Some(_) if !(200..300).contains(&status) => true,
        Some(field) => {
            serde_json::from_slice::<serde_json::Value>(body).ok().is_some_and(|v| v.get(field.as_str()).is_some())
        }
    };
    if body_ok && header_ok { (Outcome::Ok(status), rate_limited) } else { (Outcome::BodyCheck(status), rate_limited) }
}

/// Whether a body is an ACME `rateLimited` problem document (`application/problem+json`).
pub fn is_acme_rate_limited(content_type: &str, body: &[u8]) -> bool {
    content_type.starts_with("application/problem+json")
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(|t| t == ACME_RATE_LIMITED))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_acme_problem_document_counts_as_rate_limited() {
        let body = br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down"}"#;
        assert!(is_acme_rate_limited("application/problem+json", body));
        assert!(!is_acme_rate_limited("application/json", body));
        assert!(!is_acme_rate_limited(
            "application/problem+json",
            br#"{"type":"urn:ietf:params:acme:error:malformed"}"#
        ));
    }
}
