//! hookledger: an event-sourced webhook delivery ledger.
//!
//! Producers publish events; every active webhook whose filter matches gets a delivery, which is
//! signed (Standard Webhooks), POSTed, retried on a backoff schedule, dead-parked when its
//! budget is spent and parked when its webhook goes away. Every step is an immutable record in
//! the `webhook_deliveries` log in DuckDB (or PostgreSQL); queue state is a projection folded
//! from that log.
//!
//! # Layout
//! - [`ids`]: the id newtypes (webhook, event, delivery key).
//! - [`clock`]: injected time.
//! - [`ledger`]: the records ([`ledger::record`]), their stored form and canonical encoding
//!   ([`ledger::stored`]), the hash chain ([`ledger::chain`]), the pure fold
//!   ([`ledger::projection`]), the single writer ([`ledger::writer`]), and
//!   [`ledger::verify`].
//! - [`registry`]: the webhooks, event-sourced from `webhook_changes`.
//! - [`store`]: the storage trait and its DuckDB and PostgreSQL implementations; `schema/` and
//!   `schema/pg/` hold the DDL.
//! - [`delivery`]: what talks to receivers: signing, backoff, the URL guard, the HTTP sender
//!   and the engine (publish, attempts, re-drive, park, recover).
//! - [`secrets`]: the main-key ring that seals webhook signing secrets at rest, and `serve`'s
//!   start-up check and re-seal.
//! - [`config`]: delivery settings from `HOOKLEDGER_*` variables.
//! - [`api`]: the HTTP API; [`console`]: the web console `serve` answers at `/`; [`metrics`]: its Prometheus figures; [`serve`]: the process that
//!   runs it with the engine.
//! - [`cli`]: the `hookledger` command; [`bench`]: its benchmark scenarios; [`alloc`]: the
//!   binary's allocator (mimalloc) settings.
//! - [`sql`]: auditors' read-only SQL (guard, limits, rendering) for `POST /v1/sql` and
//!   `hookledger sql`.
//! - [`erasure`]: body retention (`HOOKLEDGER_BODY_RETENTION`) and `hookledger expunge`;
//!   what an expunge is and what `verify` checks after one is [`ledger::expunge`].
//! - [`export`]: the ledger as immutable Parquet files (`hookledger export`, `serve`'s
//!   `HOOKLEDGER_EXPORT_DIR`) and `verify --export`.
//! - [`whatif`]: replays the ledger's real failures under a candidate retry policy.

pub mod alloc;
pub mod api;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod delivery;
pub mod erasure;
pub mod error;
pub mod export;
pub mod ids;
pub mod ledger;
pub mod metrics;
pub mod registry;
pub mod secrets;
pub mod serve;
pub mod sql;
pub mod store;
pub mod whatif;

pub use error::{LedgerError, Result};
