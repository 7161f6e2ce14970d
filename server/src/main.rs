//! `certctl-server`: parse configuration, build the runtime, set up logging, serve, map the
//! outcome to an exit code.

use std::process::ExitCode;

use certctl_server::config::{Config, ConfigOutcome};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(ConfigOutcome::Run(c)) => *c,
        Ok(ConfigOutcome::Exit) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads as usize);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certctl-server: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    certctl_server::init_logging(&config);
    match runtime.block_on(certctl_server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certctl-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
