//! Integration tests of certctl-server against a real PostgreSQL (one binary, one cluster,
//! a fresh database per test).

mod acme;
mod acme_client;
mod agent_flow;
mod api_agents;
mod api_auth;
mod api_certificates;
mod api_hostile;
mod api_indexes;
mod api_resources;
mod api_support;
mod boot;
mod faults;
mod issuance;
mod migrations;
mod notify;
mod probe_agents;
mod probe_issuance;
mod probe_limits;
mod ratelimit;
mod replicas;
mod scheduler;
mod support;
mod workflows;
