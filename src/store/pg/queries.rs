//! The questions about deliveries that need their past, on PostgreSQL: `verify`'s whole-log
//! checks (a second `enqueued`, a `requeued` naming the wrong state), the writer's lookup of
//! each delivery's last record kind, bulk recover's window, an event's webhooks, an app's
//! finished counts, and `GET /v1/deliveries`' summaries. Read-only queries; the SQL is
//! DuckDB's (`store/duck/checks.rs`, `summaries.rs`) with `DISTINCT ON` and ordered
//! aggregates where DuckDB has `arg_max`.

use std::collections::HashSet;

use super::{seq, Held, Param};
use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{RecordKind, Terminal, Timestamp};
use crate::ledger::view::{DeliveryFilter, DeliveryState, DeliverySummary};

const TERMINALS: [Terminal; 3] = [Terminal::Delivered, Terminal::Dead, Terminal::Parked];

pub(super) fn enqueued_webhooks(h: &mut Held, event_id: EventId) -> Result<Vec<WebhookId>> {
    let stmt = h.prepared(
        "SELECT webhook_id FROM webhook_deliveries WHERE event_id = $1 AND kind = 'enqueued' \
         ORDER BY webhook_id",
    )?;
    h.client
        .query(&stmt, &[&event_id.0])?
        .iter()
        .map(|r| Ok(WebhookId(r.try_get(0)?)))
        .collect()
}

pub(super) fn finished_in_window(
    h: &mut Held,
    webhook: WebhookId,
    since: Timestamp,
    until: Timestamp,
) -> Result<Vec<(EventId, Terminal)>> {
    let stmt = h.prepared(
        "SELECT event_id, kind FROM ( \
            SELECT DISTINCT ON (event_id) event_id, kind, recorded_at \
            FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY event_id, seq DESC) AS last \
         WHERE kind IN ('dead_parked', 'parked') AND recorded_at >= $2 AND recorded_at < $3 \
         ORDER BY event_id",
    )?;
    h.client
        .query(&stmt, &[&webhook.0 as Param, &since, &until])?
        .iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            let from = if kind == "parked" {
                Terminal::Parked
            } else {
                Terminal::Dead
            };
            Ok((EventId(r.try_get(0)?), from))
        })
        .collect()
}

pub(super) fn first_duplicate_enqueue(h: &mut Held) -> Result<Option<u64>> {
    let v: Option<i64> = h
        .client
        .query_one(
            "SELECT min(seq) FROM (SELECT seq, row_number() OVER \
             (PARTITION BY webhook_id, event_id ORDER BY seq) AS n \
             FROM webhook_deliveries WHERE kind = 'enqueued') AS e WHERE n > 1",
            &[],
        )?
        .try_get(0)?;
    Ok(v.map(|s| s as u64))
}

/// Only deliveries that were ever requeued take part in the window (see DuckDB's version).
pub(super) fn first_bad_requeue(
    h: &mut Held,
) -> Result<Option<(u64, Terminal, Option<RecordKind>)>> {
    let case: String = TERMINALS
        .iter()
        .map(|t| format!("WHEN '{}' THEN '{}' ", t.as_str(), t.record_kind().as_str()))
        .collect();
    let states: Vec<String> = TERMINALS
        .iter()
        .map(|t| format!("'{}'", t.as_str()))
        .collect();
    let sql = format!(
        "SELECT seq, prior_state, prev_kind FROM ( \
           SELECT seq, kind, prior_state, \
                  lag(kind) OVER (PARTITION BY webhook_id, event_id ORDER BY seq) AS prev_kind \
           FROM webhook_deliveries d \
           WHERE EXISTS (SELECT 1 FROM webhook_deliveries r WHERE r.kind = 'requeued' \
                         AND r.webhook_id = d.webhook_id AND r.event_id = d.event_id)) AS q \
         WHERE kind = 'requeued' AND prior_state IN ({}) \
           AND prev_kind IS DISTINCT FROM (CASE prior_state {case}END) \
         ORDER BY seq LIMIT 1",
        states.join(", ")
    );
    let Some(row) = h.client.query_opt(sql.as_str(), &[])? else {
        return Ok(None);
    };
    let seq = row.try_get::<_, i64>(0)? as u64;
    let named: String = row.try_get(1)?;
    let before: Option<String> = row.try_get(2)?;
    let named = Terminal::parse(&named).ok_or_else(|| LedgerError::Corrupt {
        seq,
        reason: format!("unknown prior state `{named}`"),
    })?;
    Ok(Some((
        seq,
        named,
        before.as_deref().and_then(RecordKind::parse),
    )))
}

pub(super) fn last_kinds(
    h: &mut Held,
    keys: &[DeliveryKey],
) -> Result<Vec<(DeliveryKey, RecordKind)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<DeliveryKey> = keys.iter().copied().collect();
    let mut events: Vec<uuid::Uuid> = keys.iter().map(|k| k.event_id.0).collect();
    events.sort_unstable();
    events.dedup();
    let stmt = h.prepared(
        "SELECT DISTINCT ON (event_id, webhook_id) webhook_id, event_id, kind \
         FROM webhook_deliveries WHERE event_id = ANY($1) ORDER BY event_id, webhook_id, seq DESC",
    )?;
    let mut out = Vec::new();
    for row in h.client.query(&stmt, &[&events])? {
        let key = DeliveryKey::new(WebhookId(row.try_get(0)?), EventId(row.try_get(1)?));
        let kind: String = row.try_get(2)?;
        let kind = RecordKind::parse(&kind)
            .ok_or_else(|| LedgerError::Invalid(format!("stored record kind `{kind}`")))?;
        if wanted.contains(&key) {
            out.push((key, kind));
        }
    }
    Ok(out)
}

/// The state after the last record, as in [`DeliveryState::after`].
const STATE_SQL: &str = "CASE last_kind WHEN 'attempted' THEN 'in_attempt' \
     WHEN 'delivered' THEN 'delivered' WHEN 'dead_parked' THEN 'dead' \
     WHEN 'parked' THEN 'parked' ELSE 'pending' END";

pub(super) fn deliveries(
    h: &mut Held,
    filter: &DeliveryFilter,
    after_enqueued_seq: u64,
    limit: usize,
) -> Result<Vec<DeliverySummary>> {
    let sql = format!(
        "SELECT webhook_id, event_id, state, attempts, due_at, last_status, last_error_class, \
                first_seq, last_seq, updated_at \
         FROM (SELECT *, {STATE_SQL} AS state FROM ( \
             SELECT webhook_id, event_id, min(seq) AS first_seq, max(seq) AS last_seq, \
                    (array_agg(kind ORDER BY seq DESC))[1] AS last_kind, \
                    count(*) FILTER (WHERE kind = 'attempted') AS attempts, \
                    (array_agg(due_at ORDER BY seq DESC) FILTER (WHERE due_at IS NOT NULL))[1] \
                        AS due_at, \
                    (array_agg(status_code ORDER BY seq DESC) \
                        FILTER (WHERE status_code IS NOT NULL))[1] AS last_status, \
                    (array_agg(error_class ORDER BY seq DESC) \
                        FILTER (WHERE error_class IS NOT NULL))[1] AS last_error_class, \
                    max(recorded_at) AS updated_at \
             FROM webhook_deliveries \
             WHERE ($1::uuid IS NULL OR webhook_id = $1) AND ($2::uuid IS NULL OR event_id = $2) \
               AND ($3::uuid[] IS NULL OR webhook_id = ANY($3)) \
             GROUP BY webhook_id, event_id \
             HAVING (CASE WHEN $7::boolean THEN ($4::bigint = 0 OR min(seq) < $4::bigint) \
                    ELSE min(seq) > $4::bigint END) \
               AND ($8::timestamptz IS NULL OR min(recorded_at) >= $8) \
               AND ($9::timestamptz IS NULL OR min(recorded_at) < $9)) AS g) AS s \
         WHERE ($5::text IS NULL OR state = $5) \
         ORDER BY first_seq {order} LIMIT $6",
        order = if filter.newest_first { "DESC" } else { "ASC" },
    );
    let webhook = filter.webhook.map(|w| w.0);
    let event = filter.event.map(|e| e.0);
    let webhooks: Option<Vec<uuid::Uuid>> = filter
        .webhooks
        .as_ref()
        .map(|w| w.iter().map(|w| w.0).collect());
    let state = filter.state.map(DeliveryState::as_str);
    let limit = limit.min(i64::MAX as usize) as i64;
    let rows = h.client.query(
        sql.as_str(),
        &[
            &webhook as Param,
            &event,
            &webhooks,
            &seq(after_enqueued_seq),
            &state,
            &limit,
            &filter.newest_first,
            &filter.since,
            &filter.until,
        ],
    )?;
    rows.iter()
        .map(|r| {
            let state_text: String = r.try_get(2)?;
            let state = DeliveryState::parse(&state_text).ok_or_else(|| {
                LedgerError::Invalid(format!("stored delivery summary has state `{state_text}`"))
            })?;
            let due: Option<Timestamp> = r.try_get(4)?;
            let status: Option<i32> = r.try_get(5)?;
            Ok(DeliverySummary {
                webhook_id: WebhookId(r.try_get(0)?),
                event_id: EventId(r.try_get(1)?),
                state,
                attempts: u32::try_from(r.try_get::<_, i64>(3)?).unwrap_or(u32::MAX),
                due_at: match state {
                    DeliveryState::Pending => due,
                    _ => None,
                },
                last_status: status.and_then(|s| u16::try_from(s).ok()),
                last_error_class: r.try_get(6)?,
                enqueued_seq: r.try_get::<_, i64>(7)? as u64,
                last_seq: r.try_get::<_, i64>(8)? as u64,
                updated_at: r.try_get(9)?,
            })
        })
        .collect()
}

/// Delivered, dead and parked deliveries of `webhooks` as of record `upto_seq` (each
/// delivery's last record at or before it): the finished part of an app's counts.
pub(super) fn finished_counts(
    h: &mut Held,
    webhooks: &[WebhookId],
    upto_seq: u64,
) -> Result<(u64, u64, u64)> {
    let stmt = h.prepared(
        "SELECT count(*) FILTER (WHERE kind = 'delivered'), \
                count(*) FILTER (WHERE kind = 'dead_parked'), \
                count(*) FILTER (WHERE kind = 'parked') \
         FROM (SELECT DISTINCT ON (event_id, webhook_id) kind FROM webhook_deliveries \
               WHERE seq <= $1 AND webhook_id = ANY($2) ORDER BY event_id, webhook_id, seq DESC) \
              AS last",
    )?;
    let list: Vec<uuid::Uuid> = webhooks.iter().map(|w| w.0).collect();
    let r = h
        .client
        .query_one(&stmt, &[&seq(upto_seq) as Param, &list])?;
    let n = |i: usize| -> Result<u64> { Ok(r.try_get::<_, i64>(i)?.max(0) as u64) };
    Ok((n(0)?, n(1)?, n(2)?))
}
