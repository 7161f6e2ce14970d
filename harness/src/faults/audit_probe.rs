//! The audit probe of a fault trial: a trickle of always-audited writes beside the load, so
//! the audit invariant has acknowledged requests to look for whatever the scenario sends (a
//! heartbeat that only refreshes liveness is deliberately not audited, `docs/operator/audit.md`).
//!
//! It creates a team of its own, then sends `PUT /api/v1/teams/{id}` ([`RATE`] per second,
//! round-robin over the servers, each with its own `X-Request-ID`, which the audit row stores)
//! and logs every one answered 2xx: which server answered and when.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

/// Probe writes per second.
pub const RATE: u32 = 10;

/// A write the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The `X-Request-ID` sent (stored in `audit_events.request_id`).
    pub request_id: String,
    /// When the 2xx arrived.
    pub at: DateTime<Utc>,
    /// Which server answered (index into the base URLs).
    pub server: usize,
}

/// A running probe.
#[derive(Debug)]
pub struct AuditProbe {
    acks: Arc<Mutex<Vec<Ack>>>,
    ticker: tokio::task::JoinHandle<JoinSet<()>>,
    stop: Arc<tokio::sync::Notify>,
}

impl AuditProbe {
    /// Creates the probe's team through `base_urls[0]` and starts writing; `Err` says why not.
    pub async fn start(base_urls: &[String], api_key: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
        let tag = format!("{:08x}", rand::random::<u32>());
        let team = format!("loadtest-audit-probe-{tag}");
        let first = base_urls.first().ok_or("no server")?;
        let r = client
            .post(format!("{first}/api/v1/teams"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({"id": team, "name": team}))
            .send()
            .await
            .map_err(|e| format!("creating the probe team: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("creating the probe team: HTTP {}", r.status()));
        }
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let w =
            Writer { client, base_urls: base_urls.to_vec(), key: api_key.to_string(), team, tag, acks: acks.clone() };
        let ticker = tokio::spawn(w.run(stop.clone()));
        Ok(AuditProbe { acks, ticker, stop })
    }

    /// Stops writing, waits for the writes in flight (each bounded by its 5-s timeout), and
    /// returns every acknowledged one.
    pub async fn stop(self) -> Vec<Ack> {
        self.stop.notify_one();
        if let Ok(mut inflight) = self.ticker.await {
            while inflight.join_next().await.is_some() {}
        }
        std::mem::take(&mut *self.acks.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct Writer {
    client: reqwest::Client,
    base_urls: Vec<String>,
    key: String,
    team: String,
    tag: String,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl Writer {
    /// One write every 1/[`RATE`] s, each its own task (a stalled server must not slow the
    /// probe's schedule), until `stop`.
    async fn run(self, stop: Arc<tokio::sync::Notify>) -> JoinSet<()> {
        let me = Arc::new(self);
        let mut inflight = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        for n in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.notified() => break,
            }
            while inflight.try_join_next().is_some() {}
            let w = me.clone();
            inflight.spawn(async move { w.write(n).await });
        }
        inflight
    }

    async fn write(&self, n: u64) {
        let server = (n % self.base_urls.len().max(1) as u64) as usize;
        let Some(base) = self.base_urls.get(server) else { return };
        let id = format!("lt-audit-{}-{n}", self.tag);
        let r = self
            .client
            .put(format!("{base}/api/v1/teams/{}", self.team))
            .bearer_auth(&self.key)
            .header("x-request-id", &id)
            .json(&serde_json::json!({"description": format!("audit probe write {n}")}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            let ack = Ack { request_id: id, at: Utc::now(), server };
            self.acks.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
        }
    }
}
