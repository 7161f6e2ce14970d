//! `certctl-loadtest` entry point.

fn main() {
    eprintln!("certctl-loadtest: not built yet");
    std::process::exit(2);
}
