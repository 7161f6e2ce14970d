//! Integration tests of certctl-server against a real PostgreSQL (one binary, one cluster,
//! a fresh database per test).

mod boot;
mod issuance;
mod migrations;
mod notify;
mod ratelimit;
mod scheduler;
mod support;
mod workflows;
