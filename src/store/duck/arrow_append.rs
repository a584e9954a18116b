//! Encoding the writer's rows as Arrow record batches for DuckDB's appender, column by column.
//!
//! This module owns the one way ledger records and events reach their tables on DuckDB. It
//! exists for speed: appended row by row, every value crossed the C API on its own and every
//! UUID went in as text, to be cast back (a `Value` built and a cast looked up per value) —
//! about a quarter of the writer thread's time in a `perf` profile of `bench --scenario
//! deliver`. Here each column is built once per batch in Rust and handed over as one vector;
//! UUIDs travel as 16 bytes tagged `arrow.uuid`, which the appender stores as UUID without a
//! cast.
//!
//! Invariant: the columns are built in the tables' column order, with their exact types
//! (`schema/001_ledger.sql` for `webhook_deliveries`, `EVENT_TABLE_DDL` in `buckets.rs` for
//! an event bucket), so nothing is cast and a mismatch is a loud error, not a silent
//! conversion. The round-trip tests below read every column back.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use uuid::Uuid;

use crate::ledger::stored::StoredRecord;
use crate::store::StoredEvent;

/// A 16-byte column DuckDB reads as UUID.
fn uuid_field(name: &str) -> Field {
    let tag = HashMap::from([("ARROW:extension:name".to_owned(), "arrow.uuid".to_owned())]);
    Field::new(name, DataType::FixedSizeBinary(16), false).with_metadata(tag)
}

fn timestamp_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        nullable,
    )
}

fn uuid_column(ids: impl Iterator<Item = Uuid>, len: usize) -> Result<ArrayRef, ArrowError> {
    let mut b = FixedSizeBinaryBuilder::with_capacity(len, 16);
    for id in ids {
        b.append_value(id.as_bytes())?;
    }
    Ok(Arc::new(b.finish()))
}

fn text_column<'a>(values: impl Iterator<Item = Option<&'a str>>, len: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(len, len * 8);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

/// `records` as one batch in `webhook_deliveries`' column order.
pub fn records_batch(records: &[StoredRecord]) -> Result<RecordBatch, ArrowError> {
    let n = records.len();
    let schema = Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        timestamp_field("recorded_at", false),
        Field::new("format_version", DataType::UInt8, false),
        Field::new("kind", DataType::Utf8, false),
        uuid_field("webhook_id"),
        uuid_field("event_id"),
        Field::new("attempt", DataType::UInt16, true),
        Field::new("status_code", DataType::UInt16, true),
        Field::new("error_class", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("duration_ms", DataType::UInt32, true),
        timestamp_field("due_at", true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("response_body", DataType::Utf8, true),
        Field::new("prior_state", DataType::Utf8, true),
    ]);
    let mut seq = Int64Builder::with_capacity(n);
    let mut recorded = TimestampMicrosecondBuilder::with_capacity(n);
    let mut version = UInt8Builder::with_capacity(n);
    let mut attempt = UInt16Builder::with_capacity(n);
    let mut status = UInt16Builder::with_capacity(n);
    let mut duration = UInt32Builder::with_capacity(n);
    let mut due = TimestampMicrosecondBuilder::with_capacity(n);
    for r in records {
        seq.append_value(r.seq as i64);
        recorded.append_value(r.recorded_at_us);
        version.append_value(r.format_version);
        attempt.append_option(r.attempt);
        status.append_option(r.status_code);
        duration.append_option(r.duration_ms);
        due.append_option(r.due_at_us);
    }
    let texts = |f: fn(&StoredRecord) -> Option<&str>| text_column(records.iter().map(f), n);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        Arc::new(recorded.finish()),
        Arc::new(version.finish()),
        texts(|r| Some(r.kind.as_str())),
        uuid_column(records.iter().map(|r| r.webhook_id), n)?,
        uuid_column(records.iter().map(|r| r.event_id), n)?,
        Arc::new(attempt.finish()),
        Arc::new(status.finish()),
        texts(|r| r.error_class.as_deref()),
        texts(|r| r.error.as_deref()),
        Arc::new(duration.finish()),
        Arc::new(due.finish()),
        texts(|r| r.reason.as_deref()),
        texts(|r| r.response_body.as_deref()),
        texts(|r| r.prior_state.as_deref()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// `events` as one batch in an event bucket's column order.
pub fn events_batch(events: &[StoredEvent]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let schema = Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        uuid_field("event_id"),
        Field::new("event_type", DataType::Utf8, false),
        timestamp_field("published_at", false),
        Field::new("body", DataType::Binary, true),
        Field::new("hash", DataType::Binary, false),
        Field::new("app", DataType::Utf8, true),
        Field::new("producer_id", DataType::Utf8, true),
        Field::new("format", DataType::UInt8, true),
        Field::new("body_digest", DataType::Binary, true),
    ]);
    let bytes: usize = events.iter().map(|e| e.body.len()).sum();
    let mut seq = Int64Builder::with_capacity(n);
    let mut published = TimestampMicrosecondBuilder::with_capacity(n);
    let mut body = BinaryBuilder::with_capacity(n, bytes);
    let mut hash = BinaryBuilder::with_capacity(n, n * 32);
    let mut format = UInt8Builder::with_capacity(n);
    let mut digest = BinaryBuilder::with_capacity(n, n * 32);
    for e in events {
        seq.append_value(e.seq as i64);
        published.append_value(e.published_at.timestamp_micros());
        body.append_value(&e.body);
        hash.append_value(e.hash);
        format.append_option(e.format);
        digest.append_option(e.body_digest);
    }
    let texts = |f: fn(&StoredEvent) -> Option<&str>| text_column(events.iter().map(f), n);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        uuid_column(events.iter().map(|e| e.event_id.0), n)?,
        texts(|e| Some(e.event_type.as_str())),
        Arc::new(published.finish()),
        Arc::new(body.finish()),
        Arc::new(hash.finish()),
        texts(|e| e.app.as_deref()),
        texts(|e| e.producer_id.as_deref()),
        Arc::new(format.finish()),
        Arc::new(digest.finish()),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use duckdb::Connection;

    use super::*;
    use crate::ids::EventId;

    /// Every column of both rows, as text, in table order.
    fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let mut out = Vec::new();
        let mut q = stmt.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            out.push((0..n).map(|i| r.get(i).unwrap()).collect());
        }
        out
    }

    /// One batch through the appender, flushed, as the writer does it.
    fn append(conn: &Connection, table: &str, batch: Result<RecordBatch, ArrowError>) {
        let mut app = conn.appender(table).unwrap();
        app.append_record_batch(batch.unwrap()).unwrap();
        app.flush().unwrap();
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn records_land_in_every_column_with_their_types() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../../schema/001_ledger.sql"))
            .unwrap();
        let webhook = Uuid::parse_str("0190a0b1-c2d3-7e4f-8a5b-6c7d8e9f0a1b").unwrap();
        let event = Uuid::parse_str("ffeeddcc-bbaa-4998-8776-655443322110").unwrap();
        let full = StoredRecord {
            seq: 7,
            recorded_at_us: 1_700_000_000_123_456,
            format_version: 2,
            kind: "failed".into(),
            webhook_id: webhook,
            event_id: event,
            attempt: Some(3),
            status_code: Some(503),
            error_class: s("status"),
            error: s("HTTP 503"),
            duration_ms: Some(70_000),
            due_at_us: Some(1_700_000_060_000_000),
            reason: s("why"),
            response_body: s("busy ✓"),
            prior_state: s("dead"),
        };
        let bare = StoredRecord {
            seq: 8,
            kind: "enqueued".into(),
            attempt: None,
            status_code: None,
            error_class: None,
            error: None,
            duration_ms: None,
            due_at_us: None,
            reason: None,
            response_body: None,
            prior_state: None,
            ..full.clone()
        };
        append(&conn, "webhook_deliveries", records_batch(&[full, bare]));
        let got = rows(
            &conn,
            "SELECT seq::VARCHAR, recorded_at::VARCHAR, format_version::VARCHAR, kind, \
             webhook_id::VARCHAR, event_id::VARCHAR, attempt::VARCHAR, status_code::VARCHAR, \
             error_class, error, duration_ms::VARCHAR, due_at::VARCHAR, reason, response_body, \
             prior_state FROM webhook_deliveries ORDER BY seq",
        );
        let w = s(&webhook.to_string());
        let e = s(&event.to_string());
        let at = s("2023-11-14 22:13:20.123456");
        assert_eq!(
            got,
            vec![
                vec![
                    s("7"),
                    at.clone(),
                    s("2"),
                    s("failed"),
                    w.clone(),
                    e.clone(),
                    s("3"),
                    s("503"),
                    s("status"),
                    s("HTTP 503"),
                    s("70000"),
                    s("2023-11-14 22:14:20"),
                    s("why"),
                    s("busy ✓"),
                    s("dead"),
                ],
                vec![
                    s("8"),
                    at,
                    s("2"),
                    s("enqueued"),
                    w,
                    e,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None
                ],
            ]
        );
        // The ids are stored as UUIDs, not as text that happens to read back the same.
        let typed: i64 = conn
            .query_row(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ?::UUID",
                [webhook.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(typed, 2);
    }

    #[test]
    fn events_land_in_every_column_with_their_types() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE ev {}",
            super::super::buckets::EVENT_TABLE_DDL
        ))
        .unwrap();
        let id = Uuid::parse_str("0190a0b1-c2d3-7e4f-8a5b-6c7d8e9f0a1b").unwrap();
        let event = StoredEvent {
            seq: 42,
            event_id: EventId(id),
            event_type: "invoice.paid".into(),
            published_at: Utc.timestamp_micros(1_700_000_000_000_001).unwrap(),
            body: b"{\"a\":1}".to_vec(),
            hash: [7; 32],
            app: s("acme"),
            producer_id: s("evt_1"),
            format: Some(1),
            body_digest: Some([9; 32]),
            expunged: false,
        };
        let old = StoredEvent {
            seq: 43,
            event_id: EventId(Uuid::nil()),
            app: None,
            producer_id: None,
            format: None,
            body_digest: None,
            ..event.clone()
        };
        append(&conn, "ev", events_batch(&[event, old]));
        let got = rows(
            &conn,
            "SELECT seq::VARCHAR, event_id::VARCHAR, event_type, published_at::VARCHAR, \
             hex(body), hex(hash), app, producer_id, format::VARCHAR, hex(body_digest) \
             FROM ev ORDER BY seq",
        );
        let at = s("2023-11-14 22:13:20.000001");
        let body = s("7B2261223A317D");
        let hash = s(&"07".repeat(32));
        assert_eq!(
            got,
            vec![
                vec![
                    s("42"),
                    s(&id.to_string()),
                    s("invoice.paid"),
                    at.clone(),
                    body.clone(),
                    hash.clone(),
                    s("acme"),
                    s("evt_1"),
                    s("1"),
                    s(&"09".repeat(32)),
                ],
                vec![
                    s("43"),
                    s("00000000-0000-0000-0000-000000000000"),
                    s("invoice.paid"),
                    at,
                    body,
                    hash,
                    None,
                    None,
                    None,
                    None
                ],
            ]
        );
        // The key still refuses a repeated id appended this way.
        let mut app = conn.appender("ev").unwrap();
        let again = StoredEvent {
            seq: 44,
            event_id: EventId(id),
            event_type: "x".into(),
            published_at: Utc.timestamp_micros(0).unwrap(),
            body: Vec::new(),
            hash: [0; 32],
            app: None,
            producer_id: None,
            format: None,
            body_digest: None,
            expunged: false,
        };
        app.append_record_batch(events_batch(&[again]).unwrap())
            .unwrap();
        assert!(app.flush().is_err(), "a repeated event id must be refused");
    }
}
