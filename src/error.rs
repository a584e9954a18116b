//! The library's error type. Variants name what a caller can act on; HTTP and CLI map them in
//! one place each.

use std::path::PathBuf;

use crate::ids::DeliveryKey;
use crate::ledger::record::RecordKind;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Db(#[from] duckdb::Error),

    #[error("PostgreSQL error: {0}")]
    Pg(#[from] postgres::Error),

    #[error("no database at {path}")]
    NotFound { path: PathBuf },

    #[error("database {path} is locked by another process (is `hookledger serve` running?)")]
    Locked { path: PathBuf },

    #[error("database schema version {found} is newer than this hookledger supports ({supported}); upgrade hookledger")]
    SchemaTooNew { found: u32, supported: u32 },

    #[error(
        "record seq {seq} has format version {found}; this hookledger reads up to {supported}"
    )]
    UnknownRecordFormat { seq: u64, found: u8, supported: u8 },

    #[error("invalid transition for delivery {key}: `{record}` is not allowed when {from}")]
    InvalidTransition {
        key: DeliveryKey,
        from: String,
        record: RecordKind,
    },

    #[error("ledger corrupt at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },

    #[error("registry change {seq} is invalid: {reason}")]
    InvalidChange { seq: u64, reason: String },

    #[error("event {event_id} was already published{}", if *same_body { "" } else { " with a different body" })]
    EventExists {
        event_id: crate::ids::EventId,
        same_body: bool,
    },

    #[error("no delivery {0}")]
    UnknownDelivery(DeliveryKey),

    #[error("no event {0}")]
    UnknownEvent(crate::ids::EventId),

    /// The event's body was erased (`crate::ledger::expunge`): it can never be sent again.
    #[error("the body of event {0} was expunged")]
    BodyExpunged(crate::ids::EventId),

    #[error("the commit failed and nothing of it was written: {0}")]
    CommitFailed(String),

    /// The database could not be written (disk full, read-only or lost file, an I/O error):
    /// nothing of the commit was acknowledged. The writer keeps trying, and reopens the
    /// database if its connection broke; retry later.
    #[error("storage unavailable, nothing was written: {reason}")]
    StorageUnavailable { reason: String },

    #[error("the ledger writer has stopped")]
    WriterGone,

    /// Several nodes (`crate::cluster`): an attempt of a delivery of `webhook` was refused
    /// because its partition is not leased to this node (another node attempts it).
    #[error("webhook {webhook}'s deliveries are attempted by another node")]
    NotLeased { webhook: crate::ids::WebhookId },

    #[error("{0}")]
    Invalid(String),
}

impl LedgerError {
    /// True when the disk refused a write (retry later; the writer may reopen the file).
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::StorageUnavailable { .. })
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
