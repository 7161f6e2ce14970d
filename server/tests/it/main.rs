//! Integration tests of certctl-server against a real PostgreSQL (one binary, one cluster,
//! a fresh database per test).

mod acme;
mod acme_client;
mod boot;
mod migrations;
mod support;
mod workflows;
