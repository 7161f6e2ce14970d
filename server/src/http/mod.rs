//! The HTTP layer: routing, middleware and one module per resource.
//!
//! Request flow: `request_id` middleware (assigns the id, opens the span) → tracing →
//! [`deadline::middleware`] (503 past `CERTCTL_REQUEST_TIMEOUT`) → body limit → routing → [`metrics::track`] (duration by route and status) → for `/api/v1`:
//! [`auth::middleware`] (who is calling, rate limit) → [`audit::middleware`] (one audit row per
//! mutating call) → [`etag::middleware`] (hot reads) → handler (permission checks through the
//! [`auth::Caller`] extractor, then the database) → [`error::ApiError`] envelope on failure.
//!
//! The `/api/v1` routes are registered through `utoipa_axum`'s `OpenApiRouter` + `routes!`, so
//! the OpenAPI document served at `/api/v1/openapi.json` lists exactly the routes that exist:
//! a handler cannot be routed without being documented, and the tests drive the "every route
//! needs a key" check from that document.

/// Dynamic SQL built with `format!` from compile-time column lists and whitelisted names only
/// (never from input, which always travels as bind parameters) — the audit sqlx 0.9 asks for.
macro_rules! sql {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

pub mod agents;
pub mod audit;
pub mod auth;
pub mod certificates;
pub mod conn;
pub mod deadline;
pub mod error;
pub mod etag;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod organisation;
pub mod pki;
pub mod request_id;
pub mod stats;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Router, middleware};
use tower_http::trace::TraceLayer;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppState, Config};

/// State of the HTTP layer that lives for the whole process (part of [`AppState`]).
#[derive(Debug)]
pub struct ApiState {
    /// The configured API keys, hashed.
    pub keys: auth::KeyRing,
    /// Per-caller rate limits; `None` when disabled.
    pub rate_limits: Option<auth::RateLimits>,
    /// Cached table gauges for `/metrics`.
    pub gauges: metrics::GaugeCache,
}

impl ApiState {
    /// Builds the HTTP layer's state from the configuration.
    pub fn new(config: &Config) -> Self {
        ApiState {
            keys: auth::KeyRing::from_config(config),
            rate_limits: auth::RateLimits::from_config(config),
            gauges: metrics::GaugeCache::default(),
        }
    }
}

/// Every `/api/v1` route that requires a credential.
fn protected_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(certificates::router())
        .merge(agents::router())
        .merge(jobs::router())
        .merge(notifications::router())
        .merge(audit::router())
        .merge(organisation::router())
        .merge(stats::router())
}

/// Routes that answer without a credential.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::version))
        .merge(auth::public_router())
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Marks every operation of `doc` as needing no credential (`security: [{}]`).
fn mark_public(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            op.security = Some(vec![SecurityRequirement::default()]);
        }
    }
}

/// A response whose body is the JSON error envelope ([`error::ErrorBody`]).
fn envelope_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
            .build(),
    )
}

/// Adds `status` to `op` unless the handler's own annotation already describes it.
fn add_response(op: &mut Operation, status: &str, description: &str) {
    op.responses.responses.entry(status.to_string()).or_insert_with(|| envelope_response(description));
}

/// Documents the failures that shared layers and extractors produce on every operation, so
/// the per-handler annotations only need what the handler itself decides: 400 on every
/// `/api/…` operation (the NUL guard and path/query extractors), 413 and 415 on operations
/// with a JSON body, and — when `protected` — 401 from authentication and 429 from the
/// per-caller rate limit.
fn document_shared_failures(doc: &mut OpenApi, protected: bool) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/");
        for op in operations_mut(item) {
            if api {
                add_response(op, "400", "malformed path, query string or body");
            }
            if let Some(body) = &op.request_body {
                // Optional bodies (`OptionalJson`) do not look at the content type.
                let required = matches!(body.required, Some(Required::True));
                add_response(op, "413", "body larger than CERTCTL_MAX_BODY_SIZE");
                if required {
                    add_response(op, "415", "Content-Type is not application/json");
                }
            }
            if protected {
                add_response(op, "401", "missing or unknown credential");
                add_response(op, "429", "rate limited (see Retry-After)");
            }
        }
    }
}

/// The document's description: the rules that hold for every operation, which per-field
/// schemas cannot state.
const API_DESCRIPTION: &str = "Certificate lifecycle control plane.\n\n\
Every failure answers the JSON envelope `{\"error\", \"message\", \"request_id\"}`. \
Request bodies are JSON objects. Text (in the path, the query string or a body, including \
object keys) must not contain NUL (U+0000, `%00`): PostgreSQL cannot store it, so it is a 400. \
Every string in a request body, at any depth, is limited by the name of its field: 255 characters \
unless the schema's `maxLength` says otherwise (`csr_pem` 8192, `description`, `error` and \
`message` 4096, `url` 2048); a longer value is a 400 naming the field. \
Integer fields take JSON integers (`90`, not `90.0`).";

/// Joins the parts into the served document: bearer auth by default, public routes marked.
fn assemble(mut protected: OpenApi, mut public: OpenApi, mut metrics: OpenApi, metrics_public: bool) -> OpenApi {
    mark_public(&mut public);
    if metrics_public {
        mark_public(&mut metrics);
    }
    document_shared_failures(&mut protected, true);
    document_shared_failures(&mut public, false);
    document_shared_failures(&mut metrics, !metrics_public);
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("certctl API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(API_DESCRIPTION))
                .build(),
        )
        .build();
    doc.merge(protected);
    doc.merge(public);
    doc.merge(metrics);
    let components = doc.components.get_or_insert_with(Default::default);
    for name in certificates::SELECTOR_SCHEMAS {
        if let Some(schema) = components.schemas.remove(*name) {
            components.schemas.insert((*name).to_string(), certificates::with_selector_rule(schema));
        }
    }
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    with_length_limits(doc)
}

/// `doc` with the text limits [`limits::check_body`] enforces written in as `maxLength`.
fn with_length_limits(doc: OpenApi) -> OpenApi {
    let Ok(mut value) = serde_json::to_value(&doc) else { return doc };
    limits::document(&mut value);
    match serde_json::from_value(value) {
        Ok(limited) => limited,
        Err(e) => {
            tracing::error!(error = %e, "could not document the text limits in the OpenAPI document");
            doc
        }
    }
}

/// The OpenAPI document of the router built for a configuration with `metrics_public`.
pub fn openapi_document(metrics_public: bool) -> OpenApi {
    assemble(
        protected_routes().into_openapi(),
        public_routes().into_openapi(),
        metrics::router().into_openapi(),
        metrics_public,
    )
}

/// Builds the whole router for `state`.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_size;
    let metrics_public = state.config.metrics_public;
    let auth_layer = middleware::from_fn_with_state(state.clone(), auth::middleware);

    let (protected, protected_doc) = protected_routes().split_for_parts();
    let (public, public_doc) = public_routes().split_for_parts();
    let (metrics_routes, metrics_doc) = metrics::router().split_for_parts();
    let doc = assemble(protected_doc, public_doc, metrics_doc, metrics_public);
    let doc_json: Arc<str> = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into()).into();

    // Route layers run after routing, so they see `MatchedPath`; the last one added runs first.
    let protected = protected
        .route_layer(middleware::from_fn(etag::middleware))
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::middleware))
        .route_layer(auth_layer.clone());
    let metrics_routes = if metrics_public { metrics_routes } else { metrics_routes.route_layer(auth_layer) };

    // Other subsystems' routers (ACME under /acme, PKI under /.well-known/pki) belong in this
    // chain, before the `metrics::track` route layer so they are timed too, and outside
    // `protected`: the contract makes them unauthenticated (ACME authenticates by JWS).
    Router::new()
        .merge(public)
        .merge(pki::router())
        // ACME authenticates by JWS, never by API key (contract §3): outside any auth layer.
        .merge(crate::acme::router(state.clone()))
        .merge(protected)
        .merge(metrics_routes)
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc_json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response() }
            }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(extract::reject_nul))
        // Inside the request-id scope (the 503 carries the id), around everything else.
        .layer(middleware::from_fn_with_state(state.clone(), deadline::middleware))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // The field values are only computed when the span is enabled (log level info or
            // finer), so at `warn` a request pays nothing here.
            tracing::info_span!(
                "request",
                method = %req.method(),
                uri = %req.uri(),
                route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str),
                request_id = %req.extensions().get::<request_id::RequestId>().map_or("", |r| r.0.as_str())
            )
        }))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}
