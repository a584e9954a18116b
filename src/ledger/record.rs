//! The in-memory form of ledger records: what happened to a delivery, one fact per record.
//!
//! This enum is what the code reasons about. It is deliberately separate from the stored row
//! ([`super::stored::StoredRecord`]): a future record format is read into this enum through an
//! upcast, and old rows are never rewritten.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::DeliveryKey;

/// Ledger timestamps. The writer truncates them to microseconds (DuckDB's `TIMESTAMP`
/// precision) before anything sees them, so a live projection equals a rebuilt one.
pub type Timestamp = DateTime<Utc>;

/// Truncates to whole microseconds, the precision the ledger stores.
pub fn to_micros(t: Timestamp) -> Timestamp {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The seven kinds of ledger record (the `kind` column).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Enqueued,
    Attempted,
    Delivered,
    Failed,
    DeadParked,
    Parked,
    Requeued,
}

impl RecordKind {
    pub const ALL: [RecordKind; 7] = [
        Self::Enqueued,
        Self::Attempted,
        Self::Delivered,
        Self::Failed,
        Self::DeadParked,
        Self::Parked,
        Self::Requeued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueued => "enqueued",
            Self::Attempted => "attempted",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::DeadParked => "dead_parked",
            Self::Parked => "parked",
            Self::Requeued => "requeued",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed, as a small closed set that audit queries can group by.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The receiver answered with a non-2xx status (3xx included: redirects are not followed).
    Status,
    /// The attempt's total deadline passed.
    Timeout,
    /// The TCP connection could not be made.
    Connect,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// The TLS handshake failed.
    Tls,
    /// Reading or decoding the response body failed.
    Body,
    /// The receiver spoke something that is not HTTP.
    Protocol,
    /// The URL guard refused the address (or the name did not resolve).
    RefusedUrl,
    /// The process died while the attempt was in flight (found at restart).
    Abandoned,
    /// Anything else the HTTP client reported.
    Other,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 10] = [
        Self::Status,
        Self::Timeout,
        Self::Connect,
        Self::Reset,
        Self::Tls,
        Self::Body,
        Self::Protocol,
        Self::RefusedUrl,
        Self::Abandoned,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Tls => "tls",
            Self::Body => "body",
            Self::Protocol => "protocol",
            Self::RefusedUrl => "refused_url",
            Self::Abandoned => "abandoned",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The terminal states a `requeued` record can lift a delivery out of.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Terminal {
    Delivered,
    Dead,
    Parked,
}

impl Terminal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Parked => "parked",
        }
    }

    /// The terminal state a delivery is in after a record of `kind`, if that kind ends it.
    pub fn after(kind: RecordKind) -> Option<Self> {
        match kind {
            RecordKind::Delivered => Some(Self::Delivered),
            RecordKind::DeadParked => Some(Self::Dead),
            RecordKind::Parked => Some(Self::Parked),
            _ => None,
        }
    }

    /// The record kind that puts a delivery in this state.
    pub fn record_kind(self) -> RecordKind {
        match self {
            Self::Delivered => RecordKind::Delivered,
            Self::Dead => RecordKind::DeadParked,
            Self::Parked => RecordKind::Parked,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Delivered, Self::Dead, Self::Parked]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// What a failed attempt recorded. `next_due_at` is the decision (backoff, jitter and
/// Retry-After already applied), so the fold copies it and needs no clock or randomness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Failure {
    pub attempt: u16,
    pub status: Option<u16>,
    pub error_class: ErrorClass,
    pub error: String,
    pub duration_ms: u32,
    pub next_due_at: Timestamp,
    /// The first 1 KiB of the response body, when there was one.
    pub response_body: Option<String>,
}

/// The fact a record states, by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    Enqueued {
        due_at: Timestamp,
    },
    Attempted {
        attempt: u16,
    },
    Delivered {
        attempt: u16,
        status: u16,
        duration_ms: u32,
    },
    Failed(Failure),
    DeadParked {
        reason: String,
    },
    Parked {
        reason: String,
    },
    Requeued {
        /// The terminal state the delivery was in (the writer checked it).
        from: Terminal,
        due_at: Timestamp,
        /// Who asked, and why.
        reason: String,
    },
}

impl RecordBody {
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Enqueued { .. } => RecordKind::Enqueued,
            Self::Attempted { .. } => RecordKind::Attempted,
            Self::Delivered { .. } => RecordKind::Delivered,
            Self::Failed(_) => RecordKind::Failed,
            Self::DeadParked { .. } => RecordKind::DeadParked,
            Self::Parked { .. } => RecordKind::Parked,
            Self::Requeued { .. } => RecordKind::Requeued,
        }
    }

    /// The same fact with every timestamp truncated to the ledger's precision.
    pub fn normalized(mut self) -> Self {
        match &mut self {
            Self::Enqueued { due_at } | Self::Requeued { due_at, .. } => {
                *due_at = to_micros(*due_at)
            }
            Self::Failed(f) => f.next_due_at = to_micros(f.next_due_at),
            _ => {}
        }
        self
    }
}

/// A record not yet appended: the writer gives it its `seq` and `recorded_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    pub key: DeliveryKey,
    pub body: RecordBody,
}

impl NewRecord {
    pub fn new(key: DeliveryKey, body: RecordBody) -> Self {
        Self { key, body }
    }
}

/// An appended record, as read back from the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Record {
    pub seq: u64,
    pub recorded_at: Timestamp,
    #[serde(flatten)]
    pub key: DeliveryKey,
    #[serde(flatten)]
    pub body: RecordBody,
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        self.body.kind()
    }
}
