//! The checks that need a delivery's past, which the in-memory fold forgets once a delivery is
//! finished: `verify`'s whole-log checks (a second `enqueued`, a `requeued` that names the wrong
//! state) and the writer's lookup of the deliveries a batch requeues. Read-only queries.

use std::collections::HashSet;

use duckdb::{params_from_iter, Connection};
use uuid::Uuid;

use crate::error::{LedgerError, Result};
use crate::ids::{DeliveryKey, EventId, WebhookId};
use crate::ledger::record::{RecordKind, Terminal};

/// Event ids per lookup query: bounds the statement's size for a bulk recover.
const KEYS_PER_QUERY: usize = 1000;

const TERMINALS: [Terminal; 3] = [Terminal::Delivered, Terminal::Dead, Terminal::Parked];

pub(super) fn first_duplicate_enqueue(conn: &Connection) -> Result<Option<u64>> {
    let v: Option<i64> = conn.query_row(
        "SELECT min(seq) FROM (SELECT seq, row_number() OVER \
         (PARTITION BY webhook_id, event_id ORDER BY seq) AS n \
         FROM webhook_deliveries WHERE kind = 'enqueued') WHERE n > 1",
        [],
        |r| r.get(0),
    )?;
    Ok(v.map(|s| s as u64))
}

/// Only deliveries that were ever requeued take part in the window, so the check costs what
/// the requeues cost, not the whole log. The state-to-kind mapping comes from
/// [`Terminal::record_kind`], the one the writer uses.
pub(super) fn first_bad_requeue(
    conn: &Connection,
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
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let seq = row.get::<_, i64>(0)? as u64;
    let named: String = row.get(1)?;
    let before: Option<String> = row.get(2)?;
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
    conn: &Connection,
    keys: &[DeliveryKey],
) -> Result<Vec<(DeliveryKey, RecordKind)>> {
    let wanted: HashSet<DeliveryKey> = keys.iter().copied().collect();
    let mut events: Vec<EventId> = keys.iter().map(|k| k.event_id).collect();
    events.sort_unstable();
    events.dedup();
    let mut out = Vec::new();
    for chunk in events.chunks(KEYS_PER_QUERY) {
        let marks = vec!["?::UUID"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT webhook_id::VARCHAR, event_id::VARCHAR, arg_max(kind, seq) \
             FROM webhook_deliveries WHERE event_id IN ({marks}) GROUP BY webhook_id, event_id"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(chunk.iter().map(|e| e.0.to_string())))?;
        while let Some(row) = rows.next()? {
            let webhook: String = row.get(0)?;
            let event: String = row.get(1)?;
            let kind: String = row.get(2)?;
            let key = DeliveryKey::new(WebhookId(uuid(&webhook)?), EventId(uuid(&event)?));
            let kind = RecordKind::parse(&kind)
                .ok_or_else(|| LedgerError::Invalid(format!("stored record kind `{kind}`")))?;
            if wanted.contains(&key) {
                out.push((key, kind));
            }
        }
    }
    Ok(out)
}

fn uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| LedgerError::Invalid(format!("stored id {s}: {e}")))
}
