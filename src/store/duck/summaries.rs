//! `GET /v1/deliveries` in SQL: each delivery summarised from its records (state after its last
//! record, attempts, due time, last status), listed in the order of their `enqueued` records so
//! that a cursor (the last `enqueued_seq` seen) is stable while the log grows (oldest first, or
//! newest first with the cursor as an upper bound), optionally only those enqueued in a window.

use duckdb::{params, Connection};
use uuid::Uuid;

use crate::error::{LedgerError, Result};
use crate::ids::{EventId, WebhookId};
use crate::ledger::record::Timestamp;
use crate::ledger::view::{DeliveryFilter, DeliveryState, DeliverySummary};

/// The state after the last record, as in [`DeliveryState::after`].
const STATE_SQL: &str = "CASE last_kind WHEN 'attempted' THEN 'in_attempt' \
     WHEN 'delivered' THEN 'delivered' WHEN 'dead_parked' THEN 'dead' \
     WHEN 'parked' THEN 'parked' ELSE 'pending' END";

pub(super) fn deliveries(
    conn: &Connection,
    filter: DeliveryFilter,
    after_enqueued_seq: u64,
    limit: usize,
) -> Result<Vec<DeliverySummary>> {
    // Absent filters become always-true comparisons, so one statement serves every
    // combination. The webhook and event filters apply before grouping; the cursor and the
    // state apply to the groups.
    let sql = format!(
        "SELECT webhook_id::VARCHAR, event_id::VARCHAR, state, attempts, due_at_us, \
                last_status, last_error_class, first_seq, last_seq, updated_at_us \
         FROM (SELECT *, {STATE_SQL} AS state FROM ( \
             SELECT webhook_id, event_id, min(seq) AS first_seq, max(seq) AS last_seq, \
                    arg_max(kind, seq) AS last_kind, \
                    count(*) FILTER (WHERE kind = 'attempted') AS attempts, \
                    epoch_us(arg_max(due_at, seq) FILTER (WHERE due_at IS NOT NULL)) AS due_at_us, \
                    arg_max(status_code, seq) FILTER (WHERE status_code IS NOT NULL) AS last_status, \
                    arg_max(error_class, seq) FILTER (WHERE error_class IS NOT NULL) AS last_error_class, \
                    epoch_us(max(recorded_at)) AS updated_at_us \
             FROM webhook_deliveries \
             WHERE (? IS NULL OR webhook_id = ?::UUID) AND (? IS NULL OR event_id = ?::UUID) \
               AND {apps} \
             GROUP BY webhook_id, event_id \
             HAVING (CASE WHEN ? THEN (? = 0 OR min(seq) < ?) ELSE min(seq) > ? END) \
               AND (?::TIMESTAMP IS NULL OR min(recorded_at) >= ?::TIMESTAMP) \
               AND (?::TIMESTAMP IS NULL OR min(recorded_at) < ?::TIMESTAMP))) \
         WHERE (? IS NULL OR state = ?) \
         ORDER BY first_seq {order} LIMIT ?",
        apps = filter
            .webhooks
            .as_deref()
            .map_or_else(|| "TRUE".to_owned(), webhooks_in),
        order = if filter.newest_first { "DESC" } else { "ASC" },
    );
    let webhook = filter.webhook.map(|w| w.0.to_string());
    let event = filter.event.map(|e| e.0.to_string());
    let state = filter.state.map(DeliveryState::as_str);
    let cursor = after_enqueued_seq.min(i64::MAX as u64) as i64;
    let since = filter.since.map(|t| t.naive_utc());
    let until = filter.until.map(|t| t.naive_utc());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![
            webhook,
            webhook,
            event,
            event,
            filter.newest_first,
            cursor,
            cursor,
            cursor,
            since,
            since,
            until,
            until,
            state,
            state,
            limit.min(i64::MAX as usize) as i64
        ],
        |r| {
            Ok(Row {
                webhook_id: r.get(0)?,
                event_id: r.get(1)?,
                state: r.get(2)?,
                attempts: r.get(3)?,
                due_at_us: r.get(4)?,
                last_status: r.get(5)?,
                last_error_class: r.get(6)?,
                first_seq: r.get(7)?,
                last_seq: r.get(8)?,
                updated_at_us: r.get(9)?,
            })
        },
    )?;
    rows.map(|r| r?.summary()).collect()
}

/// One result row as DuckDB returns it.
struct Row {
    webhook_id: String,
    event_id: String,
    state: String,
    attempts: i64,
    due_at_us: Option<i64>,
    last_status: Option<u16>,
    last_error_class: Option<String>,
    first_seq: i64,
    last_seq: i64,
    updated_at_us: i64,
}

impl Row {
    fn summary(self) -> Result<DeliverySummary> {
        let state = DeliveryState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("state `{}`", self.state)))?;
        Ok(DeliverySummary {
            webhook_id: WebhookId(uuid(&self.webhook_id)?),
            event_id: EventId(uuid(&self.event_id)?),
            state,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            due_at: match state {
                DeliveryState::Pending => self.due_at_us.map(micros).transpose()?,
                _ => None,
            },
            last_status: self.last_status,
            last_error_class: self.last_error_class,
            enqueued_seq: self.first_seq as u64,
            last_seq: self.last_seq as u64,
            updated_at: micros(self.updated_at_us)?,
        })
    }
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(format!("id {s}: {e}")))
}

fn micros(us: i64) -> Result<Timestamp> {
    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("time {us}")))
}

fn corrupt(what: String) -> LedgerError {
    LedgerError::Invalid(format!("stored delivery summary has a bad {what}"))
}

/// `webhook_id IN (...)` for these webhooks (`FALSE` for none); UUIDs format as hex and
/// hyphens only, so the list is safe to inline.
pub(super) fn webhooks_in(webhooks: &[WebhookId]) -> String {
    if webhooks.is_empty() {
        return "FALSE".to_owned();
    }
    let list: Vec<String> = webhooks.iter().map(|w| format!("'{}'", w.0)).collect();
    format!("webhook_id IN ({})", list.join(", "))
}

/// How many deliveries of `webhooks` were delivered, dead and parked after record `upto_seq`
/// (each delivery's last record at or before it): the finished part of an app's counts, which
/// the projection keeps only for all apps together.
pub(super) fn finished_counts(
    conn: &Connection,
    webhooks: &[WebhookId],
    upto_seq: u64,
) -> Result<(u64, u64, u64)> {
    let sql = format!(
        "SELECT count(*) FILTER (WHERE k = 'delivered'), count(*) FILTER (WHERE k = 'dead_parked'), \
                count(*) FILTER (WHERE k = 'parked') \
         FROM (SELECT arg_max(kind, seq) AS k FROM webhook_deliveries \
               WHERE seq <= ? AND {} GROUP BY webhook_id, event_id)",
        webhooks_in(webhooks)
    );
    let (a, b, c): (i64, i64, i64) =
        conn.query_row(&sql, params![upto_seq.min(i64::MAX as u64) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((a as u64, b as u64, c as u64))
}
