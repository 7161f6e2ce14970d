//! # certctl-server
//!
//! A certificate lifecycle control plane on PostgreSQL.
//!
//! ## Map of the modules
//! - [`acme`]: the ACME server (RFC 8555, ARI RFC 9773) under `/acme/`, authenticated by JWS.
//! - [`audit`]: the batched, off-request-path writer of `audit_events`.
//! - [`config`]: every `CERTCTL_*` setting, parsed once before anything binds.
//! - [`db`]: pool, embedded migrations (sqlx migrator, advisory-locked), demo seed.
//! - [`http`]: router, middleware (request id, tracing, body limit), the error envelope, and one
//!   module per resource.
//! - [`issuance`]: the local CA and the signing entry points.
//! - [`jobs`]: the job state machine (which status changes a job may make, and by whom).
//! - [`metrics`]: process-local counters and histograms for `/metrics`.
//! - [`pg_embedded`]: the throw-away PostgreSQL of development and tests (crate
//!   `certctl-pg-embedded`, shared with the harness).
//! - [`notify`]: notification events and their delivery (webhook, email, log) with retry/dead.
//! - [`ratelimit`]: the sliding-window `Limiter` trait and its backends.
//! - [`scheduler`]: leader election and the background loops (job processor, renewal check, …).
//!
//! ## Data flow
//! A request enters [`http::router`], gets a request id, is authenticated (and rate limited
//! per key) by the `/api/v1` auth layer, and its handler talks to PostgreSQL through small
//! query functions; mutating calls leave an audit row through [`audit::AuditSink`]. Background work (the
//! scheduler's loops) reads and writes the same tables; replicas coordinate only through the
//! database (row locks, advisory locks), never through each other.

pub mod acme;
pub mod audit;
pub mod config;
pub mod db;
pub mod http;
pub mod issuance;
pub mod jobs;
pub mod metrics;
pub mod notify;
/// The throw-away PostgreSQL (crate `certctl-pg-embedded`), re-exported under its old path.
pub use certctl_pg_embedded as pg_embedded;
pub mod ratelimit;
pub mod scheduler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Shared state handed to every handler and background loop: one `Arc`, so the clone every
/// middleware and handler makes of it (axum's `State`) is one atomic increment, not one per
/// field. Fields are read through `Deref` ([`Shared`]).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// The database pool.
    pub pool: PgPool,
    /// The parsed configuration.
    pub config: Arc<Config>,
    /// This replica's identity.
    pub instance_id: Arc<str>,
    /// Cancelled when the process begins shutting down.
    pub shutdown: CancellationToken,
    /// Process-local counters and histograms.
    pub metrics: Arc<metrics::Metrics>,
    /// ACME server state: profile cache, http-01 client, rate limiters.
    pub acme: Arc<acme::AcmeState>,
    /// Loaded local CAs (one per `GenericCA` issuer), loaded on first use.
    pub cas: Arc<issuance::CaCache>,
    /// Scheduler state: leadership (`state.scheduler.is_leader()`), running loops, tick counts.
    pub scheduler: Arc<scheduler::SchedulerStatus>,
    /// HTTP-layer state: hashed API keys, rate limits, cached metric gauges.
    pub api: Arc<http::ApiState>,
    /// The audit writer (batched inserts, flushed on shutdown).
    pub audit: audit::AuditSink,
}

impl AppState {
    /// Connects, migrates (unless disabled) and seeds (if asked): everything before binding.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        if config.database_migrate {
            db::migrate::run(&config.database_url).await.context("database migrations")?;
        }
        let pool = db::connect(&config.database_url, config.database_max_conns)
            .await
            .context("connecting to CERTCTL_DATABASE_URL")?;
        if config.demo_seed {
            db::demo_seed(&pool).await.context("loading the demo seed")?;
        }
        let instance_id: Arc<str> = config.instance_id().into();
        let nonces = acme::nonce::NonceIssuer::spawn(pool.clone(), config.acme_nonce_ttl);
        let acme = acme::AcmeState::new(&config, acme::AcmeLimiters::build(&config, &pool), nonces)
            .context("building the ACME state")?;
        let api = Arc::new(http::ApiState::new(&config));
        let audit = audit::AuditSink::spawn(pool.clone(), config.audit_flush_interval);
        Ok(AppState(Arc::new(Shared {
            pool,
            config: Arc::new(config),
            instance_id,
            shutdown: CancellationToken::new(),
            metrics: Arc::new(metrics::Metrics::default()),
            acme: Arc::new(acme),
            cas: Arc::new(issuance::CaCache::default()),
            scheduler: Arc::new(scheduler::SchedulerStatus::default()),
            api,
            audit,
        })))
    }
}

/// Builds the application router.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// A running server's handles, for tests and `main`.
pub struct RunningServer {
    /// Address actually bound.
    pub addr: SocketAddr,
    /// The state the server runs with.
    pub state: AppState,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Begins a graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.shutdown.cancel();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops (after `state.shutdown` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Serves `state` on `listener` until `state.shutdown` is cancelled, then drains in-flight
/// requests, stops background work and closes the pool.
pub async fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let router = app(state.clone());
    let shutdown = state.shutdown.clone();
    let drain_timeout = state.config.shutdown_timeout;
    let st = state.clone();
    let limits = http::conn::ConnLimits::from_config(&state.config);
    let tls = match (&state.config.server_tls_cert_path, &state.config.server_tls_key_path) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .context("loading CERTCTL_SERVER_TLS_CERT_PATH / CERTCTL_SERVER_TLS_KEY_PATH")?,
            )
        }
        _ => None,
    };
    // Started only once nothing can fail any more: `finish()` is what stops it.
    if state.config.scheduler_enabled {
        scheduler::start(&state);
    }
    let task = tokio::spawn(async move {
        // Whatever way serving ends (shutdown or a listener error), background work is stopped
        // and drained before the pool closes.
        let served: anyhow::Result<()> = async move {
            match tls {
                None => http::conn::serve_plain(listener, router, limits, shutdown, drain_timeout).await?,
                Some(tls) => {
                    let handle = axum_server::Handle::new();
                    let h = handle.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        sd.cancelled().await;
                        h.graceful_shutdown(Some(drain_timeout));
                    });
                    let mut server = axum_server::from_tcp_rustls(listener.into_std()?, tls)?
                        .map(|tls| http::conn::IdleAcceptor::new(tls, limits.idle_timeout))
                        .handle(handle);
                    limits.configure(server.http_builder());
                    server.serve(router.into_make_service_with_connect_info::<SocketAddr>()).await?;
                }
            }
            Ok(())
        }
        .await;
        finish(&st, drain_timeout).await;
        served
    });
    Ok(RunningServer { addr, state, task })
}

/// After the listener stops: wait for background work (scheduler ticks finish, the leader
/// releases its lock), write the buffered audit rows, then close the pool.
async fn finish(state: &AppState, drain_timeout: Duration) {
    state.shutdown.cancel();
    scheduler::drain(state, drain_timeout).await;
    // The audit close comes after everything that may still record audit rows: in-flight
    // requests are drained by now and the scheduler loops have stopped.
    if tokio::time::timeout(drain_timeout, state.audit.close()).await.is_err() {
        tracing::error!("audit rows were not all written before the shutdown timeout");
    }
    state.pool.close().await;
}

/// Runs the server until SIGINT/SIGTERM: the body of `main`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = SocketAddr::new(config.server_host, config.server_port);
    let tls = config.server_tls_cert_path.is_some();
    let state = AppState::build(config).await?;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    if !tls {
        tracing::warn!("CERTCTL_SERVER_TLS_CERT_PATH is not set: serving plain HTTP");
    }
    // The signal handlers are registered before the server answers anything: a SIGINT that
    // arrives right after `/ready` said 200 must drain, not kill the process.
    let signals = Signals::register();
    let server = serve(listener, state).await?;
    tracing::info!(addr = %server.addr, instance = %server.state.instance_id, tls, "certctl-server listening");
    let token = server.state.shutdown.clone();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutdown signal received: draining");
        token.cancel();
    });
    server.wait().await?;
    tracing::info!("certctl-server stopped");
    Ok(())
}

/// SIGINT and SIGTERM streams, registered at creation (tokio installs the handler then).
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals { int: signal(SignalKind::interrupt()).ok(), term: signal(SignalKind::terminate()).ok() }
    }

    /// Waits for either signal (a stream that could not be registered never fires).
    async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.int) => {}
            () = recv(&mut self.term) => {}
        }
    }
}

/// Sets up `tracing` in the configured format.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        config::LogFormat::Pretty => builder.try_init(),
    };
}
