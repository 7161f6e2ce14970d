//! # certctl-loadtest
//!
//! The load-testing and scale-baseline harness for certctl (see `../shared/spec/harness.md`).
