//! Integration tests of the harness, against an in-process axum target on port 0.
//!
//! One binary (see `harness/Cargo.toml`), modules by behaviour. Runs are serialised through
//! [`support::run`], since goose keeps process-wide state (its Ctrl-C switch); the reference
//! run shared by several tests is made once.

mod support;

mod ab;
mod artifacts;
mod browser;
mod ceiling;
mod compare;
mod deploy;
mod distributed;
mod embedded;
mod exit_codes;
mod faults;
mod fleet;
mod flows;
mod live;
mod measurement;
mod scale;
mod seeds;
mod trend;
