//! `certctl-dev`: runs certctl-server against a throw-away PostgreSQL with the demo seed.
//!
//! Starts a cluster (as the `postgres` user when run as root), creates a database, then runs
//! the server in-process with `CERTCTL_DATABASE_URL` pointing at it and `CERTCTL_DEMO_SEED=true`.
//! Every other `CERTCTL_*` variable and flag works as for `certctl-server`. Ctrl-C stops the
//! server gracefully, then the cluster is stopped and deleted.

use std::process::ExitCode;

use certctl_pg_embedded::{Cluster, ClusterOptions, create_database};
use certctl_server::config::{Config, ConfigOutcome};

#[tokio::main]
async fn main() -> ExitCode {
    let cluster = match tokio::task::spawn_blocking(|| Cluster::start(&ClusterOptions::default())).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("certctl-dev: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("certctl-dev: {e}");
            return ExitCode::from(2);
        }
    };
    let url = match create_database(&cluster.url("postgres"), "certctl").await {
        Ok(u) => u,
        Err(e) => {
            eprintln!("certctl-dev: creating the database: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("certctl-dev: throw-away PostgreSQL at {url} ({})", cluster.version());
    eprintln!("certctl-dev: cluster directory {}", cluster.dir().display());
    let mut args: Vec<String> =
        vec!["certctl-server".into(), "--database-url".into(), url, "--demo-seed".into(), "true".into()];
    if std::env::var_os("CERTCTL_API_KEYS_NAMED").is_none()
        && std::env::var_os("CERTCTL_AUTH_SECRET").is_none()
        && std::env::var_os("CERTCTL_AUTH_TYPE").is_none()
    {
        eprintln!("certctl-dev: no API key configured; using dev:dev-admin-key:admin");
        args.extend(["--api-keys-named".into(), "dev:dev-admin-key:admin".into()]);
    }
    if std::env::var_os("CERTCTL_LOG_FORMAT").is_none() {
        args.extend(["--log-format".into(), "pretty".into()]);
    }
    args.extend(std::env::args().skip(1));
    let config = match Config::parse_from_args(args) {
        Ok(ConfigOutcome::Run(c)) => *c,
        Ok(ConfigOutcome::Exit) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-dev: {e}");
            return ExitCode::from(2);
        }
    };
    certctl_server::init_logging(&config);
    let code = match certctl_server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-dev: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(cluster);
    code
}
