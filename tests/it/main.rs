//! Integration tests: one binary, real DuckDB files in temp dirs, real child processes.

mod common;

mod audit;
mod bench;
mod cli;
mod durability;
mod engine;
mod engine_restart;
mod ledger_props;
mod scenarios;
mod sender;
mod serve;
mod store_conformance;
mod tamper;
mod writer;
