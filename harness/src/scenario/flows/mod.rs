//! Flows: the client-side logic of scenarios whose next request depends on the last answer.
//!
//! Most scenarios are pure data: a request template fired on a schedule. Two are not: an agent
//! acts on the jobs a work poll returns, and an ACME client follows the URLs and nonces each
//! answer hands it, signing every request. A request with `flow = "…"` is sent by the flow
//! named here instead of the engine's plain `fire`; the flow then sends (or times) the
//! scenario's `follow_up` requests, each recorded under its own label.
//!
//! Measurement rules the flows keep:
//! - the request that carries the flow is measured from its schedule slot like any other
//!   (corrected and service time); a follow-up is issued the moment the previous answer is in,
//!   so its intended start is its actual start (corrected = service time);
//! - client-side work (key generation, CSR building, JWS signing) is timed under its own
//!   `method = "CLIENT"` label and never inside an HTTP label's latency: each HTTP label's
//!   clock starts after the body it sends was built and signed;
//! - every outcome is classified as in the engine (transport, 4xx, 5xx, unexpected status, body
//!   check); a failed step ends the flow's iteration (the later steps have nothing to act on).

pub mod acme;
pub mod agent;

use std::time::Instant;

use goose::prelude::*;

use super::RequestDef;
use super::engine::{EngineConfig, judge, request_builder};
use crate::metrics::{Outcome, Recorder};

/// Flow names a request may carry.
pub const FLOWS: &[&str] = &[agent::FLOW, acme::FLOW];

/// Follow-up labels a flow records into (the scenario must declare each as a `follow_up`).
pub fn follow_ups(flow: &str) -> &'static [&'static str] {
    match flow {
        agent::FLOW => agent::FOLLOW_UPS,
        acme::FLOW => acme::FOLLOW_UPS,
        _ => &[],
    }
}

/// What a flow may use from the engine.
pub struct FlowCtx<'a> {
    /// Where and how to send.
    pub cfg: &'a EngineConfig,
    /// `cfg.base_url`, parsed once per run (relative flow URLs are joined to it).
    pub base: Option<&'a reqwest::Url>,
    /// The scenario's requests (labels by index).
    pub requests: &'a [RequestDef],
    /// The run's recorder.
    pub recorder: &'a Recorder,
}

impl FlowCtx<'_> {
    /// Index of the request labelled `label` (validated to exist when the scenario loaded).
    pub fn index(&self, label: &str) -> Option<usize> {
        self.requests.iter().position(|r| r.label == label)
    }

    /// Records client-side work of label `label` that ran from `started` to now.
    pub fn record_client(&self, label: usize, started: Instant, ok: bool) {
        self.recorder.record(label, started, started, Instant::now(), Outcome::Client(ok), false);
    }
}

/// Runs flow `name` for request `i` (slot `seq`, due at `intended`, started at `started`).
pub async fn run(
    name: &str,
    user: &mut GooseUser,
    ctx: &FlowCtx<'_>,
    i: usize,
    seq: u64,
    intended: Instant,
    started: Instant,
) {
    match name {
        agent::FLOW => agent::run(user, ctx, i, seq, intended, started).await,
        acme::FLOW => acme::run(user, ctx, i, seq, intended, started).await,
        // Unknown names are refused when the scenario is loaded.
        _ => {}
    }
}

/// An answer a flow can act on.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// How to send one request of a flow.
pub struct Send<'a> {
    /// Label index (its `RequestDef` gives the method, `expect` and checks).
    pub label: usize,
    /// Path relative to the target, or an absolute URL the server handed out.
    pub url: &'a str,
    /// Bearer credential.
    pub bearer: Option<&'a str>,
    /// Body and its content type.
    pub body: Option<(&'a str, String)>,
    /// Intended start (the schedule slot, or the actual start for a follow-up).
    pub intended: Instant,
    /// Actual start (taken just before the request goes out).
    pub started: Instant,
}

/// Sends on the user's client (as the engine's plain requests do), reads the whole body, classifies and records it. Returns the answer
/// when it was a success by the label's `expect` and checks, `None` otherwise (already
/// counted as an error of its class).
pub async fn send(user: &mut GooseUser, ctx: &FlowCtx<'_>, s: Send<'_>) -> Option<Answer> {
    let req = ctx.requests.get(s.label)?;
    let (outcome, rate_limited, answer) = match request_builder(user, ctx.base, req.method, s.url) {
        None => (Outcome::Transport, false, None),
        Some(mut rb) => {
            if let Some(b) = s.bearer {
                rb = rb.bearer_auth(b);
            }
            if let Some((ct, body)) = s.body {
                rb = rb.header("content-type", ct).body(body);
            }
            match rb.send().await {
                Err(_) => (Outcome::Transport, false, None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Err(_) => (Outcome::Transport, false, None),
                        Ok(body) => {
                            let header_ok = req.check_header.as_ref().is_none_or(|h| headers.contains_key(h.as_str()));
                            let ct = headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let (o, rl) = judge(req, status, header_ok, &ct, &body);
                            (o, rl, Some(Answer { status, headers, body: body.to_vec() }))
                        }
                    }
                }
            }
        }
    };
    ctx.recorder.record(s.label, s.intended, s.started, Instant::now(), outcome, rate_limited);
    match outcome {
        Outcome::Ok(_) => answer,
        _ => None,
    }
}
