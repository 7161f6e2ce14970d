//! Server configuration: every setting is a `CERTCTL_*` environment variable (or the matching
//! `--flag`), parsed once by clap into [`Config`] before anything binds or connects.
//!
//! A bad value stops the process with one line naming the variable (see [`Config::from_env`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};

/// How API callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthType {
    /// `Authorization: Bearer <key>` with keys from CERTCTL_API_KEYS_NAMED / CERTCTL_AUTH_SECRET.
    #[value(name = "api-key")]
    ApiKey,
    /// No authentication (development only): every caller is an admin named `anonymous`.
    None,
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitBackend {
    /// Per-process sliding window: each replica has its own budget.
    Memory,
    /// Shared sliding window in `rate_limit_buckets`: all replicas draw on one budget.
    Postgres,
}

/// Who generates the private key of a renewed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeygenMode {
    /// The agent generates the key and posts a CSR (job waits in `AwaitingCSR`).
    Agent,
    /// The server's job processor generates the key and issues directly.
    Server,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// certctl-server: certificate lifecycle control plane.
///
/// Every option can also be set through the environment variable shown with it.
#[derive(Debug, Clone, Parser)]
#[command(name = "certctl-server", version, about, max_term_width = 100)]
pub struct Config {
    /// PostgreSQL URL, e.g. postgres://certctl@127.0.0.1:5432/certctl.
    #[arg(long, env = "CERTCTL_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Maximum connections in the database pool.
    #[arg(long, env = "CERTCTL_DATABASE_MAX_CONNS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub database_max_conns: u32,

    /// Tokio worker threads that serve requests and run the background loops; 0 = one per CPU
    /// core available to the process.
    #[arg(long, env = "CERTCTL_WORKER_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub worker_threads: u32,

    /// Run the embedded migrations at boot (serialised across replicas by an advisory lock).
    #[arg(long, env = "CERTCTL_DATABASE_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub database_migrate: bool,

    /// Address to listen on.
    #[arg(long, env = "CERTCTL_SERVER_HOST", default_value = "127.0.0.1")]
    pub server_host: IpAddr,

    /// Port to listen on (0 picks a free port; the chosen address is logged).
    #[arg(long, env = "CERTCTL_SERVER_PORT", default_value_t = 8443)]
    pub server_port: u16,

    /// Time a client has to send a complete HTTP/1.1 request head (request line and headers),
    /// counted from the connection opening or the previous response; then the connection is
    /// closed. This also bounds how long an idle keep-alive connection waits for its next request.
    #[arg(long, env = "CERTCTL_SERVER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub server_header_read_timeout: Duration,

    /// A connection on which nothing is read or written for this long is closed (HTTP/1.1 and
    /// HTTP/2, plain and TLS). Keep it above the slowest request's processing time.
    #[arg(long, env = "CERTCTL_SERVER_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub server_idle_timeout: Duration,

    /// PEM certificate chain for HTTPS. With the key set, the server speaks TLS 1.2/1.3; unset,
    /// plain HTTP (with a warning at startup).
    #[arg(long, env = "CERTCTL_SERVER_TLS_CERT_PATH", requires = "server_tls_key_path")]
    pub server_tls_cert_path: Option<PathBuf>,

    /// PEM private key for HTTPS.
    #[arg(long, env = "CERTCTL_SERVER_TLS_KEY_PATH", requires = "server_tls_cert_path")]
    pub server_tls_key_path: Option<PathBuf>,

    /// Base URL clients use to reach this server (ACME directory links, CRL locations).
    /// Default: derived from each request's Host header.
    #[arg(long, env = "CERTCTL_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Authentication for /api/v1: api-key or none.
    #[arg(long, env = "CERTCTL_AUTH_TYPE", value_enum, default_value_t = AuthType::ApiKey)]
    pub auth_type: AuthType,

    /// Named API keys: `name:key[:admin],…`. Keys are kept only as SHA-256 hashes.
    #[arg(long, env = "CERTCTL_API_KEYS_NAMED", hide_env_values = true, default_value = "")]
    pub api_keys_named: String,

    /// Unnamed API keys (comma list, each an admin named `legacy-N`).
    #[arg(long, env = "CERTCTL_AUTH_SECRET", hide_env_values = true, default_value = "")]
    pub auth_secret: String,

    /// Enable per-key API rate limiting.
    #[arg(long, env = "CERTCTL_RATE_LIMIT_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limit_enabled: bool,

    /// Sustained requests per second allowed per API key.
    #[arg(long, env = "CERTCTL_RATE_LIMIT_RPS", default_value_t = 50)]
    pub rate_limit_rps: u32,

    /// Burst allowance per API key.
    #[arg(long, env = "CERTCTL_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Failed authentications (wrong API key or agent credential) allowed per client address
    /// (IPv4 address, IPv6 /64) within CERTCTL_AUTH_FAILURE_WINDOW; past it the address gets 429
    /// with Retry-After, before any database lookup, until the window frees up. Counted per
    /// replica; valid API keys are never counted or delayed. 0 disables.
    #[arg(long, env = "CERTCTL_AUTH_FAILURE_LIMIT", default_value_t = 20)]
    pub auth_failure_limit: u32,

    /// The sliding window of CERTCTL_AUTH_FAILURE_LIMIT.
    #[arg(long, env = "CERTCTL_AUTH_FAILURE_WINDOW", default_value = "1m", value_parser = parse_duration)]
    pub auth_failure_window: Duration,

    /// Backend of the sliding-window limiters (ACME limits): memory (per replica) or postgres
    /// (shared by all replicas).
    #[arg(long, env = "CERTCTL_RATELIMIT_BACKEND", value_enum, default_value_t = RateLimitBackend::Memory)]
    pub ratelimit_backend: RateLimitBackend,

    /// Who generates keys on renewal: agent (CSR from the agent) or server.
    #[arg(long, env = "CERTCTL_KEYGEN_MODE", value_enum, default_value_t = KeygenMode::Agent)]
    pub keygen_mode: KeygenMode,

    /// Load the idempotent demo data set at boot.
    #[arg(long, env = "CERTCTL_DEMO_SEED", default_value_t = false, action = clap::ArgAction::Set)]
    pub demo_seed: bool,

    /// Largest accepted request body, e.g. 1MiB, 512KiB or a byte count.
    #[arg(long, env = "CERTCTL_MAX_BODY_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_body_size: usize,

    /// Issuance jobs run at once by the job processor.
    #[arg(long, env = "CERTCTL_RENEWAL_CONCURRENCY", default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub renewal_concurrency: u32,

    /// Secret that encrypts stored private keys (CA key, server-generated keys). Unset: keys are
    /// stored unencrypted.
    #[arg(long, env = "CERTCTL_CONFIG_ENCRYPTION_KEY", hide_env_values = true)]
    pub config_encryption_key: Option<String>,

    /// Serve /metrics without an API key.
    #[arg(long, env = "CERTCTL_METRICS_PUBLIC", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_public: bool,

    /// Run the scheduler loops in this process.
    #[arg(long, env = "CERTCTL_SCHEDULER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub scheduler_enabled: bool,

    /// Renewal check: finds certificates inside their policy's renewal window.
    #[arg(long, env = "CERTCTL_RENEWAL_CHECK_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub renewal_check_interval: Duration,

    /// Job processor: claims Pending jobs and runs them.
    #[arg(long, env = "CERTCTL_JOB_PROCESSOR_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub job_processor_interval: Duration,

    /// Jobs claimed per job-processor batch.
    #[arg(long, env = "CERTCTL_JOB_BATCH_SIZE", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub job_batch_size: u32,

    /// Job retry: puts Failed jobs with attempts left back to Pending.
    #[arg(long, env = "CERTCTL_JOB_RETRY_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub job_retry_interval: Duration,

    /// Job timeout sweep interval.
    #[arg(long, env = "CERTCTL_JOB_TIMEOUT_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub job_timeout_interval: Duration,

    /// A Running job older than this is failed by the timeout sweep.
    #[arg(long, env = "CERTCTL_JOB_RUNNING_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub job_running_timeout: Duration,

    /// Claim lease of a server-side job: renewed every third of it while the job runs; once
    /// it has expired (the claiming replica died or froze), another replica's next claim takes
    /// the job over (see docs/operator/scheduler-ha.md).
    #[arg(long, env = "CERTCTL_JOB_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub job_lease: Duration,

    /// An AwaitingCSR job older than this is failed by the timeout sweep.
    #[arg(long, env = "CERTCTL_JOB_AWAITING_CSR_TIMEOUT", default_value = "24h", value_parser = parse_duration)]
    pub job_awaiting_csr_timeout: Duration,

    /// Agent health: marks agents Offline after a stale heartbeat.
    #[arg(long, env = "CERTCTL_AGENT_HEALTH_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub agent_health_interval: Duration,

    /// Heartbeat age after which an agent counts as Offline.
    #[arg(long, env = "CERTCTL_AGENT_OFFLINE_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub agent_offline_after: Duration,

    /// Notification process: sends pending notifications.
    #[arg(long, env = "CERTCTL_NOTIFICATION_PROCESS_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub notification_process_interval: Duration,

    /// Notification retry: resends failed notifications that are due.
    #[arg(long, env = "CERTCTL_NOTIFICATION_RETRY_INTERVAL", default_value = "2m", value_parser = parse_duration)]
    pub notification_retry_interval: Duration,

    /// Timeout of one webhook delivery.
    #[arg(long, env = "CERTCTL_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// SMTP server for the email channel (host:port). Unset: email notifications fail.
    #[arg(long, env = "CERTCTL_SMTP_ADDR")]
    pub smtp_addr: Option<String>,

    /// Sender address of notification emails.
    #[arg(long, env = "CERTCTL_SMTP_FROM", default_value = "certctl@localhost")]
    pub smtp_from: String,

    /// Short-lived expiry: marks expired certificates Expired.
    #[arg(long, env = "CERTCTL_SHORT_LIVED_EXPIRY_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub short_lived_expiry_interval: Duration,

    /// ACME GC: deletes expired nonces, orders and authorizations.
    #[arg(long, env = "CERTCTL_ACME_GC_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub acme_gc_interval: Duration,

    /// Rate-limit janitor: deletes idle rate_limit_buckets rows.
    #[arg(long, env = "CERTCTL_RATELIMIT_JANITOR_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub ratelimit_janitor_interval: Duration,

    /// CRL generation: re-signs each local issuer's CRL.
    #[arg(long, env = "CERTCTL_CRL_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub crl_interval: Duration,

    /// Prompt CRL refresh: how often the leader looks for issuers with revocations newer than
    /// their CRL and re-signs those. Revocations within one interval share one re-sign, so
    /// this is both the longest a revocation waits for the CRL and the debounce under bursts.
    #[arg(long, env = "CERTCTL_CRL_REFRESH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub crl_refresh_interval: Duration,

    /// Leader election: how often a non-leader retries the advisory lock and the leader checks
    /// its dedicated connection is still alive.
    #[arg(long, env = "CERTCTL_LEADER_ELECTION_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub leader_election_interval: Duration,

    /// Longest a single scheduler tick may run before it is abandoned (the job processor's
    /// individual jobs are bounded by CERTCTL_JOB_RUNNING_TIMEOUT instead).
    #[arg(long, env = "CERTCTL_SCHEDULER_TICK_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub scheduler_tick_timeout: Duration,

    /// Profile served under /acme/ (without /profile/{id}/).
    #[arg(long, env = "CERTCTL_ACME_DEFAULT_PROFILE", default_value = "prof-test")]
    pub acme_default_profile: String,

    /// Port http-01 validation connects to.
    #[arg(long, env = "CERTCTL_ACME_HTTP01_PORT", default_value_t = 80)]
    pub acme_http01_port: u16,

    /// Name → address overrides for ACME validation, `name=ip,…` (tests point names at loopback).
    #[arg(long, env = "CERTCTL_ACME_RESOLVE", default_value = "")]
    pub acme_resolve: String,

    /// DNS resolver (ip:port) for dns-01 validation. Unset: the system resolver.
    #[arg(long, env = "CERTCTL_ACME_DNS_RESOLVER")]
    pub acme_dns_resolver: Option<String>,

    /// Lifetime of an ACME nonce.
    #[arg(long, env = "CERTCTL_ACME_NONCE_TTL", default_value = "1h", value_parser = parse_duration)]
    pub acme_nonce_ttl: Duration,

    /// How often buffered audit rows are written.
    #[arg(long, env = "CERTCTL_AUDIT_FLUSH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub audit_flush_interval: Duration,

    /// How long shutdown waits for in-flight requests and scheduler ticks.
    #[arg(long, env = "CERTCTL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Longest time one HTTP request may take; past it the server answers 503 and abandons the
    /// request's work (its transaction rolls back). Bounds requests during a database stall,
    /// when connections stay open but nothing answers.
    #[arg(long, env = "CERTCTL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Identity of this replica in logs, job claims and leader records. Default: host-pid-random.
    #[arg(long, env = "CERTCTL_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log format: json or pretty.
    #[arg(long, env = "CERTCTL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or certctl_server=debug.
    #[arg(long, env = "CERTCTL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Outcome of parsing the command line and environment.
#[derive(Debug)]
pub enum ConfigOutcome {
    /// Ready to run.
    Run(Box<Config>),
    /// `--help`/`--version` was printed; exit 0.
    Exit,
}

/// A configuration error: the variable and why, as one line.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {reason}")]
pub struct ConfigError {
    /// The `CERTCTL_*` variable (or flag) at fault.
    pub variable: String,
    /// Why it was refused.
    pub reason: String,
}

impl Config {
    /// Parses `args` plus the environment. Errors name the environment variable at fault.
    pub fn parse_from_args<I, T>(args: I) -> Result<ConfigOutcome, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Config::try_parse_from(args) {
            Ok(cfg) => cfg.validate().map(|c| ConfigOutcome::Run(Box::new(c))),
            Err(e) => {
                use clap::error::{ContextKind, ContextValue, ErrorKind};
                if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                    let _ = e.print();
                    return Ok(ConfigOutcome::Exit);
                }
                let arg = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(s)) => Some(s.clone()),
                    Some(ContextValue::Strings(v)) => v.first().cloned(),
                    _ => None,
                };
                let variable = arg.as_deref().and_then(env_name_of_arg).or(arg).unwrap_or_else(|| "arguments".into());
                let reason = e
                    .render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid")
                    .trim_start_matches("error: ")
                    .to_string();
                Err(ConfigError { variable, reason })
            }
        }
    }

    /// Parses the process's own arguments and environment.
    pub fn from_env() -> Result<ConfigOutcome, ConfigError> {
        Self::parse_from_args(std::env::args_os())
    }

    /// Checks that clap cannot express.
    fn validate(self) -> Result<Self, ConfigError> {
        let err = |variable: &str, reason: String| ConfigError { variable: variable.into(), reason };
        if !(self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://")) {
            return Err(err("CERTCTL_DATABASE_URL", "must be a postgres:// URL".into()));
        }
        if self.auth_type == AuthType::ApiKey {
            let keys = self.api_keys().map_err(|r| err("CERTCTL_API_KEYS_NAMED", r))?;
            if keys.is_empty() {
                return Err(err(
                    "CERTCTL_API_KEYS_NAMED",
                    "no API key configured (set CERTCTL_API_KEYS_NAMED or CERTCTL_AUTH_SECRET, or CERTCTL_AUTH_TYPE=none)".into(),
                ));
            }
        }
        if self.rate_limit_enabled && self.rate_limit_rps == 0 {
            return Err(err("CERTCTL_RATE_LIMIT_RPS", "must be > 0 when rate limiting is enabled".into()));
        }
        if let Some(url) = &self.external_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(err("CERTCTL_EXTERNAL_URL", "must start with http:// or https://".into()));
        }
        parse_resolve_overrides(&self.acme_resolve).map_err(|r| err("CERTCTL_ACME_RESOLVE", r))?;
        if let Some(k) = &self.config_encryption_key
            && k.len() < 16
        {
            return Err(err("CERTCTL_CONFIG_ENCRYPTION_KEY", "must be at least 16 characters".into()));
        }
        for (var, d) in [
            ("CERTCTL_RENEWAL_CHECK_INTERVAL", self.renewal_check_interval),
            ("CERTCTL_JOB_PROCESSOR_INTERVAL", self.job_processor_interval),
            ("CERTCTL_JOB_RETRY_INTERVAL", self.job_retry_interval),
            ("CERTCTL_JOB_TIMEOUT_INTERVAL", self.job_timeout_interval),
            ("CERTCTL_AGENT_HEALTH_INTERVAL", self.agent_health_interval),
            ("CERTCTL_NOTIFICATION_PROCESS_INTERVAL", self.notification_process_interval),
            ("CERTCTL_NOTIFICATION_RETRY_INTERVAL", self.notification_retry_interval),
            ("CERTCTL_SHORT_LIVED_EXPIRY_INTERVAL", self.short_lived_expiry_interval),
            ("CERTCTL_ACME_GC_INTERVAL", self.acme_gc_interval),
            ("CERTCTL_RATELIMIT_JANITOR_INTERVAL", self.ratelimit_janitor_interval),
            ("CERTCTL_CRL_INTERVAL", self.crl_interval),
            ("CERTCTL_CRL_REFRESH_INTERVAL", self.crl_refresh_interval),
            ("CERTCTL_AUTH_FAILURE_WINDOW", self.auth_failure_window),
            ("CERTCTL_AUDIT_FLUSH_INTERVAL", self.audit_flush_interval),
            ("CERTCTL_JOB_LEASE", self.job_lease),
            ("CERTCTL_REQUEST_TIMEOUT", self.request_timeout),
            ("CERTCTL_SERVER_HEADER_READ_TIMEOUT", self.server_header_read_timeout),
            ("CERTCTL_SERVER_IDLE_TIMEOUT", self.server_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(err(var, "must be greater than zero".into()));
            }
        }
        Ok(self)
    }

    /// The configured API keys: `(name, key, admin)`. Named keys first, then unnamed secrets.
    pub fn api_keys(&self) -> Result<Vec<(String, String, bool)>, String> {
        let mut out = Vec::new();
        for (i, entry) in self.api_keys_named.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let parts: Vec<&str> = entry.split(':').collect();
            let (name, key, admin) = match parts.as_slice() {
                [name, key] => (*name, *key, false),
                [name, key, "admin"] => (*name, *key, true),
                _ => return Err(format!("entry {} is not name:key[:admin]", i + 1)),
            };
            if name.is_empty() || key.is_empty() {
                return Err(format!("entry {} has an empty name or key", i + 1));
            }
            out.push((name.to_string(), key.to_string(), admin));
        }
        for (i, key) in self.auth_secret.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            out.push((format!("legacy-{}", i + 1), key.to_string(), true));
        }
        Ok(out)
    }

    /// Parsed CERTCTL_ACME_RESOLVE.
    pub fn resolve_overrides(&self) -> Vec<(String, IpAddr)> {
        parse_resolve_overrides(&self.acme_resolve).unwrap_or_default()
    }

    /// This replica's identity.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
            // The random suffix keeps in-process replicas (tests, the throughput example) apart:
            // job claims and the leader record are keyed by this id.
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}-{}", host.trim(), std::process::id(), &suffix[..6])
        })
    }
}

/// Maps a clap argument display (`--server-port <SERVER_PORT>`) to its environment variable.
fn env_name_of_arg(display: &str) -> Option<String> {
    let long = display.trim_start_matches("--").split([' ', '=']).next()?;
    Config::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
}

fn parse_resolve_overrides(s: &str) -> Result<Vec<(String, IpAddr)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, ip) = e.split_once('=').ok_or_else(|| format!("'{e}' is not name=ip"))?;
            let ip: IpAddr = ip.parse().map_err(|_| format!("'{ip}' is not an IP address"))?;
            Ok((name.to_ascii_lowercase(), ip))
        })
        .collect()
}

/// Parses `500ms`, `30s`, `5m`, `1h` (also `2d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("'{s}' has no unit (use ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a duration like 500ms, 30s, 5m, 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("'{s}' has an unknown unit (use ms, s, m, h)")),
    }
    .ok_or_else(|| format!("'{s}' is too large"))?;
    Ok(Duration::from_millis(ms))
}

/// Parses `1048576`, `512KiB`, `1MiB`, `1MB`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size like 1MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "k" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        _ => return Err(format!("'{s}' has an unknown unit (use B, KiB, MiB)")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))?;
    if v == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<ConfigOutcome, ConfigError> {
        let mut args = vec!["certctl-server", "--database-url", "postgres://x@127.0.0.1/db", "--auth-type", "none"];
        args.extend_from_slice(extra);
        Config::parse_from_args(args)
    }

    #[test]
    fn durations_parse_every_documented_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GiB").is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let ConfigOutcome::Run(c) = parse(&[]).expect("parses") else { panic!("expected config") };
        assert_eq!(c.database_max_conns, 50);
        assert_eq!(c.server_port, 8443);
        assert_eq!(c.rate_limit_rps, 50);
        assert_eq!(c.rate_limit_burst, 100);
        assert_eq!(c.max_body_size, 1 << 20);
        assert_eq!(c.renewal_concurrency, 25);
        assert_eq!(c.job_processor_interval, Duration::from_secs(30));
        assert!(!c.demo_seed);
    }

    #[test]
    fn a_bad_value_names_its_environment_variable() {
        let e = parse(&["--server-port", "notaport"]).expect_err("bad port");
        assert_eq!(e.variable, "CERTCTL_SERVER_PORT");
        let e = parse(&["--renewal-check-interval", "5"]).expect_err("no unit");
        assert_eq!(e.variable, "CERTCTL_RENEWAL_CHECK_INTERVAL");
        assert!(e.to_string().lines().count() == 1);
    }

    #[test]
    fn api_keys_parse_names_and_admin_flag() {
        let ConfigOutcome::Run(c) = Config::parse_from_args([
            "x",
            "--database-url",
            "postgres://h/db",
            "--api-keys-named",
            "ops:k1:admin,ci:k2",
            "--auth-secret",
            "s1",
        ])
        .expect("parses") else {
            panic!()
        };
        let keys = c.api_keys().expect("keys");
        assert_eq!(keys[0], ("ops".into(), "k1".into(), true));
        assert_eq!(keys[1], ("ci".into(), "k2".into(), false));
        assert_eq!(keys[2], ("legacy-1".into(), "s1".into(), true));
    }

    #[test]
    fn api_key_mode_without_keys_is_refused() {
        let e = Config::parse_from_args(["x", "--database-url", "postgres://h/db"]).expect_err("no keys");
        assert_eq!(e.variable, "CERTCTL_API_KEYS_NAMED");
    }
}
