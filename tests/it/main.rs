//! Integration tests: one binary, real DuckDB files in temp dirs, real child processes.

mod common;

mod audit;
mod cli;
mod durability;
mod engine;
mod engine_restart;
mod ledger_props;
mod scenarios;
mod sender;
mod serve;
mod serve_queries;
mod store_conformance;
mod tamper;
mod writer;
