//! Integration tests: one binary, real DuckDB files in temp dirs, real child processes.

#[macro_use]
mod common;
#[macro_use]
mod pg_common;

mod app_routes;
mod apps;
mod audit;
mod bench;
mod buckets;
mod checkpoints;
mod cli;
mod console;
mod console_api;
mod console_browser;
mod console_scoped;
mod crash_cycles;
mod durability;
mod engine;
mod engine_restart;
mod erasure;
mod faults;
mod head;
mod hostile;
mod ledger_props;
mod migration;
mod openapi;
mod ops_common;
mod ops_disable;
mod ops_fifo;
mod ops_rate;
mod ops_secrets;
mod ops_token;
mod pg_chaos;
mod pg_cluster;
mod pg_ledger;
mod pg_outage;
mod pg_schema;
mod pg_serve;
mod refusals;
mod scenarios;
mod secrets;
mod sender;
mod serve;
mod serve_child;
mod serve_queries;
mod slow_clients;
mod sql;
mod storage_failure;
mod store_conformance;
mod tamper;
mod whatif;
mod writer;
