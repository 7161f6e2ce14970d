//! `certctl-server`: parse configuration, set up logging, serve, map the outcome to an exit code.

use std::process::ExitCode;

use certctl_server::config::{Config, ConfigOutcome};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(ConfigOutcome::Run(c)) => *c,
        Ok(ConfigOutcome::Exit) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-server: {e}");
            return ExitCode::from(2);
        }
    };
    certctl_server::init_logging(&config);
    match certctl_server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
