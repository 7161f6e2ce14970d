//! `certctl-loadtest` entry point: parse, run, exit with the run's code (0 held, 1 a threshold
//! or the gate failed, 2 the run could not be carried out).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = certctl_loadtest::cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certctl-loadtest: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(certctl_loadtest::run(cli));
    if outcome.code != 0 {
        eprintln!("certctl-loadtest: {}", outcome.message);
    }
    ExitCode::from(outcome.code.clamp(0, 255) as u8)
}
