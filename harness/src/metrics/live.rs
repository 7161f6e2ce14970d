//! Live metrics: `--metrics-listen ADDR` serves what the run measures, while it runs, as
//! Prometheus text (OpenMetrics), so a long scale run can be watched in the tools people
//! already use.
//!
//! Data flow: [`serve`] binds the listener and returns a [`LiveServer`]; its [`LiveMetrics`]
//! handle goes into the engine's configuration. For each scenario the engine asks it for a
//! [`LiveScenario`] (one set of metric handles per label, resolved once), and the
//! [`Recorder`](super::Recorder) feeds every finished request to it: a handful of relaxed
//! atomic increments, no lock and no label lookup on the hot path. A 1-Hz task derives the
//! achieved rate and the generator's CPU time; the engine reports dropped starts when a
//! scenario ends.
//!
//! Routes: `GET /metrics` (the metrics) and `GET /targets` (Prometheus HTTP service discovery:
//! the servers being driven — in embedded mode they listen on ports chosen at start, so a
//! scrape config cannot name them in advance).
//!
//! Metrics (labels `scenario`, `label`; errors also `class`):
//! `certctl_loadtest_requests_total`, `certctl_loadtest_errors_total`,
//! `certctl_loadtest_request_duration_seconds` (histogram, from the intended start),
//! `certctl_loadtest_service_duration_seconds` (histogram, from the actual start),
//! `certctl_loadtest_offered_rate_requests_per_second`,
//! `certctl_loadtest_achieved_rate_requests_per_second`, `certctl_loadtest_late_starts_total`,
//! `certctl_loadtest_dropped_starts_total`, `certctl_loadtest_scenario_running` and
//! `certctl_loadtest_generator_cpu_seconds_total`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::HarnessError;
use crate::scenario::engine::ScheduleCounts;
use crate::scenario::{Model, ResolvedScenario};

/// Upper bounds (seconds) of the latency histograms: 0.1 ms to 60 s in steps of at most 1.5×,
/// fine enough for `histogram_quantile` to place a p99 within a bucket's width.
pub const BUCKETS: [f64; 35] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
];

/// The error classes of [`super::ErrorCounts`], as the `class` label says them.
pub const ERROR_CLASSES: [&str; 5] = ["transport", "status_4xx", "status_5xx", "unexpected_status", "body_check"];

/// A classic histogram whose buckets are plain atomics (prometheus-client's own takes a lock
/// per observation).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    /// Per bucket (not cumulative), the last one +Inf.
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Arc::new(HistInner {
            counts: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }))
    }
}

impl LatencyHistogram {
    /// Records one latency in microseconds.
    pub fn observe_us(&self, us: u64) {
        let secs = us as f64 / 1e6;
        let i = BUCKETS.partition_point(|b| *b < secs);
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(scenario: &str, label: &str) -> Labels {
    vec![("scenario".into(), scenario.into()), ("label".into(), label.into())]
}

#[derive(Debug, Default)]
struct Families {
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    latency: Family<Labels, LatencyHistogram>,
    service: Family<Labels, LatencyHistogram>,
    offered: Family<Labels, FloatGauge>,
    achieved: Family<Labels, FloatGauge>,
    late: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    running: Family<Labels, Gauge>,
    cpu: Counter<f64, AtomicU64>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    f: Families,
    /// Base URLs of the servers being driven (for `/targets`).
    targets: Mutex<Vec<String>>,
    /// (requests counter, achieved gauge, count at the last tick) of every label seen.
    rates: Mutex<Vec<(Counter, FloatGauge, u64)>>,
    /// Generator CPU ticks at the last update.
    cpu_ticks: AtomicU64,
}

/// The handle the run feeds; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveMetrics(Arc<Inner>);

impl Default for LiveMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveMetrics {
    /// Empty metrics, registered under their names.
    pub fn new() -> Self {
        let f = Families::default();
        let mut r = Registry::default();
        r.register("certctl_loadtest_requests", "Requests completed (any outcome).", f.requests.clone());
        r.register("certctl_loadtest_errors", "Failed requests by error class.", f.errors.clone());
        r.register_with_unit(
            "certctl_loadtest_request_duration",
            "Latency from the request's intended start (coordinated-omission-free).",
            Unit::Seconds,
            f.latency.clone(),
        );
        r.register_with_unit(
            "certctl_loadtest_service_duration",
            "Latency from the request's actual start.",
            Unit::Seconds,
            f.service.clone(),
        );
        r.register(
            "certctl_loadtest_offered_rate_requests_per_second",
            "Planned arrival rate (open model).",
            f.offered.clone(),
        );
        r.register(
            "certctl_loadtest_achieved_rate_requests_per_second",
            "Requests completed in the last second.",
            f.achieved.clone(),
        );
        r.register("certctl_loadtest_late_starts", "Starts later than the late-start tolerance.", f.late.clone());
        r.register(
            "certctl_loadtest_dropped_starts",
            "Planned slots never started (set when a scenario ends).",
            f.dropped.clone(),
        );
        r.register("certctl_loadtest_scenario_running", "1 while the scenario's load runs.", f.running.clone());
        r.register_with_unit(
            "certctl_loadtest_generator_cpu",
            "CPU time used by the load generator process.",
            Unit::Seconds,
            f.cpu.clone(),
        );
        LiveMetrics(Arc::new(Inner {
            registry: r,
            f,
            targets: Mutex::new(Vec::new()),
            rates: Mutex::new(Vec::new()),
            cpu_ticks: AtomicU64::new(0),
        }))
    }

    /// The handles of one scenario's labels; sets its offered rates and marks it running.
    /// `late_tolerance` is the run's `--late-tolerance-ms`.
    pub fn scenario(&self, sc: &ResolvedScenario, late_tolerance: Duration) -> LiveScenario {
        let f = &self.0.f;
        let name = &sc.def.name;
        let handles = sc
            .def
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let l = labels(name, &r.label);
                if sc.def.load.model == Model::Open && !r.follow_up && i < sc.rates.len() {
                    f.offered.get_or_create(&l).set(sc.shard_rate(i));
                }
                let requests = f.requests.get_or_create(&l).clone();
                let mut rates = self.0.rates.lock().unwrap_or_else(|e| e.into_inner());
                rates.push((requests.clone(), f.achieved.get_or_create(&l).clone(), requests.get()));
                LiveLabel {
                    requests,
                    errors: ERROR_CLASSES.map(|c| {
                        let mut el = l.clone();
                        el.push(("class".into(), c.into()));
                        f.errors.get_or_create(&el).clone()
                    }),
                    latency: f.latency.get_or_create(&l).clone(),
                    service: f.service.get_or_create(&l).clone(),
                    late: f.late.get_or_create(&l).clone(),
                }
            })
            .collect();
        f.running.get_or_create(&labels(name, "")).set(1);
        LiveScenario { labels: handles, late_tolerance_us: late_tolerance.as_micros() as u64 }
    }

    /// Records the end of scenario `name`: its dropped starts per label (in request order).
    pub fn finish(&self, name: &str, label_names: &[String], schedule: &[ScheduleCounts]) {
        let f = &self.0.f;
        for (l, s) in label_names.iter().zip(schedule) {
            let c = f.dropped.get_or_create(&labels(name, l));
            let now = c.get();
            c.inc_by(s.dropped.saturating_sub(now));
            f.achieved.get_or_create(&labels(name, l)).set(0.0);
        }
        f.running.get_or_create(&labels(name, "")).set(0);
    }

    /// Sets the servers `/targets` lists (base URLs such as `http://127.0.0.1:8443`).
    pub fn set_targets(&self, base_urls: &[String]) {
        *self.0.targets.lock().unwrap_or_else(|e| e.into_inner()) = base_urls.to_vec();
    }

    /// Updates the derived values: achieved rates (per `elapsed`) and generator CPU time.
    fn tick(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        for (req, gauge, last) in self.0.rates.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
            let n = req.get();
            gauge.set(n.saturating_sub(*last) as f64 / secs);
            *last = n;
        }
        self.update_cpu();
    }

    fn update_cpu(&self) {
        if let Some(t) = super::sampler::cpu_ticks(std::process::id()) {
            let before = self.0.cpu_ticks.swap(t, Ordering::Relaxed);
            self.0.f.cpu.inc_by(t.saturating_sub(before) as f64 / super::sampler::ticks_per_second());
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        self.update_cpu();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// Prometheus HTTP service discovery: one target group of the servers driven.
    pub fn targets_json(&self) -> serde_json::Value {
        let targets: Vec<String> = self
            .0
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|u| u.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string())
            .collect();
        if targets.is_empty() {
            return serde_json::json!([]);
        }
        serde_json::json!([{ "targets": targets, "labels": { "job": "certctl-server" } }])
    }
}

/// One label's metric handles.
#[derive(Debug, Clone)]
struct LiveLabel {
    requests: Counter,
    errors: [Counter; 5],
    latency: LatencyHistogram,
    service: LatencyHistogram,
    late: Counter,
}

/// The handles of one scenario, indexed like the recorder's labels.
#[derive(Debug, Clone)]
pub struct LiveScenario {
    labels: Vec<LiveLabel>,
    late_tolerance_us: u64,
}

impl LiveScenario {
    /// One finished request of label `label`: latencies in µs, its error class index into
    /// [`ERROR_CLASSES`] (`None`: success), and how late it started (µs after its due time).
    pub fn record(&self, label: usize, corrected_us: u64, service_us: u64, error: Option<usize>, start_lag_us: u64) {
        let Some(l) = self.labels.get(label) else { return };
        l.requests.inc();
        l.latency.observe_us(corrected_us);
        l.service.observe_us(service_us);
        if let Some(c) = error.and_then(|i| l.errors.get(i)) {
            c.inc();
        }
        if start_lag_us > self.late_tolerance_us {
            l.late.inc();
        }
    }
}

/// A running listener; dropping it stops it.
#[derive(Debug)]
pub struct LiveServer {
    metrics: LiveMetrics,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ticker: tokio::task::JoinHandle<()>,
}

impl LiveServer {
    /// The handle to feed.
    pub fn metrics(&self) -> LiveMetrics {
        self.metrics.clone()
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.ticker.abort();
    }
}

/// Binds `addr` and serves `/metrics` and `/targets` until the returned server is dropped.
pub async fn serve(addr: SocketAddr) -> Result<LiveServer, HarnessError> {
    use axum::http::header;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HarnessError::Config(format!("--metrics-listen {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| HarnessError::Config(format!("--metrics-listen {addr}: {e}")))?;
    let metrics = LiveMetrics::new();
    let (m1, m2) = (metrics.clone(), metrics.clone());
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
                }
            }),
        )
        .route(
            "/targets",
            get(move || {
                let m = m2.clone();
                async move { axum::Json(m.targets_json()) }
            }),
        );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    let m = metrics.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            m.tick(now - last);
            last = now;
        }
    });
    eprintln!("certctl-loadtest: live metrics at http://{bound}/metrics (servers for discovery at /targets)");
    Ok(LiveServer { metrics, addr: bound, stop: Some(stop), ticker })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_latency_in_its_bucket_and_encodes_cumulatively() {
        let h = LatencyHistogram::default();
        h.observe_us(100); // exactly the first bound: le="0.0001"
        h.observe_us(1_200); // 1.2 ms: le="0.0015"
        h.observe_us(90_000_000); // 90 s: only +Inf
        assert_eq!(h.count(), 3);
        let fam: Family<Labels, LatencyHistogram> = Family::default();
        fam.get_or_create(&labels("s", "l")).observe_us(1_200);
        let mut r = Registry::default();
        r.register_with_unit("x_duration", "help", Unit::Seconds, fam);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("# TYPE x_duration_seconds histogram"), "{out}");
        assert!(out.contains(r#"x_duration_seconds_bucket{le="0.001",scenario="s",label="l"} 0"#), "{out}");
        assert!(out.contains(r#"x_duration_seconds_bucket{le="0.0015",scenario="s",label="l"} 1"#), "{out}");
        assert!(out.contains(r#"x_duration_seconds_bucket{le="+Inf",scenario="s",label="l"} 1"#), "{out}");
        assert!(out.contains(r#"x_duration_seconds_sum{scenario="s",label="l"} 0.0012"#), "{out}");
    }

    #[test]
    fn the_handles_feed_the_named_metrics() {
        let m = LiveMetrics::new();
        let l = LiveScenario {
            labels: vec![LiveLabel {
                requests: m.0.f.requests.get_or_create(&labels("sc", "get")).clone(),
                errors: ERROR_CLASSES.map(|c| {
                    let mut el = labels("sc", "get");
                    el.push(("class".into(), c.into()));
                    m.0.f.errors.get_or_create(&el).clone()
                }),
                latency: m.0.f.latency.get_or_create(&labels("sc", "get")).clone(),
                service: m.0.f.service.get_or_create(&labels("sc", "get")).clone(),
                late: m.0.f.late.get_or_create(&labels("sc", "get")).clone(),
            }],
            late_tolerance_us: 25_000,
        };
        l.record(0, 2_000, 1_000, None, 0);
        l.record(0, 50_000, 1_000, Some(2), 40_000);
        let text = m.encode();
        assert!(text.contains(r#"certctl_loadtest_requests_total{scenario="sc",label="get"} 2"#), "{text}");
        assert!(text.contains(r#"certctl_loadtest_errors_total{scenario="sc",label="get",class="status_5xx"} 1"#));
        assert!(text.contains(r#"certctl_loadtest_late_starts_total{scenario="sc",label="get"} 1"#));
        assert!(text.contains("certctl_loadtest_request_duration_seconds_bucket"));
        assert!(text.contains("certctl_loadtest_generator_cpu_seconds_total"));
        m.set_targets(&["http://127.0.0.1:8443".into()]);
        assert_eq!(m.targets_json()[0]["targets"][0], "127.0.0.1:8443");
    }
}
