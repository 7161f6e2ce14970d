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

pub mod access;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod auth_failures;
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
    /// Failed authentications per client address; `None` when disabled.
    pub auth_failures: Option<auth_failures::AuthFailures>,
    /// Cached table gauges for `/metrics`.
    pub gauges: metrics::GaugeCache,
}

impl ApiState {
    /// Builds the HTTP layer's state from the configuration.
    pub fn new(config: &Config) -> Self {
        ApiState {
            keys: auth::KeyRing::from_config(config),
            rate_limits: auth::RateLimits::from_config(config),
            auth_failures: auth_failures::AuthFailures::from_config(config),
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
    methods_mut(item).map(|(_, op)| op)
}

/// Every operation of `item` with its upper-case HTTP method.
fn methods_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// Writes each operation's role from [`access::ROUTES`] into the document: the
/// `x-certctl-access` extension, a sentence in the description, a 403 where a non-admin key is
/// refused, and the agent-credential scheme on agent routes. Metrics operations are public when
/// `metrics_public`.
fn document_access(doc: &mut OpenApi, metrics_public: bool) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let metrics = path == "/metrics" || path == "/api/v1/metrics/prometheus";
        for (method, op) in methods_mut(item) {
            let access = match access::lookup(method, path) {
                Some(_) if metrics && metrics_public => access::Access::Public,
                Some(a) => a,
                // Not in the table: the middleware treats it as admin-only (a unit test fails).
                None => access::Access::Admin,
            };
            op.extensions
                .get_or_insert_with(Default::default)
                .insert("x-certctl-access".into(), serde_json::Value::from(access.name()));
            let description = op.description.take().unwrap_or_default();
            let sep = if description.is_empty() { "" } else { "\n\n" };
            op.description = Some(format!("{description}{sep}{}", access.sentence()));
            match access {
                access::Access::Admin => add_response(op, "403", "not an admin API key"),
                access::Access::Agent => {
                    add_response(op, "403", "a non-admin API key");
                    op.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::new("agentCredential", Vec::<String>::new()),
                    ]);
                }
                access::Access::Public | access::Access::AnyKey => {}
            }
        }
    }
}

/// Marks every operation of `doc` as needing no credential (`security: [{}]`).
fn mark_public(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            op.security = Some(vec![SecurityRequirement::default()]);
        }
    }
}

/// Stateful links (OpenAPI `links`, what schemathesis's stateful phase follows): the 201 answer
/// of every `POST /collection` links to each operation on `/collection/{id}` and below whose
/// only path parameter is `id`, taking it from the created body's `id`.
fn document_links(doc: &mut OpenApi) {
    let targets: Vec<(String, Vec<&'static str>)> = doc
        .paths
        .paths
        .iter_mut()
        .filter(|(path, _)| path.matches('{').count() == 1)
        .map(|(path, item)| (path.clone(), methods_mut(item).map(|(m, _)| m).collect()))
        .collect();
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(RefOr::T(created)) = item.post.as_mut().and_then(|op| op.responses.responses.get_mut("201")) else {
            continue;
        };
        let member = format!("{path}/{{id}}");
        for (target, methods) in &targets {
            let Some(rest) = target.strip_prefix(&member).filter(|r| r.is_empty() || r.starts_with('/')) else {
                continue;
            };
            let pointer = target.replace('~', "~0").replace('/', "~1");
            for method in methods {
                let method = method.to_ascii_lowercase();
                let name: String = format!("{method}{}", rest.replace('/', "-"))
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .collect();
                let link = utoipa::openapi::link::LinkBuilder::new()
                    .operation_ref(format!("#/paths/{pointer}/{method}"))
                    .parameter("id", "$response.body#/id")
                    .description(format!("the created resource's {} {target}", method.to_ascii_uppercase()))
                    .build();
                created.links.insert(name, RefOr::T(link));
            }
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

/// Path parameters are never empty: an empty segment routes elsewhere (`/certificates//revoke`
/// is not `/certificates/{id}/revoke`), so the document says `minLength: 1` on every string
/// path parameter instead of inviting clients to send one.
fn document_path_parameters(doc: &mut OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::Schema;
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for param in op.parameters.iter_mut().flatten() {
                if param.parameter_in == ParameterIn::Path
                    && let Some(RefOr::T(Schema::Object(schema))) = param.schema.as_mut()
                {
                    schema.min_length = Some(schema.min_length.unwrap_or(0).max(1));
                }
            }
        }
    }
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
                // A path whose parameter is a literal segment of another route (an id of
                // `revoke`, say) matches that route, which answers 405 for this method.
                add_response(op, "405", "the path matches another route that does not take this method");
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
            if path.starts_with("/api/v1/agents/{id}/") {
                // The auth layer answers 410 on every route of a retired agent.
                add_response(op, "410", "the agent is retired (DELETE /api/v1/agents/{id})");
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
Integer fields take JSON integers (`90`, not `90.0`).\n\n\
Roles: every operation states who may call it (`x-certctl-access`: `public`, `any-key`, \
`admin`, `agent`). A non-admin API key manages certificates, agents, teams, owners, jobs and \
notifications, and reads everything; changing how the CA issues (profiles, issuers, renewal \
policies) and bulk revocation need an admin key (else 403). An agent credential is accepted \
only on its own agent's `/api/v1/agents/{id}/…` routes (anywhere else: 401). Failed \
authentications are limited per client address (429 with `Retry-After`).";

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
    document_access(&mut doc, metrics_public);
    document_links(&mut doc);
    document_path_parameters(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    for name in certificates::SELECTOR_SCHEMAS {
        if let Some(schema) = components.schemas.remove(*name) {
            components.schemas.insert((*name).to_string(), certificates::with_selector_rule(schema));
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    let mut agent = Http::new(HttpAuthScheme::Bearer);
    agent.description = Some(
        "An agent's own credential (returned once by POST /api/v1/agents), accepted only on that \
         agent's /api/v1/agents/{id}/… routes."
            .into(),
    );
    components.add_security_scheme("agentCredential", SecurityScheme::Http(agent));
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

/// The served JSON of `doc`. utoipa 5 serializes a Link object's `operationRef` as
/// `operation_ref` (its `Link` lacks camelCase renaming), which OpenAPI tools do not recognise:
/// the keys are renamed here, once, so the stateful links of [`document_links`] work.
pub fn openapi_json(doc: &OpenApi) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).unwrap_or_else(|_| serde_json::json!({}));
    let links = v["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(serde_json::Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links").and_then(serde_json::Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(serde_json::Value::as_object_mut);
    for link in links {
        for (from, to) in
            [("operation_ref", "operationRef"), ("operation_id", "operationId"), ("request_body", "requestBody")]
        {
            if let Some(value) = link.remove(from) {
                link.insert(to.into(), value);
            }
        }
    }
    v
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
    let doc_json: Arc<str> = openapi_json(&doc).to_string().into();

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
