//! In-process metrics, rendered as Prometheus text at `/metrics`.
//!
//! Counters and histograms that code paths bump as they run (issuance, notifications, HTTP
//! requests). Gauges about table contents (certificate counts by status, agents online, pending
//! jobs) are *not* computed per scrape by scanning tables: they come from a snapshot that the
//! HTTP layer refreshes at most every few seconds (see `http::metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
pub const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A Prometheus histogram: cumulative bucket counts, sum and count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (issuer_type, outcome) -> count
    issuance_total: BTreeMap<(String, String), u64>,
    /// issuer_type -> histogram
    issuance_duration: BTreeMap<String, Histogram>,
    /// route -> [(method, status, histogram)]: looked up by `&str` and a short scan, so a
    /// request in steady state allocates nothing here.
    http_duration: BTreeMap<String, Vec<(String, u16, Histogram)>>,
    jobs_completed: u64,
    jobs_failed: u64,
    jobs_reclaimed: u64,
    notifications_sent: u64,
    notifications_failed: u64,
}

/// The process's metrics registry (one per process, shared through `AppState`).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// One issuance attempt: `outcome` is `success` or `failure`.
    pub fn record_issuance(&self, issuer_type: &str, outcome: &str, took: Duration) {
        self.with(|m| {
            *m.issuance_total.entry((issuer_type.to_string(), outcome.to_string())).or_default() += 1;
            m.issuance_duration.entry(issuer_type.to_string()).or_default().observe(took.as_secs_f64());
        });
    }

    /// A job finished (`completed == false` means it failed for good).
    pub fn record_job(&self, completed: bool) {
        self.with(|m| if completed { m.jobs_completed += 1 } else { m.jobs_failed += 1 });
    }

    /// A job taken over from an owner whose claim lease expired.
    pub fn record_job_reclaimed(&self) {
        self.with(|m| m.jobs_reclaimed += 1);
    }

    /// Jobs this process took over from owners whose claim lease expired.
    pub fn jobs_reclaimed(&self) -> u64 {
        self.with(|m| m.jobs_reclaimed)
    }

    /// A notification send attempt.
    pub fn record_notification(&self, sent: bool) {
        self.with(|m| if sent { m.notifications_sent += 1 } else { m.notifications_failed += 1 });
    }

    /// One HTTP request, labelled by its matched route (never the raw path: bounded cardinality).
    pub fn record_http(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.with(|m| {
            if !m.http_duration.contains_key(route) {
                m.http_duration.insert(route.to_string(), Vec::new());
            }
            let Some(series) = m.http_duration.get_mut(route) else { return };
            match series.iter_mut().find(|(mm, st, _)| mm == method && *st == status) {
                Some((_, _, h)) => h.observe(took.as_secs_f64()),
                None => {
                    let mut h = Histogram::default();
                    h.observe(took.as_secs_f64());
                    series.push((method.to_string(), status, h));
                }
            }
        });
    }

    /// Issuance count for (issuer_type, outcome) — for tests and stats.
    pub fn issuance_count(&self, issuer_type: &str, outcome: &str) -> u64 {
        self.with(|m| m.issuance_total.get(&(issuer_type.to_string(), outcome.to_string())).copied().unwrap_or(0))
    }

    /// Renders the process-local metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            out.push_str("# HELP certctl_issuance_total Certificate issuance attempts.\n# TYPE certctl_issuance_total counter\n");
            for ((t, o), v) in &m.issuance_total {
                let _ = writeln!(out, "certctl_issuance_total{{issuer_type=\"{t}\",outcome=\"{o}\"}} {v}");
            }
            out.push_str("# HELP certctl_issuance_duration_seconds Time to issue one certificate.\n# TYPE certctl_issuance_duration_seconds histogram\n");
            for (t, h) in &m.issuance_duration {
                h.render(&mut out, "certctl_issuance_duration_seconds", &format!("issuer_type=\"{t}\""));
            }
            let _ = writeln!(
                out,
                "# HELP certctl_job_completed_total Jobs completed by this process.\n# TYPE certctl_job_completed_total counter\ncertctl_job_completed_total {}",
                m.jobs_completed
            );
            let _ = writeln!(
                out,
                "# HELP certctl_job_failed_total Jobs failed for good by this process.\n# TYPE certctl_job_failed_total counter\ncertctl_job_failed_total {}",
                m.jobs_failed
            );
            let _ = writeln!(
                out,
                "# HELP certctl_job_reclaimed_total Jobs this process took over after their owner's claim lease expired.\n# TYPE certctl_job_reclaimed_total counter\ncertctl_job_reclaimed_total {}",
                m.jobs_reclaimed
            );
            let _ = writeln!(
                out,
                "# HELP certctl_notification_sent_total Notifications sent by this process.\n# TYPE certctl_notification_sent_total counter\ncertctl_notification_sent_total {}",
                m.notifications_sent
            );
            let _ = writeln!(
                out,
                "# HELP certctl_notification_failed_total Failed notification attempts by this process.\n# TYPE certctl_notification_failed_total counter\ncertctl_notification_failed_total {}",
                m.notifications_failed
            );
            out.push_str("# HELP certctl_http_request_duration_seconds HTTP request latency by route and status.\n# TYPE certctl_http_request_duration_seconds histogram\n");
            for (route, series) in &m.http_duration {
                let mut series: Vec<&(String, u16, Histogram)> = series.iter().collect();
                series.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                for (method, status, h) in series {
                    let labels =
                        format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", route.replace('"', "\\\""));
                    h.render(&mut out, "certctl_http_request_duration_seconds", &labels);
                }
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(2.0);
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"0.005\"} 1"));
        assert!(s.contains("x_bucket{le=\"2.5\"} 2"));
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2"));
        assert!(s.contains("x_count{} 2"));
    }

    #[test]
    fn issuance_is_labelled_by_issuer_type_and_outcome() {
        let m = Metrics::default();
        m.record_issuance("GenericCA", "success", Duration::from_millis(4));
        let text = m.render();
        assert!(text.contains("certctl_issuance_total{issuer_type=\"GenericCA\",outcome=\"success\"} 1"));
        assert_eq!(m.issuance_count("GenericCA", "success"), 1);
    }
}
