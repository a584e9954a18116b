//! The stored form of a ledger record (one row of `webhook_deliveries`), its upcast into the
//! in-memory [`Record`], and its canonical byte encoding for the hash chain.
//!
//! # Record format versions
//! Every row carries `format_version`. Rows are never rewritten: reading a row of an older
//! version goes through [`StoredRecord::into_record`], which upcasts it to the current enum.
//! Version 1 is the only version so far.
//!
//! # Canonical encoding (v1), frozen
//! The hash chain covers the *stored* columns, encoded as follows (big-endian integers):
//!
//! | field | encoding |
//! |---|---|
//! | format_version | 1 byte |
//! | seq | u64 |
//! | recorded_at | i64 microseconds since the Unix epoch |
//! | kind | string |
//! | webhook_id, event_id | 16 bytes each |
//! | attempt, status_code | optional u16 |
//! | error_class, error | optional string |
//! | duration_ms | optional u32 |
//! | due_at | optional i64 microseconds |
//! | reason, response_body, prior_state | optional string |
//!
//! A string is its UTF-8 length as u32 then its bytes; an optional value is one byte `0`
//! (absent) or `1` followed by the value. A later format version may add fields *after* these,
//! and encodes rows of its own version only: a v1 row hashes the same forever, whatever version
//! of hookledger reads it.

use uuid::Uuid;

use super::record::{ErrorClass, Failure, Record, RecordBody, RecordKind, Terminal, Timestamp};
use crate::error::LedgerError;
use crate::ids::{DeliveryKey, EventId, WebhookId};

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// One row of `webhook_deliveries`, column for column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub recorded_at_us: i64,
    pub format_version: u8,
    pub kind: String,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub attempt: Option<u16>,
    pub status_code: Option<u16>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<u32>,
    pub due_at_us: Option<i64>,
    pub reason: Option<String>,
    pub response_body: Option<String>,
    pub prior_state: Option<String>,
}

impl StoredRecord {
    /// The row this build writes for `record`.
    pub fn from_record(record: &Record) -> Self {
        let mut row = Self {
            seq: record.seq,
            recorded_at_us: record.recorded_at.timestamp_micros(),
            format_version: FORMAT_VERSION,
            kind: record.kind().as_str().to_owned(),
            webhook_id: record.key.webhook_id.0,
            event_id: record.key.event_id.0,
            attempt: None,
            status_code: None,
            error_class: None,
            error: None,
            duration_ms: None,
            due_at_us: None,
            reason: None,
            response_body: None,
            prior_state: None,
        };
        match &record.body {
            RecordBody::Enqueued { due_at } => row.due_at_us = Some(due_at.timestamp_micros()),
            RecordBody::Attempted { attempt } => row.attempt = Some(*attempt),
            RecordBody::Delivered {
                attempt,
                status,
                duration_ms,
            } => {
                row.attempt = Some(*attempt);
                row.status_code = Some(*status);
                row.duration_ms = Some(*duration_ms);
            }
            RecordBody::Failed(f) => {
                row.attempt = Some(f.attempt);
                row.status_code = f.status;
                row.error_class = Some(f.error_class.as_str().to_owned());
                row.error = Some(f.error.clone());
                row.duration_ms = Some(f.duration_ms);
                row.due_at_us = Some(f.next_due_at.timestamp_micros());
                row.response_body = f.response_body.clone();
            }
            RecordBody::DeadParked { reason } | RecordBody::Parked { reason } => {
                row.reason = Some(reason.clone());
            }
            RecordBody::Requeued {
                from,
                due_at,
                reason,
            } => {
                row.prior_state = Some(from.as_str().to_owned());
                row.due_at_us = Some(due_at.timestamp_micros());
                row.reason = Some(reason.clone());
            }
        }
        row
    }

    /// Reads the row into the current in-memory form, upcasting older format versions.
    pub fn into_record(self) -> Result<Record, LedgerError> {
        match self.format_version {
            1 => self.decode_v1(),
            found => Err(LedgerError::UnknownRecordFormat {
                seq: self.seq,
                found,
                supported: FORMAT_VERSION,
            }),
        }
    }

    fn decode_v1(self) -> Result<Record, LedgerError> {
        let seq = self.seq;
        let bad = |what: &str| LedgerError::Corrupt {
            seq,
            reason: format!("{} record: {what}", self.kind),
        };
        let kind = RecordKind::parse(&self.kind).ok_or_else(|| bad("unknown kind"))?;
        let attempt = || self.attempt.ok_or_else(|| bad("missing attempt"));
        let due = || micros(self.due_at_us).ok_or_else(|| bad("missing or invalid due_at"));
        let reason = || self.reason.clone().unwrap_or_default();
        let body = match kind {
            RecordKind::Enqueued => RecordBody::Enqueued { due_at: due()? },
            RecordKind::Attempted => RecordBody::Attempted {
                attempt: attempt()?,
            },
            RecordKind::Delivered => RecordBody::Delivered {
                attempt: attempt()?,
                status: self.status_code.ok_or_else(|| bad("missing status_code"))?,
                duration_ms: self.duration_ms.unwrap_or(0),
            },
            RecordKind::Failed => RecordBody::Failed(Failure {
                attempt: attempt()?,
                status: self.status_code,
                error_class: self
                    .error_class
                    .as_deref()
                    .and_then(ErrorClass::parse)
                    .ok_or_else(|| bad("missing or unknown error_class"))?,
                error: self.error.clone().unwrap_or_default(),
                duration_ms: self.duration_ms.unwrap_or(0),
                next_due_at: due()?,
                response_body: self.response_body.clone(),
            }),
            RecordKind::DeadParked => RecordBody::DeadParked { reason: reason() },
            RecordKind::Parked => RecordBody::Parked { reason: reason() },
            RecordKind::Requeued => RecordBody::Requeued {
                from: self
                    .prior_state
                    .as_deref()
                    .and_then(Terminal::parse)
                    .ok_or_else(|| bad("missing or unknown prior_state"))?,
                due_at: due()?,
                reason: reason(),
            },
        };
        let recorded_at =
            micros(Some(self.recorded_at_us)).ok_or_else(|| bad("invalid recorded_at"))?;
        Ok(Record {
            seq,
            recorded_at,
            key: DeliveryKey::new(WebhookId(self.webhook_id), EventId(self.event_id)),
            body,
        })
    }

    /// Appends the canonical encoding of this row (see the module docs) to `out`.
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        out.push(self.format_version);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_us.to_be_bytes());
        put_str(out, &self.kind);
        out.extend_from_slice(self.webhook_id.as_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        put_opt(out, self.attempt, |o, v| {
            o.extend_from_slice(&v.to_be_bytes())
        });
        put_opt(out, self.status_code, |o, v| {
            o.extend_from_slice(&v.to_be_bytes())
        });
        put_opt(out, self.error_class.as_deref(), put_str);
        put_opt(out, self.error.as_deref(), put_str);
        put_opt(out, self.duration_ms, |o, v| {
            o.extend_from_slice(&v.to_be_bytes())
        });
        put_opt(out, self.due_at_us, |o, v| {
            o.extend_from_slice(&v.to_be_bytes())
        });
        put_opt(out, self.reason.as_deref(), put_str);
        put_opt(out, self.response_body.as_deref(), put_str);
        put_opt(out, self.prior_state.as_deref(), put_str);
    }
}

fn micros(us: Option<i64>) -> Option<Timestamp> {
    us.and_then(chrono::DateTime::from_timestamp_micros)
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

pub(crate) fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn at(s: i64) -> Timestamp {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn sample(body: RecordBody) -> Record {
        Record {
            seq: 7,
            recorded_at: at(1_700_000_000),
            key: DeliveryKey::new(WebhookId(Uuid::from_u128(1)), EventId(Uuid::from_u128(2))),
            body,
        }
    }

    fn every_kind() -> Vec<RecordBody> {
        vec![
            RecordBody::Enqueued { due_at: at(10) },
            RecordBody::Attempted { attempt: 1 },
            RecordBody::Delivered {
                attempt: 1,
                status: 204,
                duration_ms: 12,
            },
            RecordBody::Failed(Failure {
                attempt: 2,
                status: Some(503),
                error_class: ErrorClass::Status,
                error: "HTTP 503".into(),
                duration_ms: 40,
                next_due_at: at(20),
                response_body: Some("busy".into()),
            }),
            RecordBody::DeadParked {
                reason: "budget spent".into(),
            },
            RecordBody::Parked {
                reason: "deactivated".into(),
            },
            RecordBody::Requeued {
                from: Terminal::Dead,
                due_at: at(30),
                reason: "operator".into(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_the_stored_form() {
        for body in every_kind() {
            let record = sample(body);
            let back = StoredRecord::from_record(&record).into_record().unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn an_unknown_format_version_is_refused_not_guessed() {
        let mut row = StoredRecord::from_record(&sample(every_kind().remove(0)));
        row.format_version = 9;
        let err = row.into_record().unwrap_err();
        assert!(matches!(
            err,
            LedgerError::UnknownRecordFormat { found: 9, .. }
        ));
    }

    #[test]
    fn rows_missing_their_required_columns_are_corrupt() {
        let mut row = StoredRecord::from_record(&sample(RecordBody::Attempted { attempt: 1 }));
        row.attempt = None;
        assert!(matches!(
            row.into_record(),
            Err(LedgerError::Corrupt { seq: 7, .. })
        ));
        let mut row = StoredRecord::from_record(&sample(RecordBody::Attempted { attempt: 1 }));
        row.kind = "exploded".into();
        assert!(matches!(
            row.into_record(),
            Err(LedgerError::Corrupt { .. })
        ));
    }

    #[test]
    fn the_canonical_encoding_distinguishes_every_column() {
        let base = StoredRecord::from_record(&sample(every_kind().remove(3)));
        let encode = |r: &StoredRecord| {
            let mut v = Vec::new();
            r.encode_canonical(&mut v);
            v
        };
        let reference = encode(&base);
        let mut variants = vec![];
        let mut r = base.clone();
        r.seq += 1;
        variants.push(r);
        let mut r = base.clone();
        r.error = Some("HTTP 50".into());
        r.response_body = Some("3busy".into());
        variants.push(r);
        let mut r = base.clone();
        r.status_code = None;
        variants.push(r);
        let mut r = base.clone();
        r.due_at_us = Some(r.due_at_us.unwrap() + 1);
        variants.push(r);
        for v in variants {
            assert_ne!(encode(&v), reference, "{v:?}");
        }
    }

    /// Pins the v1 encoding: if this changes, every existing ledger's chain breaks.
    #[test]
    fn the_v1_encoding_is_frozen() {
        let row = StoredRecord::from_record(&sample(RecordBody::Attempted { attempt: 3 }));
        let mut v = Vec::new();
        row.encode_canonical(&mut v);
        let expected = concat!(
            "01",
            "0000000000000007",
            "00060a24181e4000",
            "00000009617474656d70746564",
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
            "010003",
            "0000000000000000",
        );
        assert_eq!(hex::encode(v), expected);
    }
}
