//! Parquet export of the ledger: `webhook_deliveries` as immutable files an auditor reads with
//! any Parquet reader (the duckdb CLI, Python), while the server runs.
//!
//! # Layout of an export directory
//! - `webhook_deliveries-<first>-<last>.parquet` (seqs zero-padded to 20 digits, so names sort
//!   as ranges; zstd): the records `first..=last`, whole chain batches, one row per record with
//!   every stored column, the chain link covering it (`batch_first_seq`, `batch_last_seq`,
//!   `batch_prev_hash`, `batch_hash`, hex) and its event's metadata (`event_seq`, `app`,
//!   `producer_event_id`, `event_type`, `published_at`, `event_hash`, `body_digest`,
//!   `body_expunged`; `body` only with `--bodies`, never an expunged one). Columns:
//!   [`rows::schema`].
//! - `manifest.json` ([`manifest`]): each file's range, rows, SHA-256 and chain hashes.
//!
//! # Parts
//! [`plan`] (pure: names, which ranges become files), [`rows`] (rows to Arrow and back),
//! [`writer`] (one run: read through the [`crate::store::Store`] trait, seal files atomically),
//! [`verify`] (`hookledger verify --export`), [`run`] (`serve`'s continuous mode), [`cli`]
//! (`hookledger export`).
//!
//! Invariant: a file name, once visible, always holds the same bytes: files are written under a
//! hidden temp name and renamed into place, never rewritten, and each run continues after the
//! last file in the directory.

pub mod cli;
pub mod manifest;
pub mod plan;
pub mod rows;
pub mod run;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};

use crate::error::LedgerError;
use crate::ledger::record::Timestamp;

/// Records per file (a file holds whole batches, so it may hold a few more).
pub const DEFAULT_EVERY: u64 = 100_000;

/// What one export run writes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cut a file once it holds at least this many records.
    pub every: u64,
    /// Also write each event's body (never an expunged one).
    pub bodies: bool,
    /// Only into an empty directory: start at the batch holding the first record recorded at
    /// or after this instant (later runs continue after the last file).
    pub since: Option<Timestamp>,
    /// Stop at the last batch recorded before this instant.
    pub until: Option<Timestamp>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            every: DEFAULT_EVERY,
            bodies: false,
            since: None,
            until: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A file's rows are not what an export file holds.
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Manifest(String),
    /// The directory or the store is not in a state a run can continue from.
    #[error("{0}")]
    Dir(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl ExportError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_owned(),
            source,
        }
    }
}

impl From<ExportError> for LedgerError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Ledger(inner) => inner,
            other => LedgerError::Invalid(format!("export: {other}")),
        }
    }
}
