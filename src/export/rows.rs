//! The rows of an export file and their Arrow form, both ways: the ledger record column for
//! column (so its canonical encoding, and with it the batch hash, can be recomputed from the
//! file), the chain link covering it, and its event's metadata.
//!
//! Invariant: [`to_batch`] then [`from_batch`] gives back the same rows; ids are written as
//! UUID text and hashes as lowercase hex, so that readers need nothing but a Parquet reader.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::ExportError;
use crate::ledger::chain::Hash;
use crate::ledger::stored::StoredRecord;

/// What a file says about one event (the same for each of its records).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    pub event_seq: u64,
    /// The app (`default` for events stored before apps), as `delivery_history` shows it.
    pub app: String,
    /// The producer's id (the UUID for events stored before producer ids).
    pub producer_event_id: String,
    pub event_type: String,
    pub published_at_us: i64,
    /// The event's stored chain link (checked by `hookledger verify` on the database).
    pub event_hash: Hash,
    pub body_digest: Option<Hash>,
    pub body_expunged: bool,
    /// Only with `--bodies`, and never an expunged one.
    pub body: Option<Vec<u8>>,
}

/// One row of an export file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub record: StoredRecord,
    pub batch_first_seq: u64,
    pub batch_last_seq: u64,
    /// The hash the record's batch chains to, and the batch's own.
    pub batch_prev_hash: Hash,
    pub batch_hash: Hash,
    /// `None`: the event row was not found (a store that lost it; `verify` on it fails).
    pub event: Option<EventMeta>,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// The files' columns, in order.
pub fn schema() -> SchemaRef {
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    Arc::new(Schema::new(vec![
        f("seq", DataType::Int64, false),
        f("recorded_at", ts(), false),
        f("format_version", DataType::UInt8, false),
        f("kind", DataType::Utf8, false),
        f("webhook_id", DataType::Utf8, false),
        f("event_id", DataType::Utf8, false),
        f("attempt", DataType::UInt16, true),
        f("status_code", DataType::UInt16, true),
        f("error_class", DataType::Utf8, true),
        f("error", DataType::Utf8, true),
        f("duration_ms", DataType::UInt32, true),
        f("due_at", ts(), true),
        f("reason", DataType::Utf8, true),
        f("response_body", DataType::Utf8, true),
        f("prior_state", DataType::Utf8, true),
        f("batch_first_seq", DataType::Int64, false),
        f("batch_last_seq", DataType::Int64, false),
        f("batch_prev_hash", DataType::Utf8, false),
        f("batch_hash", DataType::Utf8, false),
        f("event_seq", DataType::Int64, true),
        f("app", DataType::Utf8, true),
        f("producer_event_id", DataType::Utf8, true),
        f("event_type", DataType::Utf8, true),
        f("published_at", ts(), true),
        f("event_hash", DataType::Utf8, true),
        f("body_digest", DataType::Utf8, true),
        f("body_expunged", DataType::Boolean, true),
        f("body", DataType::Binary, true),
    ]))
}

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The rows as one Arrow batch of [`schema`].
pub fn to_batch(rows: &[Row]) -> Result<RecordBatch, ExportError> {
    let r = |f: &dyn Fn(&StoredRecord) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(|x| f(&x.record)).collect::<StringArray>())
    };
    let e = |f: &dyn Fn(&EventMeta) -> Option<String>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|x| x.event.as_ref().and_then(f))
                .collect::<StringArray>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|x| seq(x.record.seq)),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.iter().map(|x| x.record.recorded_at_us),
        )),
        Arc::new(UInt8Array::from_iter_values(
            rows.iter().map(|x| x.record.format_version),
        )),
        r(&|s| Some(s.kind.clone())),
        r(&|s| Some(s.webhook_id.to_string())),
        r(&|s| Some(s.event_id.to_string())),
        Arc::new(
            rows.iter()
                .map(|x| x.record.attempt)
                .collect::<UInt16Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|x| x.record.status_code)
                .collect::<UInt16Array>(),
        ),
        r(&|s| s.error_class.clone()),
        r(&|s| s.error.clone()),
        Arc::new(
            rows.iter()
                .map(|x| x.record.duration_ms)
                .collect::<UInt32Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|x| x.record.due_at_us)
                .collect::<TimestampMicrosecondArray>(),
        ),
        r(&|s| s.reason.clone()),
        r(&|s| s.response_body.clone()),
        r(&|s| s.prior_state.clone()),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|x| seq(x.batch_first_seq)),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|x| seq(x.batch_last_seq)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|x| hex::encode(x.batch_prev_hash)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|x| hex::encode(x.batch_hash)),
        )),
        Arc::new(
            rows.iter()
                .map(|x| x.event.as_ref().map(|e| seq(e.event_seq)))
                .collect::<Int64Array>(),
        ),
        e(&|m| Some(m.app.clone())),
        e(&|m| Some(m.producer_event_id.clone())),
        e(&|m| Some(m.event_type.clone())),
        Arc::new(
            rows.iter()
                .map(|x| x.event.as_ref().map(|e| e.published_at_us))
                .collect::<TimestampMicrosecondArray>(),
        ),
        e(&|m| Some(hex::encode(m.event_hash))),
        e(&|m| m.body_digest.map(hex::encode)),
        Arc::new(
            rows.iter()
                .map(|x| x.event.as_ref().map(|e| e.body_expunged))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|x| x.event.as_ref().and_then(|e| e.body.as_deref()))
                .collect::<BinaryArray>(),
        ),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| ExportError::Format(e.to_string()))
}

/// Typed access to one batch's columns by name, each a readable error when missing.
struct Columns<'a>(&'a RecordBatch);

impl<'a> Columns<'a> {
    fn get<T: 'static>(&self, name: &str) -> Result<&'a T, ExportError> {
        self.0
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| ExportError::Format(format!("no column `{name}` of the right type")))
    }
}

fn opt<T, A: Array>(a: &A, i: usize, v: impl Fn(&A, usize) -> T) -> Option<T> {
    (!a.is_null(i)).then(|| v(a, i))
}

fn unhex(s: &str, what: &str) -> Result<Hash, ExportError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| ExportError::Format(format!("{what} `{s}` is not 32 bytes of hex")))?;
    Ok(out)
}

fn unseq(v: i64, what: &str) -> Result<u64, ExportError> {
    u64::try_from(v).map_err(|_| ExportError::Format(format!("{what} {v} is negative")))
}

fn uuid(s: &str, what: &str) -> Result<uuid::Uuid, ExportError> {
    uuid::Uuid::parse_str(s).map_err(|_| ExportError::Format(format!("{what} `{s}` is not a UUID")))
}

/// The rows of one Arrow batch read back from a file.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Row>, ExportError> {
    let c = Columns(batch);
    let i64s = |n| c.get::<Int64Array>(n);
    let strs = |n| c.get::<StringArray>(n);
    let times = |n| c.get::<TimestampMicrosecondArray>(n);
    let (seqs, at, fv, kind) = (
        i64s("seq")?,
        times("recorded_at")?,
        c.get::<UInt8Array>("format_version")?,
        strs("kind")?,
    );
    let (wh, ev) = (strs("webhook_id")?, strs("event_id")?);
    let (attempt, status) = (
        c.get::<UInt16Array>("attempt")?,
        c.get::<UInt16Array>("status_code")?,
    );
    let (class, error, dur, due) = (
        strs("error_class")?,
        strs("error")?,
        c.get::<UInt32Array>("duration_ms")?,
        times("due_at")?,
    );
    let (reason, resp, prior) = (
        strs("reason")?,
        strs("response_body")?,
        strs("prior_state")?,
    );
    let (bf, bl, bp, bh) = (
        i64s("batch_first_seq")?,
        i64s("batch_last_seq")?,
        strs("batch_prev_hash")?,
        strs("batch_hash")?,
    );
    let (es, app, pid, et, pub_at, eh, bd, bx, body) = (
        i64s("event_seq")?,
        strs("app")?,
        strs("producer_event_id")?,
        strs("event_type")?,
        times("published_at")?,
        strs("event_hash")?,
        strs("body_digest")?,
        c.get::<BooleanArray>("body_expunged")?,
        c.get::<BinaryArray>("body")?,
    );
    let s = |a: &StringArray, i: usize| opt(a, i, |a, i| a.value(i).to_owned());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let record = StoredRecord {
            seq: unseq(seqs.value(i), "seq")?,
            recorded_at_us: at.value(i),
            format_version: fv.value(i),
            kind: kind.value(i).to_owned(),
            webhook_id: uuid(wh.value(i), "webhook_id")?,
            event_id: uuid(ev.value(i), "event_id")?,
            attempt: opt(attempt, i, |a, i| a.value(i)),
            status_code: opt(status, i, |a, i| a.value(i)),
            error_class: s(class, i),
            error: s(error, i),
            duration_ms: opt(dur, i, |a, i| a.value(i)),
            due_at_us: opt(due, i, |a, i| a.value(i)),
            reason: s(reason, i),
            response_body: s(resp, i),
            prior_state: s(prior, i),
        };
        let event = match opt(es, i, |a, i| a.value(i)) {
            None => None,
            Some(event_seq) => Some(EventMeta {
                event_seq: unseq(event_seq, "event_seq")?,
                app: s(app, i).unwrap_or_default(),
                producer_event_id: s(pid, i).unwrap_or_default(),
                event_type: s(et, i).unwrap_or_default(),
                published_at_us: opt(pub_at, i, |a, i| a.value(i)).unwrap_or_default(),
                event_hash: unhex(&s(eh, i).unwrap_or_default(), "event_hash")?,
                body_digest: s(bd, i).map(|d| unhex(&d, "body_digest")).transpose()?,
                body_expunged: opt(bx, i, |a, i| a.value(i)).unwrap_or_default(),
                body: opt(body, i, |a, i| a.value(i).to_vec()),
            }),
        };
        rows.push(Row {
            record,
            batch_first_seq: unseq(bf.value(i), "batch_first_seq")?,
            batch_last_seq: unseq(bl.value(i), "batch_last_seq")?,
            batch_prev_hash: unhex(bp.value(i), "batch_prev_hash")?,
            batch_hash: unhex(bh.value(i), "batch_hash")?,
            event,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64, body: Option<Vec<u8>>) -> Row {
        Row {
            record: StoredRecord {
                seq,
                recorded_at_us: 1_700_000_000_000_000 + seq as i64,
                format_version: 1,
                kind: "failed".into(),
                webhook_id: uuid::Uuid::from_u128(1),
                event_id: uuid::Uuid::from_u128(2),
                attempt: Some(1),
                status_code: Some(503),
                error_class: Some("status".into()),
                error: Some("HTTP 503".into()),
                duration_ms: Some(12),
                due_at_us: Some(1_700_000_001_000_000),
                reason: None,
                response_body: Some("busy".into()),
                prior_state: None,
            },
            batch_first_seq: seq,
            batch_last_seq: seq,
            batch_prev_hash: [1; 32],
            batch_hash: [2; 32],
            event: Some(EventMeta {
                event_seq: 3,
                app: "default".into(),
                producer_event_id: "order-1".into(),
                event_type: "order.paid".into(),
                published_at_us: 1_699_999_999_000_000,
                event_hash: [3; 32],
                body_digest: Some([4; 32]),
                body_expunged: body.is_none(),
                body,
            }),
        }
    }

    #[test]
    fn rows_round_trip_through_arrow() {
        let mut bare = sample(2, None);
        bare.event = None;
        bare.record.attempt = None;
        bare.record.error = None;
        let rows = vec![sample(1, Some(b"{}".to_vec())), bare, sample(3, None)];
        let batch = to_batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(from_batch(&batch).unwrap(), rows);
    }
}
